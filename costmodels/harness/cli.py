"""``costmodels compare`` and ``costmodels gen-models``: the harness on the command line."""

from __future__ import annotations

import argparse
import sys

COMPARE_EPILOG = """\
examples:
  # the MACs proxy against a phone's table measured elsewhere (Kendall tau ~0.68)
  costmodels compare --truth ../shared/refdata/nb201_pixel3.csv flops params -o report/
  # every backend against this CPU's measured sample; learned ones fitted on 100 rows
  costmodels compare --truth datasets/nb201/xeon-2c-ort-cifar10.csv flops \\
      lut:datasets/nb201/xeon-2c-ort-cifar10-lut.sqlite roofline:x86_generic gbdt gnn \\
      --train-samples 100 --seed 0 -o report/
  # few-shot transfer from other devices' tables, plus the curve from `costmodels fewshot`
  costmodels compare --truth pixel3.csv transfer --train-samples 20 \\
      --source gold_6240.csv --source titanx_1.csv --curve curve.csv -o report/
  # a folder of your own ONNX models: measure them once, then score estimators
  costmodels measure-space --space models:my_models/ --input-shape 1x3x224x224 \\
      --db truth.sqlite -o truth.csv
  costmodels compare --space models:my_models/ --input-shape 1x3x224x224 \\
      --truth truth.csv flops roofline eyeriss lut:lut.sqlite -o report/
  # FBNet (HW-NAS-Bench's second space)
  costmodels compare --space fbnet --dataset cifar100 --truth fbnet.csv flops roofline -o r/

A BACKEND is a registry spec (see `costmodels backends`: flops, params, lut:PATH,
roofline:SPEC, eyeriss, fpga, gbdt:DIR, gnn:DIR, measure:ort) or a latency-table
CSV measured elsewhere. gbdt, gnn, transfer, fewshot (both from --source tables) and
hybrid (GBDT correcting the --prior estimators) without :DIR are fitted on
--train-samples rows; with --train-samples, flops and params are fitted too (slope +
intercept) and every backend is scored on the remaining rows only.
Writes OUT/report.md, metrics.csv, predictions.csv and PNG figures.
"""


MODELS_TRUTH = "measure:ort"  # what measures compare's --models networks by default


def register(sub: argparse._SubParsersAction) -> None:
    from costmodels.cli import Formatter, add_space_args, one_line, positive_int, seed_int

    p = sub.add_parser("compare", help="rank estimators against measured latency -> report",
                       formatter_class=Formatter, epilog=COMPARE_EPILOG,
                       description="Score cost estimators against a measured latency table "
                                   "(Kendall, Spearman, Pearson, MAPE, ±10%, top-k; build and "
                                   "query cost) and write a report.")
    p.add_argument("backends", nargs="+", metavar="BACKEND", help="registry spec or table CSV")
    p.add_argument("--truth", required=True, metavar="TABLE.csv",
                   help="measured latency table (arch_index,arch_str,latency_ms)")
    p.add_argument("--duplicates", default="error", choices=["error", "mean", "first"],
                   help="what to do with a cell listed twice in the truth table")
    add_space_args(p, archs=False)
    p.add_argument("--train-samples", type=positive_int, metavar="K",
                   help="fit learned backends on K truth rows, score all on the rest")
    p.add_argument("--seed", type=seed_int, default=0, help="seed of the train/test split")
    p.add_argument("--source", action="append", default=[], metavar="TABLE.csv",
                   help="other devices' tables for few-shot transfer (repeatable)")
    p.add_argument("--prior", action="append", default=[], metavar="SPEC",
                   help="analytical estimator the hybrid backend corrects, e.g. "
                        "roofline:SPEC or lut:PATH (repeatable)")
    p.add_argument("--max-cells", type=positive_int, metavar="N",
                   help="score a random N of the truth cells (for slow backends, e.g. measure:ort)")
    p.add_argument("--reference-only", action="append", default=[], metavar="BACKEND",
                   help="scored and shown but never recommended (a model of other hardware; "
                        "need not be listed as a backend too); repeatable")
    p.add_argument("--curve", action="append", default=[], metavar="CURVE.csv",
                   help="few-shot curve CSV to plot (as `costmodels fewshot -o` writes it, "
                        "or one row per k and seed: k,seed,spearman,...); repeatable")
    p.add_argument("--models", metavar="DIR", help="also score the ONNX models in DIR")
    p.add_argument("--models-truth", default=None, metavar="SPEC",
                   help=f"backend that measures the --models networks (default: "
                        f"{MODELS_TRUTH})")
    p.add_argument("--fingerprint", metavar="TEXT", type=one_line,
                   help="machine line for the report; unset: this machine's, from the measure "
                        "package")
    p.add_argument("-o", "--output", required=True, metavar="DIR", help="report folder")
    p.set_defaults(func=cmd_compare)

    g = sub.add_parser("gen-models", help="write the generated non-NAS-Bench-201 ONNX models",
                       formatter_class=Formatter,
                       epilog="examples:\n  costmodels gen-models -o models/\n"
                              "  costmodels compare --truth truth.csv flops --models models/ "
                              "-o report/")
    g.add_argument("-o", "--output", required=True, metavar="DIR", help="folder for *.onnx")
    g.add_argument("--seed", type=seed_int, default=0, help="seed of the random weights")
    g.set_defaults(func=cmd_gen_models)


# backends whose argument is a file or folder the user names (a bare learned name is fitted)
_FILE_BACKENDS = ("lut", "blocklut", "gbdt", "gnn", "hybrid", "transfer", "fewshot")


def _check_backend_files(specs) -> None:
    """A backend or prior that names a file that is not there, or a spec that does not
    load, is a mistake said before any work (it was a 0-coverage row and exit 0, or a report
    written and exit 1; `fit` refused the same input)."""
    from pathlib import Path

    from costmodels.errors import CostModelError, InputError, first_line
    from costmodels.registry import create, split_spec

    for spec in specs:
        name, arg = split_spec(spec)
        path = (arg or "").partition("?")[0]
        if name in _FILE_BACKENDS and path and not Path(path).exists():
            raise InputError(f"backend {spec}: {path} does not exist (nothing was written)")
        if name in ("roofline", "eyeriss", "fpga") and arg:
            try:
                create(spec)
            except (CostModelError, OSError) as exc:
                raise InputError(f"backend {spec}: {first_line(str(exc))}") from None


def cmd_compare(args: argparse.Namespace) -> int:
    from costmodels.cli import open_space
    from costmodels.harness import run
    from costmodels.harness.report import check_report_dir

    check_report_dir(args.output, "-o")
    if args.models_truth is not None and not args.models:
        from costmodels.errors import InputError

        raise InputError(f"--models-truth {args.models_truth}: measures the --models "
                         "networks; give --models DIR too, or leave it out")
    args.models_truth = args.models_truth or MODELS_TRUTH
    space = open_space(args)
    from costmodels.tables import iter_csv, read_table, sidecar_mismatch

    if note := sidecar_mismatch(args.truth, space.check_dataset(args.dataset), args.batch):
        print(note, file=sys.stderr)

    from costmodels.registry import split_spec

    # bad side files fail now, not after the report is begun: sources, and the tables given
    # as backends or priors (a missing one was a 0-coverage row and exit 0)
    tables = [a for name, a in map(split_spec, [*args.backends, *args.prior, *args.reference_only])
              if name == "table" and a]
    for src in [*args.source, *tables]:
        read_table(src, duplicates="mean", space=space, absent="skip")
    _check_backend_files([*args.backends, *args.prior, *args.reference_only])
    from costmodels.harness.report import read_curve

    for curve in args.curve:
        iter_csv(curve, "few-shot curve")
        read_curve(curve)
    if args.models:                    # a folder of .onnx files, checked as --space models:DIR is
        from costmodels.spaces import get_space

        get_space(f"models:{args.models}")
        from costmodels.registry import resolve

        resolve(split_spec(args.models_truth)[0])  # a misspelt runtime before any model runs
        _check_backend_files([args.models_truth])
    # A --reference-only backend is scored (shown, never recommended) even when it is not
    # also listed as a backend.
    backends = list(args.backends) + [b for b in args.reference_only if b not in args.backends]
    _check_fitting_options(backends, args)
    alone = [b for b in backends if b in ("gbdt", "gnn")]
    if alone and args.train_samples and args.train_samples < 20:
        print(f"warning: --train-samples {args.train_samples}: {', '.join(alone)} learn from "
              "the measured cells alone and need tens to hundreds of them; their figures "
              "here will be poor", file=sys.stderr)
    result, _, _ = run(args.truth, backends, args.output, dataset=args.dataset,
                       space=space, batch=args.batch,
                       input_shapes=getattr(space, "input_shapes", None),
                       train_samples=args.train_samples, seed=args.seed, sources=args.source,
                       priors=args.prior,
                       max_cells=args.max_cells, reference_only=args.reference_only,
                       curve_csvs=args.curve, models_dir=args.models,
                       models_truth=args.models_truth, fingerprint=args.fingerprint,
                       duplicates=args.duplicates)
    if any(r.n_covered for r in result.results):
        return 0
    first = next((r.first_error for r in result.results if r.first_error), "")
    print(f"error: no backend estimated any cell of {args.truth}"
          + (f"; first error: {first}" if first else ""), file=sys.stderr)
    return 1


def _check_fitting_options(backends: list[str], args: argparse.Namespace) -> None:
    """A learned backend given by name is fitted here: without what its fit needs it is the
    user's mistake (one line, exit 2, before any work), not a backend that failed."""
    from costmodels.errors import InputError
    from costmodels.registry import LEARNED_BACKENDS

    twice = next((b for i, b in enumerate(args.backends) if b in args.backends[:i]), None)
    if twice:
        raise InputError(f"backend {twice} is listed twice; list each once (its two rows "
                         "would share one predictions column)")
    if args.source and not {"transfer", "fewshot"} & set(backends):
        raise InputError("--source is for the transfer and fewshot backends, which compare "
                         "fits on other devices' tables; neither is listed (a fitted model, "
                         "transfer:DIR, keeps its own sources)")
    if args.prior and "hybrid" not in backends:
        raise InputError("--prior is for the hybrid backend, which compare fits to correct "
                         "those estimators; hybrid is not listed (a fitted model, hybrid:DIR, "
                         "keeps its own priors)")
    for b in backends:
        if b not in LEARNED_BACKENDS:
            continue
        if not args.train_samples:
            raise InputError(f"{b} is fitted by compare on measured rows: give --train-samples "
                             f"K, or a fitted model as {b}:DIR (`costmodels fit {b}` makes one)")
        if b in ("transfer", "fewshot") and not args.source:
            raise InputError(f"{b} is fitted from other devices' latency tables of these "
                             "networks: give --source TABLE.csv (repeatable), or a fitted "
                             f"model as {b}:DIR")
        if b == "hybrid" and not args.prior:
            raise InputError("hybrid corrects other estimators: give --prior SPEC (repeatable, "
                             "e.g. --prior roofline --prior lut:LUT.sqlite), or a fitted model "
                             "as hybrid:DIR")


def cmd_gen_models(args: argparse.Namespace) -> int:
    from pathlib import Path

    from costmodels.cli import check_output, check_output_dir, check_overwrite_model
    from costmodels.harness.models import PRODUCER, ZOO, generate_models

    check_output_dir(args.output, "-o")
    for name in ZOO:  # a file of the user's under one of the zoo's names is not replaced
        path = Path(args.output) / f"{name}.onnx"
        if path.exists() or path.is_symlink():  # a folder there, a link to nowhere
            check_output(path, "-o", text=False)
        check_overwrite_model(path, "-o", (PRODUCER,),
                              "write the models into another folder", marks=())
    paths = generate_models(args.output, seed=args.seed)
    print(f"wrote {len(paths)} models to {args.output}: {', '.join(p.stem for p in paths)}",
          file=sys.stderr)
    return 0
