"""``costmodels roofline ...``: calibrate this machine's roofline, list specs, explain a network.

Handlers import their backend lazily so ``costmodels --help`` stays fast.
"""

from __future__ import annotations

import argparse
import sys

CALIBRATE_EPILOG = """\
examples:
  costmodels roofline calibrate                 # writes the default local spec
  costmodels roofline calibrate -o my_cpu.toml --cpu 1 --repeats 40
  costmodels estimate roofline:my_cpu.toml -o roofline.csv
The default output is $COSTMODELS_ROOFLINE_SPEC, else
$XDG_CONFIG_HOME/costmodels/roofline-local.toml (~/.config/...); `roofline` with no
spec argument uses that file when it exists, x86_generic otherwise.
"""

LAYERS_EPILOG = """\
examples:
  costmodels roofline layers 1462 --backend roofline:x86_generic
  costmodels roofline layers 1462 --backend eyeriss            # HW-NAS-Bench's Eyeriss
  costmodels roofline layers 1462 --backend eyeriss:eyeriss_rs # the physical model
  costmodels roofline layers model.onnx --input-shape 1x3x224x224 --backend fpga
  costmodels roofline layers resnet18 --space models:my_models/ --backend eyeriss
"""


def cpu_choice(text: str) -> str | int:
    """argparse type of ``--cpu``: ``auto``, ``none`` or the index of a CPU this process
    may run on."""
    import os

    if text in ("auto", "none"):
        return text
    try:
        cpu = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected 'auto', 'none' or a CPU index, got {text!r}") from None
    allowed = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else [0]
    if cpu not in allowed:
        raise argparse.ArgumentTypeError(
            f"CPU {cpu} is not one this process may use ({', '.join(map(str, allowed))})")
    return cpu


def register(sub) -> None:
    from costmodels.cli import Formatter, add_space_args, needs_command, positive_int

    p = sub.add_parser("roofline", help="analytical models: calibrate, list specs, explain layers",
                       formatter_class=Formatter, epilog=(
                           "examples:\n"
                           "  costmodels roofline calibrate            # this CPU -> local spec\n"
                           "  costmodels roofline specs\n"
                           "  costmodels roofline layers 1462 --backend eyeriss"),
                       description="Analytical models from device specs (roofline, eyeriss, "
                                   "fpga).")
    rsub = p.add_subparsers(dest="roofline_command", metavar="COMMAND")

    c = rsub.add_parser("calibrate", help="measure this CPU (peak, bandwidth, per-op costs) "
                                          "-> roofline spec TOML", formatter_class=Formatter,
                        epilog=CALIBRATE_EPILOG,
                        description="Micro-benchmarks through ONNX Runtime (no network is "
                                    "fitted): the float peak, cache and DRAM bandwidths, the "
                                    "run overhead, and per op class (convs, depthwise, "
                                    "grouped, GEMM, pools, element-wise, transcendental, "
                                    "LSTM steps, and int8 convs, depthwise convs and MatMuls "
                                    "quantized in the QDQ format, with their own int8 peak) "
                                    "a launch cost and efficiencies.")
    c.add_argument("-o", "--output", help="spec TOML to write (default: the local spec path)")
    c.add_argument("--name", default="local", help="spec name written into the file")
    c.add_argument("--cpu", default="auto", type=cpu_choice,
                   help="CPU to pin to: an index, 'auto' (the most idle one) or 'none'")
    c.add_argument("--repeats", type=positive_int, default=25,
                   help="timed runs per micro-benchmark")
    c.set_defaults(func=cmd_calibrate)

    s = rsub.add_parser("specs", help="list the shipped device specs", formatter_class=Formatter,
                        epilog="examples:\n  costmodels roofline specs\n"
                               "  costmodels estimate roofline:epyc_2c --sample 10 -o r.csv")
    s.set_defaults(func=cmd_specs)

    e = rsub.add_parser("layers", help="per-layer (per-kernel) breakdown of one network",
                        formatter_class=Formatter, epilog=LAYERS_EPILOG)
    e.add_argument("model", help="MODEL.onnx, or an architecture of --space (NAS-Bench-201: "
                                 "arch string or standard index; models:DIR: a file's stem)")
    e.add_argument("--backend", default="roofline",
                   help="roofline[:SPEC], eyeriss[:SPEC] or fpga[:SPEC]")
    from costmodels.cli import INPUT_SHAPE_HELP

    e.add_argument("--input-shape", action="append", metavar="[NAME=]1x3x224x224",
                   help=INPUT_SHAPE_HELP)
    add_space_args(e, archs=False)
    e.set_defaults(func=cmd_layers)
    p.set_defaults(func=needs_command(p))


MAX_REPEATS = 100_000


def cmd_calibrate(args: argparse.Namespace) -> int:
    from analytical.calibrate import calibrate, write_spec
    from analytical.roofline import local_spec_path
    from costmodels.cli import check_output

    if args.repeats > MAX_REPEATS:  # each timing repeats about 3 x this many runs
        from costmodels.errors import InputError

        raise InputError(f"--repeats {args.repeats}: at most {MAX_REPEATS:,} (the default, "
                         "25, takes a few seconds)")
    out = args.output or str(local_spec_path())
    check_output(out, "spec file (-o)")  # before seconds of measuring
    cpu = None if args.cpu == "none" else args.cpu
    cal = calibrate(cpu=cpu, repeats=args.repeats,
                    log=lambda s: print(s, file=sys.stderr))
    path = write_spec(cal, out, name=args.name)
    print(f"wrote {path} in {cal.seconds:.1f} s: peak {cal.peak_gflops:.1f} GFLOP/s, "
          f"DRAM {cal.dram_bandwidth_gbps:.1f} GB/s, cache {cal.cache_bandwidth_gbps:.1f} GB/s",
          file=sys.stderr)
    return 0


def cmd_specs(args: argparse.Namespace) -> int:
    from analytical.roofline import local_spec_path
    from analytical.specs import _read_toml, spec_dir

    for p in sorted(spec_dir().glob("*.toml")):
        doc = _read_toml(p)
        print(f"{p.stem:<14} {doc.get('kind', '?'):<9} {doc.get('description', '')}")
    local = local_spec_path()
    print(f"local spec: {local} ({'present' if local.is_file() else 'absent'})")
    return 0


def cmd_layers(args: argparse.Namespace) -> int:
    from rich.table import Table

    from costmodels.cli import load_network
    from costmodels.errors import InputError
    from costmodels.progress import console as progress_console
    from costmodels.registry import create

    kind = args.backend.partition(":")[0]
    if kind not in ("roofline", "eyeriss", "fpga"):
        raise InputError(f"--backend {args.backend}: `roofline layers` breaks down an "
                         "analytical model (roofline[:SPEC], eyeriss[:SPEC] or fpga[:SPEC]); "
                         f"for {kind!r} use `costmodels estimate {args.backend}`")
    net = load_network(args.model, args.dataset, args.batch, args.input_shape, args.space)
    model = create(args.backend)
    est = model.estimate(net)
    t = Table(title=f"{net.name} on {model.name}")
    for col in ("layer", "op", "latency ms", "energy mJ", "bound", "detail"):
        t.add_column(col, justify="right" if col in ("latency ms", "energy mJ") else "left")
    for lc in est.per_layer:
        t.add_row(lc.name, lc.op, f"{lc.latency_ms:.5f}",
                  "" if lc.energy_mj is None else f"{lc.energy_mj:.6f}", lc.bound, _detail(lc.meta))
    console = progress_console()
    console.print(t)
    energy = "" if est.energy_mj is None else f", {est.energy_mj:.4f} mJ"
    extra = ""
    if est.meta.get("arithmetic_intensity"):
        extra += f", arithmetic intensity {est.meta['arithmetic_intensity']:.2f} MAC/DRAM access"
    if est.meta.get("free_layers"):
        extra += f"; {est.meta['free_layers']} layers free by the model's convention"
    from costmodels.interface import uncosted_compute

    for u in est.meta.get("uncosted_layers", ()):
        console.print(f"not costed: {u['name']} ({u['op']}): {u['reason']}")
    if (gap := uncosted_compute(est, net)) is not None:
        # the layers above, but no total that leaves out compute (what `estimate` does too)
        print(f"error: no total: {gap}", file=sys.stderr)
        return 1
    console.print(f"[bold]total[/]: {est.latency_ms:.4f} ms{energy}{extra}")
    return 0


def _detail(meta) -> str:
    """A short summary of a LayerCost's meta: op class, placement, mapping, utilisation."""
    parts = []
    if "op_class" in meta:
        parts.append(meta["op_class"])
    for key in ("mapping", "tiling"):
        m = meta.get(key) or {}
        parts.append(" ".join(f"{k}={v}" for k, v in m.items() if k not in ("cycles_per_pass",)))
    if meta.get("sequential_steps"):
        parts.append(f"{meta['sequential_steps']} steps")
    if meta.get("utilisation"):
        parts.append(f"util {meta['utilisation']:.0%}")
    if meta.get("arithmetic_intensity"):
        parts.append(f"AI {meta['arithmetic_intensity']:.1f}")
    if meta.get("note"):
        parts.append(meta["note"])
    return ", ".join(p for p in parts if p)
