"""Additive per-operation latency model with a prior learned from source devices.

Latency of a NAS-Bench-201 cell is modelled as additive in a basis of its
operations, with coefficients ``c`` for the target device. The model's basis is
:func:`count_basis` (14 columns): for each of the four non-``none`` operations, how
many edges hold it, how many of those feed a node that reaches the output, and how
many are live (on a path from input to output); connectivity; an intercept. The
three counts are what separates runtimes: one that runs every edge costs the first,
one that drops edges whose result is never used (dead-code elimination) the second,
one that also skips work on an all-zero input the third. Fitted on all cells of the
13 reference tables it ranks them as well as the 50-column per-edge basis
(:func:`all_cells_basis`; Spearman within 0.001 of it on 12 tables, 0.968 vs 0.965 on
pixel3, which eliminates dead code); with 10 cells there are 14 numbers to learn
instead of 50. Each source device's coefficients
are fitted on all its cells (least squares), scaled to mean latency 1; their
mean ``mu`` and covariance ``Sigma`` form a Gaussian prior
``c / s ~ N(mu, Sigma + tau * I)`` (``s``: the target's mean measured latency).
The posterior mean given the k measured cells is the prediction; ``tau`` and
the noise variance are chosen by the marginal likelihood of those k cells
(empirical Bayes) from a small grid. Nothing is tuned per device.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache

import numpy as np

from costmodels.spaces import nb201
from predictors import features as F
from predictors.linear import inverse_error_shares, nnls_fit

TAUS = (1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0)
NOISES = (1e-4, 1e-3, 1e-2, 3e-2, 1e-1)


def basis_of(cell_block: np.ndarray) -> np.ndarray:
    """Basis rows (n, 50) from the NB201 block of feature rows (columns :data:`F.CELL_NAMES`)."""
    col = {n: i for i, n in enumerate(F.CELL_NAMES)}
    ops = nb201.OPS[1:]
    oh = np.stack([cell_block[:, col[f"e{e}_{op}"]] for e in range(len(nb201.EDGES))
                   for op in ops], axis=1)
    live = np.repeat(np.stack([cell_block[:, col[f"e{e}_live"]]
                               for e in range(len(nb201.EDGES))], axis=1), len(ops), axis=1)
    connected = (cell_block[:, col["live_edges"]] > 0).astype(np.float64)
    return np.c_[oh, oh * live, connected, np.ones(len(cell_block))]


@cache
def all_cells_basis() -> np.ndarray:
    """:func:`basis_of` for every NB201 cell (rows: standard index)."""
    rows = np.vstack([F.cell_encoding(nb201.parse_arch(nb201.SPACE[i]))
                      for i in range(nb201.NUM_ARCHS)])
    return basis_of(rows)


@cache
def _space_ops() -> np.ndarray:
    """(15,625, 6) operation index of each edge of every NB201 cell (rows: standard index)."""
    ops = np.array([nb201.parse_arch(a) for a in nb201.SPACE])
    ops.setflags(write=False)
    return ops


@cache
def count_basis() -> np.ndarray:
    """(15,625, 14) basis of the additive model (rows: standard index; module docstring).

    Columns: per operation (``nb201.OPS[1:]``) the number of edges holding it, of those
    whose destination reaches the output, of live ones; connected; ones.
    """
    ops = _space_ops()
    n = len(ops)
    reaches_out = np.array([nb201.reaches_output(cell) for cell in ops])
    live = np.array([nb201.live_edges(cell) for cell in ops])

    def counts(mask: np.ndarray) -> np.ndarray:
        return np.stack([((ops == o) & mask).sum(axis=1) for o in range(1, len(nb201.OPS))],
                        axis=1).astype(np.float64)

    out = np.c_[counts(np.ones_like(live)), counts(reaches_out), counts(live),
                live.any(axis=1).astype(np.float64), np.ones(n)]
    out.setflags(write=False)
    return out


# The bases of :func:`op_count_bases` that :func:`fit_counts` weighs: every layer of the
# cell (a device that runs them all; it nests "all edges", a device whose node sums cost
# nothing), or the edges that reach the output (a runtime that drops dead code). With
# "all edges" as a third candidate, k=10 (5 seeds): 13 reference tables 0.9691 vs 0.9690,
# their dead-code-dropping twins 0.9521 vs 0.9548, layer-wise accelerators 0.9830 vs
# 0.9826 (bench/ablation_fewshot.py): a third basis is one more chance for noise to win a
# share.
COUNT_BASES = ("every layer", "edges reaching the output")


@cache
def sum_layer_counts() -> np.ndarray:
    """(15,625, 2) per cell: its ``Add`` layers and its zero-filled nodes (rows: standard
    index), as :func:`costmodels.spaces.nb201.build_network` builds the cell: a node with
    n > 0 incoming non-``none`` edges sums them with n - 1 binary adds, a node with none is
    a zero-fill (``Mul`` by 0)."""
    ops = _space_ops()
    incoming = np.stack([sum(ops[:, e] > 0 for e, (dst, _) in enumerate(nb201.EDGES)
                             if dst == node) for node in (1, 2, 3)], axis=1)
    out = np.c_[np.maximum(incoming - 1, 0).sum(axis=1), (incoming == 0).sum(axis=1)]
    out = out.astype(np.float64)
    out.setflags(write=False)
    return out


@cache
def op_count_bases() -> dict[str, np.ndarray]:
    """{name: (15,625, d) basis}: per operation (``nb201.OPS[1:]``) the number of edges
    holding it, and ones; counting every edge (``all edges``: a device that runs them all)
    or only those whose destination reaches the output (a runtime that drops dead code);
    ``every layer`` adds the cell's ``Add`` layers and zero-filled nodes
    (:func:`sum_layer_counts`) to the first: a device that also costs the node sums.
    :func:`fit_counts` weighs the :data:`COUNT_BASES` among them.

    Every edge of an NB201 cell has the same input and output shape, and the cell is
    repeated over the stages, so a device that costs each layer on its own has a latency
    that is exactly ``overhead + sum over layer kinds of count * cost``: an accelerator
    model (HW-NAS-Bench's Eyeriss, our ``eyeriss``, FLOPs and parameter counts are all
    exact sums in the first basis, our ``fpga``, whose vector unit runs the adds, in the
    third).
    """
    b = count_basis()
    out = {"all edges": np.c_[b[:, 0:4], b[:, -1]],
           "edges reaching the output": np.c_[b[:, 4:8], b[:, -1]],
           "every layer": np.c_[b[:, 0:4], sum_layer_counts(), b[:, -1]]}
    for basis in out.values():
        basis.setflags(write=False)
    return out


def fit_nonnegative(b_train: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Coefficients (d,) in ms of ``y ~ b c`` with ``c >= 0`` (non-negative least squares on
    latencies scaled to mean 1): every operation and the overhead cost time, never save it."""
    s = float(np.mean(y))
    return nnls_fit(b_train, y / s) * s


def fit_counts(idx: np.ndarray, y: np.ndarray, power: float = 2.0
               ) -> dict[str, tuple[float, np.ndarray]]:
    """{basis name: (share, coefficients in ms)} of the per-layer count model of the k
    cells ``idx`` with latencies ``y``: :func:`fit_nonnegative` in each basis of
    :func:`op_count_bases`, the shares proportional to 1 / (its leave-one-out mean squared
    log error on those k cells) ** ``power`` (the source mix's rule) and summing to 1;
    equal shares below 3 cells. Predict with :func:`predict_counts`."""
    bases = op_count_bases()
    coefs = {name: fit_nonnegative(bases[name][idx], y) for name in COUNT_BASES}
    if len(y) < 3:
        return {name: (1.0 / len(COUNT_BASES), c) for name, c in coefs.items()}
    errs = np.empty(len(COUNT_BASES))
    for j, name in enumerate(COUNT_BASES):
        b = bases[name][idx]
        err = 0.0
        for i in range(len(y)):
            keep = np.arange(len(y)) != i
            pred = max(float(b[i] @ fit_nonnegative(b[keep], y[keep])), 0.5 * float(y[keep].min()))
            err += (np.log(pred) - np.log(y[i])) ** 2
        errs[j] = err / len(y)
    share = inverse_error_shares(errs, power)  # a noise-free fit has error 0
    return {name: (float(share[j]), coefs[name]) for j, name in enumerate(COUNT_BASES)}


def predict_counts(fit: dict[str, tuple[float, np.ndarray]], idx: np.ndarray) -> np.ndarray:
    """Latency (ms) of cells ``idx`` under :func:`fit_counts`'s shares of its bases."""
    bases = op_count_bases()
    return sum(w * (bases[name][idx] @ c) for name, (w, c) in fit.items())


def feature_basis(x: np.ndarray) -> np.ndarray:
    """An additive basis for any space, from feature rows (:func:`predictors.features.features`).

    Columns: each operation group's count, work and bytes (the ``<group>_count``,
    ``_work``, ``_bytes`` features) that vary over the rows, each scaled to mean 1, and
    an intercept. A layer's latency is roughly linear in what it computes and moves, so
    a network's is roughly additive in these sums; the per-device coefficients are what
    the sources teach the target's prior.
    """
    names = F.FEATURE_NAMES
    cols = [i for i, n in enumerate(names) if n.endswith(("_count", "_work", "_bytes"))
            and not n.startswith(("stage", "n_live"))]
    b = x[:, cols].astype(np.float64)
    keep = np.ptp(b, axis=0) > 0
    b = b[:, keep]
    b = b / np.maximum(np.abs(b).mean(axis=0), 1e-300)
    return np.c_[b, np.ones(len(x))]


def source_coefs(source_lat: np.ndarray, basis: np.ndarray | None = None) -> np.ndarray:
    """(m, d) coefficients of each source column in ``basis`` (rows of ``source_lat``;
    default :func:`count_basis`), scaled to mean latency 1."""
    b = count_basis() if basis is None else basis
    out = []
    for j in range(source_lat.shape[1]):
        have = np.isfinite(source_lat[:, j])
        c = (_pinv() @ source_lat[:, j] if have.all() and basis is None else
             np.linalg.lstsq(b[have], source_lat[have, j], rcond=None)[0])
        out.append(c / np.nanmean(source_lat[have, j]))
    return np.asarray(out)


@cache
def _pinv() -> np.ndarray:
    return np.linalg.pinv(count_basis())


def fit_posterior(b_train: np.ndarray, y: np.ndarray, coefs: np.ndarray,
                  taus: Sequence[float] = TAUS, noises: Sequence[float] = NOISES) -> np.ndarray:
    """Posterior mean coefficients (d,) in ms from k rows of basis and their latencies (ms)."""
    return posterior_evidence(b_train, y, coefs, taus, noises)[1]


def posterior_evidence(b_train: np.ndarray, y: np.ndarray, coefs: np.ndarray,
                       taus: Sequence[float] = TAUS, noises: Sequence[float] = NOISES
                       ) -> tuple[float, np.ndarray]:
    """(log marginal likelihood of the k cells, posterior mean coefficients in ms) at the
    best ``tau`` and noise of the grid (:func:`fit_posterior`)."""
    mu = coefs.mean(axis=0)
    dev = coefs - mu
    sigma = dev.T @ dev / len(coefs)
    s = float(np.mean(y))
    ll, c = gaussian_posterior(b_train, y / s, mu, sigma, float(np.trace(sigma) / len(mu)),
                               taus, noises)
    return ll, c * s


def gaussian_posterior(b_train: np.ndarray, t: np.ndarray, mu: np.ndarray, sigma: np.ndarray,
                       iso: float, taus: Sequence[float] = TAUS,
                       noises: Sequence[float] = NOISES) -> tuple[float, np.ndarray]:
    """(log evidence up to a constant, posterior mean) of ``t ~ b c + noise`` under the prior
    ``c ~ N(mu, sigma + tau * iso * I)``, at the ``tau`` and noise of the grids with the
    highest evidence (``t``: latencies scaled to mean 1)."""
    r = t - b_train @ mu
    best = None
    for tau in taus:
        prior = sigma + tau * iso * np.eye(len(mu))
        kp = b_train @ prior @ b_train.T
        for noise in noises:
            k = kp + noise * np.eye(len(t))
            chol = np.linalg.cholesky(k)
            alpha = np.linalg.solve(k, r)
            ll = -0.5 * r @ alpha - np.log(np.diag(chol)).sum()
            if best is None or ll > best[0]:
                best = (ll, prior, alpha)
    assert best is not None
    return float(best[0]), mu + best[1] @ b_train.T @ best[2]
