"""``costmodels measure`` and ``costmodels measure-space`` (registered by costmodels.cli)."""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from pathlib import Path

MEASURE_EPILOG = """\
examples:
  costmodels measure model.onnx --json
  costmodels measure 1462 --dataset cifar10 --repeat 200
  costmodels measure '|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|' --runtime tvm --trials 64
  costmodels measure model.onnx --runtime tvm --rpc-tracker 192.168.1.10:9190 --rpc-key rpi4 \\
      --target 'llvm -mtriple=aarch64-linux-gnu -mcpu=cortex-a72'
"""

SPACE_EPILOG = """\
examples:
  costmodels measure-space --space nb201 --dataset cifar10 --sample 200 --seed 0 \\
      --runtime ort --db runs.sqlite -o truth.csv
  costmodels measure-space --archs cells.csv --runtime tvm --trials 64 --db runs.sqlite -o tvm.csv
Resumable: rerun the same command after an interruption (even kill -9) and it
measures only what is missing. The fingerprint is written beside the table
(truth.fingerprint.json).
"""


def add_measure_args(p: argparse.ArgumentParser) -> None:
    """Options that make a MeasureConfig (shared by both commands)."""
    from measure.config import MeasureConfig

    d = MeasureConfig()
    g = p.add_argument_group("timing protocol")
    g.add_argument("--runtime", choices=["ort", "tvm"], default=d.runtime)
    g.add_argument("--threads", type=int, default=d.threads, help="intra-op threads")
    g.add_argument("--warmup", type=int, default=d.warmup, help="untimed runs first")
    g.add_argument("--repeat", type=int, default=d.repeat, help="timed runs")
    g.add_argument("--pin-cpu", type=int, default=d.pin_cpu,
                   help="pin the measuring process to this CPU (-1: do not pin)")
    g.add_argument("--max-cv", type=float, default=d.max_cv,
                   help="re-measure when the coefficient of variation is above this")
    g.add_argument("--max-retries", type=int, default=d.max_retries)
    g.add_argument("--keep-preempted", action="store_true",
                   help="keep timed runs during which another process took the CPU "
                        "(by default they are detected and replaced; one thread only)")
    g.add_argument("--isolate", action="store_true",
                   help="measure each network in a fresh worker process")
    g.add_argument("--timeout", type=float, default=d.timeout_s,
                   help="seconds before an isolated worker is killed")
    g.add_argument("--input-seed", type=int, default=d.seed,
                   help="seed of the fixed random inputs")
    g.add_argument("--graph-opt", choices=["disable", "basic", "extended", "all"],
                   default=d.graph_opt, help="ONNX Runtime graph optimisation level")
    t = p.add_argument_group("TVM")
    t.add_argument("--target", default="",
                   help="TVM target: 'llvm -mtriple=... -mcpu=...' or a JSON dict "
                        "(default: llvm with the host CPU)")
    t.add_argument("--trials", type=int, default=d.tvm_trials,
                   help="MetaSchedule tuning trials (0 = untuned)")
    t.add_argument("--work-dir", default="", help="MetaSchedule records (reused on rerun)")
    t.add_argument("--rpc-tracker", default="", metavar="HOST:PORT",
                   help="time on a remote device obtained from this TVM RPC tracker")
    t.add_argument("--rpc-key", default="", metavar="KEY", help="device key at the tracker")


def config_from_args(args: argparse.Namespace):
    from measure.config import MeasureConfig

    if args.rpc_tracker and args.runtime != "tvm":
        raise SystemExit("error: --rpc-tracker needs --runtime tvm")
    if args.rpc_tracker and not args.rpc_key:
        raise SystemExit("error: --rpc-tracker needs --rpc-key")
    return MeasureConfig(
        runtime=args.runtime, warmup=args.warmup, repeat=args.repeat, threads=args.threads,
        pin_cpu=args.pin_cpu, max_cv=args.max_cv, max_retries=args.max_retries,
        isolate=args.isolate, timeout_s=args.timeout, seed=args.input_seed,
        graph_opt=args.graph_opt, tvm_target=args.target, tvm_trials=args.trials,
        tvm_work_dir=args.work_dir, rpc_tracker=args.rpc_tracker, rpc_key=args.rpc_key,
        drop_preempted=not args.keep_preempted)


def _model_for(target: str, dataset: str, batch: int):
    """An ONNX path as is; an arch string or index -> the NAS-Bench-201 ONNX model."""
    from costmodels.spaces import nb201

    if target.startswith("|") or target.isdigit():
        arch = int(target) if target.isdigit() else target
        return nb201.build_onnx(arch, dataset, batch), nb201.build_network(arch, dataset, batch)
    return target, None


def cmd_measure(args: argparse.Namespace) -> int:
    from measure import measure

    config = config_from_args(args)
    model, net = _model_for(str(args.model), args.dataset, args.batch)
    res = measure(model, config)
    doc = {**res.summary(), "model": str(args.model)}
    if net is not None:
        doc.update(arch_str=net.meta["arch_str"], arch_index=net.meta["arch_index"],
                   dataset=args.dataset)
    if args.json:
        json.dump(_finite(doc), sys.stdout, indent=1, default=str)
        sys.stdout.write("\n")
    elif res.ok:
        flag = "  [noisy: CV above --max-cv]" if res.noisy else ""
        print(f"{args.model}: median {res.median_ms:.4f} ms  mean {res.mean_ms:.4f}  "
              f"p10 {res.p10_ms:.4f}  p90 {res.p90_ms:.4f}  CV {res.cv:.3f}  "
              f"({res.repeat} runs, {res.runtime}){flag}")
        fp = res.fingerprint
        print(f"device: {fp.get('cpu_model')} ({fp.get('cores')} cores), "
              f"{res.runtime} {fp.get('runtime_version')}, threads {fp.get('threads')}, "
              f"pinned {res.meta.get('pinned_cpus') or 'no'}"
              + (f", tuned {res.meta.get('tune_s', 0):.0f} s" if res.meta.get("tuned") else ""))
    if not res.ok:
        print(f"error: {res.error}", file=sys.stderr)
        return 1
    return 0


def cmd_measure_space(args: argparse.Namespace) -> int:
    from costmodels.cli import selected_indices
    from measure.campaign import nb201_jobs, run_campaign
    from measure.fingerprint import device_slug, fingerprint
    from measure.store import MeasureStore

    config = config_from_args(args)
    indices = selected_indices(args)
    jobs = nb201_jobs(indices, args.dataset, args.batch)
    with MeasureStore(args.db) as store:
        before = time.perf_counter()
        summary = run_campaign(jobs, config, store, retry_failed=args.retry_failed)
        n = store.export_table(args.output, summary.records)
    fp = fingerprint(config)
    cvs = [r.result.cv for r in summary.records if r.result.ok]
    side = Path(args.output).with_suffix(".fingerprint.json")
    side.write_text(json.dumps({
        "device": device_slug(), "fingerprint": fp, "config": config.to_dict(),
        "config_hash": summary.config_hash, "device_hash": summary.device_hash,
        "space": args.space, "dataset": args.dataset, "batch": args.batch,
        "cells": n, "failed": sum(not r.result.ok for r in summary.records),
        "cv_median": _median(cvs), "cv_max": max(cvs) if cvs else None,
        "noisy": sum(r.result.noisy for r in summary.records),
        "last_run_s": round(time.perf_counter() - before, 1), "store": str(args.db),
    }, indent=1, default=str) + "\n")
    print(f"{summary.measured} measured ({summary.failed} failed), {summary.skipped} already in "
          f"{args.db}; wrote {args.output} ({n} cells) and {side} in {summary.seconds:.1f} s",
          file=sys.stderr)
    for r in summary.records:
        if not r.result.ok:
            print(f"failed: {r.net.name}: {r.result.error.splitlines()[0]}", file=sys.stderr)
    return 1 if any(not r.result.ok for r in summary.records) else 0


def _finite(obj):
    """NaN/inf -> None, so --json output is strict JSON."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_finite(v) for v in obj]
    return obj


def _median(xs: list[float]) -> float | None:
    xs = sorted(x for x in xs if not math.isnan(x))
    return xs[len(xs) // 2] if xs else None


def register(sub) -> None:
    from costmodels.cli import Formatter, add_space_args

    p = sub.add_parser("measure", help="time one network (ONNX Runtime or TVM, local or RPC)",
                       formatter_class=Formatter, epilog=MEASURE_EPILOG,
                       description="Measure a model: warm-up, timed runs, median/p10/p90/CV "
                                   "and the device fingerprint.")
    p.add_argument("model", help="MODEL.onnx, a NAS-Bench-201 arch string or a standard index")
    p.add_argument("--json", action="store_true", help="print the statistics as JSON")
    add_space_args(p, archs=False)
    add_measure_args(p)
    p.set_defaults(func=cmd_measure)

    p = sub.add_parser("measure-space", help="measure NAS-Bench-201 cells into a store -> table",
                       formatter_class=Formatter, epilog=SPACE_EPILOG,
                       description="A resumable measurement campaign over NAS-Bench-201 cells.")
    add_space_args(p)
    add_measure_args(p)
    p.add_argument("--db", required=True, help="SQLite measurement store (created if missing)")
    p.add_argument("-o", "--output", required=True, help="latency-table CSV of the measured cells")
    p.add_argument("--retry-failed", action="store_true",
                   help="measure cells stored as failed again")
    p.set_defaults(func=cmd_measure_space)
