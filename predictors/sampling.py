"""Which k networks to measure on a new device.

``random``: k distinct candidates drawn with the seed (the honest baseline).

``diverse``: spread over the latency range and diverse in features. The
candidates are ranked by a *consensus* latency -- the geometric mean of the
source devices' latencies scaled to a common mean when source tables are given,
else MACs -- and cut into k equal-count bins; from each bin the candidate
farthest (standardised compact features) from those already chosen is taken,
out of a few drawn with the seed. The lowest and the highest bin each give a
cell, so both ends of the range are covered (by a cell of the fastest and of the
slowest k-th, not necessarily the extreme cells), which is what a linear
transfer fit needs.

``active``: asks for the most informative next cell for a source mix, one at a
time: among a seeded pool of candidates, the cell farthest (greedy max-min)
from those already chosen in the space of the sources' standardised log
latencies with the consensus removed -- the cells on which the source
devices disagree in ways the chosen cells do not yet cover, so each new
measurement separates source mixes the earlier ones could not. Without
sources, the compact features are used. All three are deterministic for a seed.
"""

from __future__ import annotations

import numpy as np

from predictors import features as F

METHODS = ("random", "diverse", "active")
ACTIVE_POOL = 2000
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
        from predictors.base import PredictorError

        raise PredictorError(f"cannot choose {k} of {n} candidates; ask for 1 to {n}")
    rng = np.random.default_rng(seed)
    if method == "random":
        return np.sort(rng.choice(n, size=k, replace=False))
    if method == "active":
        return _active(k, rng, x, source_lat)
    if method != "diverse":
        from predictors.base import PredictorError

        raise PredictorError(f"unknown selection {method!r}; expected one of "
                             f"{', '.join(METHODS)}")
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


def _active(k: int, rng: np.random.Generator, x: np.ndarray,
            source_lat: np.ndarray | None) -> np.ndarray:
    """Greedy max-min selection in the sources' disagreement space (see the module docstring)."""
    n = len(x)
    pool = np.sort(rng.choice(n, size=min(ACTIVE_POOL, max(k, n // 2)), replace=False))
    if source_lat is not None and source_lat.size and np.isfinite(source_lat[pool]).all():
        z = np.log(source_lat[pool] / np.nanmean(source_lat, axis=0))
        cons = z.mean(axis=1, keepdims=True)
        z = np.c_[z - cons, cons]  # disagreement, plus the consensus level itself
    else:
        z = F.compact(x[pool])
    sd = z.std(axis=0)
    z = (z - z.mean(axis=0)) / np.where(sd > 0, sd, 1.0)
    first = int(np.argmin(((z - np.median(z, axis=0)) ** 2).sum(axis=1)))
    chosen = [first]
    dist = ((z - z[first]) ** 2).sum(axis=1)
    while len(chosen) < k:
        nxt = int(np.argmax(dist))
        chosen.append(nxt)
        dist = np.minimum(dist, ((z - z[nxt]) ** 2).sum(axis=1))
    return np.sort(pool[np.array(chosen, dtype=np.int64)])
