"""Ablations of the few-shot predictor that were tried and not adopted (issue 15).

At k=5 (``SMALL_K_VARIANTS``, below 8 cells) the shipped blend of the source mix and the
additive family is scored against the mix alone (the default before it) and other shares.

Same protocol as ``bench_fewshot.py`` (leave-one-out over the reference tables, k random
cells of the target, seeds averaged, Spearman on all other cells). Each variant changes
one piece of :mod:`predictors` in this process only (the library is not changed):

``additive``: the additive family alone with its prior as shipped; with *DCE-shifted
copies* of each source's coefficients added to the prior (the source as if its runtime
dropped dead edges: the all-edge counts moved to the reaches-output counts, and as if it
also skipped all-zero work: all counts moved to the live counts); and choosing among the
three priors (as shipped, dropped-dead, live-only) by the marginal likelihood of the k
cells.

The additive prior as a *mixture* (one Gaussian per source device around its
coefficients, covariance a bandwidth times the sources' covariance, the bandwidth and the
components' weights from the k cells' evidence) instead of the sources' single Gaussian.

``stack``: the default stack, with the DCE-shifted additive as a fifth family, and with
the mixture-prior additive in place of the shipped one.

The shipped and mixture-prior variants are also scored on *DCE twins* (each table as
if its runtime dropped dead edges, the others as sources): a target of a type that none of
the sources is, which is what a prior fitted to look like the sources can get wrong.

``mix-plain``: the source mix as shipped (squared error on latency scaled to mean 1),
and with relative-error weights (each row by 1 / its latency).

    python bench/ablation_fewshot.py [--seeds 5] [--k 10]    # markdown on stdout
    python bench/run.py --only ablation                      # bench/results/ablation.md
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable
from contextlib import contextmanager, nullcontext
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE))


def _shifted(c: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Count-basis coefficients (columns: all 0:4, reaches-output 4:8, live 8:12, connected,
    ones) of a runtime that drops dead edges, and of one that also skips all-zero work."""
    dce = c.copy()
    dce[:, 4:8] += dce[:, 0:4]
    dce[:, 0:4] = 0
    live = c.copy()
    live[:, 8:12] += live[:, 0:4] + live[:, 4:8]
    live[:, 0:8] = 0
    return dce, live


@contextmanager
def _patched(obj, name: str, value):
    old = getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        setattr(obj, name, old)


def _dce_copies():
    from predictors import additive as A

    orig = A.source_coefs

    def coefs(lat, basis=None):
        c = orig(lat, basis)
        return np.vstack([c, *_shifted(c)]) if c.shape[1] == 14 else c

    return _patched(A, "source_coefs", coefs)


def _dce_mixture():
    from predictors import additive as A

    orig = A.fit_posterior

    def post(b, y, c, taus=A.TAUS, noises=A.NOISES):
        if c.shape[1] != 14:
            return orig(b, y, c, taus, noises)
        return max((A.posterior_evidence(b, y, cc, taus, noises) for cc in (c, *_shifted(c))),
                   key=lambda t: t[0])[1]

    return _patched(A, "fit_posterior", post)


def _source_mixture():
    """The additive prior as a mixture: one Gaussian per source device, centred on its
    coefficients, covariance h x the sources' covariance (a kernel density estimate),
    equal weights; h from (0.05, 0.1, 0.2, 0.5, 1) by the k cells' evidence; the posterior
    is the components' posteriors weighted by their evidence."""
    from predictors import additive as A

    def post(b, y, c, taus=A.TAUS, noises=A.NOISES):
        mu = c.mean(axis=0)
        sigma = (c - mu).T @ (c - mu) / len(c)
        iso = np.trace(sigma) / len(mu)
        s = float(np.mean(y))
        best = None
        for h in MIXTURE_BANDWIDTHS:
            fits = [A.gaussian_posterior(b, y / s, cc, h * sigma, h * iso, taus, noises)
                    for cc in c]
            ll = np.array([f[0] for f in fits])
            total = float(np.logaddexp.reduce(ll))
            if best is None or total > best[0]:
                w = np.exp(ll - ll.max())
                best = (total, (w / w.sum()) @ np.array([f[1] for f in fits]))
        return best[1] * s

    return _patched(A, "fit_posterior", post)


MIXTURE_BANDWIDTHS = (0.05, 0.1, 0.2, 0.5, 1.0)


def _additive_dce_family():
    from predictors import select as S

    orig = S.FewShotModel._candidate

    def cand(self, family):
        if family != "additive-dce":
            return orig(self, family)
        base = orig(self, "additive")
        return S._Additive(np.vstack([base.coefs, *_shifted(base.coefs)]), base.basis)

    return _patched(S.FewShotModel, "_candidate", cand)


def _counts_all_edges():
    """The counts family on one basis: every edge counted."""
    from predictors import additive as A

    def fit(idx, y, power=2.0):
        name = "all edges"
        return {name: (1.0, A.fit_nonnegative(A.op_count_bases()[name][idx], y))}

    return _patched(A, "fit_counts", fit)


def _counts_hard_choice():
    """The counts family on the one basis with the lower leave-one-out error (all of the
    share to it) instead of shares by that error."""
    from predictors import additive as A

    orig = A.fit_counts

    def fit(idx, y, power=2.0):
        fits = orig(idx, y, power)
        best = max(fits, key=lambda name: fits[name][0])
        return {best: (1.0, fits[best][1])}

    return _patched(A, "fit_counts", fit)


def _counts_bases(*names: str):
    """The counts family weighing these bases of :func:`predictors.additive.op_count_bases`."""
    from predictors import additive as A

    return lambda: _patched(A, "COUNT_BASES", names)


def _stack_to_equal_shares():
    """The stack's NNLS weights shrunk half-way to equal shares (not to 1/CV-error)."""
    from predictors import select as S

    return _patched(S, "STACK_PRIOR_POWER", 0.0)


def _mix_alone_unless_counts(ratio: float):
    """The stack only when the counts family's leave-one-out error is at most ``ratio``
    times the source mix's (mix-plain), else the source mix alone: the other families
    re-express the same sources (at k=10, 40 seeds, mix-plain alone beats the stack on
    12 of the 13 tables; not pixel3, which drops dead edges)."""
    from predictors import select as S

    orig = S.FewShotModel._weights

    def weights(self, fams, oof, y, cv):
        if ("counts" in cv and "mix-plain" in cv and self.strategy == "stack"
                and cv["counts"] > ratio * cv["mix-plain"]):
            return np.array([float(f == "mix-plain") for f in fams])
        return orig(self, fams, oof, y, cv)

    return lambda: _patched(S.FewShotModel, "_weights", weights)


def _relative_weights():
    from predictors import transfer as T
    from predictors.linear import nnls_fit

    def fit(x, y, m, lam, prior, sw):
        if lam <= 0:
            return nnls_fit(x * sw[:, None], y * sw)
        mixed = x[:, :m] @ prior
        a = float(np.polyfit(mixed, y, 1, w=sw)[0]) if np.ptp(mixed) > 0 else 1.0
        w0 = np.zeros(x.shape[1])
        w0[:m] = max(a, 0.0) * prior
        reg = np.zeros((m, x.shape[1]))
        reg[:, :m] = np.sqrt(lam * len(y)) * np.eye(m)
        return nnls_fit(np.vstack([x * sw[:, None], reg]), np.concatenate([y * sw, reg @ w0]))

    def cv(x, y, m, lams=T.SHRINK, power=T.PRIOR_POWER):
        scale = float(np.mean(y))
        ys = y / scale
        sw = 1.0 / ys
        prior = T.source_prior(x, ys, m, power)
        folds = np.arange(len(y)) % 10 if len(y) > 20 else np.arange(len(y))
        errs = []
        for lam in lams:
            err = 0.0
            for f in np.unique(folds):
                t = folds == f
                w = fit(x[~t], ys[~t], m, lam, prior, sw[~t])
                err += float(np.sum(((x[t] @ w - ys[t]) * sw[t]) ** 2))
            errs.append(err)
        lam = lams[int(np.argmin(errs))]
        return fit(x, ys, m, lam, prior, sw) * scale, lam

    return _patched(T, "shrunk_nnls_cv", cv)


# (group, label, families, context)
VARIANTS: list[tuple[str, str, list[str] | None, Callable]] = [
    ("additive", "as shipped", ["additive"], nullcontext),
    ("additive", "+ DCE-shifted prior copies", ["additive"], _dce_copies),
    ("additive", "prior chosen by marginal likelihood", ["additive"], _dce_mixture),
    ("additive", "mixture prior (one Gaussian per source)", ["additive"], _source_mixture),
    ("stack", "as shipped (default families)", None, nullcontext),
    ("stack", "+ additive-dce family", ["mix", "mix-plain", "mix-raw", "additive", "counts",
                                        "additive-dce"], _additive_dce_family),
    ("stack", "without the counts family (the default before it)",
     ["mix", "mix-plain", "mix-raw", "additive"], nullcontext),
    ("stack", "counts on all edges only (no choice of basis)", None, _counts_all_edges),
    ("stack", "counts on the basis with the lower LOO error only", None, _counts_hard_choice),
    ("stack", "counts on all edges or reaching the output (before the every-layer basis)", None,
     _counts_bases("all edges", "edges reaching the output")),
    ("stack", "counts on all three bases", None,
     _counts_bases("all edges", "edges reaching the output", "every layer")),
    ("stack", "weights shrunk to equal shares", None, _stack_to_equal_shares),
    ("stack", "the source mix alone unless counts' LOO error is at most its own", None,
     _mix_alone_unless_counts(1.0)),
    ("stack", "the source mix alone unless counts' LOO error is at most 1.5 x its own", None,
     _mix_alone_unless_counts(1.5)),
    ("stack", "additive with the mixture prior", None, _source_mixture),
    ("mix-plain", "as shipped", ["mix-plain"], nullcontext),
    ("mix-plain", "relative-error weights", ["mix-plain"], _relative_weights),
]


def _small_k_shares(mix: float):
    """Below 8 cells, the source mix and the additive family in shares ``mix : 1 - mix``."""
    from predictors import select as S

    return lambda: _patched(S, "SMALL_K_SHARES", {"mix-plain": mix, "additive": 1.0 - mix})


# Below 8 cells (scored at k=5; section() runs them beside the k=10 table).
SMALL_K_VARIANTS: list[tuple[str, str, list[str] | None, Callable]] = [
    ("k < 8", "as shipped (mix-plain 3 : additive 1, fixed shares)", None, nullcontext),
    ("k < 8", "mix-plain alone (the default before)", ["mix-plain"], nullcontext),
    ("k < 8", "mix-plain 1 : additive 1", None, _small_k_shares(0.5)),
    ("k < 8", "mix-plain 7 : additive 1", None, _small_k_shares(0.875)),
]


# Variants also scored on DCE twins (:func:`_dce_twins`): a device type none of the sources is.
TWIN_CHECK = {("additive", "as shipped"), ("additive", "mixture prior (one Gaussian per source)"),
              ("stack", "as shipped (default families)"),
              ("stack", "additive with the mixture prior"),
              ("stack", "without the counts family (the default before it)"),
              ("stack", "counts on all edges only (no choice of basis)"),
              ("stack", "counts on the basis with the lower LOO error only"),
              ("stack", "counts on all edges or reaching the output (before the every-layer basis)"),
              ("stack", "counts on all three bases"),
              ("stack", "weights shrunk to equal shares"),
              ("stack", "the source mix alone unless counts' LOO error is at most its own"),
              ("stack", "the source mix alone unless counts' LOO error is at most 1.5 x its own")
              } | {(g, label) for g, label, _, _ in SMALL_K_VARIANTS}


def _dce_twins(targets):
    """Each reference device as if its runtime dropped dead edges (its latency of every
    cell's dead-edge-free equivalent, :func:`predictors.transfer.dce_index`), the other
    tables as sources (pixel3, a runtime that does drop them, among them)."""
    from costmodels.spaces import nb201
    from costmodels.tables import LatencyTable
    from predictors.fewshot import Target
    from predictors.transfer import dce_index, source_matrix

    out = []
    for t in targets:
        if len(t.table) != nb201.NUM_ARCHS:
            continue
        y = np.asarray(t.table.latency_ms)[dce_index(t.table.arch_index)]
        tab = LatencyTable(t.table.arch_index, t.table.arch_str, y, None,
                           f"nb201_{t.table.device}-dce.csv")
        out.append(Target(tab, t.nets, t.x, t.sources, source_matrix(t.sources)[t.table.arch_index]))
    return out


def _layerwise(targets):
    """Devices that cost each layer on their own, of which no source or prior is one: our
    ``fpga`` (cifar10) x 3, noise-free and with 2% lognormal noise, and the accelerators of
    random per-layer costs of the fewshot section (:func:`bench_fewshot._accelerators`),
    the 13 tables as sources; scored with ``priors="none"`` (our fpga is a built-in prior)."""
    import bench_fewshot as B

    from costmodels.spaces import nb201
    from predictors.transfer import builtin_prior_names, builtin_priors

    base = next((t for t in targets if len(t.table) == nb201.NUM_ARCHS), None)
    if base is None:
        return []
    tables = [t.table for t in targets]
    rng = np.random.default_rng(0)
    fpga = 3.0 * builtin_priors()[:, list(builtin_prior_names()).index("prior:fpga/cifar10")]
    ys = [fpga, fpga * np.exp(rng.normal(0, 0.02, len(fpga)))]
    ys += [y for _, y in B._accelerators(rng, B.N_ACCELERATORS, 0.02)]
    return [B._whole_space_target(base, y, f"layerwise-{i}", tables) for i, y in enumerate(ys)]


def _oracle(targets, k: int, seeds: int) -> list[float]:
    """Per target, the mean over seeds of the best Spearman any one default family scores
    on the same k random cells: what choosing among the families could reach at most."""
    from costmodels.harness import metrics
    from predictors import fewshot as FS
    from predictors import sampling
    from predictors.select import default_families

    out = []
    for t in targets:
        best = []
        for seed in range(seeds):
            train = sampling.select("random", k, seed, t.x, t.source_lat)
            test = np.setdiff1d(np.arange(len(t.y)), train)
            best.append(max(metrics.spearman(t.y[test], FS._fit_predict(
                "fewshot", t, train, test, seed, {"families": [f]})) for f in default_families(k)))
        out.append(float(np.mean(best)))
    return out


def run(k: int, seeds: int, variants=None) -> str:
    import glob

    import bench_fewshot as B

    from predictors import fewshot as FS
    from predictors import select as S

    targets = B._targets(sorted(glob.glob(str(B._refdata() / "*.csv"))))
    if not targets:
        return "(ablation skipped: no reference tables)"
    devices = [t.table.device for t in targets]
    twins = _dce_twins(targets)
    layerwise = _layerwise(targets)
    rows = []
    for group, label, fams, ctx in variants or VARIANTS:
        t0 = time.perf_counter()
        params = {"families": fams} if fams else {}
        check = (group, label) in TWIN_CHECK

        def mean(tgts, check=check, params=params, **extra):
            if not (check and tgts):
                return None
            return float(np.mean([FS.point(t, "fewshot", k, seeds, "random",
                                           {**params, **extra})["spearman"] for t in tgts]))

        with ctx(), _patched(S, "FAMILIES", S.FAMILIES + ("additive-dce",)):
            rho = [FS.point(t, "fewshot", k, seeds, "random", params)["spearman"]
                   for t in targets]
            twin = mean(twins)
            layer = mean(layerwise, priors="none")
        rows.append((group, label, rho, twin, layer))
        print(f"{group} / {label}: mean {np.mean(rho):.4f} ({time.perf_counter() - t0:.0f} s)",
              file=sys.stderr)
    if variants is None:
        t0 = time.perf_counter()
        rows.append(("bound", "oracle: the best single default family per device and seed, "
                     "picked on the scored cells (no fit can choose so)",
                     _oracle(targets, k, seeds), None, None))
        print(f"oracle ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    head = ("| family | variant | mean ρ | DCE twins mean ρ | layer-wise accelerators mean ρ | "
            + " | ".join(devices) + " |")
    out = [f"### Few-shot ablations (k={k}, {seeds} seeds, random cells, leave-one-out over "
           f"{len(devices)} tables; rows 'as shipped' are the defaults, the others not adopted)", "", head,
           "|" + "---|" * (head.count("|") - 1)]
    for group, label, rho, twin, layer in rows:
        out.append(f"| {group} | {label} | **{np.mean(rho):.4f}** | "
                   + " | ".join("" if v is None else f"{v:.4f}" for v in (twin, layer)) + " | "
                   + " | ".join(f"{r:.3f}" for r in rho) + " |")
    out += ["", f"DCE twins: each of the {len(twins)} tables as if its runtime dropped dead "
            "edges (its latency of each cell's dead-edge-free equivalent), the other tables "
            "as sources: a device of a type none of the sources is. Layer-wise accelerators: "
            f"{len(layerwise)} devices that cost each layer on their own, another such type "
            "(our `fpga` and the fewshot section's random-cost accelerators, each noise-free "
            "and with 2% noise; no built-in priors). A variant would be adopted only if it "
            "beat the shipped one of its family on all three columns."]
    shipped = {g: (np.mean(r), tw, la) for g, lab, r, tw, la in rows
               if lab.startswith("as shipped")}
    for group, label, rho, twin, layer in rows:
        base = shipped.get(group)
        if twin is None or base is None or base[1] is None or label.startswith("as shipped"):
            continue
        d = (np.mean(rho) - base[0], twin - base[1], layer - base[2])
        verdict = "better on all three" if min(d) > 0 else "not better on all three"
        out.append(f"- {group} / {label}: {d[0]:+.4f} on the reference tables, "
                   f"{d[1]:+.4f} on the DCE twins, {d[2]:+.4f} on the layer-wise "
                   f"accelerators ({verdict}).")
    return "\n".join(out) + "\n"


def section(quick: bool = False) -> str:
    """The ``ablation`` section of ``make bench`` (``--quick``: 2 seeds): the variants at
    k=10, then the small-k blends at k=5."""
    seeds = 2 if quick else 5
    return run(10, seeds) + "\n" + run(5, seeds, SMALL_K_VARIANTS)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--seeds", type=int, default=5)
    a = ap.parse_args(argv)
    print(run(a.k, a.seeds, SMALL_K_VARIANTS if a.k < 8 else None))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
