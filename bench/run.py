"""`make bench`: what each estimator costs to query, how good the measurements are,
how accurate each estimator is on this CPU, and the few-shot curves.

Writes a markdown file (default bench/results.md) with the machine fingerprint.
Performance figures are ratios against baselines measured in the same run
(building the IR, the MACs proxy), never absolute pass/fail thresholds.

    python bench/run.py --out bench/results.md [--quick]

``--quick`` skips the TVM measurement-quality run (3-4 minutes) and uses 2 seeds
for the few-shot table.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "datasets" / "nb201"
TRUTH = DATA / "xeon-2c-ort-cifar10.csv"
LUT = DATA / "xeon-2c-ort-cifar10-lut.sqlite"
REFDATA = ROOT.parent / "shared" / "refdata"


def log(msg: str) -> None:
    print(f"[bench] {msg}", file=sys.stderr, flush=True)


def timed(fn):
    t = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - t


def query_costs() -> list[str]:
    """Seconds to estimate all 15,625 cells, per backend, with the IR build as the baseline."""
    from costmodels.registry import create
    from costmodels.spaces import nb201
    from costmodels.tables import read_table
    from predictors import make

    nets, t_ir = timed(lambda: [nb201.build_network(i) for i in range(len(nb201.SPACE))])
    truth = read_table(TRUTH)
    train = [nb201.build_network(s) for s in truth.arch_str]
    rows = [f"### Query cost over all {len(nets):,} NAS-Bench-201 CIFAR-10 cells", "",
            f"Building the IR of every cell (the baseline every backend needs): "
            f"**{t_ir:.2f} s** ({t_ir / len(nets) * 1e6:.0f} µs per cell).", "",
            "| backend | build (s) | estimate all (s) | µs / cell | × MACs proxy |",
            "|---|---|---|---|---|"]
    specs = ["flops", "params", f"lut:{LUT}", "roofline:xeon_2c", "eyeriss", "fpga", "gbdt", "gnn"]
    base = None
    for spec in specs:
        log(f"query cost: {spec}")
        if spec in ("gbdt", "gnn"):
            model, t_build = timed(lambda s=spec: make(s).fit(train, truth.latency_ms))
            label = f"{spec} (fitted on {len(train)} cells)"
        else:
            model, t_build = timed(lambda s=spec: create(s))
            label = spec.replace(str(ROOT) + "/", "")
        est, t_q = timed(lambda m=model: m.estimate_many(nets))
        assert len(est) == len(nets) and all(math.isfinite(e.latency_ms) for e in est), spec
        base = base or t_q
        rows.append(f"| {label} | {t_build:.2f} | {t_q:.2f} | {t_q / len(nets) * 1e6:.1f} | "
                    f"{t_q / base:.1f} |")
    return rows + [""]


def measurement_quality(quick: bool) -> list[str]:
    from measure.config import MeasureConfig
    from measure.quality import between_process_spread

    rows = ["### Measurement quality (5 fresh processes per cell, pinned to one core)", "",
            "| runtime | cells | median within-run CV | median spread of medians | max spread | "
            "load average |", "|---|---|---|---|---|---|"]
    runs = [("ort", [0, 11, 1462, 5000, 15624], None)]
    if not quick:
        runs.append(("tvm (untuned)", [0, 11, 15624],
                     MeasureConfig(runtime="tvm", warmup=3, repeat=30)))
    for name, cells, cfg in runs:
        log(f"measurement quality: {name} on {len(cells)} cells x 5 processes")
        q = between_process_spread(cells, name.split()[0], n_proc=5, config=cfg)
        rows.append(f"| {name} | {', '.join(map(str, cells))} | {q['median_cv']:.3f} | "
                    f"{q['median_spread'] * 100:.1f}% | {q['max_spread'] * 100:.1f}% | "
                    f"{q.get('loadavg', '')} |")
    rows += ["", "Spread = (max - min) / median of the 5 per-process medians of a cell.", ""]
    return rows


def accuracy_here() -> list[str]:
    """Every estimator against this CPU's measured table (learned ones: k=100 train)."""
    from costmodels.harness.compare import compare
    from costmodels.tables import read_table

    truth = read_table(TRUTH)
    log("accuracy against this CPU's ground truth (k=100 train / rest test)")
    res = compare(truth, ["flops", "params", f"lut:{LUT}", "roofline:xeon_2c", "gbdt", "gnn",
                          "hybrid", "eyeriss", "fpga"], train_samples=100, seed=0,
                  reference_only=["eyeriss", "fpga"], priors=["roofline:xeon_2c", f"lut:{LUT}"])
    rows = [f"### Accuracy on this CPU ({TRUTH.name}: {len(truth)} cells measured with ONNX "
            "Runtime; learned backends fitted on 100, all scored on the other "
            f"{len(truth) - 100})", "",
            "| backend | Kendall τ | Spearman | MAPE % | ±10% acc | measurements to build |",
            "|---|---|---|---|---|---|"]
    for r in res.ranked("kendall"):
        acc = r.metric("acc10")
        rows.append(f"| {r.name} | {r.metric('kendall'):.3f} | {r.metric('spearman'):.3f} | "
                    f"{r.metric('mape'):.1f} | {'' if math.isnan(acc) else f'{acc * 100:.0f}%'} | "
                    f"{'' if r.build_measurements is None else r.build_measurements} |")
    rows += ["", "eyeriss and fpga model other hardware: ranked against this CPU for "
             "illustration only. flops/params are fitted (slope, intercept) on the 100 "
             "training cells here; hybrid is GBDT correcting roofline:xeon_2c and the LUT.", ""]
    return rows


def curves_here(out_dir: Path, quick: bool) -> list[str]:
    """How many cells must be measured on this CPU: sample-efficiency curves on its table."""
    from predictors.fewshot import curve, write_curve

    sources = sorted(REFDATA.glob("nb201_*.csv")) if REFDATA.is_dir() else []
    seeds = 2 if quick else 5
    rows = [f"### How many measurements on this CPU? ({TRUTH.name}; Spearman / ±10% accuracy "
            f"on the cells not used for training, mean of {seeds} seeds)", "",
            "| model | " + " | ".join(f"k={k}" for k in (5, 10, 20, 50, 100)) + " |",
            "|---|" + "---|" * 5]
    for model in (["transfer"] if sources else []) + ["gbdt", "gnn"]:
        log(f"sample-efficiency curve on this CPU: {model}")
        pts = curve(TRUTH, sources, model, samples=(5, 10, 20, 50, 100), seeds=seeds)
        write_curve(pts, out_dir / f"curve-xeon-2c-{model}.csv")
        rows.append(f"| {model} | " + " | ".join(
            f"{p['spearman']:.3f} / {p['acc10'] * 100:.0f}%" for p in pts) + " |")
    rows += ["", f"transfer uses the {len(sources)} reference devices as sources (none of them "
             "this CPU). Curves: `bench/curve-xeon-2c-*.csv` and `.png`.", ""]
    return rows


def fewshot(quick: bool) -> list[str]:
    from predictors.fewshot import benchmark

    if not REFDATA.is_dir():
        return [f"(few-shot table skipped: {REFDATA} not found)", ""]
    log("few-shot leave-one-out over the reference devices")
    return [benchmark(REFDATA, seeds=2 if quick else 5, progress=True), ""]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results.md"))
    ap.add_argument("--quick", action="store_true", help="skip TVM quality; 2 few-shot seeds")
    args = ap.parse_args(argv)

    from measure.fingerprint import fingerprint

    t0 = time.perf_counter()
    fp = fingerprint()
    lines = ["# costmodels benchmark results", "",
             f"Run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} by `make bench`"
             f"{' --quick' if args.quick else ''}.", "",
             "Machine: " + json.dumps({k: fp.get(k) for k in (
                 "cpu_model", "cores", "os", "python", "onnxruntime", "tvm", "loadavg")}), ""]
    for section in (query_costs, lambda: measurement_quality(args.quick), accuracy_here,
                    lambda: curves_here(Path(args.out).parent, args.quick),
                    lambda: fewshot(args.quick)):
        lines += section()
        Path(args.out).write_text("\n".join(lines) + "\n")  # keep what is done so far
    lines.append(f"Total bench time: {time.perf_counter() - t0:.0f} s.")
    Path(args.out).write_text("\n".join(lines) + "\n")
    log(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
