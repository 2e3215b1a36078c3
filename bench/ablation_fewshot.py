"""Ablations of the few-shot predictor that were tried and not adopted (issue 15).

Same protocol as ``bench_fewshot.py`` (leave-one-out over the reference tables, k random
cells of the target, seeds averaged, Spearman on all other cells). Each variant changes
one piece of :mod:`predictors` in this process only (the library is not changed):

``additive``: the additive family alone with its prior as shipped; with *DCE-shifted
copies* of each source's coefficients added to the prior (the source as if its runtime
dropped dead edges: the all-edge counts moved to the reaches-output counts, and as if it
also skipped all-zero work: all counts moved to the live counts); and choosing among the
three priors (as shipped, dropped-dead, live-only) by the marginal likelihood of the k
cells.

``stack``: the default stack, and the stack with the DCE-shifted additive as a fifth
family.

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


def _additive_dce_family():
    from predictors import select as S

    orig = S.FewShotModel._candidate

    def cand(self, family):
        if family != "additive-dce":
            return orig(self, family)
        base = orig(self, "additive")
        return S._Additive(np.vstack([base.coefs, *_shifted(base.coefs)]), base.basis)

    return _patched(S.FewShotModel, "_candidate", cand)


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
    ("stack", "as shipped (default families)", None, nullcontext),
    ("stack", "+ additive-dce family", ["mix", "mix-plain", "mix-raw", "additive",
                                        "additive-dce"], _additive_dce_family),
    ("mix-plain", "as shipped", ["mix-plain"], nullcontext),
    ("mix-plain", "relative-error weights", ["mix-plain"], _relative_weights),
]


def run(k: int, seeds: int) -> str:
    import glob

    import bench_fewshot as B

    from predictors import fewshot as FS
    from predictors import select as S

    targets = B._targets(sorted(glob.glob(str(B._refdata() / "*.csv"))))
    if not targets:
        return "(ablation skipped: no reference tables)"
    devices = [t.table.device for t in targets]
    rows = []
    for group, label, fams, ctx in VARIANTS:
        t0 = time.perf_counter()
        params = {"families": fams} if fams else {}
        with ctx(), _patched(S, "FAMILIES", S.FAMILIES + ("additive-dce",)):
            rho = [FS.point(t, "fewshot", k, seeds, "random", params)["spearman"]
                   for t in targets]
        rows.append((group, label, rho))
        print(f"{group} / {label}: mean {np.mean(rho):.4f} ({time.perf_counter() - t0:.0f} s)",
              file=sys.stderr)
    head = "| family | variant | mean ρ | " + " | ".join(devices) + " |"
    out = [f"### Few-shot ablations (k={k}, {seeds} seeds, random cells, leave-one-out over "
           f"{len(devices)} tables; not adopted)", "", head,
           "|" + "---|" * (head.count("|") - 1)]
    for group, label, rho in rows:
        out.append(f"| {group} | {label} | **{np.mean(rho):.4f}** | "
                   + " | ".join(f"{r:.3f}" for r in rho) + " |")
    return "\n".join(out) + "\n"


def section(quick: bool = False) -> str:
    """The ``ablation`` section of ``make bench`` (``--quick``: 2 seeds)."""
    return run(10, 2 if quick else 5)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--seeds", type=int, default=5)
    a = ap.parse_args(argv)
    print(run(a.k, a.seeds))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
