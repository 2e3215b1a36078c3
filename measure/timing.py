"""The timing primitives shared by every runner: pinning, warm-up, timed runs, retries.

ONNX Runtime networks are timed in interleaved rounds (:mod:`measure.rounds`), each
round a :func:`timed_runs` burst; runners without a burst timer (TVM) time one burst
and re-measure it while noisy (:func:`with_retries`).

A runner supplies ``run_once`` (one inference); :func:`timed_runs` times it with
``perf_counter_ns`` and, around each run, the calling thread's CPU time
(``thread_time_ns``). Their difference is the time the thread was *off* the
CPU. On a shared machine another process preempts us now and then, and a run
that was preempted measures the other process, not the network: with
``drop=True`` (single-threaded runtimes, where the work happens in the calling
thread) such runs are dropped and replaced, up to ``max_factor * repeat`` runs.

:func:`with_retries` turns the times into a :class:`~measure.config.MeasureResult`,
re-measuring while the coefficient of variation exceeds ``config.max_cv`` (or the
thread was off the CPU for more than :data:`MAX_OFF_CPU` of the time), up to
``config.max_retries`` times, and keeps the quietest attempt.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from measure.config import MeasureConfig, MeasureResult

# A run is preempted when its thread was off the CPU longer than this (ms) plus
# PREEMPT_REL of its wall time. Unpreempted runs are off the CPU for ~1-3 us.
PREEMPT_ABS_MS = 0.05
PREEMPT_REL = 0.02
# A batch whose thread was off the CPU for more than this fraction is contended.
MAX_OFF_CPU = 0.05


@dataclass
class Sample:
    """Times (ms) of one measurement attempt and what the protocol saw while taking them."""

    times_ms: np.ndarray
    dropped: int = 0             # preempted runs left out (and replaced)
    off_cpu_frac: float = 0.0    # share of the wall time the thread was off the CPU
    cpu_ms: np.ndarray = field(default_factory=lambda: np.empty(0))
    filled: int | None = None    # preempted runs kept for want of clean ones (None: no dropping)

    @property
    def contended(self) -> bool:
        """Preempted runs are in the times: some kept for want of clean ones, or (when runs
        could not be told apart) the thread was off the CPU for over MAX_OFF_CPU of the time."""
        if self.filled is not None:
            return self.filled > 0
        return self.off_cpu_frac > MAX_OFF_CPU


def pin_set(pin_cpu: int, threads: int = 1) -> set[int] | None:
    """CPUs to pin to: ``threads`` consecutive allowed CPUs from ``pin_cpu``; None = no pinning."""
    if pin_cpu < 0 or not hasattr(os, "sched_getaffinity"):
        return None
    allowed = sorted(os.sched_getaffinity(0))
    start = allowed.index(pin_cpu) if pin_cpu in allowed else pin_cpu % len(allowed)
    n = max(1, min(threads, len(allowed)))
    return {allowed[(start + k) % len(allowed)] for k in range(n)}


@contextmanager
def pinned(pin_cpu: int, threads: int = 1) -> Iterator[set[int] | None]:
    """Pin this process to ``pin_set(pin_cpu, threads)``; restore the old affinity on exit."""
    cpus = pin_set(pin_cpu, threads)
    if cpus is None:
        yield None
        return
    old = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield cpus
    finally:
        os.sched_setaffinity(0, old)


def timed_runs(run_once: Callable[[], Any], warmup: int, repeat: int, drop: bool = False,
               max_factor: int = 5) -> Sample:
    """``warmup`` untimed calls, then timed calls until ``repeat`` are kept.

    Without ``drop`` every timed call is kept (exactly ``repeat`` calls). With
    ``drop``, preempted calls are left out and replaced, up to ``max_factor *
    repeat`` calls; if fewer than ``repeat`` clean ones came, the rest are filled
    with the least-preempted of the dropped ones so the sample has ``repeat`` times.
    """
    for _ in range(warmup):
        run_once()
    wall_clock, cpu_clock = time.perf_counter_ns, time.thread_time_ns
    limit = repeat * (max_factor if drop else 1)
    wall = np.empty(limit, dtype=np.float64)
    cpu = np.empty(limit, dtype=np.float64)
    kept = n = 0
    while n < limit and (kept < repeat if drop else n < repeat):
        c0, t0 = cpu_clock(), wall_clock()
        run_once()
        t1, c1 = wall_clock(), cpu_clock()
        wall[n], cpu[n] = t1 - t0, c1 - c0
        off = wall[n] - cpu[n]
        kept += off <= PREEMPT_ABS_MS * 1e6 + PREEMPT_REL * wall[n]
        n += 1
    wall, cpu = wall[:n] / 1e6, cpu[:n] / 1e6
    off = wall - cpu
    off_frac = float(np.clip(off, 0, None).sum() / wall.sum()) if n else 0.0
    if not drop:
        return Sample(wall, 0, off_frac, cpu)
    excess = off - PREEMPT_REL * wall
    order = np.argsort(excess, kind="stable")[:repeat]
    order.sort()  # keep the time order of the runs
    filled = int((excess[order] > PREEMPT_ABS_MS).sum())
    return Sample(wall[order], n - len(order), off_frac, cpu[order], filled)


def with_retries(measure_once: Callable[[int], Sample | np.ndarray], config: MeasureConfig,
                 runtime: str, **kw: Any) -> MeasureResult:
    """Call ``measure_once(attempt)`` until quiet (CV <= ``max_cv``, not contended) or retries
    run out; return the quietest attempt (not noisy first, then least contended, then
    lowest CV).

    ``meta``: ``attempts``, ``dropped_preempted`` (runs replaced in the kept attempt),
    ``off_cpu_frac``, and ``cpu_median_ms`` when per-run CPU times were taken.
    """
    best: tuple[tuple, MeasureResult] | None = None
    attempts = 0
    for attempt in range(1 + max(0, config.max_retries)):
        attempts += 1
        sample = measure_once(attempt)
        if not isinstance(sample, Sample):
            sample = Sample(np.asarray(sample, dtype=np.float64))
        res = MeasureResult.from_times(sample.times_ms, runtime, config.max_cv, **kw)
        meta = {"dropped_preempted": sample.dropped,
                "off_cpu_frac": round(sample.off_cpu_frac, 4)}
        if sample.filled:
            meta["preempted_kept"] = sample.filled
        if len(sample.cpu_ms):
            meta["cpu_median_ms"] = float(np.median(sample.cpu_ms))
        res = replace(res, noisy=res.noisy or sample.contended, meta={**res.meta, **meta})
        # Quiet attempts first (lowest CV); among contended ones, the least contended.
        rank = (res.noisy, sample.off_cpu_frac if sample.contended else 0.0, res.cv)
        if best is None or rank < best[0]:
            best = (rank, res)
        if not res.noisy:
            break
    assert best is not None
    res = best[1]
    return replace(res, meta={**res.meta, "attempts": attempts})


def error_text(exc: BaseException) -> str:
    """``Type: message`` (long messages cut to 12 lines) for a stored failure."""
    msg = str(exc).strip() or repr(exc)
    lines = msg.splitlines()
    if len(lines) > 12:
        msg = "\n".join(lines[:12] + [f"... ({len(lines) - 12} more lines)"])
    return f"{type(exc).__name__}: {msg}"
