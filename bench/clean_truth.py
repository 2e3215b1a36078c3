"""Combine separate measurement campaigns of the same cells into one cleaner table.

Each pass is a latency table written by ``costmodels measure-space`` (its own process,
store and time). The output keeps every pass (``pass1_ms``, ``pass2_ms``, ...) over the
cells every pass measured (a cell a pass lacks is left out and counted), and
``latency_ms`` = one figure of the passes: their geometric mean, median or minimum.
``--figure auto`` (the default) takes the one that repeats best, judged without any
predictor: split the passes into two halves (first/second half in time, and odd/even),
compute the figure on each half, and keep the figure whose halves agree within ±10% on
the most cells (ties: the smaller median disagreement). A disturbance on a shared machine
only ever slows a run, so the minimum can repeat best where passes are disturbed. ``bench/bench_fewshot.py`` scores the ±10% accuracy of the
predictors against it (section *fewshot*, "against a cleaner truth").

    python bench/clean_truth.py pass1.csv pass2.csv pass3.csv pass4.csv -o datasets/nb201/X-clean.csv
"""

from __future__ import annotations

import argparse
import csv
import sys
from pathlib import Path

import numpy as np


def combine(passes: list[str | Path]) -> tuple[list[tuple[int, str]], np.ndarray, int]:
    """(cells as (arch_index, arch_str), (n, len(passes)) latencies in ms, cells dropped)."""
    from costmodels.tables import read_table

    tables = [read_table(p) for p in passes]
    maps = [{(int(i), s): float(v) for i, s, v in zip(t.arch_index, t.arch_str, t.latency_ms,
                                                        strict=True)}
            for t in tables]
    every = set(maps[0]).intersection(*maps[1:])
    cells = sorted(every)
    dropped = len(set().union(*maps)) - len(cells)
    return cells, np.array([[m[c] for m in maps] for c in cells]), dropped


FIGURES = {"geomean": lambda a: np.exp(np.log(a).mean(axis=1)),
           "median": lambda a: np.median(a, axis=1),
           "min": lambda a: a.min(axis=1)}


def read_passes(path: str | Path, arch_index) -> np.ndarray:
    """(n, passes) latencies in ms of a table this script wrote (its ``passN_ms`` columns),
    rows in the order of ``arch_index``."""
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    cols = sorted((c for c in rows[0] if c.startswith("pass") and c.endswith("_ms")),
                  key=lambda c: int(c[4:-3]))
    order = {int(r["arch_index"]): i for i, r in enumerate(rows)}
    passes = np.array([[float(r[c]) for c in cols] for r in rows])
    return passes[[order[int(a)] for a in arch_index]]


def repeatability(lat: np.ndarray) -> dict[str, tuple[float, float]]:
    """Per figure: (share of cells whose two half-figures agree within ±10%, median
    |log ratio| of the halves), averaged over the two splits (time halves, odd/even)."""
    m = lat.shape[1]
    splits = [(np.arange(m // 2), np.arange(m // 2, m)), (np.arange(0, m, 2), np.arange(1, m, 2))]
    out = {}
    for name, f in FIGURES.items():
        d = [np.abs(np.log(f(lat[:, a]) / f(lat[:, b]))) for a, b in splits]
        out[name] = (float(np.mean([np.mean(x <= np.log(1.1) + 1e-12) for x in d])),
                     float(np.mean([np.median(x) for x in d])))
    return out


def choose(lat: np.ndarray) -> str:
    """The figure that repeats best (see the module docstring)."""
    rep = repeatability(lat)
    return max(rep, key=lambda k: (rep[k][0], -rep[k][1]))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("passes", nargs="+", help="latency tables of the same cells (>= 2)")
    ap.add_argument("-o", "--output", required=True, help="combined table (CSV)")
    ap.add_argument("--figure", choices=("auto", *FIGURES), default="auto",
                    help="latency_ms: geomean, median or min of the passes, or the one whose "
                         "halves repeat best (auto, needs >= 4 passes)")
    args = ap.parse_args(argv)
    if len(args.passes) < 2 or (args.figure == "auto" and len(args.passes) < 4):
        ap.error("give at least two passes (four with --figure auto)")
    from costmodels.errors import CostModelError

    out = Path(args.output)
    if out.exists() and any(out.resolve() == Path(p).resolve() for p in args.passes):
        print(f"error: -o {out} is one of the passes; give another file name (nothing was "
              "written)", file=sys.stderr)
        return 2
    if not out.parent.is_dir():
        print(f"error: -o {out}: folder {out.parent} does not exist", file=sys.stderr)
        return 2
    try:
        cells, lat, dropped = combine(args.passes)
    except CostModelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    if not cells:
        print("error: the passes share no cell", file=sys.stderr)
        return 2
    figure = choose(lat) if args.figure == "auto" else args.figure
    geo = FIGURES[figure](lat)
    tmp = out.with_name(out.name + ".tmp")
    with open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["arch_index", "arch_str", "latency_ms",
                    *(f"pass{j + 1}_ms" for j in range(lat.shape[1]))])
        for (i, s), g, row in zip(cells, geo, lat, strict=True):
            w.writerow([i, s, f"{g:.6g}", *(f"{v:.6g}" for v in row)])
    tmp.replace(out)
    spread = np.log(lat.max(axis=1) / lat.min(axis=1))
    rep = "; ".join(f"{k} {100 * a:.1f}% within ±10% (median {100 * b:.1f}%)"
                    for k, (a, b) in repeatability(lat).items()) if lat.shape[1] >= 4 else "-"
    print(f"wrote {out}: {len(cells)} cells from {lat.shape[1]} passes ({dropped} not in every "
          f"pass, left out), latency_ms = {figure}; halves agree: {rep}; spread of the passes median {100 * np.median(spread):.1f}%, "
          f"p90 {100 * np.quantile(spread, 0.9):.1f}%", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
