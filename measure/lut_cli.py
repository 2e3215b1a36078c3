"""``costmodels lut ...``: build, inspect, export, import and merge lookup tables.

Registered by :mod:`costmodels.cli` through ``register(subparsers)``; handlers
import the LUT modules lazily.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

LUT_EPILOG = """\
examples:
  costmodels lut build --space nb201 --dataset cifar10 --runtime ort --db lut.sqlite
  costmodels lut build --space models:my_models --input-shape 1x3x224x224 --db mine.sqlite
  costmodels lut build --space fbnet --sample 50 --db fbnet.sqlite
  costmodels lut build --rules naive --db naive.sqlite --calibrate 0     # the naive baseline
  costmodels lut show lut.sqlite
  costmodels lut export lut.sqlite -o lut.csv
  costmodels lut import lut.csv --db other.sqlite --runtime ort
  costmodels lut merge --into lut.sqlite more.sqlite
  costmodels estimate lut:lut.sqlite --space nb201 --dataset cifar10 -o lut.csv
  costmodels estimate 'lut:lut.sqlite?best-effort' -o lut.csv   # report missing kernels
  costmodels estimate lut:mine.sqlite --space models:my_models -o est.csv
"""


def _progress_callback(bar):
    tasks: dict[str, int] = {}

    def cb(stage: str, done: int, total: int) -> None:
        if stage not in tasks:
            tasks[stage] = bar.add_task(stage, total=total)
        bar.update(tasks[stage], completed=done, total=total)

    return cb


def cmd_build(args: argparse.Namespace) -> int:
    from costmodels.cli import check_output, selected_archs
    from costmodels.fusion import load_rules
    from costmodels.progress import progress
    from measure.cli import config_from_args
    from measure.lut.build import build_space, host_rules

    check_output(args.db, "--db", text=False)
    config = config_from_args(args)
    rules = host_rules(load_rules(args.rules or config.runtime), config)
    if args.archs is None and not args.sample:
        from costmodels.cli import open_space

        space = open_space(args)
        cover = space.covering_archs()
        if cover is not None:  # a space too large to enumerate, whose kernels are few
            archs = list(dict.fromkeys(cover + space.sample(max(args.calibrate, 1), args.seed)))
            print(f"{space.spec}: every kernel is in {len(cover)} covering architectures; "
                  f"{args.calibrate} random ones calibrate the overhead", file=sys.stderr)
        else:
            space, archs = selected_archs(args)
    else:
        space, archs = selected_archs(args)
    dataset = space.check_dataset(args.dataset)
    from measure.rounds import check_anchors

    check_anchors(config)  # before the LUT file is created
    t0 = time.perf_counter()
    with progress("lut build") as bar:
        rep = build_space(args.db, space, archs, dataset, args.batch, config,
                          calibrate=args.calibrate, rules=rules,
                          remeasure=args.remeasure, outputs=args.outputs,
                          progress=_progress_callback(bar))
    dt = time.perf_counter() - t0
    built = (f"{rep.networks - len(rep.uncostable)} of {rep.networks} networks (the others "
             "not built, below)" if rep.uncostable else f"{rep.networks} networks")
    print(f"wrote {args.db}: {rep.unique_kernels} unique kernels in {built} "
          f"of {space.spec} ({rules.name} rules), {rep.measured} measured, {rep.reused} reused, "
          f"{len(rep.failed)} failed, {len(rep.noisy)} of the measured noisy (round-to-round "
          f"CV > {config.max_cv}; `lut show`'s cv column is the spread of all its timed runs, "
          "and it counts the whole LUT); "
          f"{dt:.1f} s", file=sys.stderr)
    if rep.remeasure_since and not args.remeasure:
        print(f"note: carried on the --remeasure begun at {rep.remeasure_since} (interrupted "
              "then): the kernels of these networks measured before it were measured again, "
              "and the calibration points", file=sys.stderr)
    if rep.calibration:
        from measure.lut.calibrate import describe

        print(f"calibration: {describe(rep.calibration)}", file=sys.stderr)
    for line in rep.uncostable[:10]:
        print(f"not built: {line}", file=sys.stderr)
    for line in rep.failed[:10]:
        print(f"failed: {line}", file=sys.stderr)
    fp_path = write_fingerprint(args.db, rep, config, rules, space.spec, dataset, args.batch)
    print(f"wrote {fp_path}", file=sys.stderr)
    return 1 if rep.failed or rep.uncostable else 0


def write_fingerprint(db: str, rep, config, rules, space: str, dataset: str | None,
                      batch: int) -> str:
    """``<db stem>.fingerprint.json`` beside the LUT: device, settings, CVs, build times."""
    from pathlib import Path

    from measure.fingerprint import config_hash, device_hash, device_slug
    from measure.lut.table import LutFile

    with LutFile(db, readonly=True) as lut:
        fp = lut.fingerprint
        ok = [e for e in lut.entries() if e.ok]
        cal = lut.calibration
        n_points = len(lut.points())
    cvs = sorted(e.cv for e in ok if not math.isnan(e.cv))
    doc = {
        "device": device_slug(fp.get("cpu_model"), fp.get("cores")), "fingerprint": fp,
        "config": config.to_dict(), "config_hash": config_hash(config),
        "device_hash": device_hash(fp), "rules": rules.name, "rules_hash": rules.hash,
        "space": space, "dataset": dataset, "batch": batch, "networks": rep.networks,
        "unique_kernels": rep.unique_kernels, "entries": len(ok), "failed": len(rep.failed),
        "noisy": sum(e.noisy for e in ok), "cv_median": cvs[len(cvs) // 2] if cvs else None,
        "cv_max": cvs[-1] if cvs else None, "calibration_points": n_points,
        "calibration": cal,
        "last_run_seconds": {k: round(v, 2) for k, v in rep.seconds.items()},
    }
    path = Path(db)
    out = path.with_name(path.name.removesuffix(".sqlite") + ".fingerprint.json")
    out.write_text(json.dumps(doc, indent=1, default=str) + "\n")
    return str(out)


def _rules_name(path: str, text: str) -> str | None:
    """The name of a LUT's stored fusion rules (meta 'rules', JSON), the file refused by
    name when that is not what costmodels wrote."""
    from costmodels.errors import ModelFileError

    try:
        doc = json.loads(text)
    except ValueError:
        doc = None
    if not isinstance(doc, dict):
        raise ModelFileError(f"{path}: its meta 'rules' is not the fusion rules' JSON (edited "
                             "by hand, or corrupt); rebuild the LUT")
    return doc.get("name")


def cmd_show(args: argparse.Namespace) -> int:
    from measure.lut.keys import outputs_bound
    from measure.lut.table import LutFile

    with LutFile(args.lut, readonly=True) as lut:
        meta = lut.meta()
        version = lut.schema_version
        entries = list(lut.entries())
        points = lut.points()
        cal = lut.calibration
        fp = lut.fingerprint
    ok = [e for e in entries if e.ok]
    cvs = sorted(e.cv for e in ok if not math.isnan(e.cv))
    doc = {
        "path": args.lut, "runtime": meta.get("runtime"), "schema_version":
        version, "rules": _rules_name(args.lut, meta.get("rules", "{}")),
        "rules_hash": meta.get("rules_hash"), "device": fp.get("cpu_model"),
        "cores": fp.get("cores"), "runtime_version": fp.get("runtime_version"),
        "created_at": meta.get("created_at"), "entries": len(entries),
        # what `lut build` calls its unique kernels; the rest are measurement helpers
        # (a Null or Reorder kernel no network runs, uses 0)
        "kernels_used": sum(1 for e in entries if e.uses and e.uses > 0), "ok": len(ok),
        "failed": len(entries) - len(ok), "noisy": sum(e.noisy for e in ok),
        "cv_median": cvs[len(cvs) // 2] if cvs else None, "cv_max": cvs[-1] if cvs else None,
        "calibration_points": len(points),
        # how the one-kernel models were timed, so which empty run each entry loses
        "kernel_outputs": ("bound (the empty call taken off)" if outputs_bound(meta) else
                           "returned (the empty run at each output shape taken off)"),
        "calibration": cal,
    }
    if args.json:
        if args.entries:
            doc["entries_list"] = [e.__dict__ for e in entries]
        json.dump(doc, sys.stdout, indent=1, default=str)
        sys.stdout.write("\n")
        return 0
    from rich.table import Table

    from costmodels.progress import console as progress_console

    console = progress_console()
    for k, v in doc.items():
        if k != "calibration":
            console.print(f"[bold]{k}[/]: {v}")
    if cal:
        from measure.lut.calibrate import describe

        console.print("[bold]calibration[/]: " + describe(cal))
    if args.entries:
        t = Table(title="entries (raw one-kernel times)")
        for col in ("key", "median us", "p10 us", "p90 us", "CV", "runs", "uses", "ok"):
            t.add_column(col, justify="left" if col == "key" else "right")
        for e in entries:
            t.add_row(e.key, f"{e.median_ms * 1e3:.2f}", f"{e.p10_ms * 1e3:.2f}",
                      f"{e.p90_ms * 1e3:.2f}", f"{e.cv:.3f}", str(e.count), str(e.uses),
                      "yes" if e.ok else f"no: {e.error[:60]}")
        console.print(t)
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from costmodels.cli import check_output
    from measure.lut.table import LutFile, export_csv

    check_output(args.output, "-o")
    with LutFile(args.lut, readonly=True) as lut:
        n = export_csv(lut, args.output)
    print(f"wrote {args.output}: {n} entries", file=sys.stderr)
    return 0


def _open_for_write(path: str, runtime: str, rules_name: str):
    from pathlib import Path

    from costmodels.errors import ModelFileError
    from costmodels.fusion import load_rules
    from measure.lut.table import LutFile

    try:
        rules = load_rules(rules_name or runtime)
    except ModelFileError as exc:  # say which option named them
        raise ModelFileError(f"{'--rules' if rules_name else '--runtime'} "
                             f"{rules_name or runtime}: {exc}") from None
    shipped = rules.hash
    if runtime == "ort":  # the keys as `lut build` plans them here (this machine's block)
        from measure.config import MeasureConfig
        from measure.lut.build import host_rules

        rules = host_rules(rules, MeasureConfig())
    if not Path(path).exists():
        return LutFile.create(path, runtime, rules.doc, rules.hash, {"source": "import"}, {})
    with LutFile(path, readonly=True) as lut:  # refused with the file untouched
        have = (lut.runtime, lut.get_meta("rules_hash"))
    if have[0] != runtime or have[1] not in (rules.hash, shipped):
        raise ModelFileError(f"{path}: a LUT for runtime {have[0]!r} with fusion rules "
                             f"{have[1]}; it cannot take entries for {runtime!r} with rules "
                             f"{rules.hash} (the rules shipped now; its kernel keys would not "
                             "match). Import into a new --db, or rebuild the LUT with "
                             "`costmodels lut build`")
    return LutFile(path)


def cmd_import(args: argparse.Namespace) -> int:
    from pathlib import Path

    from costmodels.errors import ModelFileError
    from measure.lut.keys import (
        BOUND,
        OUTPUTS_META,
        entries_protocol,
        measured_runtimes,
        outputs_bound,
    )
    from measure.lut.table import merge_entries, read_csv

    entries = read_csv(args.csv)
    try:
        bound = entries_protocol(e.source for e in entries)
    except ValueError as exc:
        raise ModelFileError(f"{args.csv}: {exc}; import each kind into its own --db") from None
    if not entries:
        raise ModelFileError(f"{args.csv}: holds no entries (a header alone); nothing to "
                             "import")
    # an existing --db is opened only when it is of --runtime: one check covers both
    runtimes = measured_runtimes(e.source for e in entries)
    if runtimes and runtimes != {args.runtime}:  # refused before any file is made
        raise ModelFileError(
            f"{args.csv}: its entries were measured with {', '.join(sorted(runtimes))} "
            f"(their source column), not {args.runtime}: their kernels differ; import with "
            f"--runtime {sorted(runtimes)[0]}")
    new = not Path(args.db).exists()
    with _open_for_write(args.db, args.runtime, args.rules) as lut:
        if new and bound:  # an export of a LUT timed with bound outputs stays one
            lut.set_meta(OUTPUTS_META, BOUND)
        elif bound is not None and bound != outputs_bound(lut.meta()):
            raise ModelFileError(
                f"{args.csv}: its entries were timed with "
                f"{'bound' if bound else 'returned'} outputs, {args.db}'s with "
                f"{'returned' if bound else 'bound'} ones (`lut show`, kernel_outputs), so "
                "they take different empty runs off; import into a new --db")
        baseline = any(k.startswith("Null|") for k in lut.keys())
        stats = merge_entries(lut, entries, args.policy)
    print(f"{args.db}: {stats['added']} added, {stats['replaced']} replaced, {stats['kept']} "
          f"kept from {args.csv}", file=sys.stderr)
    if baseline and not any(e.key.startswith("Null|") for e in entries):
        print(f"note: {args.db} holds an empty-run baseline (Null| entries, as `lut build` "
              "measures): its values are one-kernel session times, and each estimate takes the "
              f"baseline off them; {args.csv}'s values are read the same way. Kernel times "
              "from another tool belong in a new LUT, where they count as they are",
              file=sys.stderr)
    return 0


def cmd_merge(args: argparse.Namespace) -> int:
    from costmodels.errors import InputError
    from measure.lut.table import LutFile, merge_luts

    for src_path in args.sources:
        if Path(src_path).resolve() == Path(args.into).resolve():
            raise InputError(f"lut merge: {src_path} is the --into LUT itself; nothing to merge "
                             "(nothing was written)")
    with LutFile(args.into) as dst:
        for src_path in args.sources:
            with LutFile(src_path, readonly=True) as src:
                stats = merge_luts(dst, src, args.policy)
            print(f"{args.into} <- {src_path}: {stats['added']} added, {stats['replaced']} "
                  f"replaced, {stats['kept']} kept, {stats['points']} calibration points",
                  file=sys.stderr)
        if args.refit:
            from measure.lut.calibrate import refit

            c = refit(dst)
            print(f"{args.into}: " + (f"calibration refit on {c['n_points']} points"
                                      if c else "no usable calibration point to refit on"),
                  file=sys.stderr)
    return 0


def cmd_refit(args: argparse.Namespace) -> int:
    from costmodels.errors import InputError
    from measure.lut.calibrate import DEFAULT_TERMS, refit, store_calibration
    from measure.lut.table import LutFile

    terms = tuple(t.strip() for t in args.terms.split(","))
    bad = sorted({t for t in terms if t not in DEFAULT_TERMS})
    if bad or not terms or len(set(terms)) != len(terms):
        why = (f"unknown term(s) {', '.join(map(repr, bad))}" if bad
               else "a term named twice")
        raise InputError(f"--terms {args.terms!r}: {why}; give some of "
                         f"{', '.join(DEFAULT_TERMS)}, each once (nothing was written)")
    with LutFile(args.lut, readonly=True) as lut:  # nothing to fit: fail with the file untouched
        n_points = len(lut.points())
        c = refit(lut, terms, store=False)
    if not c:
        why = ("holds no calibration points" if not n_points else
               f"holds {n_points} calibration points, none usable (a non-positive latency, or "
               "a kernel the LUT has no value for)")
        raise InputError(f"{args.lut}: {why}; measure networks for it with `costmodels lut "
                         "build --calibrate N`")
    with LutFile(args.lut) as lut:  # fitted once, above; only kept here
        store_calibration(lut, c)
    from measure.lut.calibrate import describe

    print(f"{args.lut}: {describe(c)}", file=sys.stderr)
    return 0


def register(sub) -> None:
    from costmodels.cli import Formatter, add_space_args, needs_command, nonneg_int
    from measure.cli import add_measure_args

    lut = sub.add_parser("lut", help="lookup tables: build, show, export, import, merge",
                         formatter_class=Formatter, epilog=LUT_EPILOG,
                         description="Fusion-aware lookup tables: each unique kernel measured "
                                     "once, networks estimated by summation plus a calibrated "
                                     "overhead.")
    lsub = lut.add_subparsers(dest="lut_command", metavar="COMMAND")

    p = lsub.add_parser("build", help="measure the unique kernels of a set of networks",
                        formatter_class=Formatter, epilog=LUT_EPILOG)
    add_space_args(p)
    add_measure_args(p)
    p.add_argument("--db", required=True, help="LUT file (SQLite; resumed if it exists)")
    p.add_argument("--rules", default="",
                   help="fusion rules: ort, tvm, naive (costmodels/fusion_rules) or a JSON "
                        "path (default: the runtime's)")
    p.add_argument("--calibrate", type=nonneg_int, default=30, metavar="N",
                   help="networks measured end to end to fit the overhead terms (0: none)")
    p.add_argument("--outputs", choices=("bound", "returned"), default=None,
                   help="how a new LUT times its one-kernel models (ONNX Runtime): 'bound' "
                        "(the default), each run writing into output buffers allocated once, "
                        "as a kernel's outputs live in the runtime's reused memory inside a "
                        "network, and only the empty call taken off; 'returned', each run's "
                        "outputs handed back as new arrays and the empty run at the kernel's "
                        "output shape taken off (how LUTs were built before 2026-12-07; for "
                        "comparisons). An existing --db keeps its own (`lut show`, "
                        "kernel_outputs)")
    p.add_argument("--remeasure", action="store_true",
                   help="measure the kernels of these networks and the calibration points "
                        "of --db again (e.g. after a noisy build); each old figure stays until "
                        "its new one is in, so an interrupted remeasure leaves a usable LUT "
                        "and the next build carries it on; kernels of other networks keep "
                        "theirs")
    p.set_defaults(func=cmd_build)

    p = lsub.add_parser("show", help="summary of a LUT file (runtime, device, CVs, calibration)",
                        formatter_class=Formatter, epilog=(
                            "examples:\n"
                            "  costmodels lut show datasets/nb201/xeon-2c-ort-cifar10-lut.sqlite\n"
                            "  costmodels lut show lut.sqlite --entries --json"))
    p.add_argument("lut", metavar="LUT", help="LUT file")
    p.add_argument("--entries", action="store_true", help="list every entry")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_show)

    p = lsub.add_parser("export", help="write the entries as CSV", formatter_class=Formatter,
                        epilog="examples:\n  costmodels lut export lut.sqlite -o lut.csv\n"
                               "The CSV holds the kernel entries (raw one-kernel medians, the "
                               "empty-run Null| entries\nincluded), not the calibration: a LUT "
                               "imported from it estimates uncalibrated until\n`lut build "
                               "--calibrate N` measures points for `lut refit`.")
    p.add_argument("lut", metavar="LUT", help="LUT file")
    p.add_argument("-o", "--output", required=True, help="CSV path")
    p.set_defaults(func=cmd_export)

    p = lsub.add_parser("import", help="read entries from a CSV (the export form) into a LUT",
                        formatter_class=Formatter, epilog=(
                            "examples:\n  costmodels lut import lut.csv --db other.sqlite "
                            "--runtime ort   # e.g. from another tool\n"
                            "median_ms is read in the LUT's convention: in a LUT with an "
                            "empty-run baseline\n(Null| entries: every `lut build`, every "
                            "export of one) a value is a one-kernel session\ntime and the "
                            "baseline is taken off it; in a LUT without one (a new file) it is "
                            "the\nkernel's time as it is."))
    p.add_argument("csv", help="CSV with at least key,median_ms")
    p.add_argument("--db", required=True, help="LUT file (created if missing)")
    p.add_argument("--runtime", default="ort",
                   help="runtime the times were measured with: its fusion rules (ort, tvm, "
                        "...) plan the kernels the LUT sums")
    p.add_argument("--rules", default="", help="fusion rules the keys follow (default: runtime's)")
    p.add_argument("--policy", default="lower-cv", choices=["lower-cv", "keep", "replace"],
                   help="which entry wins when a key is already there")
    p.set_defaults(func=cmd_import)

    p = lsub.add_parser("merge", help="merge LUT files into one", formatter_class=Formatter,
                        epilog=("examples:\n  costmodels lut merge monday.sqlite tuesday.sqlite "
                                "--into all.sqlite --refit"))
    p.add_argument("sources", nargs="+", help="LUT files to merge in")
    p.add_argument("--into", required=True, help="the LUT that receives them (must exist)")
    p.add_argument("--policy", default="lower-cv", choices=["lower-cv", "keep", "replace"],
                   help="which entry wins when both have a key")
    p.add_argument("--refit", action="store_true",
                   help="refit the overhead terms on all calibration points afterwards")
    p.set_defaults(func=cmd_merge)
    p = lsub.add_parser("refit", help="refit the overhead terms on the stored calibration points",
                        formatter_class=Formatter, epilog=(
                            "examples:\n  costmodels lut refit lut.sqlite --terms "
                            "intercept,scale   # drop the per-kernel term"))
    p.add_argument("lut", metavar="LUT", help="LUT file")
    p.add_argument("--terms", default="intercept,per_kernel,scale",
                   help="comma-separated terms: intercept, per_kernel, scale")
    p.set_defaults(func=cmd_refit)
    lut.set_defaults(func=needs_command(lut))
