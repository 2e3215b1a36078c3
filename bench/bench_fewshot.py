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


def _chosen(reports: list) -> str:
    """Mean stacking weight of each family over the fits, largest first."""
    chosen: dict[str, float] = {}
    for rep in reports:
        for fam, w in rep["chosen"].items():
            chosen[fam] = chosen.get(fam, 0.0) + w / len(reports)
    return ", ".join(f"{f} {w:.2f}" for f, w in sorted(chosen.items(), key=lambda kv: -kv[1]))


def section(quick: bool = False) -> str:
    """Markdown: per-device table at k=5, 10 (and 20, not quick), seeds averaged, HELP beside.

    Quick: 2 seeds, k=5 and k=10 only. Full: 5 seeds, k=20 and the ``diverse``
    selector at k=10 too (the headline protocol is random cells).
    """
    from predictors.fewshot import HELP_10, _help_type, point

    paths = sorted(_refdata().glob("*.csv"))
    if not paths:
        return "### Few-shot prediction\n\nno reference tables found (set COSTMODELS_REFDATA)\n"
    seeds = 2 if quick else 5
    ks = (5, 10) if quick else (5, 10, 20)
    t0 = time.perf_counter()
    targets = _targets(paths)
    head = "| target | HELP k=10 (type) |"
    for k in ks:
        head += f" k={k} ρ | τ | ±10% |"
    head += " chosen (k=10) | baseline k=10 ρ |" + ("" if quick else " diverse k=10 ρ |")
    lines = [f"### Few-shot latency prediction: leave-one-out over {len(targets)} devices "
             f"({seeds} seeds, random cells; scored on all other cells)", "", head,
             "|" + "---|" * (head.count("|") - 1)]
    agg: dict[str, list[float]] = {"help": [], "base": [], "div": []}
    for k in ks:
        agg[f"r{k}"], agg[f"t{k}"], agg[f"a{k}"] = [], [], []
    below = []
    for tgt in targets:
        ht = _help_type(tgt.table.device)
        help10 = HELP_10[ht]
        row = f"| {tgt.table.device} | {help10:.3f} ({ht}) |"
        chosen = ""
        for k in ks:
            tgt.reports.clear()
            r = point(tgt, "fewshot", k, seeds)
            if k == 10:
                chosen = _chosen(tgt.reports)
                if r["spearman"] < help10:
                    below.append(f"{tgt.table.device} ({r['spearman']:.3f} < {help10:.3f})")
            agg[f"r{k}"].append(r["spearman"])
            agg[f"t{k}"].append(r["kendall"])
            agg[f"a{k}"].append(r["acc10"])
            row += f" {r['spearman']:.3f} | {r['kendall']:.3f} | {100 * r['acc10']:.1f}% |"
        base = point(tgt, "transfer", 10, seeds, params={"smooth": "none"})
        agg["base"].append(base["spearman"])
        agg["help"].append(help10)
        row += f" {chosen} | {base['spearman']:.3f} |"
        if not quick:
            div = point(tgt, "fewshot", 10, seeds, "diverse")
            agg["div"].append(div["spearman"])
            row += f" {div['spearman']:.3f} |"
        lines.append(row)
    mean = f"| **mean** | {np.mean(agg['help']):.3f} |"
    for k in ks:
        mean += (f" **{np.mean(agg[f'r{k}']):.3f}** | {np.mean(agg[f't{k}']):.3f} | "
                 f"{100 * np.mean(agg[f'a{k}']):.1f}% |")
    mean += f" | {np.mean(agg['base']):.3f} |" + ("" if quick else f" {np.mean(agg['div']):.3f} |")
    lines.append(mean)
    m10, m5 = np.mean(agg["r10"]), np.mean(agg["r5"])
    lines += ["", f"Targets: k=10 mean ≥ 0.975 ({'met' if m10 >= 0.975 else 'missed'}),"
              f" k=5 mean ≥ 0.95 ({'met' if m5 >= 0.95 else 'missed'}); "
              f"below HELP's figure for the device type at k=10: {', '.join(below) or 'none'}. "
              f"fewshot/baseline ρ at k=10: {m10 / np.mean(agg['base']):.4f}. "
              "Baseline: the source-mix transfer on raw sources "
              "(`TransferModel(smooth=\"none\")`, prior power 1). "
              f"({time.perf_counter() - t0:.0f} s on this machine, shared CPU.)"]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(section(quick="--quick" in sys.argv[1:]))
