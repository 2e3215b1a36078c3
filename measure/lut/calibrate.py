"""Per-network overhead terms, fitted on a handful of networks measured end to end.

A one-kernel model's time is the kernel plus what any inference call costs
(session run, input binding, output copy, layout reorders around the kernel),
and a network adds its own once (framework call, graph input/output). So::

    latency_ms ~= intercept_ms + scale * sum(entries) + per_kernel_ms * n_kernels

The entries already have the empty run and the layout reorders of their
one-kernel models taken off (:func:`measure.lut.model.kernel_values`), so what
is left to fit is small: ``intercept_ms`` (the network's own call overhead),
``per_kernel_ms`` (dispatch between kernels) and ``scale`` (kernels run a few
percent slower inside a network than alone: caches shared with their
neighbours). Least squares on the calibration points stored in the LUT; terms
left out of ``terms`` are 0 (``scale``: 1).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence

import numpy as np

DEFAULT_TERMS = ("intercept", "per_kernel", "scale")


def fit(sums: Sequence[float], n_kernels: Sequence[int], latency_ms: Sequence[float],
        terms: Sequence[str] = DEFAULT_TERMS) -> dict:
    """Least-squares fit of the overhead terms; returns the calibration record (JSON-able)."""
    s = np.asarray(sums, dtype=float)
    n = np.asarray(n_kernels, dtype=float)
    y = np.asarray(latency_ms, dtype=float)
    unknown = set(terms) - {"intercept", "per_kernel", "scale"}
    if unknown:
        raise ValueError(f"unknown calibration term(s) {sorted(unknown)}; use intercept, "
                         "per_kernel, scale")
    cols, names = [], []
    for t, col in (("intercept", np.ones_like(s)), ("per_kernel", n), ("scale", s)):
        if t in terms:
            cols.append(col)
            names.append(t)
    target = y if "scale" in terms else y - s
    if len(y) < len(cols):
        raise ValueError(f"{len(y)} calibration point(s) cannot fit {len(cols)} term(s); "
                         "measure more networks (--calibrate N)")
    coef, *_ = np.linalg.lstsq(np.column_stack(cols), target, rcond=None)
    c = dict(zip(names, coef.tolist(), strict=True))
    rec = {"intercept_ms": c.get("intercept", 0.0), "per_kernel_ms": c.get("per_kernel", 0.0),
           "scale": c.get("scale", 1.0), "terms": list(terms), "n_points": int(len(y))}
    pred = rec["intercept_ms"] + rec["scale"] * s + rec["per_kernel_ms"] * n
    rec["rmse_ms"] = float(np.sqrt(np.mean((pred - y) ** 2)))
    rec["mape"] = float(np.mean(np.abs(pred - y) / y))
    return rec


def refit(lut, terms: Sequence[str] = DEFAULT_TERMS) -> dict:
    """Fit on the LUT's calibration points and store the result in its meta; returns it.

    With fewer than two points per term, only the intercept is fitted.
    """
    from costmodels.spaces import nb201
    from measure.lut.model import LookupTable

    points = lut.points()
    if not points:
        return {}
    model = LookupTable.from_file(lut, best_effort=True, calibrated=False)
    nets = [nb201.build_network(p.arch_str, p.dataset, _batch(p.name)) for p in points]
    sums, counts, missing = model.raw_sums(nets)
    ok = [i for i in range(len(points)) if not missing[i] and math.isfinite(sums[i])]
    if not ok:
        return {}
    if len(ok) < 2 * len(terms):  # too few networks for every term: an intercept alone
        terms = ("intercept",)
    rec = fit([sums[i] for i in ok], [counts[i] for i in ok],
              [points[i].latency_ms for i in ok], terms)
    lut.set_meta("calibration", json.dumps(rec, sort_keys=True))
    return rec


def _batch(name: str) -> int:
    for part in name.split("-"):
        if part.startswith("b") and part[1:].isdigit():
            return int(part[1:])
    return 1
