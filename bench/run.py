"""`make bench`: what each estimator costs to query, how good the measurements are,
how accurate each estimator is on this CPU, and the few-shot curves.

Writes a markdown file (default bench/results.md) with the machine fingerprint.
Performance figures are ratios against baselines measured in the same run
(building the IR, the MACs proxy), never absolute pass/fail thresholds.

    python bench/run.py --out bench/results.md [--quick]

Each section (``--only NAME``; see ``SECTIONS``) writes ``bench/results/NAME.md``;
``results.md`` is assembled from them. ``--quick`` runs the short form of each.
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


def fbnet_here(quick: bool) -> list[str]:
    """Every estimator against the committed FBNet cifar100 table measured on this CPU."""
    from costmodels.harness.compare import compare
    from costmodels.tables import read_table

    truths = sorted((ROOT / "datasets" / "fbnet").glob("*-ort-fbnet-cifar100.csv"))
    if not truths:
        return ["(FBNet accuracy skipped: no datasets/fbnet/*-ort-fbnet-cifar100.csv)", ""]
    truth_path = truths[0]
    luts = sorted((ROOT / "datasets" / "fbnet").glob("*-ort-fbnet-cifar100-lut.sqlite"))
    blocks = sorted((ROOT / "datasets" / "fbnet").glob("*blocklut*.sqlite"))
    truth = read_table(truth_path, space="fbnet")
    specs = ["flops", "params", "roofline:epyc_2c", "gbdt", "gnn", "eyeriss", "fpga"]
    specs += [f"lut:{p}" for p in luts[:1]] + [f"blocklut:{p}" for p in blocks[:1]]
    k = 60
    log(f"FBNet accuracy on {truth_path.name} ({len(truth)} archs, learned fitted on {k})")
    res = compare(truth, specs, space="fbnet", dataset="cifar100", train_samples=k, seed=0,
                  reference_only=["eyeriss", "fpga"])
    rows = [f"### Accuracy on FBNet cifar100 here ({truth_path.name}: {len(truth)} random "
            f"architectures measured with ONNX Runtime; learned backends fitted on {k}, all "
            f"scored on the other {len(truth) - k})", "",
            "| backend | Kendall τ | Spearman | MAPE % | ±10% acc | measurements to build |",
            "|---|---|---|---|---|---|"]
    for r in res.ranked("kendall"):
        acc = r.metric("acc10")
        name = r.name.replace(str(ROOT) + "/", "")
        rows.append(f"| {name} | {r.metric('kendall'):.3f} | {r.metric('spearman'):.3f} | "
                    f"{r.metric('mape'):.1f} | {'' if math.isnan(acc) else f'{acc * 100:.0f}%'} | "
                    f"{'' if r.build_measurements is None else r.build_measurements} |"
                    + (f" {r.first_error}" if r.first_error else ""))
    rows += ["", "eyeriss and fpga model other hardware: illustration only.", ""]
    return rows + fbnet_fewshot(truth, 2 if quick else 5)


#: FBNet sources of the few-shot table: analytical models of *other* hardware (not this
#: CPU's calibrated spec), each evaluated on the truth's architectures
FBNET_SOURCES = ("roofline:cortex_a72", "roofline:desktop_gpu", "roofline:x86_generic",
                 "eyeriss", "fpga")


def fbnet_fewshot(truth, seeds: int) -> list[str]:
    """Few-shot on FBNet: the truth's k random architectures + other hardware's tables."""
    import numpy as np

    from costmodels import registry
    from costmodels.spaces import get_space
    from costmodels.tables import LatencyTable
    from predictors.fewshot import point, prepare

    space = get_space("fbnet")
    nets = [space.build_network(a, "cifar100") for a in truth.arch_str]
    srcs = [LatencyTable(np.full(len(truth), -1), truth.arch_str,
                         np.array([e.latency_ms for e in registry.create(b).estimate_many(nets)]),
                         source=f"fbnet_{b.replace(':', '_')}.csv") for b in FBNET_SOURCES]
    tgt = prepare(truth, srcs, "cifar100", space=space, nets=nets)
    ks = (5, 10, 20, 50)
    log(f"FBNet few-shot: {len(srcs)} analytical sources, k={ks}, {seeds} seeds")
    head = "| predictor |" + "".join(f" k={k} ρ | τ | ±10% |" for k in ks)
    rows = [f"#### Few-shot on FBNet here (k random architectures of the table above, scored on "
            f"the other {len(truth)} − k; {seeds} seeds; sources: "
            f"{', '.join(FBNET_SOURCES)} on the same architectures)", "", head,
            "|" + "---|" * (head.count("|") - 1)]
    for model, select in (("fewshot", "random"), ("fewshot", "diverse"), ("transfer", "random"),
                          ("gbdt", "random")):
        cells = []
        for k in ks:
            r = point(tgt, model, k, seeds, select)
            cells.append(f" {r['spearman']:.3f} | {r['kendall']:.3f} | {100 * r['acc10']:.1f}% |")
        label = model if select == "random" else f"{model}, cells from `costmodels select`"
        rows.append(f"| {label} |" + "".join(cells))
    return rows + ["", "The sources are analytical models of other hardware (no other device "
                   "measured FBNet here; HW-NAS-Bench's FBNet tables are not in the repo): what "
                   "the mix takes from them is their ranking of compute and memory work, not a "
                   "measured device's quirks.", ""]


def whole_space(quick: bool) -> list[str]:
    """Every estimator against the whole-space NB201 truth measured on this CPU."""
    from costmodels.harness.compare import compare
    from costmodels.tables import read_table
    from measure.fingerprint import device_slug

    slug = device_slug()
    truth_path = DATA / f"{slug}-ort-cifar10-all.csv"
    if not truth_path.exists():
        return [f"(whole-space accuracy skipped: no {truth_path.name})", ""]
    lut = DATA / f"{slug}-ort-cifar10-lut.sqlite"
    truth = read_table(truth_path)
    specs = ["flops", "params", "roofline:epyc_2c", "gbdt", "eyeriss", "fpga"]
    specs += [f"lut:{lut}"] if lut.exists() else []
    k = 100
    log(f"whole-space accuracy on {truth_path.name} ({len(truth)} cells)")
    res = compare(truth, specs, train_samples=k, seed=0, reference_only=["eyeriss", "fpga"])
    rows = [f"### All {len(truth):,} NAS-Bench-201 CIFAR-10 cells measured here "
            f"({truth_path.name}; learned backends and proxies fitted on {k} cells, all scored "
            f"on the other {len(truth) - k:,})", "",
            "| backend | Kendall τ | Spearman | MAPE % | ±10% | top-5% overlap | "
            "measurements to build |", "|---|---|---|---|---|---|---|"]
    for r in res.ranked("kendall"):
        acc = r.metric("acc10")
        rows.append(f"| {r.name.replace(str(ROOT) + '/', '')} | {r.metric('kendall'):.3f} | "
                    f"{r.metric('spearman'):.3f} | {r.metric('mape'):.1f} | "
                    f"{'' if math.isnan(acc) else f'{acc * 100:.0f}%'} | "
                    f"{r.metric('topk'):.2f} | "
                    f"{'' if r.build_measurements is None else r.build_measurements} |")
    rows += ["", f"top-5% overlap: share of the {int(res.results[0].metric('topk_k'))} fastest "
             "measured cells that are among the same number of fastest estimated ones, over "
             "the real space rather than a 200-cell sample.", ""]
    return rows


def _module_section(module: str):
    def run(quick: bool) -> list[str]:
        import importlib

        sys.path.insert(0, str(ROOT / "bench"))
        mod = importlib.import_module(module)
        return [mod.section(quick), ""]
    return run


#: name -> (function(quick) -> markdown lines, what it measures); in results.md order
SECTIONS = {
    "query": (lambda q: query_costs(), "query cost of every backend over all NB201 cells"),
    "analytical": (_module_section("bench_analytical"),
                   "analytical backends: query ratios, HW-NAS-Bench references, silicon"),
    "measure": (_module_section("bench_measure"), "do measurements repeat (issue 18)"),
    "accuracy": (lambda q: accuracy_here(), "every estimator on the 200-cell NB201 truth "
                 "(Xeon tables of the first version)"),
    "wholespace": (whole_space, "every estimator on all 15,625 NB201 cells measured here"),
    "fbnet": (fbnet_here, "every estimator on this CPU's FBNet truth"),
    "models": (_module_section("bench_models"), "a folder of real-size user models"),
    "recurrent": (_module_section("bench_recurrent"), "the roofline on LSTM/GRU/RNN layers"),
    "elementwise": (_module_section("bench_elementwise"),
                    "the roofline on costly element-wise ops (Softplus, Log, Softmax ...)"),
    "lut": (_module_section("bench_lut"), "LUT on the test zoo, query cost"),
    "curves": (lambda q: curves_here(ROOT / "bench", q), "sample-efficiency curves here"),
    "fewshot": (_module_section("bench_fewshot"), "few-shot transfer vs HELP"),
    "ablation": (_module_section("ablation_fewshot"), "few-shot variants tried, not adopted"),
    "tvm": (_module_section("bench_tvm"), "ORT vs TVM untuned vs tuned from a space DB"),
    "farm": (_module_section("bench_farm"), "1 vs 2 loopback RPC boards"),
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=str(ROOT / "bench" / "results.md"))
    ap.add_argument("--quick", action="store_true", help="the short form of every section")
    ap.add_argument("--only", help="comma-separated sections to (re)run: "
                                   + ", ".join(SECTIONS))
    args = ap.parse_args(argv)
    only = [s.strip() for s in args.only.split(",")] if args.only else list(SECTIONS)
    bad = [s for s in only if s not in SECTIONS]
    if bad:
        ap.error(f"unknown section(s) {', '.join(bad)}; choose from {', '.join(SECTIONS)}")

    from measure.fingerprint import fingerprint

    parts = Path(args.out).parent / "results"
    parts.mkdir(parents=True, exist_ok=True)
    fp = fingerprint()
    machine = json.dumps({k: fp.get(k) for k in ("cpu_model", "cores", "os", "python",
                                                 "onnxruntime", "tvm", "loadavg")})
    for name in only:
        fn, _ = SECTIONS[name]
        log(f"section {name}")
        t0 = time.perf_counter()
        try:
            body = "\n".join(fn(args.quick))
        except Exception as exc:  # noqa: BLE001 - one failing section does not lose the rest
            body = f"(section {name} failed: {type(exc).__name__}: {exc})\n"
        head = (f"<!-- section {name}: run {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}"
                f"{' --quick' if args.quick else ''}, {time.perf_counter() - t0:.0f} s; "
                f"machine {machine} -->")
        (parts / f"{name}.md").write_text(head + "\n" + body + "\n")
    assemble(Path(args.out), parts)
    log(f"wrote {args.out}")
    return 0


def assemble(out: Path, parts: Path) -> None:
    """results.md = every section file in SECTIONS order, with when and how it ran."""
    lines = ["# costmodels benchmark results", "",
             "Written by `make bench` (`python bench/run.py`; one section: `--only NAME`). "
             "Each section says when it ran, how long it took and on which machine; every "
             "figure is measured in that run, performance as ratios to a baseline of the "
             "same run.", ""]
    for name, (_, what) in SECTIONS.items():
        f = parts / f"{name}.md"
        if not f.exists():
            lines += [f"## {name}: {what}", "", "(not run yet)", ""]
            continue
        head, _, body = f.read_text().partition("\n")
        lines += [f"## {name}: {what}", "", f"*{head[5:-4].strip()}*", "", body.strip(), ""]
    out.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    sys.exit(main())
