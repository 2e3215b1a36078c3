"""The ``costmodels`` command line.

Core commands live here; each backend package adds its own in ``<pkg>/cli.py``
through ``register(subparsers)`` (handlers import their backend lazily, so
``costmodels --help`` stays fast and works without optional extras).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from costmodels.errors import CostModelError, UnknownBackend

# Packages that add subcommands: module with `register(subparsers)`.
PLUGINS = ("measure.cli", "measure.lut_cli", "measure.tvm_cli", "analytical.cli", "predictors.cli",
           "costmodels.harness.cli", "costmodels.demo")

EPILOG = """\
examples:
  costmodels archs --space nb201 --sample 200 --seed 0 > sample.csv
  costmodels info '|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|'
  costmodels estimate flops --space nb201 --dataset cifar10 -o flops.csv
  costmodels backends
"""


class Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keeps the examples' layout and shows defaults."""


def add_space_args(p: argparse.ArgumentParser, archs: bool = True) -> None:
    """The options that select NAS-Bench-201 networks; shared by every command that takes them."""
    p.add_argument("--space", default="nb201", choices=["nb201"], help="search space")
    p.add_argument("--dataset", default="cifar10", choices=["cifar10", "cifar100", "ImageNet16-120"],
                   help="NAS-Bench-201 dataset (sets input size and classes)")
    p.add_argument("--batch", type=int, default=1, help="batch size of the built networks")
    if archs:
        p.add_argument("--archs", metavar="FILE.csv",
                       help="only the cells listed in this CSV (needs an arch_str or arch_index "
                            "column); default: all 15,625")
        p.add_argument("--sample", type=int, metavar="N", help="a random sample of N cells")
        p.add_argument("--seed", type=int, default=0, help="seed of --sample")


def selected_indices(args: argparse.Namespace) -> list[int]:
    """Standard NAS-Bench-201 indices chosen by --archs / --sample (all by default)."""
    from costmodels.spaces import nb201

    if getattr(args, "archs", None):
        return read_arch_list(args.archs)
    if getattr(args, "sample", None):
        return nb201.SPACE.sample(args.sample, args.seed)
    return list(range(len(nb201.SPACE)))


def read_arch_list(path: str) -> list[int]:
    """Indices from a CSV with an ``arch_str`` or ``arch_index`` column (order kept)."""
    import csv

    from costmodels.errors import TableError, UnknownArchitecture
    from costmodels.spaces import nb201

    try:
        with open(path, newline="") as fh:
            reader = csv.DictReader(fh)
            cols = reader.fieldnames or []
            if "arch_str" not in cols and "arch_index" not in cols:
                raise TableError(f"{path}: needs an arch_str or arch_index column "
                                 f"(found {','.join(cols) or 'nothing'})")
            out = []
            for line, row in enumerate(reader, start=2):
                try:
                    out.append(nb201.SPACE.index(row["arch_str"]) if row.get("arch_str")
                               else int(row["arch_index"]))
                except (UnknownArchitecture, ValueError) as exc:
                    raise TableError(f"{path}:{line}: {exc}") from None
    except OSError as exc:
        raise TableError(f"{path}: {exc.strerror}") from None
    return out


def build_networks(indices: Sequence[int], dataset: str, batch: int = 1):
    from costmodels.spaces import nb201

    return [nb201.build_network(i, dataset, batch) for i in indices]


def progress(description: str = "working"):
    """A rich progress bar (done/total, rate, ETA) on stderr."""
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                    console=Console(stderr=True), transient=False)


# ----------------------------------------------------------------------------- commands
def cmd_archs(args: argparse.Namespace) -> int:
    from costmodels.spaces import nb201

    out = sys.stdout
    out.write("arch_index,arch_str\n")
    idx = nb201.SPACE.sample(args.sample, args.seed) if args.sample else range(len(nb201.SPACE))
    for i in idx:
        out.write(f"{i},{nb201.SPACE[i]}\n")
    return 0


def load_network(target: str, dataset: str, batch: int, input_shapes: list[str] | None):
    """An ONNX path, an arch string or a standard index -> Network."""
    from costmodels.spaces import nb201

    if target.startswith("|"):
        return nb201.build_network(target, dataset, batch)
    if target.isdigit():
        return nb201.build_network(int(target), dataset, batch)
    from costmodels.onnx_import import import_onnx, parse_input_shapes

    return import_onnx(target, input_shapes=parse_input_shapes(input_shapes or []))


def cmd_info(args: argparse.Namespace) -> int:
    net = load_network(args.model, args.dataset, args.batch, args.input_shape)
    if args.json:
        doc = {"name": net.name, **net.totals(),
               "meta": {k: v for k, v in net.meta.items() if k != "ops"},
               "layers": [layer._asdict() for layer in net.layers]}
        json.dump(doc, sys.stdout, indent=1, default=list)
        sys.stdout.write("\n")
        return 0
    from rich.console import Console
    from rich.table import Table

    t = Table(title=f"{net.name}  ({len(net)} layers)", show_lines=False)
    for col in ("layer", "op", "output", "kernel/stride", "MACs", "params", "bytes"):
        t.add_column(col, justify="right" if col in ("MACs", "params", "bytes") else "left")
    for layer in net.layers:
        ks = (f"{'x'.join(map(str, layer.kernel))}/{'x'.join(map(str, layer.stride))}"
              if layer.kernel else "")
        t.add_row(layer.name, layer.op, "x".join(map(str, layer.output_shape)), ks,
                  f"{layer.macs:,}", f"{layer.params:,}", f"{layer.bytes_total:,}")
    console = Console()
    if not args.totals_only:
        console.print(t)
    tot = net.totals()
    console.print(f"[bold]totals[/]: {tot['macs'] / 1e6:.2f} M MACs, {tot['params'] / 1e6:.3f} M "
                  f"params, {tot['bytes'] / 1e6:.2f} MB moved, {tot['layers']} layers")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    import onnx

    from costmodels.spaces import nb201

    model = nb201.build_onnx(args.arch, args.dataset, args.batch, seed=args.seed)
    Path(args.output).parent.mkdir(parents=True, exist_ok=True)
    onnx.save(model, args.output)
    print(f"wrote {args.output} ({nb201.arch_str(nb201._arch_ops(args.arch))}, {args.dataset})",
          file=sys.stderr)
    return 0


def cmd_backends(args: argparse.Namespace) -> int:
    from costmodels.registry import BACKENDS

    width = max(map(len, BACKENDS))
    for name, (_, text) in BACKENDS.items():
        print(f"{name:<{width}}  {text}")
    return 0


def cmd_estimate(args: argparse.Namespace) -> int:
    import math

    from costmodels.registry import create
    from costmodels.spaces import nb201
    from costmodels.tables import write_table

    t0 = time.perf_counter()
    indices = selected_indices(args)
    spec = args.backend
    if args.best_effort:
        if not spec.startswith("lut:"):
            raise UnknownBackend("--best-effort applies to lut:PATH backends only")
        spec += "&best-effort" if "?" in spec else "?best-effort"
    model = create(spec)
    lat, energy, missing = [], [], 0
    chunk = 1024
    with progress(f"estimate {args.backend}") as bar:
        task = bar.add_task(f"estimate {args.backend}", total=len(indices))
        for start in range(0, len(indices), chunk):
            nets = build_networks(indices[start:start + chunk], args.dataset, args.batch)
            for est in model.estimate_many(nets):
                lat.append(est.latency_ms)
                energy.append(est.energy_mj)
                missing += len(est.meta.get("missing_kernels", ()))
            bar.advance(task, len(nets))
    has_energy = any(e is not None for e in energy)
    write_table(args.output, indices, (nb201.SPACE[i] for i in indices), lat,
                energy if has_energy else None)
    dt = time.perf_counter() - t0
    print(f"wrote {args.output}: {len(indices)} cells with {model.name} in {dt:.1f} s"
          f"{' (with energy_mj)' if has_energy else ''}", file=sys.stderr)
    if missing:
        print(f"warning: {missing} kernel lookups were missing (best effort); those totals are "
              "low", file=sys.stderr)
    bad = sum(1 for x in lat if not math.isfinite(x))
    return 1 if bad else 0


# ----------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="costmodels", formatter_class=Formatter, epilog=EPILOG,
        description="What does a neural network cost on a device, and how far can each way "
                    "of knowing it be trusted? Measurement, lookup tables, analytical models "
                    "and learned predictors behind one interface.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("archs", help="list NAS-Bench-201 cells as CSV", formatter_class=Formatter,
                       epilog="example:\n  costmodels archs --space nb201 --sample 100 --seed 1")
    p.add_argument("--space", default="nb201", choices=["nb201"])
    p.add_argument("--sample", type=int, metavar="N", help="N random cells (sorted by index)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_archs)

    p = sub.add_parser("info", help="per-layer table and totals of a network",
                       formatter_class=Formatter,
                       epilog="examples:\n  costmodels info model.onnx --input-shape 1x3x224x224\n"
                              "  costmodels info 1462 --dataset cifar10 --json")
    p.add_argument("model", help="MODEL.onnx, a NAS-Bench-201 arch string or a standard index")
    p.add_argument("--input-shape", action="append", metavar="[NAME=]1x3x224x224",
                   help="fix a dynamic input shape (repeat for several inputs)")
    p.add_argument("--json", action="store_true", help="print JSON (totals and layers)")
    p.add_argument("--totals-only", action="store_true", help="only the totals line")
    add_space_args(p, archs=False)
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("export", help="write a NAS-Bench-201 network as ONNX",
                       formatter_class=Formatter,
                       epilog="example:\n  costmodels export 1462 --dataset cifar10 -o net.onnx")
    p.add_argument("arch", help="arch string or standard index")
    p.add_argument("-o", "--output", required=True, help="output .onnx path")
    p.add_argument("--seed", type=int, default=0, help="seed of the random weights")
    add_space_args(p, archs=False)
    p.set_defaults(func=cmd_export, arch_type=str)

    p = sub.add_parser("estimate", help="estimate every cell with a backend -> latency table CSV",
                       formatter_class=Formatter,
                       epilog="examples:\n  costmodels estimate flops -o flops.csv\n"
                              "  costmodels estimate lut:datasets/nb201/lut.sqlite -o lut.csv\n"
                              "  costmodels estimate eyeriss --dataset cifar10 -o eyeriss.csv\n"
                              "backends: see `costmodels backends`")
    p.add_argument("backend", help="registry spec, e.g. flops, lut:PATH, roofline:SPEC, eyeriss, "
                                   "gbdt:DIR")
    p.add_argument("-o", "--output", required=True, help="output latency-table CSV")
    p.add_argument("--best-effort", action="store_true",
                   help="lut: report kernels missing from the table instead of failing")
    add_space_args(p)
    p.set_defaults(func=cmd_estimate)

    p = sub.add_parser("backends", help="list the registered backends")
    p.set_defaults(func=cmd_backends)

    for module in PLUGINS:
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name == module:
                continue
            raise
        mod.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    if getattr(args, "arch", None) and str(args.arch).isdigit():
        args.arch = int(args.arch)
    try:
        return int(args.func(args) or 0)
    except CostModelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted; what was committed is kept (rerun to resume)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
