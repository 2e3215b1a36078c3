"""Per-network overhead terms, fitted on networks of the space measured end to end.

A one-kernel model's time is the kernel plus what any inference call costs
(session run, input binding, output copy, layout reorders around the kernel),
and a network adds its own once (framework call, graph input/output). So::

    latency_ms ~= intercept_ms + scale * sum(entries) + per_kernel_ms * n_kernels

The entries already have the empty run and the layout reorders of their
one-kernel models taken off (:func:`measure.lut.model.kernel_values`), so what
is left to fit is small: ``intercept_ms`` (the network's own call overhead),
``per_kernel_ms`` (dispatch between kernels) and ``scale`` (kernels run a few
percent slower or faster inside a network than alone). Least squares with every
term >= 0 (a term the data would make negative is dropped and the rest refitted),
so an estimate never comes out below zero.

Each calibration point is stored with the kernels its network ran (meta
``calibration_kernels``: point name -> {key: count}), so a refit needs neither
the networks nor their space: a point is whatever the build measured, NAS-Bench-201
cell or file of a model folder. Points of LUTs built before kernel lists were
stored are NAS-Bench-201 cells at batch 1, read from the stored space index.
"""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Mapping, Sequence

import numpy as np

from costmodels.errors import InputError

DEFAULT_TERMS = ("intercept", "per_kernel", "scale")
KERNELS_META = "calibration_kernels"


def fit(sums: Sequence[float], n_kernels: Sequence[int], latency_ms: Sequence[float],
        terms: Sequence[str] = DEFAULT_TERMS) -> dict:
    """Least-squares fit of the overhead terms, none negative, on relative errors (each
    network weighs alike: in milliseconds a folder's largest model set the scale alone,
    1.64 on a probe's 12 models, 53% off in-sample); the calibration record (JSON-able).
    A fit that misses the networks by more than their bare kernel sums do is not kept:
    the record is then the identity (``kept_uncalibrated``)."""
    s = np.asarray(sums, dtype=float)
    n = np.asarray(n_kernels, dtype=float)
    y = np.asarray(latency_ms, dtype=float)
    unknown = set(terms) - set(DEFAULT_TERMS)
    if unknown:
        raise InputError(f"unknown calibration term(s) {sorted(unknown)}, --terms; use "
                         "intercept, per_kernel, scale")
    columns = {"intercept": np.ones_like(s), "per_kernel": n, "scale": s}
    if len(y) < len(terms):
        raise InputError(f"{len(y)} calibration point(s) cannot fit {len(terms)} term(s), "
                         "--calibrate; measure more networks (--calibrate N)")
    active = [t for t in DEFAULT_TERMS if t in terms]
    dropped: list[str] = []
    coef: dict[str, float] = {}
    w = 1.0 / np.where(y > 0, y, 1.0)
    while active:
        target = y if "scale" in active else y - s
        sol, *_ = np.linalg.lstsq(np.column_stack([columns[t] for t in active]) * w[:, None],
                                  target * w, rcond=None)
        coef = dict(zip(active, sol.tolist(), strict=True))
        worst = min(active, key=lambda t: coef[t])
        if coef[worst] >= 0:
            break
        active.remove(worst)
        dropped.append(worst)
        coef = {}
    rec = {"intercept_ms": coef.get("intercept", 0.0), "per_kernel_ms": coef.get("per_kernel", 0.0),
           "scale": coef.get("scale", 1.0), "terms": list(terms), "dropped": dropped,
           "n_points": int(len(y))}
    pred = rec["intercept_ms"] + rec["scale"] * s + rec["per_kernel_ms"] * n
    raw_mape = float(np.mean(np.abs(s - y) / y))
    if float(np.mean(np.abs(pred - y) / y)) > raw_mape:
        rec.update(intercept_ms=0.0, per_kernel_ms=0.0, scale=1.0, kept_uncalibrated=True)
        pred = s
    rec["rmse_ms"] = float(np.sqrt(np.mean((pred - y) ** 2)))
    rec["mape"] = float(np.mean(np.abs(pred - y) / y))
    rec["raw_mape"] = raw_mape
    return rec


def describe(c: dict) -> str:
    """One line of a calibration record: its terms and how well it and the bare kernel
    sums fit its networks."""
    text = (f"intercept {c['intercept_ms']:.4f} ms, per kernel {c['per_kernel_ms'] * 1000:.2f} "
            f"us, scale {c['scale']:.3f} on {c['n_points']} networks (fit MAPE "
            f"{c['mape'] * 100:.1f}%")
    if "raw_mape" in c:
        text += f"; bare kernel sums {c['raw_mape'] * 100:.1f}%"
    text += ")"
    if c.get("kept_uncalibrated"):
        text += ("; the fit missed them by more than the bare sums do, so the LUT stays "
                 "uncalibrated")
    return text


def point_kernels(lut) -> dict[str, dict[str, int]]:
    """Stored kernel lists of the calibration points (name -> {key: count})."""
    text = lut.get_meta(KERNELS_META)
    return json.loads(text) if text else {}


def record_point_kernels(lut, name: str, keys: Sequence[str]) -> None:
    """Store the kernels (with repeats) the calibration network ``name`` runs."""
    stored = point_kernels(lut)
    stored[name] = dict(Counter(keys))
    lut.set_meta(KERNELS_META, json.dumps(stored, sort_keys=True))


def _legacy_kernels(lut, points, rules_hash: str) -> dict[str, dict[str, int]]:
    """Kernel lists of points stored before kernel lists were: NB201 cells via the index."""
    from costmodels.errors import UnknownArchitecture
    from costmodels.spaces import nb201

    out: dict[str, dict[str, int]] = {}
    cache: dict[str, tuple | None] = {}
    for p in points:
        if p.dataset not in cache:
            cache[p.dataset] = lut.get_index("nb201", p.dataset, 1, rules_hash)
        idx = cache[p.dataset]
        if idx is None:
            continue
        try:
            row = nb201.SPACE.index(p.arch_str)
        except (UnknownArchitecture, KeyError):  # not a cell's canonical string: no list
            continue
        keys, counts = idx
        out[p.name] = {keys[j]: int(c) for j, c in enumerate(counts[row]) if c}
    return out


def refit(lut, terms: Sequence[str] = DEFAULT_TERMS, store: bool = True) -> dict:
    """Fit on the LUT's calibration points and store the result in its meta; returns it.

    A point with a kernel the LUT has no value for is left out. With fewer than
    two points per term, one term alone: the intercept, or the scale when the
    intercept would be negative.
    """
    from measure.lut.model import LookupTable

    points = lut.points()
    if not points:
        return {}
    model = LookupTable.from_file(lut, best_effort=True, calibrated=False)
    lists = point_kernels(lut)
    missing_lists = [p for p in points if p.name not in lists]
    if missing_lists:
        lists = {**_legacy_kernels(lut, missing_lists, model.rules_.hash), **lists}
    sums, counts, ys = [], [], []
    for p in points:
        ks = lists.get(p.name)
        if not ks or not math.isfinite(p.latency_ms) or p.latency_ms <= 0:
            continue
        if any(k not in model.values_ for k in ks):
            continue
        sums.append(sum(model.values_[k] * c for k, c in ks.items()))
        counts.append(sum(ks.values()))
        ys.append(p.latency_ms)
    if not ys:
        return {}
    if len(ys) < 2 * len(terms):  # too few networks for every term: one term alone
        rec = fit(sums, counts, ys, ("intercept",))
        if rec["dropped"]:  # the networks run faster than their kernels' sum: a scale
            rec = fit(sums, counts, ys, ("scale",))
    else:
        rec = fit(sums, counts, ys, terms)
    if store:  # (store=False: only see what a refit would give, on a LUT opened read-only)
        store_calibration(lut, rec)
    return rec


def store_calibration(lut, rec: dict) -> None:
    """Keep a :func:`refit` result as the LUT's calibration."""
    lut.set_meta("calibration", json.dumps(rec, sort_keys=True))


def kernel_lists_of(nets: Sequence, rules) -> list[Mapping[str, int]]:
    """{key: count} of each network under ``rules`` (what :func:`record_point_kernels` stores)."""
    from costmodels.fusion import kernels

    return [dict(Counter(k.text for k in kernels(net, rules))) for net in nets]
