"""Scoring in the harness: estimate networks without ever raising, time queries, metrics.

Nothing a backend does stops a comparison: :func:`estimate_all` records each
network's failure as data; :func:`rank` is the one ordering of backends used by
the report and the benchmarks.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

import numpy as np

from costmodels.errors import UncostedCompute
from costmodels.harness import metrics
from costmodels.interface import CostModel, estimate_each
from costmodels.network import Network
from costmodels.tables import LatencyTable

if TYPE_CHECKING:
    from costmodels.harness.compare import BackendResult


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}".rstrip(": ")


class Estimated(NamedTuple):
    """What :func:`estimate_all` got: aligned with the networks given."""

    ok: np.ndarray            # bool: a finite latency came back
    latency_ms: np.ndarray    # nan where not ok
    errors: list[str | None]  # why not ok (exception or the backend's meta['error'])
    first_error: str | None   # the first of them, with the network's name
    seconds: float            # time spent in the backend
    energy_mj: np.ndarray | None = None  # nan where the backend gave no energy
    lower_bound: np.ndarray | None = None  # bool: a partial total (meta['lower_bound'])


def estimate_all(model: CostModel, nets: Sequence[Network]) -> Estimated:
    """Estimate ``nets`` with ``model``, never raising for a network.

    ``estimate_many`` is tried first; if it raises, networks are estimated one
    by one and each failure recorded. A non-finite latency counts as not
    covered (backends that report errors as data give ``nan`` and
    ``meta['error']``).
    """
    n = len(nets)
    lat = np.full(n, math.nan)
    energy = np.full(n, math.nan)
    partial = np.zeros(n, dtype=bool)
    errors: list[str | None] = [None] * n
    each = estimate_each(model, nets, catch=Exception)
    for i, est in enumerate(each.results):
        if isinstance(est, BaseException):
            errors[i] = _first_line(est) if not isinstance(est, UncostedCompute) else str(est)
            continue
        lat[i], errors[i] = est.latency_ms, est.meta.get("error")
        energy[i] = math.nan if est.energy_mj is None else est.energy_mj
        partial[i] = bool(est.meta.get("lower_bound"))
    batch_error = _first_line(each.batch_error) if each.batch_error is not None else None
    seconds = each.seconds
    ok = np.isfinite(lat) & ~(lat < 0)  # a negative time: a model file edited by hand
    for i in np.flatnonzero(~ok):
        errors[i] = str(errors[i]).strip().splitlines()[0] if errors[i] else \
            f"{'negative' if lat[i] < 0 else 'non-finite'} latency {lat[i]}"
    bad = np.flatnonzero(~ok)
    first = None
    if bad.size:  # named once: an error may already begin with the network's name
        name, err = nets[bad[0]].name, str(errors[bad[0]])
        first = err if err.startswith(f"{name}: ") else f"{name}: {err}"
    if batch_error and first is None:  # only the batched call failed; say so
        first = f"estimate_many failed ({batch_error}); estimated one by one"
    return Estimated(ok, lat, errors, first, seconds, energy, partial & ok)


def lower_bound_note(note: str, partial: np.ndarray) -> str:
    """``note`` with the report's note on totals that are lower bounds (a best-effort LUT's
    partial sums) joined to it, where there are any."""
    n = int(partial.sum())
    more = (f"{n} of {len(partial)} totals are lower bounds (kernels missing from the LUT, "
            "best-effort): those cells are scored low") if n else ""
    return "; ".join(filter(None, (note, more)))


def _best_time(model: CostModel, nets: Sequence[Network], seconds: float, clean: bool,
               quick_s: float = 0.5, repeats: int = 2, once_s: float = 3.0) -> float:
    """Query time, re-timed ``repeats`` more times (minimum kept) when the first pass was
    quick, once more when it took under ``once_s``.

    A microsecond backend timed once on a shared machine is mostly noise, and a first
    pass on a few networks is mostly one-time work (importing torch or XGBoost, which made
    the GNN look a hundred times slower on 8 networks); a slow one (measurement) is timed
    once. Only when the first pass raised nothing.
    """
    if not clean or seconds > once_s:
        return seconds
    for _ in range(repeats if seconds <= quick_s else 1):
        t0 = time.perf_counter()
        model.estimate_many(list(nets))
        seconds = min(seconds, time.perf_counter() - t0)
    return seconds


def _calibrated(model: Any, sample: Sequence[Network]) -> bool:
    """False when the backend's scale is arbitrary: an unfitted proxy (raw MACs/params).

    Read from the estimate's meta: ``scale == "arbitrary"``, or a ``proxy``
    value with ``fitted`` False (:class:`~costmodels.baselines.ProxyModel`).
    A LUT without its overhead term is still in milliseconds: calibrated here.
    """
    try:
        meta = model.estimate(sample[0]).meta if sample else {}
    except Exception:  # noqa: BLE001 - coverage is reported elsewhere
        return True
    return not (meta.get("scale") == "arbitrary"
                or ("proxy" in meta and meta.get("fitted") is False))


def split_rows(n: int, train_samples: int | None, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train rows, test rows) of a table of ``n`` rows; all rows are test rows without K."""
    if not train_samples:
        return np.zeros(0, np.int64), np.arange(n)
    if not 1 <= train_samples < n:
        from costmodels.errors import InputError
        raise InputError(f"--train-samples must be between 1 and {n - 1} (the truth table has "
                         f"{n} rows; some must be left to score on), got {train_samples}")
    rng = np.random.default_rng(seed)
    train = np.sort(rng.choice(n, size=train_samples, replace=False))
    return train, np.setdiff1d(np.arange(n), train)


def _energy_metrics(truth: LatencyTable, rows: np.ndarray, energy: np.ndarray
                    ) -> dict[str, float]:
    """``energy_kendall``, ``energy_spearman``, ``energy_mape`` where truth and estimate both
    have energy for at least 2 rows; empty otherwise."""
    if truth.energy_mj is None:
        return {}
    t = truth.energy_mj[rows]
    both = np.isfinite(t) & np.isfinite(energy)
    if both.sum() < 2:
        return {}
    m = metrics.summary(t[both], energy[both])
    return {f"energy_{k}": m[k] for k in ("kendall", "spearman", "mape") if k in m}


def rank(results: Sequence[BackendResult], key: str = "kendall") -> list[BackendResult]:
    """Order backends best first by ``key`` (higher is better).

    Backends that covered every scored cell come first, then those with partial
    coverage (their metric is over fewer, possibly easier cells), then those
    with no value at all.
    """
    def order(r: BackendResult) -> tuple[int, float]:
        v = r.metric(key)
        if math.isnan(v):
            return (2, 0.0)
        return (0 if r.n_covered == r.n_total else 1, -v)
    return sorted(results, key=order)
