"""``costmodels fit`` and ``costmodels fewshot``: the learned predictors' commands.

Handlers import the predictors lazily, so ``costmodels --help`` stays fast.
"""

from __future__ import annotations

import argparse
import sys
import time

FIT_EPILOG = """\
examples:
  # GBDT on a measured table (all its rows), then estimate every cell with it
  costmodels fit gbdt --train datasets/nb201/this_cpu.csv -o models/gbdt-cpu
  costmodels estimate gbdt:models/gbdt-cpu --space nb201 --dataset cifar10 -o est.csv

  # few-shot transfer: 10 measured cells on the new device + other devices' tables
  costmodels fit gbdt --train new_device_10.csv \\
      --source ../shared/refdata/nb201_titanx_1.csv --source ../shared/refdata/nb201_gold_6240.csv \\
      -o models/new-device

  # hybrid: GBDT correcting analytical estimates (roofline calibrated here, a LUT)
  costmodels fit hybrid --train datasets/nb201/xeon-2c-ort-cifar10.csv \
      --prior roofline:xeon_2c --prior lut:datasets/nb201/xeon-2c-ort-cifar10-lut.sqlite \
      -o models/hybrid-cpu

  # GCN predictor (BRP-NAS style) on NAS-Bench-201 cells
  costmodels fit gnn --train ../shared/refdata/nb201_pixel3.csv --limit 1000 -o models/gnn-pixel3

With --source, `fit gbdt` fits the few-shot transfer model (non-negative
combination of the source devices' latencies + a residual on features); it
loads with gbdt:MODEL_DIR like a plain GBDT. A hybrid also loads with
gbdt:MODEL_DIR; its --prior files must still exist where they were.
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
    return out


def register(sub) -> None:
    """Add ``fit`` and ``fewshot`` to the ``costmodels`` command line."""
    from costmodels.cli import Formatter

    p = sub.add_parser("fit", help="fit a learned predictor (gbdt, gnn, hybrid) on a latency table",
                       formatter_class=Formatter, epilog=FIT_EPILOG)
    p.add_argument("model", choices=["gbdt", "gnn", "hybrid"], help="predictor to fit")
    p.add_argument("--prior", action="append", default=[], metavar="SPEC",
                   help="hybrid: an estimator it corrects, e.g. roofline:SPEC or lut:PATH "
                        "(repeatable)")
    p.add_argument("--train", required=True, metavar="TABLE.csv",
                   help="measured latency table of the target device (every row is used)")
    p.add_argument("--source", nargs="+", action="extend", default=[], metavar="TABLE.csv",
                   help="latency tables of other devices: few-shot transfer mode")
    p.add_argument("--limit", type=int, metavar="N",
                   help="use only N rows of --train, drawn with --seed")
    p.add_argument("--seed", type=int, default=0, help="seed of --limit and of the model")
    p.add_argument("--device", help="target device name for the manifest (default: from the "
                                    "--train file name)")
    p.add_argument("--dataset", default="cifar10",
                   choices=["cifar10", "cifar100", "ImageNet16-120"],
                   help="NAS-Bench-201 dataset the table was measured with")
    p.add_argument("--batch", type=int, default=1, help="batch size the table was measured with")
    p.add_argument("-o", "--output", required=True, metavar="MODEL_DIR",
                   help="model directory to write (manifest.json + model file)")
    p.set_defaults(func=cmd_fit)

    p = sub.add_parser("fewshot", help="sample-efficiency curve of a predictor on a device",
                       formatter_class=Formatter, epilog=FEWSHOT_EPILOG)
    p.add_argument("--target", required=True, metavar="TABLE.csv",
                   help="latency table of the target device (ground truth)")
    p.add_argument("--source", nargs="+", action="extend", default=[], metavar="TABLE.csv",
                   help="latency tables of other devices (for --model transfer)")
    p.add_argument("--model", default="transfer", choices=["transfer", "gbdt", "gnn", "flops"],
                   help="predictor: transfer (needs --source) or one learned from the target's "
                        "cells alone")
    p.add_argument("--samples", type=_samples, default=[10, 20, 50, 100, 1000],
                   metavar="K,K,...", help="training-set sizes")
    p.add_argument("--seeds", type=int, default=5, help="seeds averaged per size")
    p.add_argument("--select", default="random", choices=["random", "diverse"],
                   help="which cells to measure")
    p.add_argument("--dataset", default="cifar10",
                   choices=["cifar10", "cifar100", "ImageNet16-120"],
                   help="NAS-Bench-201 dataset the tables were measured with")
    p.add_argument("-o", "--output", required=True, metavar="curve.csv",
                   help="CSV to write (plot: same name with .png)")
    p.set_defaults(func=cmd_fewshot)


def cmd_fit(args: argparse.Namespace) -> int:
    import numpy as np

    from costmodels.cli import build_networks
    from costmodels.tables import read_table
    from predictors.persistence import make

    table = read_table(args.train, duplicates="mean")
    rows = np.arange(len(table))
    if args.limit and args.limit < len(table):
        rows = np.sort(np.random.default_rng(args.seed).choice(len(table), args.limit,
                                                              replace=False))
    table = table.subset(rows)
    device = args.device or table.device
    nets = build_networks([int(i) for i in table.arch_index], args.dataset, args.batch)
    sources = [s for s in args.source if read_table(s, duplicates="mean").device != device]
    if len(sources) < len(args.source):
        print(f"note: skipped {len(args.source) - len(sources)} source table(s) of the target "
              f"device {device} itself", file=sys.stderr)
    if args.source:
        if not sources:
            print("error: no source table of another device left", file=sys.stderr)
            return 2
        if args.model != "gbdt":
            print("error: few-shot transfer (--source) is fitted with `fit gbdt`; the GNN learns "
                  "from the target's cells alone", file=sys.stderr)
            return 2
        est = make("transfer", sources=sources, device=device, random_state=args.seed)
    elif args.model == "hybrid":
        if not args.prior:
            print("error: fit hybrid needs --prior SPEC (e.g. roofline:xeon_2c, lut:PATH)",
                  file=sys.stderr)
            return 2
        est = make("hybrid", prior=list(args.prior), device=device, random_state=args.seed)
    else:
        est = make(args.model, device=device, random_state=args.seed)
    t0 = time.perf_counter()
    est.fit(nets, table.latency_ms)
    fit_s = time.perf_counter() - t0
    est.save(args.output)
    mode = f"transfer from {len(sources)} source table(s)" if args.source else args.model
    print(f"wrote {args.output}: {mode} on {len(nets)} cells of {device} in {fit_s:.1f} s "
          f"(use it as {'gbdt' if args.model == 'hybrid' else args.model}:{args.output})",
          file=sys.stderr)
    return 0


def cmd_fewshot(args: argparse.Namespace) -> int:
    from predictors import fewshot

    if args.model == "transfer" and not args.source:
        print("error: --model transfer needs --source TABLE.csv (other devices' tables)",
              file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    tgt = fewshot.prepare(args.target, args.source if args.model == "transfer" else (),
                          args.dataset)
    rows = []
    for k in args.samples:
        if k >= len(tgt.y):
            print(f"skipping k={k}: the target has only {len(tgt.y)} cells", file=sys.stderr)
            continue
        r = fewshot.point(tgt, args.model, k, args.seeds, args.select)
        rows.append(r)
        print(f"k={k:>5}  spearman {r['spearman']:.3f} ± {r['spearman_std']:.3f}  kendall "
              f"{r['kendall']:.3f}  MAPE {r['mape']:.1f}%  ±10% {100 * r['acc10']:.1f}%",
              file=sys.stderr)
    if not rows:
        return 1
    png = fewshot.write_curve(rows, args.output)
    print(f"wrote {args.output} and {png} ({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
    return 0
