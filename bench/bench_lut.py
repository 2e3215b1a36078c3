"""LUT benchmark: a LUT built on a folder of models against their measured latency, and the
cost of a ``lut:`` query over all NAS-Bench-201 cells against the MACs proxy's.

1. Accuracy. The test zoo (``tests/zoo``: small models from torch.onnx, onnx.helper and
   ONNX Runtime's quantizer, each at its own input shape) is written to a temporary
   folder; the LUT is built on its networks (``measure.lut.build.build_lut``: every
   unique kernel measured once, overhead terms calibrated on the same networks),
   each model is measured end to end with the same ``MeasureConfig``, and Kendall
   tau and MAPE of the LUT against the measurement are reported (the metrics of
   ``costmodels.harness.metrics``), with the bare kernel sum as the baseline.
2. Query cost. All 15,625 NB201 cells are built as IRs, then costed by ``flops``
   (the MACs proxy) and by the committed LUT (its space index: one matrix
   product), and by the same LUT without the index (the planner with its
   per-structure cache: what any other space gets). Ratios are to ``flops``.

Timings are of one run on the machine it ran on (a shared 2-core machine is noisy).

    python bench/bench_lut.py [--quick]
"""

from __future__ import annotations

import argparse
import math
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

COMMITTED_LUT = ROOT / "datasets" / "nb201" / "xeon-2c-ort-cifar10-lut.sqlite"


def _zoo_networks(folder: Path) -> list:
    """The zoo's networks, one models:DIR space per distinct input shape (as a user would)."""
    import shutil

    from costmodels.errors import CostModelError
    from costmodels.onnx_import import parse_input_shapes
    from costmodels.spaces import get_space
    from tests.zoo import build_zoo, read_index

    build_zoo(folder / "all")
    groups: dict[str | None, list[str]] = {}
    for name, entry in read_index(folder / "all").items():
        groups.setdefault(entry.get("input_shape"), []).append(name)
    nets = []
    for g, (shape, names) in enumerate(sorted(groups.items(), key=lambda kv: str(kv[0]))):
        sub = folder / f"g{g}"
        sub.mkdir()
        for name in names:
            shutil.copy(folder / "all" / name, sub / name)
            for extra in (folder / "all").glob(f"{Path(name).stem}*.data"):  # external weights
                shutil.copy(extra, sub / extra.name)
        space = get_space(f"models:{sub}",
                          input_shapes=parse_input_shapes([shape]) if shape else None)
        for arch in space.archs():
            try:
                nets.append(space.build_network(arch))
            except CostModelError as exc:
                print(f"[bench_lut] {arch}: not imported ({exc})", file=sys.stderr)
    return nets


def _measure_all(nets, config) -> list[float]:
    """End-to-end median (ms) of each network (the measurement layer's interleaved rounds)."""
    from costmodels.spaces import onnx_for
    from measure.lut.build import time_models

    names = [str(i) for i in range(len(nets))]
    out: dict[str, float] = {}
    time_models([onnx_for(n, seed=config.seed) for n in nets], names, config,
                lambda name, res: out.__setitem__(name, res.median_ms if res.ok else math.nan))
    return [out[n] for n in names]


def accuracy(quick: bool) -> tuple[list[str], dict]:
    from costmodels.harness.metrics import kendall, mape
    from measure.config import MeasureConfig
    from measure.lut.build import build_lut
    from measure.lut.model import LookupTable

    config = MeasureConfig(warmup=5, repeat=20 if quick else 100, max_retries=1,
                           rounds=2 if quick else 10)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        nets = _zoo_networks(tmp)
        t0 = time.perf_counter()
        rep = build_lut(str(tmp / "zoo.sqlite"), nets, config, calibrate=len(nets))
        t_build = time.perf_counter() - t0
        truth = _measure_all(nets, config)
        cal = LookupTable(tmp / "zoo.sqlite", best_effort=True)
        bare = LookupTable(tmp / "zoo.sqlite", best_effort=True, calibrated=False)
        est = [e.latency_ms for e in cal.estimate_many(nets)]
        raw = [e.latency_ms for e in bare.estimate_many(nets)]
        missing = [len(e.meta["missing_kernels"]) for e in cal.estimate_many(nets)]
    ok = [i for i, t in enumerate(truth) if t == t]
    y = [truth[i] for i in ok]
    figures = {"n": len(ok), "tau": kendall(y, [est[i] for i in ok]),
               "mape": mape(y, [est[i] for i in ok]), "tau_bare": kendall(y, [raw[i] for i in ok]),
               "mape_bare": mape(y, [raw[i] for i in ok])}
    lines = [
        f"LUT built on {len(nets)} zoo models ({rep.unique_kernels} unique kernels, "
        f"{rep.measured} measured, {len(rep.failed)} failed, {t_build:.0f} s; "
        f"`MeasureConfig(repeat={config.repeat}, rounds={config.rounds})`); calibration: "
        f"{rep.calibration.get('n_points', 0)} points, terms "
        f"{[t for t in rep.calibration.get('terms', []) if t not in rep.calibration.get('dropped', [])]}.",
        "",
        "| estimator | Kendall tau | MAPE |",
        "|---|---|---|",
        f"| LUT, calibrated | {figures['tau']:.3f} | {figures['mape']:.1f}% |",
        f"| LUT, bare kernel sum (baseline) | {figures['tau_bare']:.3f} | "
        f"{figures['mape_bare']:.1f}% |",
        "",
        "| model | measured ms | LUT ms | error | missing kernels |",
        "|---|---|---|---|---|",
    ]
    for i, net in enumerate(nets):
        err = (est[i] - truth[i]) / truth[i] * 100 if truth[i] == truth[i] else float("nan")
        lines.append(f"| {net.meta.get('arch_str', net.name)} | {truth[i]:.3f} | {est[i]:.3f} | "
                     f"{err:+.1f}% | {missing[i]} |")
    return lines, figures


def query_cost(quick: bool) -> tuple[list[str], dict]:
    from costmodels.registry import create
    from costmodels.spaces import nb201
    from measure.lut.model import LookupTable

    n = 3000 if quick else nb201.NUM_ARCHS
    t0 = time.perf_counter()
    nets = [nb201.build_network(i, "cifar10") for i in range(n)]
    t_ir = time.perf_counter() - t0
    flops = create("flops")
    t0 = time.perf_counter()
    flops.estimate_many(nets)
    t_flops = time.perf_counter() - t0
    lut = LookupTable(COMMITTED_LUT)
    t0 = time.perf_counter()
    lut.estimate_many(nets)
    t_lut = time.perf_counter() - t0
    planner = LookupTable(COMMITTED_LUT)
    planner._raw_index.clear()  # as for a space without a stored index
    t0 = time.perf_counter()
    planner.estimate_many(nets)
    t_plan = time.perf_counter() - t0
    figures = {"cells": n, "ir_s": t_ir, "flops_s": t_flops, "lut_s": t_lut, "plan_s": t_plan}
    lines = [
        f"Costing {n} NB201 cells (IRs built first: {t_ir:.2f} s):",
        "",
        "| backend | query s | ratio to flops | (IR build + query) / (IR build + flops) |",
        "|---|---|---|---|",
        f"| flops (MACs proxy, baseline) | {t_flops:.3f} | 1.0 | 1.00 |",
        f"| lut: (space index) | {t_lut:.3f} | {t_lut / t_flops:.1f} | "
        f"{(t_ir + t_lut) / (t_ir + t_flops):.2f} |",
        f"| lut: (planner, cached per structure) | {t_plan:.3f} | {t_plan / t_flops:.1f} | "
        f"{(t_ir + t_plan) / (t_ir + t_flops):.2f} |",
    ]
    return lines, figures


def section(quick: bool = False) -> str:
    """Markdown with the figures measured in this run."""
    acc, _ = accuracy(quick)
    cost, _ = query_cost(quick)
    return "\n".join(["## LUT: any model folder, query cost", "", "### Accuracy on the test zoo",
                      "", *acc, "", "### Query cost", "", *cost, ""])


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true", help="fewer repeats and cells")
    args = p.parse_args(argv)
    print(section(args.quick))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
