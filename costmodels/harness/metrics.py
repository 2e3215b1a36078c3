"""Accuracy metrics of a cost estimator against ground truth: one module for all.

Used by the harness, the benchmarks, the tests and the predictors. Every
function takes two 1-D sequences of the same length, ``y_true`` (measured) and
``y_pred`` (estimated), in the same unit (milliseconds in this project), and
returns a Python float.

Conventions (stated once, relied on everywhere):

- Rank metrics handle ties (phone tables hold integer milliseconds): Kendall
  is tau-b and Spearman uses average ranks (scipy's defaults).
- A correlation of a constant input is undefined and returned as ``nan``
  (a constant estimator cannot rank anything).
- Percentage metrics (``mape``, ``rmspe``, ``acc_within``) divide by the true
  value, so every true value must be > 0; they are in percent, except
  ``acc_within`` which is a fraction in [0, 1] (nn-Meter's ±p% accuracy).
- NaN/inf anywhere, empty input or a length mismatch raise ``ValueError``.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Sequence

import numpy as np
from scipy import stats

ArrayLike = Sequence[float] | np.ndarray

__all__ = ["kendall", "spearman", "pearson", "rmse", "mape", "rmspe", "acc_within",
           "topk_overlap", "default_k", "summary", "METRIC_KEYS"]


def _pair(y_true: ArrayLike, y_pred: ArrayLike, *, positive_true: bool = False
          ) -> tuple[np.ndarray, np.ndarray]:
    """Validate and convert to float64 arrays of equal length."""
    t = np.asarray(y_true, dtype=np.float64).ravel()
    p = np.asarray(y_pred, dtype=np.float64).ravel()
    if t.shape != p.shape:
        raise ValueError(f"y_true has {t.size} values but y_pred has {p.size}; "
                         "they must be aligned cell by cell")
    if t.size == 0:
        raise ValueError("no values to compare (empty y_true / y_pred)")
    for name, a in (("y_true", t), ("y_pred", p)):
        bad = ~np.isfinite(a)
        if bad.any():
            i = int(np.flatnonzero(bad)[0])
            raise ValueError(f"{name} has {int(bad.sum())} non-finite value(s) "
                             f"(first at position {i}: {a[i]}); drop or fix those cells")
    if positive_true and (t <= 0).any():
        i = int(np.flatnonzero(t <= 0)[0])
        raise ValueError(f"y_true[{i}] = {t[i]}: percentage errors need true values > 0")
    return t, p


def _corr(fn, y_true: ArrayLike, y_pred: ArrayLike) -> float:
    t, p = _pair(y_true, y_pred)
    if t.size < 2 or np.ptp(t) == 0 or np.ptp(p) == 0:
        return math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return float(fn(t, p)[0])


def kendall(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """Kendall rank correlation (tau-b, ties accounted for), in [-1, 1]."""
    return _corr(stats.kendalltau, y_true, y_pred)


def spearman(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """Spearman rank correlation (average ranks for ties), in [-1, 1]."""
    return _corr(stats.spearmanr, y_true, y_pred)


def pearson(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """Pearson linear correlation of the raw values, in [-1, 1]."""
    return _corr(stats.pearsonr, y_true, y_pred)


def rmse(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """Root mean squared error, in the unit of the inputs (ms)."""
    t, p = _pair(y_true, y_pred)
    return float(np.sqrt(np.mean((p - t) ** 2)))


def mape(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """Mean absolute percentage error, in percent: mean(|pred - true| / true) * 100."""
    t, p = _pair(y_true, y_pred, positive_true=True)
    return float(np.mean(np.abs(p - t) / t) * 100.0)


def rmspe(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """Root mean squared percentage error, in percent: sqrt(mean(((pred-true)/true)^2)) * 100."""
    t, p = _pair(y_true, y_pred, positive_true=True)
    return float(np.sqrt(np.mean(((p - t) / t) ** 2)) * 100.0)


def acc_within(y_true: ArrayLike, y_pred: ArrayLike, pct: float) -> float:
    """nn-Meter's ±pct% accuracy: fraction (0..1) of cells with |pred - true| / true <= pct/100."""
    if pct < 0:
        raise ValueError(f"pct must be >= 0, got {pct}")
    t, p = _pair(y_true, y_pred, positive_true=True)
    # a tiny tolerance so that an error of exactly pct% (up to rounding) counts as within
    return float(np.mean(np.abs(p - t) / t <= pct / 100.0 + 1e-12))


def _in_top(v: np.ndarray, k: int) -> np.ndarray:
    """Each cell's chance of being among the k smallest of ``v`` when ties at the boundary
    are broken at random: 1 below the k-th value, 0 above, and the free places shared
    equally among the cells equal to it."""
    kth = np.partition(v, k - 1)[k - 1]
    below, tied = v < kth, v == kth
    return below + tied * ((k - below.sum()) / tied.sum())


def topk_overlap(y_true: ArrayLike, y_pred: ArrayLike, k: int) -> float:
    """Fraction (0..1) of the k fastest true cells that are among the k fastest predicted.

    The true k fastest include every cell tied with the k-th (any of them is a right
    answer); ties among the predictions count as broken at random (the expected overlap):
    a predictor that gives every cell one value finds about k/n of them, not the first k
    rows by position, and a perfect one finds all even where the truth has ties. ``k``
    larger than the number of cells is clipped to it.
    """
    t, p = _pair(y_true, y_pred)
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    k = min(int(k), t.size)
    fastest = t <= np.partition(t, k - 1)[k - 1]
    return float(min(np.sum(fastest * _in_top(p, k)) / k, 1.0))


def default_k(n: int) -> int:
    """Top-k size used by :func:`summary`: 5% of the cells, at least 1 (156 of 3,125...)."""
    return max(1, int(round(0.05 * n)))


# keys produced by summary() for one set of cells, in display order
METRIC_KEYS = ("n", "kendall", "spearman", "pearson", "rmse_ms", "mape", "rmspe",
               "acc5", "acc10", "topk", "topk_k")


def _one(t: np.ndarray, p: np.ndarray, k: int | None) -> dict[str, float]:
    kk = default_k(t.size) if k is None else min(k, t.size)
    return {"n": float(t.size), "kendall": kendall(t, p), "spearman": spearman(t, p),
            "pearson": pearson(t, p), "rmse_ms": rmse(t, p), "mape": mape(t, p),
            "rmspe": rmspe(t, p), "acc5": acc_within(t, p, 5), "acc10": acc_within(t, p, 10),
            "topk": topk_overlap(t, p, kk), "topk_k": float(kk)}


def summary(y_true: ArrayLike, y_pred: ArrayLike, connected: ArrayLike | None = None,
            k: int | None = None) -> dict[str, float]:
    """All metrics at once (keys in :data:`METRIC_KEYS`), as floats.

    ``acc5``/``acc10`` are fractions; ``mape``/``rmspe`` percent; ``rmse_ms``
    milliseconds; ``topk`` the overlap at ``topk_k`` (``k``, default
    :func:`default_k`). With a boolean ``connected`` mask (one entry per cell:
    does the cell have a path from input to output), the same metrics over the
    connected cells only are added with the suffix ``_connected``; they are
    ``nan`` when no cell is connected.
    """
    t, p = _pair(y_true, y_pred, positive_true=True)
    out = _one(t, p, k)
    if connected is not None:
        mask = np.asarray(connected, dtype=bool).ravel()
        if mask.shape != t.shape:
            raise ValueError(f"connected has {mask.size} entries but there are {t.size} cells")
        if mask.any():
            sub = _one(t[mask], p[mask], k)
        else:
            sub = {key: math.nan for key in METRIC_KEYS}
            sub["n"] = 0.0
        out.update({f"{key}_connected": v for key, v in sub.items()})
    return out
