"""``costmodels demo``: the whole job on this CPU, end to end, as public commands.

Each step is a ``costmodels`` command a user can run alone; the demo prints it,
then runs it in-process. Work files live in ``OUT/work/`` and every step resumes
or reuses what is there, so a rerun only does what is missing.

1. measure a sample of the space (``--space nb201`` by default; ``fbnet``;
   ``models:DIR``) with ONNX Runtime (the ground truth), or take ``--truth``; models
   that fail to run keep an error row, and the demo goes on with the others when more
   than ``--train`` were measured;
2. build the lookup table: for NAS-Bench-201 every unique kernel of the space
   (starting from the LUT committed in ``datasets/nb201/`` when it was measured on
   this same device and runtime, so only what it lacks is measured); for other
   spaces the kernels of the measured architectures;
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
DATASETS_ENV = "COSTMODELS_DATASETS"


def datasets_dirs() -> list[Path]:
    """Where the demo looks for committed NB201 LUTs: ``$COSTMODELS_DATASETS`` (a folder
    holding ``nb201/``), the source tree's ``datasets/nb201`` (a clone), then
    ``./datasets/nb201`` (an installed wheel run from a clone); existing folders only."""
    import os

    found: list[Path] = []
    env = os.environ.get(DATASETS_ENV)
    for d in ([Path(env).expanduser() / "nb201"] if env else []) + [
            DATASETS, Path.cwd() / "datasets" / "nb201"]:
        if d.is_dir() and d.resolve() not in [f.resolve() for f in found]:
            found.append(d)
    return found


def committed_lut(dataset: str) -> Path | None:
    """The project's LUT for this device and runtime, if one is committed (in a folder of
    :func:`datasets_dirs`) and was measured with the settings `lut build` uses by default
    (the drift reference on); else None."""
    from measure.fingerprint import device_slug

    name = f"{device_slug()}-ort-{dataset}-lut.sqlite"
    for folder in datasets_dirs():
        path = folder / name
        if path.is_file() and _usable_lut(path):
            return path
    return None


CHECK_CELLS = (1462, 5374, 8843, 11472, 13714, 15208)  # NB201 cells, a mix of op kinds
LUT_AGREES = (0.8, 1.25)  # a committed LUT's estimate / the time measured here, geomean


def lut_reads_here(path: Path, dataset: str) -> float:
    """The geometric mean of LUT ``path``'s estimate over the time measured here of
    :data:`CHECK_CELLS` (the measurement layer's default protocol, a few seconds). A LUT
    measured on a machine of this CPU name, cores and runtime can still be another part:
    an "AMD EPYC" of 512 KiB of L2 per core ran the committed LUT's cells 1.45x slower
    than the one it was measured on (its estimates read 0.69x in the demo's report)."""
    import math

    from costmodels.spaces import nb201, onnx_for
    from measure.config import MeasureConfig
    from measure.lut.model import LookupTable
    from measure.rounds import measure_many
    from measure.timing import pinned

    nets = [nb201.build_network(i, dataset) for i in CHECK_CELLS]
    est = [e.latency_ms for e in LookupTable(path).estimate_many(nets)]
    config = MeasureConfig()
    with pinned(config.pin_cpu, config.threads):
        res = measure_many([onnx_for(n) for n in nets], config, [str(i) for i in CHECK_CELLS])
    ratios = [e / r.median_ms for e, r in zip(est, res, strict=True)
              if r.ok and r.median_ms > 0 and e > 0]
    return math.exp(sum(map(math.log, ratios)) / len(ratios)) if ratios else math.nan


def _usable_lut(path: Path) -> bool:
    """Was the LUT at ``path`` measured on a machine of this kind (CPU model, cores,
    architecture, runtime and its version; not the OS kernel build) with today's settings?"""
    import json

    from measure.config import MeasureConfig
    from measure.fingerprint import device_hash, fingerprint
    from measure.lut.build import settings_differences
    from measure.lut.table import LutFile

    with LutFile(path, readonly=True) as lut:
        theirs, stored = lut.fingerprint, json.loads(lut.meta().get("config") or "{}")
    ours = MeasureConfig(drift_ref=True)
    if not stored or settings_differences(stored, ours):
        return False
    # the machine's kind, not its kernel build: a VM of the same CPU, cores and runtime
    # gets a new host kernel version with each image, and times the kernels the same
    here = fingerprint(ours)
    return device_hash({**theirs, "os_kernel": ""}) == device_hash({**here, "os_kernel": ""})


def steps(out: Path, sample: int | None, train: int, seed: int, dataset: str | None,
          space: str = "nb201", truth: str | None = None,
          input_shape: list[str] | None = None) -> list[tuple[str, list[str]]]:
    """The demo's commands. ``space`` is nb201, fbnet or models:DIR; ``sample`` None = all."""
    work = out / "work"
    tag = _slug(space) + (f"-{dataset}" if dataset else "")
    lut = work / f"lut-{tag}.sqlite"
    spec = work / "roofline-local.toml"
    where = ["--space", space] + (["--dataset", dataset] if dataset else [])
    where += [a for s in (input_shape or []) for a in ("--input-shape", s)]
    pick = ["--sample", str(sample), "--seed", str(seed)] if sample else []
    plan = []
    if truth is None:
        truth_path = work / f"truth-{tag}-{sample or 'all'}.csv"
        plan.append(("measure the ground truth",
                     ["measure-space", *where, *pick, "--runtime", "ort",
                      "--db", str(work / "runs.sqlite"), "-o", str(truth_path)]))
    else:
        truth_path = Path(truth)
    # NB201: every unique kernel of the whole space (73); other spaces: the kernels of the
    # architectures being scored (FBNet cannot be enumerated; a folder is small).
    lut_pick = [] if space == "nb201" else (["--archs", str(truth_path)])
    # Off NB201 the networks are the truth's own: the LUT's overhead terms are calibrated on
    # the networks compare fits on (its split, written before that step), never on the
    # ones it scores.
    no_cal = [] if space == "nb201" else ["--calibrate", "0"]
    plan.append(("build the lookup table",
                 ["lut", "build", *where, *lut_pick, "--runtime", "ort", "--db", str(lut),
                  *no_cal]))
    if space != "nb201":
        plan.append((CALIBRATE_LUT,
                     ["lut", "build", *where, "--archs", str(train_archs_path(out, seed, train)),
                      "--runtime", "ort", "--db", str(lut)]))
    if not spec.exists():
        plan.append(("calibrate the roofline", ["roofline", "calibrate", "-o", str(spec)]))
    plan.append(
        ("compare every estimator",
         ["compare", *where, "--truth", str(truth_path),
          "flops", "params", f"lut:{lut}", f"roofline:{spec}", "gbdt", "gnn", "hybrid",
          "eyeriss", "fpga", "--prior", f"roofline:{spec}", "--prior", f"lut:{lut}",
          "--reference-only", "eyeriss", "--reference-only", "fpga",
          "--train-samples", str(train), "--seed", str(seed), "-o", str(out)]))
    return plan


CALIBRATE_LUT = "calibrate the lookup table on the training networks"


def train_archs_path(out: Path, seed: int, train: int) -> Path:
    return out / "work" / f"train-archs-seed{seed}-{train}.csv"


def argv_of(plan, title: str) -> list[str]:
    return next(a for t, a in plan if t == title)


def _write_train_archs(plan, args, space) -> None:
    """The networks compare will fit on (:func:`costmodels.harness.compare.split_truth`, same
    truth, --train and --seed), for the LUT's calibration step."""
    from costmodels.harness.compare import split_truth
    from costmodels.tables import read_table, write_table

    argv = argv_of(plan, "compare every estimator")
    truth = read_table(argv[argv.index("--truth") + 1], space=space)
    _, _, train_rows, _ = split_truth(truth, space, space.check_dataset(args.dataset), 1,
                                      args.train, args.seed)
    path = train_archs_path(Path(args.out), args.seed, args.train)
    archs = [truth.arch_str[r] for r in train_rows]
    write_table(path, [space.index(a) for a in archs], archs, truth.latency_ms[train_rows])
    cal = argv_of(plan, CALIBRATE_LUT)
    lut = Path(cal[cal.index("--db") + 1])
    if lut.exists():  # a rerun with another --train/--seed: points of scored networks go
        from measure.lut.table import LutFile

        with LutFile(lut) as f:
            f.keep_points(set(archs))


def _slug(space: str) -> str:
    name, _, arg = space.partition(":")
    return f"{name}-{Path(arg).name}" if arg else name


def run(args: argparse.Namespace) -> int:
    from costmodels.cli import main, open_space
    from costmodels.harness.report import check_report_dir
    from costmodels.progress import console as progress_console

    console = progress_console(stderr=True)
    out = check_report_dir(args.out, "--out")  # compare's files, before any work
    space = open_space(args)           # validates --space / --dataset before any work
    sample = args.sample
    if sample is None and space.size is None:
        sample = 300
    if sample is None and space.name == "nb201":
        sample = 300
    n = sample or space.size
    if args.truth is None and n is not None and args.train >= n:
        from costmodels.errors import InputError
        raise InputError(f"--train {args.train} leaves nothing to score: the demo measures "
                         f"{n} architectures; use --train below {n}")
    if args.truth is not None:         # a bad --truth fails now, not after the LUT is built
        from costmodels.errors import InputError
        from costmodels.tables import read_table

        rows = len(read_table(args.truth, space=space))
        if args.train >= rows:
            raise InputError(f"--train {args.train} leaves nothing to score: {args.truth} has "
                             f"{rows} rows; use --train below {rows}")
        _note_truth_machine(console, args.truth)
    (out / "work").mkdir(parents=True, exist_ok=True)
    plan = steps(out, sample, args.train, args.seed, args.dataset, args.space, args.truth,
                 args.input_shape)
    lut = Path(next(a for title, argv in plan if title == "build the lookup table"
                    for a in argv if a.endswith(".sqlite")))
    seed_lut = None if lut.exists() or space.name != "nb201" else committed_lut(args.dataset)
    misread = False
    if seed_lut:
        reads = lut_reads_here(seed_lut, args.dataset)
        if not LUT_AGREES[0] <= reads <= LUT_AGREES[1]:
            console.print(f"{seed_lut} reads {len(CHECK_CELLS)} cells at {reads:.2f}x their "
                          "time measured here (another part under the same CPU name?): "
                          "not used; the LUT step measures every kernel", highlight=False)
            seed_lut, misread = None, True
    if seed_lut:
        shutil.copyfile(seed_lut, lut)
        console.print(f"starting the LUT from {seed_lut} (measured on this device and runtime)")
    elif not lut.exists() and space.name == "nb201" and not misread:
        from measure.fingerprint import device_slug

        dirs = datasets_dirs()
        where = ", ".join(map(str, dirs)) or (
            f"no datasets folder (set ${DATASETS_ENV} to a clone's datasets/)")
        same = [p.name for d in dirs for p in d.glob(f"{device_slug()}-ort-*-lut.sqlite")]
        why = (f" ({', '.join(same)}: measured on another machine of this kind, or with "
               "other settings)" if same else "")
        step = next(i for i, (title, _) in enumerate(plan, start=1)
                    if title == "build the lookup table")
        console.print(f"no committed LUT of this device and runtime in {where}{why}: step "
                      f"{step} measures every kernel", highlight=False)
    t0 = time.perf_counter()
    for i, (title, argv) in enumerate(plan, start=1):
        if title == CALIBRATE_LUT:
            _write_train_archs(plan, args, space)
        console.rule(f"[bold]step {i}: {title}")
        console.print(f"$ costmodels {shlex.join(argv)}", style="dim", highlight=False)
        t = time.perf_counter()
        rc = main(argv)
        if rc in (130, 143):  # interrupted: the step said so in one line; a rerun resumes
            return rc
        console.print(f"step {i} took {time.perf_counter() - t:.0f} s", style="dim")
        if rc == 1 and argv[0] == "measure-space":
            truth = argv[argv.index("-o") + 1]
            measured = _partial_truth(console, Path(truth), args.train)
            if measured is not None:  # later steps use only the architectures measured
                rc = 0
                for _, later in plan[i:]:
                    later[:] = [str(measured) if a == truth and later[j - 1] == "--archs"
                                else a for j, a in enumerate(later)]
        if rc != 0:
            console.print(f"[red]step {i} ({title}) failed with exit code {rc}; "
                          "rerun the same command (`make demo`, or `costmodels demo` with "
                          "these options) to resume from here")
            return rc
    console.rule(f"[bold green]done in {time.perf_counter() - t0:.0f} s")
    console.print(f"report: {out / 'report.md'}  (figures and metrics.csv beside it)")
    return 0


def _note_truth_machine(console, truth: str) -> None:
    """The LUT and the roofline are built on this machine: say so when ``--truth`` was
    measured elsewhere (its sidecar names another device) or nothing says where."""
    from costmodels.tables import sidecar_device
    from measure.fingerprint import device_slug

    theirs, here = sidecar_device(truth), device_slug()
    if theirs and theirs != here:
        console.print(f"warning: {truth} was measured on {theirs} (its sidecar), not on this "
                      f"machine ({here}): the LUT and the roofline are built here, so their "
                      "scores are against another machine's latencies", highlight=False)
    elif not theirs:
        console.print(f"note: no sidecar says which machine measured {truth}; the LUT and the "
                      f"roofline are built on this one ({here}), so their scores mean "
                      "something only if it was measured here", highlight=False)


def _partial_truth(console, truth: Path, train: int) -> Path | None:
    """Go on when some architectures failed to measure (a model ORT cannot run in a user's
    folder) but enough were measured to fit on ``train`` and score the rest: the list of
    the measured ones (written beside ``truth``), or None when the step failed."""
    from costmodels.tables import read_table, write_table

    try:
        table = read_table(truth, space=None)
    except Exception:  # noqa: BLE001 - no usable table: the step failed
        return None
    good = len(table)
    if good <= train:
        console.print(f"[red]error: only {good} of {good + len(table.failed)} architectures "
                      f"were measured (the others failed, above); --train {train} leaves "
                      "nothing to score: fix or remove the models that failed"
                      + (f", or use --train below {good}" if good >= 2 else
                         " (the demo needs 2 measured models or more)"), highlight=False)
        return None
    measured = truth.with_name(truth.stem + "-measured.csv")
    write_table(measured, table.arch_index, table.arch_str, table.latency_ms)
    console.print(f"[yellow]warning: some architectures failed to measure (above; their rows "
                  f"in {truth} have an error column); going on with the {good} that were "
                  f"measured ({measured})")
    return measured


def register(sub: argparse._SubParsersAction) -> None:
    from costmodels.cli import Formatter, add_space_args, positive_int, seed_int

    p = sub.add_parser(
        "demo", help="measure a sample here, build a LUT, fit, compare -> report/",
        formatter_class=Formatter, description=__doc__,
        epilog="examples:\n  costmodels demo --out report --sample 300 --train 100\n"
               "  costmodels demo --space fbnet --sample 200 --train 60 --out report-fbnet\n"
               "  costmodels demo --space models:my_models/ --input-shape 1x3x224x224 "
               "--train 5 --out report-models\n"
               "  costmodels demo --truth datasets/nb201/xeon-2c-ort-cifar10.csv --out r/")
    p.add_argument("--out", default="report", help="report folder (work files in OUT/work)")
    add_space_args(p, archs=False)
    p.add_argument("--sample", type=positive_int, default=None,
                   help="architectures to measure as ground truth (default: 300 for nb201 "
                        "and fbnet; every model of a models:DIR folder)")
    p.add_argument("--train", type=positive_int, default=100,
                   help="of which the learned predictors are fitted on this many")
    p.add_argument("--seed", type=seed_int, default=0, help="seed of the sample and the split")
    p.add_argument("--truth", metavar="TABLE.csv",
                   help="score on this measured table instead of measuring a sample")
    p.set_defaults(func=run)

