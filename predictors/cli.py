"""``costmodels fit`` and ``costmodels fewshot``: the learned predictors' commands.

Handlers import the predictors lazily, so ``costmodels --help`` stays fast.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

FIT_EPILOG = """\
examples:
  # GBDT on a measured table (all its rows), then estimate every cell with it
  costmodels fit gbdt --train datasets/nb201/xeon-2c-ort-cifar10.csv -o models/gbdt-cpu
  costmodels estimate gbdt:models/gbdt-cpu --space nb201 --dataset cifar10 -o est.csv

  # few-shot: 10 measured cells on the new device + other devices' tables
  costmodels fit fewshot --train new_device_10.csv --source ../shared/refdata/*.csv \\
      -o models/new-device                  # candidates chosen/stacked by LOO on the 10
  costmodels fit transfer --train new_device_10.csv --source ../shared/refdata/*.csv \\
      -o models/new-device-mix              # the source mix alone

  # hybrid: GBDT correcting analytical estimates (roofline calibrated here, a LUT)
  costmodels fit hybrid --train datasets/nb201/xeon-2c-ort-cifar10.csv \\
      --prior roofline:xeon_2c --prior lut:datasets/nb201/xeon-2c-ort-cifar10-lut.sqlite \\
      -o models/hybrid-cpu

  # layer-graph GNN on a folder of ONNX models
  costmodels fit gnn --space models:my_models --train truth.csv -o models/gnn-mine

Each model loads with the backend of its name (gbdt:DIR, hybrid:DIR, gnn:DIR,
transfer:DIR, fewshot:DIR); a directory holding another class is refused with
the name to use. transfer and fewshot need --source: tables of the same space (NB201 cells by
index; FBNet and models:DIR by arch_str, and only networks the sources list);
hybrid needs --prior; the fit stores file arguments as absolute paths (a bare
`roofline`: the spec it loads now), the files must stay there, and a load warns
when one has changed since the fit.
"""

FEWSHOT_EPILOG = """\
examples:
  costmodels fewshot --target ../shared/refdata/nb201_gold_6240.csv \\
      --source ../shared/refdata/*.csv --model transfer --samples 10,20,50,100 \\
      --seeds 5 --select diverse -o bench/fewshot_gold.csv
  costmodels fewshot --target ../shared/refdata/nb201_pixel3.csv --model gbdt \\
      --samples 10,100,1000 -o bench/gbdt_pixel3.csv

For each k: k cells are drawn with each seed (random, or diverse: spread over
the sources' consensus latency range and the feature space), the model is
fitted on them, and Spearman, Kendall tau, MAPE and ±10% accuracy are computed
on every other cell of the target table, averaged over the seeds. A source
with the target's own device name is skipped. Writes the CSV and a PNG plot
next to it (same name, .png).
"""


def _samples(text: str) -> list[int]:
    try:
        out = [int(s) for s in text.split(",") if s.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}"
                                         ) from None
    if not out or any(k < 1 for k in out):
        raise argparse.ArgumentTypeError("sample sizes must be positive integers")
    if len(set(out)) != len(out):
        raise argparse.ArgumentTypeError(f"{text!r} lists a size twice; each k is one point "
                                         "of the curve")
    return out


SELECT_EPILOG = """\
examples:
  # 5 NB201 cells to measure on a new device, spread by the reference devices
  costmodels select 5 --source ../shared/refdata/*.csv -o cells.csv
  costmodels measure-space --archs cells.csv --db new.sqlite -o new_device_5.csv
  costmodels fit fewshot --train new_device_5.csv --source ../shared/refdata/*.csv \\
      -o models/new-device

  # FBNet: candidates are the architectures the source tables list
  costmodels select 10 --space fbnet --source fbnet_dev1.csv fbnet_dev2.csv -o cells.csv

diverse (the default): the candidates ranked by the sources' consensus latency (MACs
without sources), cut into K equal bins, one cell of each bin, far in features from the
others; random: K cells drawn with --seed; active: greedy max-min where the sources
disagree. What it buys depends on K and the space (bench sections fewshot and fbnet):
on the 13 NB201 reference devices (leave-one-out, the fewshot model) diverse cells gave
mean Spearman 0.960 at K=5 against 0.949 for random ones, but 0.963 at K=10 against
0.969 (--method random is the better choice there); on FBNet, 0.964 at K=10 against
0.958; for the hybrid on this CPU's table, 98.1% of cells within 10% at K=100 against
97.6%.
Writes arch_index,arch_str: the --archs file of measure-space.
"""


def register(sub) -> None:
    """Add ``fit``, ``fewshot`` and ``select`` to the ``costmodels`` command line."""
    from costmodels.cli import Formatter, add_space_args, one_line, positive_int, seed_int

    p = sub.add_parser("select", help="which K networks to measure on a new device (for fit "
                       "fewshot/transfer)", formatter_class=Formatter, epilog=SELECT_EPILOG,
                       description="Choose the K networks to measure on a new device.")
    p.add_argument("k", type=positive_int, metavar="K", help="how many networks to measure")
    p.add_argument("--source", nargs="+", action="extend", default=[], metavar="TABLE.csv",
                   help="latency tables of other devices: candidates are the networks they "
                        "list (all of a space without them: NB201's 15,625 cells, a "
                        "models:DIR folder; FBNet needs --archs or --source)")
    p.add_argument("--method", default="diverse", choices=["diverse", "random", "active"],
                   help="how to choose (see below)")
    _add_duplicates(p, "a --source table")
    add_space_args(p)
    p.add_argument("-o", "--output", required=True, metavar="cells.csv",
                   help="CSV to write (arch_index,arch_str)")
    p.set_defaults(func=cmd_select)

    p = sub.add_parser("fit", help="fit a learned predictor (gbdt, gnn, hybrid, transfer, "
                       "fewshot) on a latency table",
                       formatter_class=Formatter, epilog=FIT_EPILOG)
    from predictors.learned import LEARNED

    p.add_argument("model", choices=list(LEARNED), help="predictor to fit")
    p.add_argument("--prior", action="append", default=[], metavar="SPEC",
                   help="hybrid: an estimator it corrects, e.g. roofline:SPEC or lut:PATH "
                        "(repeatable)")
    p.add_argument("--priors", choices=["builtin", "none"],
                   help="transfer/fewshot: whether the built-in analytical priors (FLOPs, "
                        "params, Eyeriss and FPGA latency of every network of the sources) join the "
                        "sources (default: fewshot builtin, used when one prior alone "
                        "predicts the cells to 4%% RMS, leave-one-out; transfer none)")
    p.add_argument("--train", required=True, metavar="TABLE.csv",
                   help="measured latency table of the target device (every row is used)")
    p.add_argument("--source", nargs="+", action="extend", default=[], metavar="TABLE.csv",
                   help="transfer/fewshot: latency tables of other devices")
    p.add_argument("--limit", type=positive_int, metavar="N",
                   help="use only N rows of --train, drawn with --seed")
    p.add_argument("--seed", type=seed_int, default=0, help="seed of --limit and of the model")
    _add_duplicates(p, "--train or a --source table")
    p.add_argument("--device", type=one_line,
                   help="target device name for the manifest (default: from the "
                                    "--train file name)")
    add_space_args(p, archs=False)
    p.add_argument("-o", "--output", required=True, metavar="MODEL_DIR",
                   help="model directory to write (manifest.json + model file)")
    p.set_defaults(func=cmd_fit)

    p = sub.add_parser("fewshot", help="sample-efficiency curve of a predictor on a device",
                       formatter_class=Formatter, epilog=FEWSHOT_EPILOG)
    p.add_argument("--target", required=True, metavar="TABLE.csv",
                   help="latency table of the target device (ground truth)")
    p.add_argument("--source", nargs="+", action="extend", default=[], metavar="TABLE.csv",
                   help="latency tables of other devices (for --model fewshot or transfer; a "
                        "table of the target's own device is left out)")
    p.add_argument("--model", default="fewshot",
                   choices=["fewshot", "transfer", "gbdt", "gnn", "flops"],
                   help="predictor: fewshot or transfer (need --source), or one learned from "
                        "the target's cells alone")
    p.add_argument("--priors", choices=["builtin", "none"],
                   help="fewshot/transfer: built-in analytical priors as extra sources "
                        "(default: the model's; see `costmodels fit --help`)")
    p.add_argument("--samples", type=_samples, default=[10, 20, 50, 100, 1000],
                   metavar="K,K,...", help="training-set sizes")
    p.add_argument("--seeds", type=_seeds, default=5, help="seeds averaged per size (1 to "
                   f"{MAX_SEEDS})")
    p.add_argument("--select", default="random", choices=["random", "diverse", "active"],
                   help="which cells to measure")
    _add_duplicates(p, "--target or a --source table")
    add_space_args(p, archs=False)
    p.add_argument("-o", "--output", required=True, metavar="curve.csv",
                   help="CSV to write (plot: same name with .png)")
    p.set_defaults(func=cmd_fewshot)


def _build_or_leave_out(space, archs: list[str], dataset, batch: int, what: str):
    """(networks that can be built, mask over ``archs``): a model of a folder that cannot be
    costed is left out with a warning naming the first failure; none left is an error."""
    import numpy as np

    from costmodels.cli import build_networks
    from costmodels.errors import first_line
    from predictors.base import PredictorError

    errors: list = []
    nets = build_networks(space, archs, dataset, batch, errors=errors)
    keep = np.array([n is not None for n in nets], dtype=bool)
    if errors:
        first = first_line(str(errors[0][1])) or type(errors[0][1]).__name__
        if not keep.any():
            raise PredictorError(f"none of the {len(nets)} {what} can be built (first: {first})")
        print(f"warning: left out {len(errors)} of {len(nets)} {what} whose network cannot "
              f"be built (first: {first})", file=sys.stderr)
    return [n for n in nets if n is not None], keep


def _buildable_rows(space, table, dataset, batch: int, what: str):
    """(the rows of ``table`` whose network can be built, their networks), as
    :func:`_build_or_leave_out` leaves the others out."""
    import numpy as np

    nets, keep = _build_or_leave_out(space, list(table.arch_str), dataset, batch, what)
    return (table if keep.all() else table.subset(np.flatnonzero(keep))), nets


def _add_duplicates(p, where: str) -> None:
    p.add_argument("--duplicates", default="error", choices=["error", "mean", "first"],
                   help=f"a network listed twice in {where}: refuse (as compare does), "
                        "average the rows, or keep the first")


def _holds_a_model(folder: Path) -> bool:
    """Whether ``folder`` holds a model costmodels saved (its manifest names a class of ours)."""
    import json

    try:
        doc = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    from predictors.learned import backend_for_class

    return isinstance(doc, dict) and backend_for_class(doc.get("class")) is not None


# Below this many rows a model fitted on the target's cells alone is warned about.
FEW_ROWS = 20
MAX_SEEDS = 1000  # each seed is a fit per size: more is a typo, not a study


def _seeds(text: str) -> int:
    from costmodels.cli import positive_int

    v = positive_int(text)
    if v > MAX_SEEDS:
        raise argparse.ArgumentTypeError(f"at most {MAX_SEEDS}, got {v}")
    return v


def _save_or_clean(est, out: Path, model_files) -> None:
    """``est.save(out)``; when it fails part-way (a full disk: XGBoost and safetensors raise
    their own errors), the files of ours it left without a manifest are removed, so a rerun
    is not refused for a folder holding a half-written model, and the failure is one line."""
    from costmodels.errors import first_line
    from predictors.base import PredictorError
    from predictors.persistence import MANIFEST

    existed = out.is_dir()
    try:
        est.save(out)
    except Exception as exc:  # noqa: BLE001 - OSError, XGBoostError, SafetensorError ...
        if not (out / MANIFEST).is_file():
            for name in (*model_files, MANIFEST + ".tmp"):
                (out / name).unlink(missing_ok=True)
            if not existed and out.is_dir() and not any(out.iterdir()):
                out.rmdir()
        why = getattr(exc, "strerror", None) or first_line(str(exc)) or type(exc).__name__
        raise PredictorError(f"-o {out}: the model could not be saved ({why}); no half-written "
                             "model was left there: free disk space or write elsewhere, then "
                             "rerun") from None


def cmd_fit(args: argparse.Namespace) -> int:
    import numpy as np

    from costmodels.cli import check_output_dir, open_space
    from costmodels.tables import read_table, sidecar_device, sidecar_mismatch
    from predictors.base import PredictorError
    from predictors.learned import NEEDS, fit_from_spec
    from predictors.persistence import MODEL_FILES

    out = check_output_dir(args.output, "-o", writes=MODEL_FILES)
    others = sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) \
        if out.is_dir() else []
    if others and not _holds_a_model(out):
        raise PredictorError(f"-o {args.output}: holds files that are not a saved model "
                             f"({', '.join(others[:3])}{', ...' if len(others) > 3 else ''}); "
                             "a model is written into a new or empty folder (or over one "
                             "saved before)")
    space = open_space(args)
    table = read_table(args.train, duplicates=args.duplicates, space=space, absent="skip")
    if table.failed:
        print(f"note: {args.train}: left out {len(table.failed)} row(s) with an error and no "
              f"latency (first: {table.failed[0][0]}: {table.failed[0][1][:120]})",
              file=sys.stderr)
    if note := sidecar_mismatch(args.train, space.check_dataset(args.dataset), args.batch):
        print(note, file=sys.stderr)
    rows = np.arange(len(table))
    if args.limit and args.limit < len(table):
        rows = np.sort(np.random.default_rng(args.seed).choice(len(table), args.limit,
                                                              replace=False))
    elif args.limit and args.limit > len(table):
        print(f"note: --limit {args.limit}: {args.train} has {len(table)} rows; fitting on all "
              "of them", file=sys.stderr)
    table = table.subset(rows)
    device = args.device or table.device
    need = NEEDS.get(args.model)
    if args.source and need != "sources":
        raise PredictorError(f"--source is for `fit transfer` or `fit fewshot`; `fit "
                             f"{args.model}` learns from the target's cells alone")
    if args.prior and need != "prior":
        raise PredictorError(f"--prior is for `fit hybrid`, not `fit {args.model}`")
    if args.priors and need != "sources":
        raise PredictorError(f"--priors is for `fit transfer` or `fit fewshot`, not `fit "
                             f"{args.model}` (a hybrid takes estimators with --prior)")
    params = {"priors": args.priors} if args.priors else {}
    # read in the target's space (an FBNet or models:DIR table is keyed by its arch strings)
    from predictors.fewshot import other_sources

    sources, own = other_sources(table, [read_table(s, duplicates=args.duplicates, space=space,
                                                    absent="skip")
                                         for s in args.source], device)
    if own:
        print(f"note: skipped {len(own)} source table(s) of the target device {device} "
              f"itself ({', '.join(t.source or t.device for t in own)}: its device name, or "
              "the training latencies on every training cell)", file=sys.stderr)
    if args.source and not sources:
        raise PredictorError("no source table of another device is left after skipping the "
                             "target's own; give tables of other devices")
    table, nets = _buildable_rows(space, table, args.dataset, args.batch, "training rows")
    if need in (None, "prior") and len(table) < FEW_ROWS:
        what = ("corrects its priors with trees fitted on the target's cells alone" if need
                else "learns from the target's cells alone")
        print(f"warning: {len(table)} training rows: {args.model} {what} and needs tens to "
              "hundreds of them (fewshot or transfer, with --source tables of other devices, "
              "are made for a handful)", file=sys.stderr)
    if len(table) > 1 and np.ptp(table.latency_ms) == 0:
        print(f"warning: all {len(table)} training latencies are equal "
              f"({table.latency_ms[0]:g} ms): they rank nothing, and the model will predict "
              "about that for every network", file=sys.stderr)
    t0 = time.perf_counter()
    est = fit_from_spec(args.model, nets, table.latency_ms, sources=sources,
                        prior=list(args.prior), device=device, random_state=args.seed,
                        **params)
    fit_s = time.perf_counter() - t0
    measured_on = sidecar_device(args.train)
    if measured_on and isinstance(getattr(est, "trained_on_", None), dict):
        est.trained_on_["measured_on"] = measured_on  # the machine, for compare's in-sample test
    _save_or_clean(est, out, MODEL_FILES)
    report = getattr(est, "report_", None)
    if report:
        shares = ", ".join(f"{f} {w:.2f}" for f, w in report["chosen"].items())
        scores = ", ".join(f"{f} {v:.4f}" for f, v in report["cv_log_mse"].items())
        cv = (f"{report['cv']} log-MSE {scores}" if scores else "no cross-validation")
        print(f"chosen: {shares} (strategy {report['strategy']}, {cv}; built-in priors "
              f"{'used' if report.get('priors_used') else 'not used'}"
              + ("; counts on " + ", ".join(f"{b} {w:.2f}" for b, w in
                                            report["counts_basis"].items())
                 if isinstance(report.get("counts_basis"), dict) else "")
              + ")", file=sys.stderr)
    print(f"wrote {args.output}: {args.model} on {len(nets)} networks of {device} in "
          f"{fit_s:.1f} s (use it as {args.model}:{args.output})", file=sys.stderr)
    return 0


def cmd_select(args: argparse.Namespace) -> int:
    import csv

    from costmodels.cli import check_output, open_space, selected_archs
    from costmodels.tables import read_table
    from predictors import features as F
    from predictors import sampling
    from predictors.base import PredictorError
    from predictors.rows import Rows, table_keys

    out = check_output(args.output, "-o")
    space = open_space(args)
    tables = [read_table(s, duplicates=args.duplicates, space=space, absent="skip")
              for s in args.source]
    if args.archs is not None or args.sample or not tables:
        if not tables and space.spec == "fbnet" and not (args.archs is not None or args.sample):
            raise PredictorError("FBNet has 9^22 architectures: give the candidates with "
                                 "--archs FILE.csv (or --sample N), or --source tables")
        _, archs = selected_archs(args)
    else:
        archs = table_keys(tables)
    if args.k > len(archs):
        raise PredictorError(f"cannot choose {args.k} of {len(archs)} candidate networks; "
                             f"ask for at most {len(archs)}")
    dataset = space.check_dataset(args.dataset)
    nets, keep = _build_or_leave_out(space, archs, dataset, args.batch, "candidates")
    archs = [a for a, ok in zip(archs, keep, strict=True) if ok]
    if args.k > len(archs):
        raise PredictorError(f"cannot choose {args.k} of the {len(archs)} candidate networks "
                             f"that can be built; ask for at most {len(archs)}")
    lat = None
    if tables:
        rows = Rows.for_networks(nets, tables)
        lat = rows.matrix(tables)[rows.index(nets)]  # a candidate no source lists: named
    chosen = sampling.select(args.method, args.k, args.seed, F.features(nets), lat)
    from costmodels.tables import atomic_output

    with atomic_output(out, "w", newline="", encoding="utf-8") as fh:
        w = csv.writer(fh)
        w.writerow(["arch_index", "arch_str"])
        for i in chosen:
            idx = space.index(archs[i])
            w.writerow(["" if idx is None else idx, archs[i]])
    print(f"wrote {out}: {len(chosen)} of {len(archs)} candidate networks ({args.method}"
          f"{', spread by ' + str(len(tables)) + ' source tables' if tables and args.method != 'random' else ''}); measure "
          f"them with `costmodels measure-space --archs {out} ...`", file=sys.stderr)
    return 0


def cmd_fewshot(args: argparse.Namespace) -> int:
    from collections import Counter

    import numpy as np

    from costmodels.cli import check_output, open_space
    from predictors import fewshot
    from predictors.base import PredictorError

    if Path(args.output).name.lower().endswith(".png"):  # the table and its plot in one
        raise PredictorError(f"-o {args.output}: names the curve's CSV table; its plot is "
                             "written beside it with the suffix .png, so give a name such as "
                             f"{Path(args.output).with_suffix('.csv').name} (nothing was "
                             "written)")
    check_output(args.output, "-o")
    check_output(Path(args.output).with_suffix(".png"), "-o's plot", text=False,
                 png_ours_only=True)
    with_sources = args.model in ("transfer", "fewshot")
    if args.priors and not with_sources:
        raise PredictorError(f"--priors is for --model fewshot or transfer, not {args.model}")
    params = {"priors": args.priors} if args.priors else {}
    if with_sources and not args.source:
        raise PredictorError(f"--model {args.model} needs --source TABLE.csv (other devices' "
                             "tables)")
    if args.source and not with_sources:  # as `fit` refuses it: it was silently ignored
        raise PredictorError(f"--source is for --model fewshot or transfer, not {args.model} "
                             "(which fits on the target's samples alone)")
    t0 = time.perf_counter()
    from costmodels.tables import read_table

    space = open_space(args)
    table = read_table(args.target, duplicates=args.duplicates, space=space, absent="skip")
    dataset = space.check_dataset(args.dataset)
    # a folder model that cannot be costed is left out of the target, as fit and select do
    table, nets = _buildable_rows(space, table, dataset, args.batch, "target rows")
    tgt = fewshot.prepare(table, args.source if with_sources else (), dataset, space=space,
                          batch=args.batch, nets=nets, duplicates=args.duplicates)
    if tgt.left_out:
        print(f"note: left out {len(tgt.left_out)} source table(s) that are the target itself "
              f"({', '.join(t.source or t.device for t in tgt.left_out)}: its device, or its "
              "figures on every target cell)", file=sys.stderr)
    rows = []
    big = [k for k in args.samples if k >= len(tgt.y)]
    if big and len(big) < len(args.samples):  # all too big: the error below says it once
        print(f"skipping k={', '.join(map(str, big))}: the target has only {len(tgt.y)} "
              "networks (each k leaves at least one to score)", file=sys.stderr)
    for k in args.samples:
        if k >= len(tgt.y):
            continue
        tgt.reports.clear()
        r = fewshot.point(tgt, args.model, k, args.seeds, args.select, params)
        rows.append(r)
        chosen = ""
        if tgt.reports:
            top = Counter(max(rep["chosen"], key=rep["chosen"].get) for rep in tgt.reports)
            cv = np.mean([rep.get("cv_log_mse_final", np.nan) for rep in tgt.reports])
            used = sum(bool(rep.get("priors_used")) for rep in tgt.reports)
            most = ", ".join(f"{f} in {n}/{len(tgt.reports)}" for f, n in top.most_common())
            chosen = (f"  largest share: {most} fits ({tgt.reports[0]['strategy']}"
                      + (f", CV log-MSE {cv:.4f}" if np.isfinite(cv) else "")
                      + f"; priors used in {used}/{len(tgt.reports)} fits)")
        print(f"k={k:>5}  spearman {r['spearman']:.3f} ± {r['spearman_std']:.3f}  kendall "
              f"{r['kendall']:.3f}  MAPE {r['mape']:.1f}%  ±10% {100 * r['acc10']:.1f}%{chosen}",
              file=sys.stderr)
    if not rows:
        raise PredictorError(f"no --samples value leaves a network to score: the target "
                             f"{args.target} has {len(tgt.y)} networks; give a k below "
                             f"{len(tgt.y)} (--samples {', '.join(map(str, args.samples))})")
    png = fewshot.write_curve(rows, args.output)
    print(f"wrote {args.output} and {png} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    return 0
