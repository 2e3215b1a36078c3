"""``costmodels measure``, ``measure-space`` and ``measure-quality`` (registered by costmodels.cli)."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys

MEASURE_EPILOG = """\
examples:
  costmodels measure model.onnx --json
  costmodels measure 1462 --dataset cifar10 --repeat 200 --rounds 10
  costmodels measure 0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,1 --space fbnet
  costmodels measure '|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|' --runtime tvm --trials 64
  costmodels measure model.onnx --runtime tvm --rpc-tracker 192.168.1.10:9190 --rpc-key rpi4 \\
      --target 'llvm -mtriple=aarch64-linux-gnu -mcpu=cortex-a72'
The runs are spread over --rounds rounds of at least --min-round-s seconds each; the
latency is the median of the round medians.
"""

SPACE_EPILOG = """\
examples:
  costmodels measure-space --space nb201 --sample 200 --seed 0 --db runs.sqlite -o truth.csv
  costmodels measure-space --space nb201 --representatives --drift-correct \\
      --db nb201-all.sqlite -o nb201-all.csv
  costmodels measure-space --space models:my_models/ --input-shape 1x3x224x224 \\
      --db runs.sqlite -o mine.csv
  costmodels measure-space --archs cells.csv --runtime tvm --trials 64 --db runs.sqlite -o tvm.csv
Protocol: networks are measured --window at a time, each window in --rounds interleaved
rounds in shuffled order, with a fixed reference panel in every round; latency_ms is the
median of the round medians after each round was scaled by the panel's drift, on this
machine's anchor level (--figure corrected, the default), or as timed (--figure raw;
--no-drift-correct drops the panel), or the fastest timed run (--figure min: on a machine
that other work disturbs, the figure of sub-millisecond networks that repeats best; the
runs are stored, so one store exports every figure). Resumable: rerun the same command after an interruption (even
kill -9) and it measures only what is missing; two runs on one --db split the work. A
network that fails is a row with an empty latency_ms and an error column. The fingerprint,
the figure and the measured quality are written beside the table (truth.fingerprint.json).
"""

QUALITY_EPILOG = """\
examples:
  costmodels measure-quality a.csv b.csv             two campaigns of the same networks
  costmodels measure-quality --db runs.sqlite        round CV and drift of stored campaigns
  costmodels measure-quality a.csv b.csv --json
Deviation of a network: |a - b| / mean(a, b), over the networks in both tables.
"""


# ----------------------------------------------------------------------------- arguments
def add_measure_args(p: argparse.ArgumentParser) -> None:
    """Options that make a MeasureConfig (shared by the measuring commands)."""
    from measure.config import GRAPH_OPTS, MeasureConfig

    d = MeasureConfig()
    g = p.add_argument_group("timing protocol")
    g.add_argument("--runtime", choices=["ort", "tvm"], default=d.runtime,
                   help="ONNX Runtime (CPU) or Apache TVM (local, or --rpc-tracker boards)")
    g.add_argument("--threads", type=int, default=d.threads, help="intra-op threads (>= 1)")
    g.add_argument("--warmup", type=int, default=d.warmup, help="untimed runs first (>= 0)")
    g.add_argument("--repeat", type=int, default=d.repeat,
                   help="timed runs per network over all rounds (>= 1)")
    g.add_argument("--rounds", type=int, default=d.rounds,
                   help="interleaved rounds the timed runs are spread over (>= 1)")
    g.add_argument("--round-warmup", type=int, default=d.round_warmup,
                   help="untimed runs at the start of each round (>= 0)")
    g.add_argument("--min-round-s", type=float, default=d.min_round_s,
                   help="each round lasts at least this long (spreads a small window in time)")
    g.add_argument("--drift-correct", action=argparse.BooleanOptionalAction, default=True,
                   help="measure a reference panel (3 small fixed CNNs) in every round and "
                        "keep, beside the raw figure, the figure corrected for the machine's "
                        "drift, on the level of this machine's anchor (set by the first "
                        "corrected measurement here, kept in $COSTMODELS_ANCHORS or "
                        "~/.cache/costmodels/anchors.json) so that processes agree; ONNX "
                        "Runtime only"),
    g.add_argument("--pin-cpu", type=int, default=None,
                   help=f"pin the measuring process to this CPU (-1: do not pin; default "
                        f"{d.pin_cpu}, or the first allowed CPU)")
    g.add_argument("--max-cv", type=float, default=d.max_cv,
                   help="flag a network noisy when its round-to-round CV is above this")
    g.add_argument("--max-retries", type=int, default=d.max_retries,
                   help="re-measurements of a noisy single burst (TVM)")
    g.add_argument("--keep-preempted", action="store_true",
                   help="keep timed runs during which another process took the CPU "
                        "(by default they are detected and replaced; one thread only)")
    g.add_argument("--isolate", action="store_true",
                   help="measure in fresh worker processes (a window per worker)")
    g.add_argument("--timeout", type=float, default=d.timeout_s,
                   help="seconds per network before an isolated worker is killed")
    g.add_argument("--input-seed", type=int, default=d.seed,
                   help="seed of the fixed random inputs and of the round order")
    g.add_argument("--graph-opt", choices=list(GRAPH_OPTS), default=d.graph_opt,
                   help="ONNX Runtime graph optimisation level")
    t = p.add_argument_group("TVM")
    t.add_argument("--target", default="",
                   help="TVM target: 'llvm -mtriple=... -mcpu=...' or a JSON dict "
                        "(default: llvm with the host CPU)")
    t.add_argument("--trials", type=int, default=d.tvm_trials,
                   help="MetaSchedule tuning trials (0 = untuned)")
    t.add_argument("--work-dir", default="",
                   help="TVM tuning database from `costmodels tvm tune` (applied with no "
                        "trials when --trials is 0; --trials N tunes missing tasks into it)")
    t.add_argument("--rpc-tracker", default="", metavar="HOST:PORT",
                   help="time on a remote device obtained from this TVM RPC tracker")
    t.add_argument("--rpc-key", default="", metavar="KEY", help="device key at the tracker")


def _bad(flag: str, value, want: str):
    from costmodels.errors import InputError

    return InputError(f"{flag} {value}: out of range, option {flag}; give {want}")


def check_measure_args(args: argparse.Namespace) -> None:
    """Every timing option in range, before any work (one ``error:`` line naming the flag)."""
    from costmodels.cli import SEED_MAX
    from measure.config import (
        MAX_RETRIES,
        MAX_ROUND_S,
        MAX_ROUNDS,
        MAX_RUNS,
        MAX_SECONDS,
        MAX_THREADS,
    )

    runs = f"at most {MAX_RUNS:,}"
    ranges = (("--repeat", args.repeat, 1, MAX_RUNS, f"an integer >= 1, {runs}"),
              ("--warmup", args.warmup, 0, MAX_RUNS, f"an integer >= 0, {runs}"),
              ("--threads", args.threads, 1, MAX_THREADS,
               f"an integer >= 1, at most {MAX_THREADS} (more than the CPUs only slows the "
               "timing down)"),
              ("--rounds", args.rounds, 1, MAX_ROUNDS, f"an integer >= 1, at most {MAX_ROUNDS:,}"),
              ("--round-warmup", args.round_warmup, 0, MAX_RUNS, f"an integer >= 0, {runs}"),
              ("--max-retries", args.max_retries, 0, MAX_RETRIES,
               f"an integer >= 0, at most {MAX_RETRIES}"),
              ("--trials", args.trials, 0, 10 ** 7, "an integer >= 0, at most 10,000,000"),
              ("--min-round-s", args.min_round_s, 0, MAX_ROUND_S,
               f"seconds >= 0, at most {MAX_ROUND_S:.0f}"),
              ("--input-seed", args.input_seed, 0, SEED_MAX, "an integer 0 to 2**32 - 1"))
    for flag, value, low, high, want in ranges:
        if not low <= value <= high:
            raise _bad(flag, value, want)
    for flag, value in (("--timeout", args.timeout), ("--max-cv", args.max_cv)):
        if not value > 0:
            raise _bad(flag, value, "a number > 0")
    if not args.timeout <= MAX_SECONDS:
        raise _bad("--timeout", args.timeout, f"seconds > 0, at most {MAX_SECONDS:.0f}")
    if getattr(args, "batch", 1) is not None and getattr(args, "batch", 1) < 1:
        raise _bad("--batch", args.batch, "an integer >= 1")
    if args.pin_cpu is not None and args.pin_cpu != -1:
        allowed = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
        if allowed and args.pin_cpu not in allowed:
            from costmodels.errors import InputError

            raise InputError(f"--pin-cpu {args.pin_cpu}: no such CPU for this process, option "
                             f"--pin-cpu; give one of {', '.join(map(str, allowed))} or -1 "
                             "(no pinning)")
    if args.rpc_tracker and args.runtime != "tvm":
        from costmodels.errors import InputError

        raise InputError("--rpc-tracker needs --runtime tvm, option --runtime; add "
                         "--runtime tvm")
    if args.rpc_tracker and not args.rpc_key:
        from costmodels.errors import InputError

        raise InputError("--rpc-tracker needs a device key, option --rpc-key; add "
                         "--rpc-key KEY")
    if args.rpc_tracker:
        from measure.rpc import parse_tracker

        parse_tracker(args.rpc_tracker)  # HOST:PORT, before anything is built
    from measure.config import MeasureConfig

    tvm_only = [flag for flag, given in (
        ("--target", bool(getattr(args, "target", ""))),
        ("--work-dir", bool(getattr(args, "work_dir", ""))),
        ("--trials", getattr(args, "trials", 0) != MeasureConfig.tvm_trials)) if given]
    if args.runtime != "tvm" and tvm_only:
        print(f"warning: {', '.join(tvm_only)} only apply to --runtime tvm; ignored with "
              f"--runtime {args.runtime}", file=sys.stderr)
    ignored = [why for given, why in (
        (args.rpc_key and not args.rpc_tracker,
         "--rpc-key names a device at an RPC tracker: ignored without --rpc-tracker"),
        (args.timeout != MeasureConfig.timeout_s and not args.isolate and not args.rpc_tracker,
         "--timeout limits a run in its own process or on a board: ignored without "
         "--isolate or --rpc-tracker"),
        (args.graph_opt != MeasureConfig.graph_opt and args.runtime != "ort",
         f"--graph-opt sets ONNX Runtime's optimisation level: ignored with --runtime "
         f"{args.runtime}")) if given]
    for why in ignored:
        print(f"warning: {why}", file=sys.stderr)


def config_from_args(args: argparse.Namespace):
    """The MeasureConfig of the parsed options (checked first)."""
    from measure.config import MeasureConfig

    check_measure_args(args)
    return MeasureConfig(
        runtime=args.runtime, warmup=args.warmup, repeat=args.repeat, threads=args.threads,
        pin_cpu=MeasureConfig.pin_cpu if args.pin_cpu is None else args.pin_cpu,
        max_cv=args.max_cv, max_retries=args.max_retries,
        isolate=args.isolate, timeout_s=args.timeout, seed=args.input_seed,
        graph_opt=args.graph_opt, tvm_target=args.target, tvm_trials=args.trials,
        tvm_work_dir=args.work_dir, rpc_tracker=args.rpc_tracker, rpc_key=args.rpc_key,
        drop_preempted=not args.keep_preempted, rounds=args.rounds,
        round_warmup=args.round_warmup, min_round_s=args.min_round_s,
        drift_ref=bool(args.drift_correct) and args.runtime == "ort")


# ----------------------------------------------------------------------------- measure
def _model_for(args: argparse.Namespace):
    """An ONNX file (read and checked, its dynamic inputs fixed by --input-shape) or an
    architecture of --space -> (ONNX model, Network or None). Raises a CostModelError
    naming the file or the input for a model that cannot be measured as given."""
    from costmodels.spaces import onnx_for

    target = str(args.model)
    if target.endswith(".onnx") or (os.sep in target and not target.startswith("|")):
        from costmodels.errors import OnnxImportError
        from costmodels.onnx_import import parse_input_shapes, with_input_shapes
        from costmodels.spaces.models import batch_note, import_model_file

        shapes = parse_input_shapes(args.input_shape) if args.input_shape else None
        batch = getattr(args, "batch", 1) or 1
        try:  # as `info` and a models:DIR folder read it (named inputs, --batch)
            net, how = import_model_file(target, batch, shapes)
            if note := batch_note(how, batch):
                print(note, file=sys.stderr)
        except OnnxImportError:  # the IR cannot cost it (an op, control flow, a shape it
            # cannot infer), but the runtime may run it at the shapes asked for; a broken
            # file or a bad --input-shape is refused by with_input_shapes all the same
            return with_input_shapes(target, shapes), None
        return onnx_for(net), None
    from costmodels.cli import open_space

    space = open_space(args)
    net = space.build_network(space.parse(target), args.dataset, args.batch)
    return onnx_for(net), net


def cmd_measure(args: argparse.Namespace) -> int:
    from measure import measure
    from measure.rounds import check_anchors

    config = config_from_args(args)
    check_anchors(config)  # a corrupt anchor file: refused before a session is built
    model, net = _model_for(args)
    res = measure(model, config)
    doc = {**res.summary(), "model": str(args.model)}
    if net is not None:
        doc.update(arch_str=net.meta["arch_str"], arch_index=net.meta.get("arch_index"),
                   dataset=net.meta.get("dataset"), space=net.meta.get("space"))
    if args.json:
        json.dump(_finite(doc), sys.stdout, indent=1, default=str)
        sys.stdout.write("\n")
    elif res.ok:
        flag = "  [noisy: round CV above --max-cv]" if res.noisy else ""
        rounds = (f", {res.rounds} rounds, round CV {res.round_cv:.3f}" if res.rounds else "")
        corr = (f"{res.corrected_ms:.4f} ms drift-corrected, raw median {res.median_ms:.4f} ms"
                if math.isfinite(res.corrected_ms) else f"median {res.median_ms:.4f} ms")
        print(f"{args.model}: {corr}  mean {res.mean_ms:.4f}  "
              f"p10 {res.p10_ms:.4f}  p90 {res.p90_ms:.4f}  CV {res.cv:.3f}  "
              f"({res.repeat} runs{rounds}, {res.runtime}){flag}")
        fp = res.fingerprint
        print(f"device: {fp.get('cpu_model')} ({fp.get('cores')} cores), "
              f"{res.runtime} {fp.get('runtime_version')}, threads {fp.get('threads')}, "
              f"pinned {res.meta.get('pinned_cpus') or 'no'}"
              + (f", tuned {res.meta.get('tune_s', 0):.0f} s" if res.meta.get("tuned") else ""))
    if not res.ok:
        from costmodels.errors import first_line

        text = first_line(str(res.error)) or "failed"
        hint = ("; that is TVM's ONNX frontend or compiler refusing this model: ONNX "
                "Runtime may run it (--runtime ort)"
                if res.runtime == "tvm" and text.startswith("build failed") else "")
        print(f"error: {args.model}: {text}{hint}", file=sys.stderr)
        # the runtime refused the model itself (a user's file): 2; it failed while running: 1
        return 2 if text.startswith("build failed") else 1
    return 0


# ----------------------------------------------------------------------------- measure-space
def cmd_measure_space(args: argparse.Namespace) -> int:
    from pathlib import Path

    from costmodels.cli import check_output, selected_archs
    from costmodels.tables import sidecar_path
    from measure.campaign import expand, representatives, run_campaign, space_jobs
    from measure.sqlite import inspect
    from measure.store import SCHEMA as STORE_SCHEMA
    from measure.store import MeasureStore

    config = config_from_args(args)
    figure = args.figure or ("corrected" if config.drift_ref else "raw")
    if figure == "corrected" and not config.drift_ref:
        from costmodels.errors import InputError

        raise InputError("--figure corrected needs the drift reference, which "
                         "--no-drift-correct (or a runtime other than ONNX Runtime) turns off; "
                         "drop --no-drift-correct or use --figure raw")
    if args.window < 1:
        raise _bad("--window", args.window, "an integer >= 1")
    out = check_output(args.output, "latency table (-o)")
    side = sidecar_path(out)
    check_output(side, "fingerprint sidecar", json_ok=True)
    check_output(args.db, "measurement store (--db)", text=False)
    if Path(args.db).resolve() == side.resolve():
        from costmodels.errors import InputError

        raise InputError(f"--db {args.db}: is the fingerprint sidecar the table -o "
                         f"{args.output} gets beside it; give the store another name "
                         "(nothing was written)")
    inspect(args.db, STORE_SCHEMA)  # a foreign, corrupt or empty file: refused, untouched
    space, archs = selected_archs(args)  # --space / --archs / --sample read and checked
    if args.representatives == "space":  # a space without the rule: before the store exists
        from measure.campaign import space_canonical

        space_canonical(space)
    if args.devices and not config.rpc_tracker:
        from costmodels.errors import InputError
        raise InputError("--devices needs --rpc-tracker HOST:PORT and --rpc-key (a farm of "
                         "boards); a local campaign uses this machine")
    from measure.rounds import check_anchors

    check_anchors(config)
    with MeasureStore(args.db) as store:  # created (or migrated) only now
        jobs = space_jobs(space, archs, args.dataset, args.batch)
        if args.representatives:
            groups = representatives(jobs, args.representatives, space)
        else:  # the same network under two names (two copies of a file): measured once
            groups = {}
            for j in jobs:
                groups.setdefault(j.net.key, []).append(j)
        reps = [members[0] for members in groups.values()]
        if config.rpc_tracker:  # a farm: every board under the key, lost boards requeued
            from measure.farm import run_farm

            summary = run_farm(reps, store, config, devices=args.devices,
                               retry_failed=args.retry_failed)
        else:
            summary = run_campaign(reps, config, store, retry_failed=args.retry_failed,
                                   window=args.window)
        records = expand(summary.records, groups)
        n = store.export_table(out, records, figure=figure, errors=True)
        camps = [c for c in store.campaigns() if c["config_hash"] == summary.config_hash
                 and c["device_hash"] == summary.device_hash]
    failed = [r for r in records if not r.result.ok]
    from costmodels.tables import atomic_output

    with atomic_output(side) as fh:
        fh.write(json.dumps(_sidecar(args, config, summary, records, camps, figure, n,
                                     len(groups), len(jobs)), indent=1, default=str) + "\n")
    print(f"{summary.measured - summary.failed} measured, {summary.failed} failed, "
          f"{summary.skipped} already in "
          f"{args.db}; wrote {out} ({n} networks{_rep_note(args, groups, jobs)}, {figure} "
          f"figure) and {side} in {summary.seconds:.1f} s", file=sys.stderr)
    for r in failed[:20]:
        print(f"failed: {r.net.name}: {(r.result.error.splitlines() or [''])[0]}",
              file=sys.stderr)
    if len(failed) > 20:
        print(f"failed: ... and {len(failed) - 20} more (see the error column)", file=sys.stderr)
    return 1 if failed else 0


def _rep_note(args, groups, jobs) -> str:
    if not args.representatives:
        same = len(jobs) - len(groups)
        return f"; {same} identical to another one, measured with it" if same else ""
    return f" from {len(groups)} representatives of {len(jobs)}"


FIGURE_NAMES = {"corrected": "drift-corrected", "raw": "raw", "min": "min"}
FIGURE_TEXT = {"corrected": "median over rounds of the round medians, each round scaled by "
                            "the reference network's drift",
               "raw": "median over rounds of the round medians",
               "min": "the fastest of the timed runs (all rounds), as timed"}


def _sidecar(args, config, summary, records, camps, figure, n, n_groups, n_jobs) -> dict:
    from measure.fingerprint import device_slug, fingerprint
    from measure.rounds import PROTOCOL

    ok = [r.result for r in records if r.result.ok]
    cvs = [r.cv for r in ok]
    rcvs = [r.round_cv for r in ok if math.isfinite(r.round_cv)]
    drifts = [c["drift"] for c in camps if c["drift"] is not None]
    return {
        "device": device_slug(), "fingerprint": fingerprint(config), "config": config.to_dict(),
        "config_hash": summary.config_hash, "device_hash": summary.device_hash,
        "space": args.space, "dataset": args.dataset, "batch": args.batch,
        "figure": FIGURE_NAMES[figure],
        "latency_ms": FIGURE_TEXT[figure],
        "protocol": PROTOCOL, "rounds": config.rounds, "window": args.window,
        "representatives": args.representatives or None, "classes": n_groups,
        "networks": n_jobs, "cells": n, "failed": sum(not r.result.ok for r in records),
        "cv_median": _median(cvs), "cv_max": max(cvs) if cvs else None,
        "round_cv_median": _median(rcvs), "round_cv_p90": _quantile(rcvs, 0.9),
        "campaign_drift_median": _median(drifts),
        "reference_drift_median": _median([c["reference_drift"] for c in camps
                                           if c["reference_drift"] is not None]),
        "noisy": sum(r.noisy for r in ok),
        "last_run_s": round(summary.seconds, 1), "store": str(args.db),
    }


# ----------------------------------------------------------------------------- measure-quality
def table_deviation(a_path: str, b_path: str) -> dict:
    """Per-cell deviation of two latency tables of the same cells: |a - b| / mean(a, b).

    Returns ``{"cells", "median", "p90", "max", "kendall", "only_a", "only_b"}`` (fractions).
    """
    import numpy as np

    a, b = _read_latencies(a_path), _read_latencies(b_path)
    common = sorted(set(a) & set(b))
    if not common:
        from costmodels.errors import TableError

        raise TableError(f"{a_path} and {b_path}: no architecture in common; compare two "
                         "campaigns of the same networks")
    x = np.array([a[k] for k in common])
    y = np.array([b[k] for k in common])
    dev = np.abs(x - y) / ((x + y) / 2)
    from costmodels.harness.metrics import kendall

    return {"cells": len(common), "median": float(np.median(dev)),
            "p90": float(np.percentile(dev, 90)), "max": float(dev.max()),
            "mean_ratio": float(np.exp(np.mean(np.log(y / x)))),
            "kendall": _finite_or_none(kendall(x, y)) if len(common) > 2 else None,
            "only_a": len(set(a) - set(b)), "only_b": len(set(b) - set(a))}


def _finite_or_none(v: float) -> float | None:
    """``v``, or None where it is undefined (Kendall of a constant column): JSON has no NaN."""
    return float(v) if math.isfinite(v) else None


def _read_latencies(path: str) -> dict[str, float]:
    """arch_str -> latency_ms of the rows that have one (error rows are skipped), read by
    the toolkit's one table reader (its number, empty-field and truncation checks); a
    network listed twice is refused (which of its figures would be compared?)."""
    from costmodels.errors import DuplicateRowError, TableError
    from costmodels.tables import read_table

    try:
        t = read_table(path, space=None)
    except DuplicateRowError as exc:
        raise TableError(f"{exc.where}; measure-quality compares one figure per network: "
                         "keep one row of it") from None
    return dict(zip(t.arch_str, (float(v) for v in t.latency_ms), strict=True))


def store_quality(db: str) -> dict:
    """Round-to-round CV of the stored rows and the drift of each campaign in a store."""
    from measure.store import MeasureStore

    with MeasureStore(db, readonly=True) as store:
        recs = [r for r in store.records() if r.result.ok]
        camps = store.campaigns()
    rcvs = [r.result.round_cv for r in recs if math.isfinite(r.result.round_cv)]
    return {"rows": len(recs), "round_cv_median": _median(rcvs),
            "round_cv_p90": _quantile(rcvs, 0.9),
            "campaigns": [{"id": c["id"], "started_at": c["started_at"],
                           "networks": c["networks"], "measured": c["measured"],
                           "failed": c["failed"], "windows": len(c["windows"]),
                           "drift": c["drift"], "reference_drift": c["reference_drift"]}
                          for c in camps]}


def cmd_measure_quality(args: argparse.Namespace) -> int:
    from costmodels.errors import InputError

    if not args.tables and not args.db:
        raise InputError("measure-quality needs two tables or --db; give A.csv B.csv (two "
                         "campaigns of the same networks) or --db STORE")
    if args.tables and len(args.tables) != 2:
        raise InputError(f"measure-quality takes two tables, got {len(args.tables)}; give "
                         "A.csv B.csv")
    doc: dict = {}
    if args.tables:
        doc["deviation"] = table_deviation(*args.tables)  # bad tables: refused first
        _warn_unlike_tables(*args.tables)
    if args.db:
        doc["store"] = store_quality(args.db)
    if args.json:
        json.dump(doc, sys.stdout, indent=1)
        sys.stdout.write("\n")
        return 0
    if "deviation" in doc:
        d = doc["deviation"]
        tau = f", Kendall tau {d['kendall']:.3f}" if d["kendall"] is not None else ""
        print(f"per-network deviation over {d['cells']} networks: median {100 * d['median']:.2f}%, "
              f"p90 {100 * d['p90']:.2f}%, max {100 * d['max']:.2f}%; B/A geometric mean "
              f"{d['mean_ratio']:.4f}{tau}")
        if d["only_a"] or d["only_b"]:
            print(f"not compared: {d['only_a']} row(s) only in {args.tables[0]}, "
                  f"{d['only_b']} only in {args.tables[1]}")
    if "store" in doc:
        s = doc["store"]
        print(f"{s['rows']} rows: round-to-round CV median {_pct(s['round_cv_median'])}, "
              f"p90 {_pct(s['round_cv_p90'])}")
        for c in s["campaigns"]:
            print(f"campaign {c['id']} ({c['started_at']}): {c['measured']} measured in "
                  f"{c['windows']} window{'' if c['windows'] == 1 else 's'}, drift {_pct(c['drift'])}, reference drift "
                  f"{_pct(c['reference_drift'])}")
    return 0


# ----------------------------------------------------------------------------- helpers
def _warn_unlike_tables(a: str, b: str) -> None:
    """One warning line when two tables compared as campaigns of the same networks are one
    file, or their sidecars say another space, dataset or batch (compare and fit warn so)."""
    from pathlib import Path

    from costmodels.tables import read_sidecar

    try:
        same = Path(a).resolve() == Path(b).resolve()
    except (OSError, RuntimeError):
        same = False
    if same:
        print(f"warning: {a} is compared with itself: its deviation is 0 by construction",
              file=sys.stderr)
        return
    sa, sb = read_sidecar(a), read_sidecar(b)
    for key in ("space", "dataset", "batch"):
        if sa.get(key) is not None and sb.get(key) is not None and sa[key] != sb[key]:
            plural = {"batch": "batch sizes"}.get(key, f"{key}s")
            print(f"warning: {a} and {b} were measured at different {plural} ({sa[key]!r} and "
                  f"{sb[key]!r}, their sidecars say): the same arch strings are other "
                  "networks, so their deviation is not the measurement's", file=sys.stderr)
            return


def _pct(x) -> str:
    return "n/a" if x is None else f"{100 * x:.2f}%"


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
    return _quantile(xs, 0.5)


def _quantile(xs: list[float], q: float) -> float | None:
    import numpy as np

    xs = [x for x in xs if x is not None and not math.isnan(x)]
    return float(np.quantile(xs, q)) if xs else None


def register(sub) -> None:
    from costmodels.cli import Formatter, add_space_args, positive_int
    from measure.config import FIGURES

    p = sub.add_parser("measure", help="time one network (ONNX Runtime or TVM, local or RPC)",
                       formatter_class=Formatter, epilog=MEASURE_EPILOG,
                       description="Measure a model: warm-up, timed runs in rounds, "
                                   "median/p10/p90/CV and the device fingerprint.")
    p.add_argument("model", help="MODEL.onnx, or an architecture of --space (arch string or "
                                 "standard index)")
    p.add_argument("--json", action="store_true", help="print the statistics as JSON")
    add_space_args(p, archs=False)
    add_measure_args(p)
    p.set_defaults(func=cmd_measure)

    p = sub.add_parser("measure-space", help="measure the networks of a space into a store "
                                             "-> table",
                       formatter_class=Formatter, epilog=SPACE_EPILOG,
                       description="A resumable measurement campaign over the networks of a "
                                   "search space, in interleaved rounds.")
    add_space_args(p)
    add_measure_args(p)
    p.add_argument("--db", required=True, help="SQLite measurement store (created if missing)")
    p.add_argument("-o", "--output", required=True, help="latency-table CSV of the networks")
    p.add_argument("--window", type=int, default=20,
                   help="networks built and timed together in interleaved rounds")
    p.add_argument("--figure", choices=list(FIGURES), default=None,
                   help="which figure latency_ms holds: corrected (the default with the "
                        "drift reference), raw (the default with --no-drift-correct or "
                        "--runtime tvm), or min: the fastest timed run as timed, which "
                        "repeats best for sub-millisecond networks on a machine disturbed "
                        "by other work (a store measured once can be exported with each)")
    p.add_argument("--representatives", nargs="?", const="graph", choices=["graph", "space"],
                   default=None,
                   help="measure one network per class and give its figure to all: 'graph' "
                        "(default) = networks that compute the same layers (nb201: 14,125 "
                        "classes); 'space' = the space's isomorphism (nb201: 6,466 classes, "
                        "but it merges cells that compute different layers -- a convolution "
                        "of a zero node still runs -- whose times were seen to differ by up "
                        "to 80%%)")
    p.add_argument("--retry-failed", action="store_true",
                   help="measure networks stored as failed again")
    p.add_argument("--devices", type=positive_int, default=None, metavar="N",
                   help="with --rpc-tracker: boards kept busy at once (default: every board "
                        "the tracker reports free under --rpc-key); see measure/FARM.md")
    p.set_defaults(func=cmd_measure_space)

    p = sub.add_parser("measure-quality", help="how well measurements repeat: two campaigns' "
                                               "per-cell deviation; a store's round CV and drift",
                       formatter_class=Formatter, epilog=QUALITY_EPILOG,
                       description="Measured quality of campaigns.")
    p.add_argument("tables", nargs="*", metavar="TABLE.csv",
                   help="two latency tables of the same networks")
    p.add_argument("--db", help="a measurement store: round-to-round CV and campaign drift")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(func=cmd_measure_quality)
