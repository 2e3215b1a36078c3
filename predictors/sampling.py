"""Which k networks to measure on a new device.

``random``: k distinct candidates drawn with the seed (the honest baseline).

``diverse``: spread over the latency range and diverse in features. The
candidates are ranked by a *consensus* latency -- the geometric mean of the
source devices' latencies scaled to a common mean when source tables are given,
else MACs -- and cut into k equal-count bins; from each bin the candidate
farthest (standardised compact features) from those already chosen is taken,
out of a few drawn with the seed. Extremes of the range are always covered,
which is what a linear transfer fit needs; both are deterministic for a seed.
"""

from __future__ import annotations

import numpy as np

from predictors import features as F

METHODS = ("random", "diverse")
CANDIDATES_PER_BIN = 8


def consensus(source_lat: np.ndarray | None, x: np.ndarray) -> np.ndarray:
    """Consensus latency of each candidate: (n,). From sources (n, m) if given, else MACs."""
    if source_lat is not None and source_lat.size and np.isfinite(source_lat).any():
        scaled = np.log(source_lat / np.nanmean(source_lat, axis=0))
        out = np.nanmean(scaled, axis=1)
        if not np.isnan(out).any():
            return out
    return x[:, F.FEATURE_NAMES.index("macs")].astype(np.float64)


def select(method: str, k: int, seed: int, x: np.ndarray,
           source_lat: np.ndarray | None = None) -> np.ndarray:
    """Positions (sorted, distinct) of the k candidates to measure among the rows of ``x``.

    ``x``: feature matrix of the candidates (n, len(FEATURE_NAMES)); ``source_lat``:
    their latencies on source devices (n, m), optional.
    """
    n = len(x)
    if not 0 < k <= n:
        raise ValueError(f"cannot choose {k} of {n} candidates")
    rng = np.random.default_rng(seed)
    if method == "random":
        return np.sort(rng.choice(n, size=k, replace=False))
    if method != "diverse":
        raise ValueError(f"unknown selection {method!r}; expected one of {', '.join(METHODS)}")
    order = np.argsort(consensus(source_lat, x), kind="stable")
    z = F.compact(x)
    sd = z.std(axis=0)
    z = (z - z.mean(axis=0)) / np.where(sd > 0, sd, 1.0)
    edges = np.linspace(0, n, k + 1).astype(np.int64)
    chosen: list[int] = []
    for b in range(k):
        lo, hi = edges[b], edges[b + 1]  # bins are disjoint and non-empty (k <= n)
        cand = order[rng.choice(np.arange(lo, hi), size=min(CANDIDATES_PER_BIN, hi - lo),
                                replace=False)]
        if chosen:
            dist = ((z[cand][:, None, :] - z[chosen][None, :, :]) ** 2).sum(-1).min(axis=1)
            pick = int(cand[int(np.argmax(dist))])
        else:
            pick = int(cand[0])
        chosen.append(pick)
    return np.sort(np.array(chosen, dtype=np.int64))
