"""Few-shot latency prediction benchmark: leave-one-out over the reference devices.

For each of the tables in the reference directory (``COSTMODELS_REFDATA`` or
``../shared/refdata``): the target's k cells are drawn at random with each seed,
the other tables are the sources, :class:`predictors.select.FewShotModel` is
fitted on the k cells only (its model selection sees nothing else) and scored
on every other cell of the target: Spearman, Kendall tau and ±10% accuracy,
averaged over seeds; HELP's published 10-sample Spearman for the device type
beside ours. The baseline measured in the same run is the source-mix transfer
on raw sources (``TransferModel(smooth="none")``, the previous default).

    python bench/bench_fewshot.py [--quick]    # markdown on stdout
"""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent


def _refdata() -> Path:
    return Path(os.environ.get("COSTMODELS_REFDATA", HERE.parent.parent / "shared" / "refdata"))


def _targets(paths):
    """One shared set of networks and features for every table (they list the same cells)."""
    from costmodels.spaces import nb201
    from costmodels.tables import read_table
    from predictors import features as F
    from predictors.fewshot import Target
    from predictors.transfer import source_matrix

    tables = [read_table(p, duplicates="mean") for p in paths]
    cache: dict[tuple, tuple] = {}
    out = []
    for t in tables:
        key = tuple(t.arch_index)
        if key not in cache:
            nets = [nb201.build_network(int(i)) for i in t.arch_index]
            cache[key] = (nets, F.features(nets))
        nets, x = cache[key]
        srcs = [s for s in tables if s.device != t.device]
        out.append(Target(t, nets, x, srcs, source_matrix(srcs)[t.arch_index]))
    return out


def section(quick: bool = False) -> str:
    """Markdown: per-device table at k=5 and k=10, seeds averaged, HELP's figures beside."""
    from predictors.fewshot import HELP_10, _help_type, point

    paths = sorted(_refdata().glob("*.csv"))
    if not paths:
        return "### Few-shot prediction\n\nno reference tables found (set COSTMODELS_REFDATA)\n"
    seeds = 2 if quick else 5
    t0 = time.perf_counter()
    targets = _targets(paths)
    lines = [f"### Few-shot latency prediction: leave-one-out over {len(targets)} devices "
             f"({seeds} seeds, random cells; scored on all other cells)", "",
             "| target | HELP k=10 (type) | fewshot k=10 ρ | τ | ±10% | fewshot k=5 ρ | τ | ±10% "
             "| chosen (k=10) | baseline transfer k=10 ρ |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    agg: dict[str, list[float]] = {"f10": [], "f5": [], "b10": [], "help": []}
    below = []
    for tgt in targets:
        tgt.reports.clear()
        r10 = point(tgt, "fewshot", 10, seeds)
        chosen: dict[str, float] = {}
        for rep in tgt.reports:
            for fam, w in rep["chosen"].items():
                chosen[fam] = chosen.get(fam, 0.0) + w / len(tgt.reports)
        r5 = point(tgt, "fewshot", 5, seeds)
        base = point(tgt, "transfer", 10, seeds, params={"smooth": "none"})
        ht = _help_type(tgt.table.device)
        help10 = HELP_10[ht]
        if r10["spearman"] < help10:
            below.append(f"{tgt.table.device} ({r10['spearman']:.3f} < {help10:.3f})")
        for key, v in (("f10", r10["spearman"]), ("f5", r5["spearman"]),
                       ("b10", base["spearman"]), ("help", help10)):
            agg[key].append(v)
        top = ", ".join(f"{f} {w:.2f}" for f, w in sorted(chosen.items(), key=lambda kv: -kv[1]))
        lines.append(f"| {tgt.table.device} | {help10:.3f} ({ht}) | {r10['spearman']:.3f} | "
                     f"{r10['kendall']:.3f} | {100 * r10['acc10']:.1f}% | {r5['spearman']:.3f} | "
                     f"{r5['kendall']:.3f} | {100 * r5['acc10']:.1f}% | {top} | "
                     f"{base['spearman']:.3f} |")
    lines.append(f"| **mean** | {np.mean(agg['help']):.3f} | **{np.mean(agg['f10']):.3f}** | | | "
                 f"**{np.mean(agg['f5']):.3f}** | | | | {np.mean(agg['b10']):.3f} |")
    lines += ["", f"Targets: k=10 mean ≥ 0.975 ({'met' if np.mean(agg['f10']) >= 0.975 else 'missed'}),"
              f" k=5 mean ≥ 0.95 ({'met' if np.mean(agg['f5']) >= 0.95 else 'missed'}); "
              f"below HELP's figure for the device type: {', '.join(below) or 'none'}. "
              f"fewshot/baseline ρ at k=10: {np.mean(agg['f10']) / np.mean(agg['b10']):.4f}. "
              f"({time.perf_counter() - t0:.0f} s on this machine.)"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(section(quick="--quick" in sys.argv[1:]))
