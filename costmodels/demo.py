"""``costmodels demo``: the whole job on this CPU, end to end, as public commands.

Each step is a ``costmodels`` command a user can run alone; the demo prints it,
then runs it in-process. Work files live in ``OUT/work/`` and every step resumes
or reuses what is there, so a rerun only does what is missing.

1. measure a NAS-Bench-201 sample with ONNX Runtime (the ground truth);
2. build the lookup table of every unique kernel of the space (starting from the
   LUT committed in ``datasets/nb201/`` when it was measured on this same device
   and runtime, so only what it lacks is measured);
3. calibrate the roofline of this CPU (micro-benchmarks, no network latencies);
4. fit GBDT, GNN and the hybrid (GBDT correcting the roofline and LUT) on part of
   the sample; run Eyeriss and FPGA models (models of other hardware: shown for
   illustration, never recommended);
5. compare everything against the held-out part of the sample and write the report.
"""

from __future__ import annotations

import argparse
import shlex
import shutil
import time
from pathlib import Path

DATASETS = Path(__file__).resolve().parents[1] / "datasets" / "nb201"


def committed_lut(dataset: str) -> Path | None:
    """The project's LUT for this device and runtime, if one is committed; else None."""
    from measure.config import MeasureConfig
    from measure.fingerprint import device_hash, device_slug, fingerprint
    from measure.lut.table import LutFile

    path = DATASETS / f"{device_slug()}-ort-{dataset}-lut.sqlite"
    if not path.is_file():
        return None
    with LutFile(path, readonly=True) as lut:
        theirs = lut.fingerprint
    return path if device_hash(theirs) == device_hash(fingerprint(MeasureConfig())) else None


def steps(out: Path, sample: int, train: int, seed: int, dataset: str) -> list[tuple[str, list[str]]]:
    work = out / "work"
    truth = work / f"truth-{dataset}-{sample}.csv"
    lut = work / f"lut-{dataset}.sqlite"
    spec = work / "roofline-local.toml"
    plan = [
        ("measure the ground truth",
         ["measure-space", "--space", "nb201", "--dataset", dataset, "--sample", str(sample),
          "--seed", str(seed), "--runtime", "ort", "--db", str(work / "runs.sqlite"),
          "-o", str(truth)]),
        ("build the lookup table",
         ["lut", "build", "--space", "nb201", "--dataset", dataset, "--runtime", "ort",
          "--db", str(lut)]),
    ]
    if not spec.exists():
        plan.append(("calibrate the roofline", ["roofline", "calibrate", "-o", str(spec)]))
    plan.append(
        ("compare every estimator",
         ["compare", "--truth", str(truth), "--dataset", dataset,
          "flops", "params", f"lut:{lut}", f"roofline:{spec}", "gbdt", "gnn", "hybrid",
          "eyeriss", "fpga", "--prior", f"roofline:{spec}", "--prior", f"lut:{lut}",
          "--reference-only", "eyeriss", "--reference-only", "fpga",
          "--train-samples", str(train), "--seed", str(seed), "-o", str(out)]))
    return plan


def run(args: argparse.Namespace) -> int:
    from rich.console import Console

    from costmodels.cli import main

    console = Console(stderr=True)
    out = Path(args.out)
    (out / "work").mkdir(parents=True, exist_ok=True)
    lut = out / "work" / f"lut-{args.dataset}.sqlite"
    seed_lut = None if lut.exists() else committed_lut(args.dataset)
    if seed_lut:
        shutil.copyfile(seed_lut, lut)
        console.print(f"starting the LUT from {seed_lut} (measured on this device and runtime)")
    t0 = time.perf_counter()
    for i, (title, argv) in enumerate(steps(out, args.sample, args.train, args.seed,
                                            args.dataset), start=1):
        console.rule(f"[bold]step {i}: {title}")
        console.print(f"$ costmodels {shlex.join(argv)}", style="dim", highlight=False)
        t = time.perf_counter()
        rc = main(argv)
        console.print(f"step {i} took {time.perf_counter() - t:.0f} s", style="dim")
        if rc != 0:
            console.print(f"[red]step {i} ({title}) failed with exit code {rc}; "
                          "rerun `make demo` to resume from here")
            return rc
    console.rule(f"[bold green]done in {time.perf_counter() - t0:.0f} s")
    console.print(f"report: {out / 'report.md'}  (figures and metrics.csv beside it)")
    return 0


def register(sub: argparse._SubParsersAction) -> None:
    from costmodels.cli import Formatter

    p = sub.add_parser(
        "demo", help="measure a sample here, build a LUT, fit, compare -> report/",
        formatter_class=Formatter, description=__doc__,
        epilog="example:\n  costmodels demo --out report --sample 300 --train 100")
    p.add_argument("--out", default="report", help="report folder (work files in OUT/work)")
    p.add_argument("--sample", type=int, default=300,
                   help="NAS-Bench-201 cells to measure as ground truth")
    p.add_argument("--train", type=int, default=100,
                   help="of which the learned predictors are fitted on this many")
    p.add_argument("--seed", type=int, default=0, help="seed of the sample and the split")
    p.add_argument("--dataset", default="cifar10", choices=["cifar10", "cifar100",
                                                            "ImageNet16-120"])
    p.set_defaults(func=run)

