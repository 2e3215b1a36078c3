"""Bring your own models: a folder of real-size ONNX exports through the public commands.

The README's walk-through, run for real: write the 12 models of
``bench/user_models.py`` (1-15 GFLOP, torch.onnx at opsets 11-17, some with
dynamic batch axes), then

    costmodels measure-space --space models:DIR --db runs.sqlite -o truth.csv
    costmodels lut build     --space models:DIR --db lut.sqlite
    costmodels roofline calibrate -o roofline.toml
    costmodels compare       --space models:DIR --truth truth.csv flops lut:lut.sqlite \
                             roofline:roofline.toml eyeriss fpga -o report/
    costmodels fit gbdt      --space models:DIR --train truth.csv -o gbdt/

and report Kendall tau and MAPE per backend from ``report/metrics.csv``.

    python bench/bench_models.py [--quick] [--work DIR]
"""

from __future__ import annotations

import argparse
import csv
import math
import shlex
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))


def _cli() -> list[str]:
    return [sys.executable, "-m", "costmodels.cli"]


def _run(argv: list[str], log: list[str]) -> float:
    t = time.perf_counter()
    cmd = _cli() + argv
    print(f"[bench_models] $ costmodels {shlex.join(argv)}", file=sys.stderr, flush=True)
    proc = subprocess.run(cmd, capture_output=True, text=True)
    dt = time.perf_counter() - t
    log.append(f"| `costmodels {' '.join(argv[:2])} ...` | {dt:.0f} s | exit {proc.returncode} |")
    if proc.returncode not in (0, 1):
        raise RuntimeError(f"costmodels {shlex.join(argv)} failed ({proc.returncode}):\n"
                           f"{proc.stderr[-2000:]}")
    return dt


def micro(quick: bool = False) -> list[str]:
    """Why the roofline has a last-level cache, NCHW conv classes and post passes: an ORT
    ``Add`` over growing streams, 3x3 depthwise chains whose channels ORT can / cannot
    reorder to NCHWc, and conv chains with ReLU or Clip (the calibration's own benchmark
    builders and timer, pinned)."""
    from analytical.calibrate import conv_chain, idlest_cpu, measure_dram_gbps, time_model
    from measure.timing import pinned

    reps = 5 if quick else 15
    lines = ["#### Why the roofline has a last-level cache level, NCHW conv classes and post "
             "passes", "",
             "ONNX Runtime `Add` of two tensors (one thread; three streams of the size given "
             "in all):", "", "| streams | GB/s |", "|---|---|"]
    with pinned(idlest_cpu()):
        for mib in (0.5, 2, 8, 16, 32, 96):
            elems = int(mib * 2**20 / 12)
            best = max(measure_dram_gbps(elems, repeats=reps) for _ in range(3))
            lines.append(f"| {mib:g} MiB | {best:.1f} |")
        lines += ["", "Chains of 16 depthwise 3x3 convs + ReLU at C channels and H x H: at a "
                  "multiple of 4 channels ORT runs them in its blocked NCHWc layout, at 2 "
                  "more in plain NCHW (its generic grouped path):", "",
                  "| C | H | layout | µs per conv | GFLOP/s |", "|---|---|---|---|---|"]
        for c, h in ((64, 32), (66, 32), (192, 56), (198, 56)):
            p = conv_chain(c, h, 3, c)
            t = time_model(p.model, p.feeds, repeats=reps, rounds=3) / p.ops
            lines.append(f"| {c} | {h} | {'NCHWc' if c % 4 == 0 else 'NCHW'} | "
                         f"{t * 1e6:.1f} | {p.flops / t / 1e9:.1f} |")
        lines += ["", "The same chains at 192 channels, 56 x 56 (NCHWc), with ReLU or Clip "
                  "(ReLU6) after each conv; the roofline's post pass is the output's 2.4 MB "
                  "read and written once more:", "",
                  "| conv | activation | µs per conv |", "|---|---|---|"]
        for kind, k, g in (("depthwise 3x3", 3, 192), ("1x1", 1, 1)):
            for act in ("Relu", "Clip"):
                p = conv_chain(192, 56, k, g, act)
                t = time_model(p.model, p.feeds, repeats=reps, rounds=3) / p.ops
                lines.append(f"| {kind} | {act} | {t * 1e6:.1f} |")
    return [*lines, ""]


def reorders(models: Path) -> list[str]:
    """The layout reorders ORT's optimised graph holds against those the fusion planner
    inserts, per model of the folder (what the roofline and the LUT cost as ``reorder``),
    planned as a LUT built here plans them: at this machine's NCHWc block."""
    import tempfile
    from collections import Counter

    import onnx
    import onnxruntime as ort

    from costmodels.fusion import kernels, load_rules
    from costmodels.spaces import get_space
    from measure.config import MeasureConfig
    from measure.lut.build import host_rules

    rules = host_rules(load_rules("ort"), MeasureConfig())
    space = get_space(f"models:{models}")
    lines = ["#### Layout reorders: ONNX Runtime's optimised graph against the planner "
             f"(at this machine's NCHWc block, {rules.layout.block})", "",
             "| model | ORT ReorderInput / ReorderOutput | planner | |", "|---|---|---|---|"]
    with tempfile.TemporaryDirectory() as tmp:
        for name in space.archs():
            so = ort.SessionOptions()
            so.intra_op_num_threads, so.log_severity_level = 1, 3
            so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
            so.optimized_model_filepath = str(Path(tmp) / f"{name}.onnx")
            ort.InferenceSession(str(models / f"{name}.onnx"), so,
                                 providers=["CPUExecutionProvider"])
            theirs = Counter(n.op_type for n in onnx.load(so.optimized_model_filepath,
                                                          load_external_data=False).graph.node)
            mine = Counter(k.ops[0] for k in kernels(space.build_network(name), rules))
            t, m = ((c["ReorderInput"], c["ReorderOutput"]) for c in (theirs, mine))
            lines.append(f"| {name} | {t[0]} / {t[1]} | {m[0]} / {m[1]} | "
                         f"{'same' if t == m else 'differ'} |")
    return [*lines, ""]


def _strip(text: str, keys: tuple[str, ...], sections: tuple[str, ...], name: str) -> str:
    """A spec's TOML less the lines starting with ``keys`` and the ``sections`` (a header
    and its lines up to the next header), renamed ``name``."""
    out, skip = [], False
    for line in text.splitlines(keepends=True):
        if line.startswith("["):
            skip = line.split("#")[0].strip() in sections
        if not skip and not line.startswith(keys):
            out.append(line)
    return "".join(out).replace('name = "local"', f'name = "{name}"')


def _keep_returned(lut: Path, old: Path) -> None:
    """A work folder's LUT built before outputs were bound becomes the baseline's file (its
    measurements kept), so that ``lut`` is built anew the current way."""
    if not lut.exists() or old.exists():
        return
    from measure.lut.keys import outputs_bound
    from measure.lut.table import LutFile

    with LutFile(lut, readonly=True) as f:
        bound = outputs_bound(f.meta())
    if not bound:
        lut.rename(old)


def section(quick: bool = False, work: str | Path | None = None) -> str:
    from user_models import write_models

    work = Path(work or ROOT / "bench" / "work-models")
    models = work / "models"
    names = (["resnet18", "mobilenet_v2_140", "vit_tiny16", "squeezenet", "shufflenet_v2_x2"]
             if quick else None)
    t = time.perf_counter()
    write_models(models, names)
    steps = [f"| write {len(list(models.glob('*.onnx')))} models (torch.onnx) | "
             f"{time.perf_counter() - t:.0f} s | |"]
    space = ["--space", f"models:{models}"]
    truth, lut, spec, report = (work / "truth.csv", work / "lut.sqlite", work / "roofline.toml",
                                work / "report")
    reps = ["--repeat", "20", "--warmup", "3"] if quick else []
    _run(["measure-space", *space, "--runtime", "ort", "--db", str(work / "runs.sqlite"),
          "-o", str(truth), *reps], steps)
    old_lut = work / "lut-returned.sqlite"  # the baseline: kernels timed as before 2026-12-07
    _keep_returned(lut, old_lut)
    _run(["lut", "build", *space, "--runtime", "ort", "--db", str(lut), *reps], steps)
    _run(["lut", "build", *space, "--runtime", "ort", "--db", str(old_lut), "--outputs",
          "returned", *reps], steps)
    if not spec.exists() or any(part not in spec.read_text()
                                for part in ("llc_", "[ops.transcendental]")):
        _run(["roofline", "calibrate", "-o", str(spec)], steps)
    text = spec.read_text()
    # the same calibration without its last-level cache (every kernel over the L2 at DRAM's
    # rate), and without that, its NCHW conv classes, transcendental class, run overhead and
    # post passes too (the roofline of 2026-12-06): the baselines of the rows above them
    two = work / "roofline-l2.toml"
    two.write_text(_strip(text, ("llc_",), (), "local-l2"))
    old = work / "roofline-v1.toml"
    old.write_text(_strip(text, ("llc_", "run_overhead_us", "post_pass_ops"),
                          ("[ops.conv_nchw]", "[ops.depthwise_nchw]",
                           "[ops.transcendental]"), "local-v1"))
    backends = ["flops", f"lut:{lut}", f"lut:{old_lut}", f"roofline:{spec}", f"roofline:{two}",
                f"roofline:{old}", "roofline:x86_generic", "eyeriss", "fpga"]
    _run(["compare", *space, "--truth", str(truth), *backends, "--reference-only", "eyeriss",
          "--reference-only", "fpga", "-o", str(report)], steps)
    _run(["fit", "gbdt", *space, "--train", str(truth), "-o", str(work / "gbdt")], steps)
    rows = []
    with open(report / "metrics.csv", newline="") as fh:
        for r in csv.DictReader(fh):
            def f(k, fmt=".3f", scale=1.0, r=r):
                v = r.get(k, "")
                return "—" if v in ("", "nan") or math.isnan(float(v)) else \
                    format(float(v) * scale, fmt)
            # absolute errors only for calibrated models of this device (not the raw MACs
            # proxy, not eyeriss/fpga, which model other hardware)
            absolute = r["calibrated"] == "1" and r["backend"].split(":")[0] not in (
                "eyeriss", "fpga")
            mape = f("mape", ".1f") if absolute else "—"
            acc = f"{f('acc10', '.0f', 100)}%" if absolute else "—"
            rows.append(f"| {r['backend']} | {r['n_covered']}/{r['n_total']} | {f('kendall')} | "
                        f"{f('spearman')} | {mape} | {acc} | {r['first_error'][:80]} |")
    n = len(list(models.glob("*.onnx")))
    per_model = []
    with open(report / "predictions.csv", newline="") as fh:
        # compare names a backend given by a path by the file's name
        cols = [f"roofline:{spec.name}_ms", f"roofline:{two.name}_ms",
                f"roofline:{old.name}_ms", f"lut:{lut.name}_ms", f"lut:{old_lut.name}_ms"]
        for r in csv.DictReader(fh):
            y = float(r["latency_ms"])
            per_model.append(f"| {r['arch_str']} | {y:.2f} | " + " | ".join(
                f"{float(r[c]):.2f} ({float(r[c]) / y - 1:+.0%})" if r.get(c) else "—"
                for c in cols) + " |")
    return "\n".join([
        f"### A folder of {n} user models (bench/user_models.py; measured here with ONNX "
        "Runtime, one thread)", "",
        "| backend | covered | Kendall τ | Spearman | MAPE % | ±10% | first error |",
        "|---|---|---|---|---|---|---|", *rows, "",
        "eyeriss and fpga model other hardware (reference only); flops is the raw MACs proxy "
        "(rank metrics only). `roofline.toml` is this machine's calibration "
        "(`costmodels roofline calibrate`); `roofline-l2.toml` is the same file less its "
        "last-level cache (`llc_*` fields), so every kernel over the L2 streams at DRAM's "
        "rate; `roofline-v1.toml` is that less its `conv_nchw` / `depthwise_nchw` / "
        "`transcendental` classes, its `run_overhead_us` and its `post_pass_ops` as well: the "
        "roofline as it was before all of them (2026-12-06). All three on the same truth. "
        "`lut.sqlite` times each one-kernel model with its outputs bound to buffers allocated "
        "once and takes the empty call off; `lut-returned.sqlite` is the same build with "
        "`--outputs returned`, as LUTs were built before 2026-12-07: each run's outputs "
        "handed back as new arrays and an Identity at the kernel's output shape taken off.",
        "",
        "| model | measured ms | roofline.toml ms | roofline-l2.toml ms | roofline-v1.toml ms "
        "| lut ms | lut-returned ms |",
        "|---|---|---|---|---|---|---|", *per_model, "", *reorders(models), *micro(quick),
        "Steps and their time (a rerun reuses the stores):", "",
        "| step | time | |", "|---|---|---|", *steps, ""])


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="5 models, 20 timed runs")
    ap.add_argument("--work", help="work folder (default bench/work-models)")
    a = ap.parse_args()
    print(section(a.quick, a.work))
