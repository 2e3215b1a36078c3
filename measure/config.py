"""Measurement settings and results: one frozen config in, typed records out."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np

from costmodels.errors import CostModelError

GRAPH_OPTS = ("disable", "basic", "extended", "all")
# What latency_ms of a measured table can hold (MeasureResult.figure): the median over
# rounds as timed, the same with each round scaled by the reference panel's drift, or the
# fastest timed run. On a machine whose speed is disturbed for milliseconds at a time
# (another tenant), the median of a sub-millisecond network moves with the disturbance
# while its fastest run does not (README, "Measuring").
FIGURES = ("raw", "corrected", "min")


class MeasureSettingsError(CostModelError, ValueError):
    """A measurement setting out of range (``repeat <= 0``, ``threads <= 0``, ...)."""


# Upper bounds of the settings: beyond them a run only hangs (an ONNX Runtime session with
# 1,000 threads on 2 CPUs takes minutes to time one network) or overflows a timestamp.
MAX_THREADS = 256
MAX_SECONDS = 7 * 24 * 3600.0
MAX_ROUND_S = 3600.0
# Run counts above these are a typo, not a protocol (a million runs of a 1 ms network take
# 17 minutes; the times are held in memory).
MAX_RUNS = 1_000_000
MAX_ROUNDS = 10_000
MAX_RETRIES = 100


@dataclass(frozen=True)
class MeasureConfig:
    """How to time a network. Immutable: it is part of every stored record.

    ``warmup`` untimed runs, then ``repeat`` timed runs (``perf_counter_ns``) spread over
    ``rounds`` interleaved rounds (:mod:`measure.rounds`): in each round every network of a
    window runs ``round_warmup`` untimed and about ``repeat / rounds`` timed runs, the
    networks in a shuffled order (``seed``); a round lasts at least ``min_round_s`` seconds
    (a single network's rounds are spread in time). The latency is the median of the round
    medians. ``drift_ref``: a fixed reference network is measured in every round too, and
    each round's times are also stored scaled by the reference's drift (``corrected_ms``).
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
    rounds: int = 10
    round_warmup: int = 2
    min_round_s: float = 0.2
    drift_ref: bool = False

    def __post_init__(self) -> None:
        checks = (("repeat", 1 <= self.repeat <= MAX_RUNS, f"1 to {MAX_RUNS:,}"),
                  ("warmup", 0 <= self.warmup <= MAX_RUNS, f"0 to {MAX_RUNS:,}"),
                  ("threads", 1 <= self.threads <= MAX_THREADS,
                   f"1 to {MAX_THREADS} (more than the CPUs only slows the timing down)"),
                  ("rounds", 1 <= self.rounds <= MAX_ROUNDS, f"1 to {MAX_ROUNDS:,}"),
                  ("round_warmup", 0 <= self.round_warmup <= MAX_RUNS, f"0 to {MAX_RUNS:,}"),
                  ("max_retries", 0 <= self.max_retries <= MAX_RETRIES, f"0 to {MAX_RETRIES}"),
                  ("pin_cpu", self.pin_cpu >= -1, "a CPU index, or -1 for no pinning"),
                  ("timeout_s", 0 < self.timeout_s <= MAX_SECONDS,
                   f"more than 0 and at most {MAX_SECONDS:.0f} seconds"),
                  ("min_round_s", 0 <= self.min_round_s <= MAX_ROUND_S,
                   f"0 to {MAX_ROUND_S:.0f} seconds"),
                  ("seed", 0 <= self.seed < 2 ** 32, "0 to 2**32 - 1"),
                  ("max_cv", self.max_cv > 0, "more than 0"))
        for name, ok, want in checks:
            if not ok:
                raise MeasureSettingsError(f"measurement setting {name}={getattr(self, name)!r} "
                                           f"is out of range, MeasureConfig.{name}; use {want}")
        if self.graph_opt not in GRAPH_OPTS:
            raise MeasureSettingsError(f"measurement setting graph_opt={self.graph_opt!r} is "
                                       f"unknown, MeasureConfig.graph_opt; use one of "
                                       f"{', '.join(GRAPH_OPTS)}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def round_runs(self) -> list[int]:
        """Timed runs of each round: ``repeat`` split as evenly as possible over
        ``min(rounds, repeat)`` rounds (sums to ``repeat``)."""
        n = min(self.rounds, self.repeat)
        base, extra = divmod(self.repeat, n)
        return [base + (k < extra) for k in range(n)]


@dataclass(frozen=True)
class MeasureResult:
    """Statistics of one measured network, or the error that stopped it.

    Times are in milliseconds; ``cv`` is std / mean of the timed runs. Measured in
    interleaved rounds, ``median_ms`` is the median of the ``round_medians_ms``,
    ``round_cv`` their std / mean, and ``corrected_ms`` (NaN without a reference) the same
    median after each round was scaled by the reference network's drift.
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
    rounds: int = 0
    round_medians_ms: tuple[float, ...] = ()
    round_cv: float = math.nan
    corrected_ms: float = math.nan

    @classmethod
    def from_rounds(cls, round_times_ms, runtime: str, max_cv: float = math.inf,
                    factors=None, **kw: Any) -> MeasureResult:
        """Statistics of a network timed in rounds (a list of per-round time arrays, ms).

        ``factors``: the reference's drift per round (its round median over its campaign
        anchor); with it ``corrected_ms`` is the median of ``round median / factor``.
        ``noisy`` when the round-to-round CV exceeds ``max_cv``.
        """
        rounds = [np.asarray(t, dtype=np.float64) for t in round_times_ms if len(t)]
        meds = np.array([float(np.median(t)) for t in rounds])
        base = cls.from_times(np.concatenate(rounds), runtime, math.inf, **kw)
        rcv = float(meds.std(ddof=1) / meds.mean()) if len(meds) > 1 and meds.mean() > 0 else 0.0
        corrected = math.nan
        if factors is not None and len(factors) == len(meds):
            corrected = float(np.median(meds / np.asarray(factors, dtype=np.float64)))
        return replace(base, median_ms=float(np.median(meds)), rounds=len(meds),
                       round_medians_ms=tuple(float(m) for m in meds), round_cv=rcv,
                       corrected_ms=corrected, noisy=rcv > max_cv)

    def figure(self, which: str = "raw") -> float:
        """The latency figure: ``"raw"`` (median of round medians), ``"corrected"``,
        ``"min"`` (the fastest timed run, as timed) or ``"auto"`` (corrected when there is
        one, else raw)."""
        if which not in FIGURES + ("auto",):
            raise MeasureSettingsError(f"figure {which!r} is unknown; use "
                                       f"{', '.join(FIGURES)}")
        if which == "auto":
            which = "corrected" if math.isfinite(self.corrected_ms) else "raw"
        if which == "min":
            return float(min(self.times_ms)) if self.times_ms else math.nan
        return self.median_ms if which == "raw" else self.corrected_ms

    @property
    def figure_name(self) -> str:
        """What :meth:`figure` ``("auto")`` holds: ``drift-corrected`` or ``raw``."""
        return "drift-corrected" if math.isfinite(self.corrected_ms) else "raw"

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
        d["round_medians_ms"] = list(d["round_medians_ms"])
        if self.ok:
            d = {"latency_ms": self.figure("auto"), "figure": self.figure_name, **d}
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
