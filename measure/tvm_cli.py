"""``costmodels tvm target|tasks|tune``: one MetaSchedule database per search space.

Registered by costmodels.cli (PLUGINS). Library code lives in :mod:`measure.tune`.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

EPILOG = """\
examples:
  costmodels tvm target
  costmodels tvm tasks --space nb201 --sample 20 --seed 0
  costmodels tvm tune --space nb201 --work-dir tvm-db --trials-total 2000
                                       # tasks of a covering set of cells, trials by time
  costmodels tvm tune --space nb201 --sample 200 --seed 0 --work-dir tvm-db --trials-per-task 64
  costmodels measure-space --space nb201 --sample 200 --runtime tvm --work-dir tvm-db \\
      --db runs.sqlite -o tvm.csv          # compiled from tvm-db, no further tuning
Networks: without --archs/--sample, `tvm tasks` and `tvm tune` take a covering set
of architectures: the space's own (fbnet: the 9 uniform networks) or a greedy cover of
the layer signatures (op, shapes, kernel, stride, groups) of every architecture
(nb201: all 15,625 cells; a 20,000-sample for larger spaces), so every conv, pool and
matmul shape of the space is in some chosen network (TVM lowering is ~11 s per network
here; element-wise-only fused functions can still differ between networks, and a
network compiled from the database says how many of its tasks were found).
Tasks: fused functions with the same anchor block (conv, matmul, pool) are one task
whatever epilogue is fused after it (MetaSchedule's module_equality="anchor-block").
Resumable: rerun `tvm tune` after an interruption and it tunes only the tasks
the database does not hold yet (or holds with fewer trials). Records are kept per
target in WORK_DIR/<target>/.
"""


def _target(args: argparse.Namespace) -> dict[str, Any]:
    from measure.config import MeasureConfig
    from measure.tvm import target_dict

    return target_dict(MeasureConfig(runtime="tvm", tvm_target=args.target,
                                     threads=args.threads, rpc_tracker=args.rpc_tracker))


def _networks(args: argparse.Namespace):
    """(count, (name, onnx) pairs, how they were chosen) of --archs / --sample / a cover."""
    from costmodels.cli import build_networks, open_space, selected_archs
    from costmodels.spaces import onnx_for
    from measure.tune import covering_archs

    if getattr(args, "archs", None) is not None or getattr(args, "sample", None):
        space, archs = selected_archs(args)
        how = {"how": "--archs" if args.archs is not None else f"--sample {args.sample} --seed {args.seed}"}
    else:
        space = open_space(args)
        archs, how = covering_archs(space)
    dataset = space.check_dataset(args.dataset)
    nets = build_networks(space, archs, dataset, args.batch)
    return len(nets), ((net.name, onnx_for(net)) for net in nets), how


def _tasks(args: argparse.Namespace):
    import time

    from measure.tune import extract_space_tasks

    n, models, how = _networks(args)
    t0 = time.perf_counter()
    tasks = extract_space_tasks(models, _target(args), total=n, show_progress=not args.quiet)
    return n, tasks, {**how, "extract_s": round(time.perf_counter() - t0, 2)}


def _emit(doc: dict[str, Any], as_json: bool, lines: list[str]) -> None:
    if as_json:
        json.dump(doc, sys.stdout, indent=1, default=str)
        sys.stdout.write("\n")
    else:
        print("\n".join(lines))


def cmd_target(args: argparse.Namespace) -> int:
    """The target TVM compiles for here and the CPU's vector features."""
    from measure.fingerprint import cpu_model

    flags = _cpu_flags()
    vec = [f for f in ("avx512f", "avx512_vnni", "avx512_bf16", "avx2", "fma", "avx", "sse4_2")
           if f in flags]
    width = 512 if "avx512f" in flags else 256 if "avx2" in flags or "avx" in flags else 128
    doc = {"target": _target(args), "cpu_model": cpu_model(), "vector_bits": width,
           "features": vec}
    _emit(doc, args.json, [f"target: {json.dumps(doc['target'])}",
                           f"cpu: {doc['cpu_model']}; vector width {width} bit; "
                           f"features: {' '.join(vec) or 'none found'}"])
    return 0


def _cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("flags"):
                    return set(line.partition(":")[2].split())
    except OSError:
        pass
    return set()


def cmd_tasks(args: argparse.Namespace) -> int:
    n, tasks, how = _tasks(args)
    doc = {"networks": n, "selection": how, "tasks": len(tasks), "target": _target(args),
           "per_task": [t.summary() for t in tasks]}
    lines = [f"{len(tasks)} distinct anchor-block tasks in {n} networks ({how['how']}; target "
             f"{json.dumps(doc['target'])})",
             f"{'key':16}  {'networks':>8}  {'calls':>6}  {'MFLOP':>8}  name"]
    lines += [f"{t.key:16}  {len(t.networks):8d}  {t.weight:6d}  {t.flop / 1e6:8.3f}  {t.name}"
              for t in tasks]
    _emit(doc, args.json, lines)
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    from costmodels.cli import check_output_dir
    from measure.tune import database_dir, read_ledger, tune_space

    check_output_dir(args.work_dir, "--work-dir")  # before minutes of task extraction
    read_ledger(database_dir(args.work_dir, _target(args)), for_tuning=True)
    per_task = args.trials_per_task
    if per_task is None and args.trials_total is None:
        per_task = 64
    n, tasks, how = _tasks(args)
    if args.max_tasks:
        tasks = tasks[:args.max_tasks]
    summary = tune_space(tasks, args.work_dir, _target(args), per_task,
                         seed=args.seed_tuning, rpc_tracker=args.rpc_tracker,
                         rpc_key=args.rpc_key, timeout_s=args.timeout,
                         show_progress=not args.quiet, population=args.population,
                         trials_total=args.trials_total, trials_floor=args.trials_floor,
                         networks=n, extract_s=how["extract_s"])
    doc = {"networks": n, "selection": how, **summary.to_dict()}
    _emit(doc, args.json, [
        f"{summary.tasks} tasks of {n} networks ({how['how']}): {summary.tuned} tuned now "
        f"({summary.trials_run} trials), {summary.skipped} "
        f"already in {summary.database_dir}; {summary.records_after - summary.records_before} "
        f"new records ({summary.records_after} in all) in {summary.seconds:.0f} s; "
        f"tuning time of these tasks so far {summary.tune_s_total:.0f} s"])
    return 0


def _positive_float(text: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of seconds, got {text!r}") from None
    if not 0 < v < float("inf"):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0 of seconds, got {v}")
    return v


def _common(p: argparse.ArgumentParser) -> None:
    from costmodels.cli import add_space_args, positive_int

    add_space_args(p, archs_default="a covering set (see below)")
    p.add_argument("--target", default="",
                   help="TVM target: 'llvm -mtriple=... -mcpu=...' or a JSON dict "
                        "(default: llvm with the host CPU)")
    p.add_argument("--threads", type=positive_int, default=1, help="num-cores of the target")
    p.add_argument("--rpc-tracker", default="", metavar="HOST:PORT",
                   help="run tuning trials on devices of this TVM RPC tracker")
    p.add_argument("--rpc-key", default="", metavar="KEY", help="device key at the tracker")
    p.add_argument("--json", action="store_true", help="print JSON only on stdout")
    p.add_argument("--quiet", action="store_true", help="no progress bar")


def register(sub) -> None:
    from costmodels.cli import Formatter, needs_command, nonneg_int, positive_int

    p = sub.add_parser("tvm", help="TVM: target, tuning tasks of a space, tune a space once",
                       formatter_class=Formatter, epilog=EPILOG,
                       description="Tune the space, not the network: the distinct MetaSchedule "
                                   "tasks of every network, each tuned once.")
    tsub = p.add_subparsers(dest="tvm_command", metavar="COMMAND")
    q = tsub.add_parser("target", help="the target TVM compiles for on this CPU",
                        formatter_class=Formatter, epilog=(
                            "examples:\n  costmodels tvm target\n"
                            "  costmodels tvm target --target 'llvm -mtriple=aarch64-linux-gnu "
                            "-mcpu=cortex-a72' --json"))
    q.add_argument("--target", default="",
                   help="'llvm -mcpu=...' or a JSON dict (default: this CPU's llvm target)")
    q.add_argument("--threads", type=positive_int, default=1, help="num-cores of the target")
    q.add_argument("--rpc-tracker", default="",
                   help="HOST:PORT: the target is for a remote board (no host -mcpu)")
    q.add_argument("--json", action="store_true", help="print JSON")
    q.set_defaults(func=cmd_target)
    q = tsub.add_parser("tasks", help="list the distinct tuning tasks of the selected networks",
                        formatter_class=Formatter, epilog=(
                            "examples:\n  costmodels tvm tasks --sample 3 --json\n"
                            "  costmodels tvm tasks --space fbnet --sample 2"))
    _common(q)
    q.set_defaults(func=cmd_tasks)
    q = tsub.add_parser("tune", help="tune every distinct task once into a database",
                        formatter_class=Formatter, epilog=EPILOG)
    _common(q)
    q.add_argument("--work-dir", required=True, help="MetaSchedule database (per target inside)")
    trials = q.add_mutually_exclusive_group()
    trials.add_argument("--trials-per-task", type=positive_int, default=None,
                        help="MetaSchedule trials per task (default 64 unless --trials-total)")
    trials.add_argument("--trials-total", type=positive_int, default=None, metavar="N",
                        help="N trials shared over the tasks by estimated time (FLOP x calls "
                             "over the networks), each task at least --trials-floor")
    q.add_argument("--trials-floor", type=positive_int, default=16,
                   help="fewest trials of a task under --trials-total")
    q.add_argument("--max-tasks", type=nonneg_int, default=0,
                   help="tune only the N most shared tasks (0: all)")
    q.add_argument("--population", type=positive_int, default=None,
                   help="evolutionary-search population (default MetaSchedule's 512; smaller "
                        "is a quicker, poorer search)")
    q.add_argument("--seed-tuning", type=int, default=0, help="seed of the search")
    q.add_argument("--timeout", type=_positive_float, default=30.0,
                   help="seconds before one trial's build or run is abandoned")
    q.set_defaults(func=cmd_tune)
    p.set_defaults(func=needs_command(p))
