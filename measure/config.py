"""Measurement settings and results: one frozen config in, typed records out."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np


@dataclass(frozen=True)
class MeasureConfig:
    """How to time a network. Immutable: it is part of every stored record.

    ``warmup`` untimed runs, then ``repeat`` timed runs (``perf_counter_ns``).
    ``threads``: intra-op threads (1 = the reproducible default). ``pin_cpu``:
    CPU affinity for the measuring process (core index; -1 = do not pin).
    ``max_cv``: a result whose coefficient of variation exceeds it is re-measured,
    up to ``max_retries`` times (flagged ``noisy`` if it stays high).
    ``isolate``: run each network in a fresh worker process with ``timeout_s``.
    ``drop_preempted``: on a shared machine another process can take the CPU in the
    middle of a timed run; with one thread (ONNX Runtime runs it in the calling
    thread) such runs are detected (wall time minus the thread's CPU time) and
    replaced by new runs, up to ``5 * repeat`` runs in all.
    """

    runtime: str = "ort"
    warmup: int = 10
    repeat: int = 100
    threads: int = 1
    pin_cpu: int = 0
    max_cv: float = 0.10
    max_retries: int = 2
    isolate: bool = False
    timeout_s: float = 300.0
    seed: int = 0
    graph_opt: str = "all"           # ORT: disable | basic | extended | all
    provider: str = "CPUExecutionProvider"
    tvm_target: str = ""             # "" = llvm with the host's mcpu when known
    tvm_trials: int = 0              # MetaSchedule trials; 0 = untuned
    tvm_work_dir: str = ""
    rpc_tracker: str = ""            # "HOST:PORT" for remote devices
    rpc_key: str = ""
    drop_preempted: bool = True

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True)
class MeasureResult:
    """Statistics of one measured network, or the error that stopped it.

    Times are in milliseconds; ``cv`` is std / mean of the timed runs.
    """

    ok: bool
    median_ms: float = math.nan
    mean_ms: float = math.nan
    p10_ms: float = math.nan
    p90_ms: float = math.nan
    std_ms: float = math.nan
    cv: float = math.nan
    repeat: int = 0
    runtime: str = ""
    noisy: bool = False
    error: str = ""
    times_ms: tuple[float, ...] = ()
    fingerprint: dict[str, Any] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_times(cls, times_ms, runtime: str, max_cv: float = math.inf,
                   **kw: Any) -> MeasureResult:
        t = np.asarray(times_ms, dtype=np.float64)
        mean = float(t.mean())
        std = float(t.std(ddof=1)) if len(t) > 1 else 0.0
        cv = std / mean if mean > 0 else math.inf
        return cls(ok=True, median_ms=float(np.median(t)), mean_ms=mean,
                   p10_ms=float(np.percentile(t, 10)), p90_ms=float(np.percentile(t, 90)),
                   std_ms=std, cv=cv, repeat=len(t), runtime=runtime, noisy=cv > max_cv,
                   times_ms=tuple(float(x) for x in t), **kw)

    @classmethod
    def failure(cls, error: str, runtime: str, **kw: Any) -> MeasureResult:
        return cls(ok=False, runtime=runtime, error=error, **kw)

    def summary(self) -> dict[str, Any]:
        """JSON-friendly statistics without the raw times."""
        d = asdict(self)
        d.pop("times_ms")
        return d


@dataclass(frozen=True)
class BuildResult:
    """What a Builder made: a runnable artifact (an ONNX Runtime session, a TVM
    executable, an exported library path for RPC), or the error that stopped it.

    ``build_s`` is the wall time of the build in seconds (tuning included).
    """

    artifact: Any = None
    artifact_path: str = ""
    error: str = ""
    build_s: float = 0.0
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.error


DEFAULT_CONFIG = MeasureConfig()
