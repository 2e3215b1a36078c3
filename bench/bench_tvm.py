"""Benchmark: tuned TVM from one space-wide database, against ONNX Runtime (issue 17).

For a sample of NAS-Bench-201 cells (8; quick: 2):

1. ONNX Runtime, TVM untuned, and TVM compiled from a tuning database of the whole
   sample (the distinct tasks of every cell, each tuned once: ``costmodels tvm tune``);
   per cell the ratio to ONNX Runtime, and the median ratio.
2. The total tuning cost (wall seconds, tasks, trials) and how many of each cell's tasks
   the database covers (a cell with a task left untuned is marked partial).
3. Where the time goes in one tuned cell: per fused kernel (TVM's VM profiler) beside
   ONNX Runtime's per-node profile.

Timing on a shared 2-core machine is noisy (the 1-minute load average is printed). The
tuning budget is small here: the figures show how far a given budget gets, not TVM's best.

    python bench/bench_tvm.py [--quick] [--cells N] [--trials-per-task K] [--population P]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _measure_all(models, config):
    from measure import measure

    return [measure(m, config) for m in models]


def _tvm_profile(model, config, work_dir: str, top: int = 8) -> list[tuple[str, float]]:
    """Per-kernel time (ms per inference, summed over call sites) of one tuned network,
    the ``top`` largest; timed around each VM call (includes ~µs of Python hook)."""
    import numpy as np
    import tvm
    from tvm import relax

    from measure.inputs import as_proto, input_specs, random_inputs
    from measure.tvm import build

    built = build(model, replace(config, tvm_work_dir=work_dir))
    if not built.ok:
        return [("build failed: " + built.error[:80], float("nan"))]
    dev = tvm.cpu()
    vm = relax.VirtualMachine(built.artifact, dev)
    inputs = random_inputs(input_specs(as_proto(model)), 0)
    args = [tvm.runtime.tensor(np.ascontiguousarray(a), dev) for a in inputs.values()]
    vm["main"](*args)
    totals: dict[str, float] = {}
    started: dict[str, float] = {}

    def instrument(func, name, before, ret, *rest):  # VM hook around every call
        if before:
            started[name] = time.perf_counter()
        else:
            totals[name] = totals.get(name, 0.0) + time.perf_counter() - started[name]
        return 0  # VMInstrumentReturnKind.NO_OP

    vm.set_instrument(instrument)
    runs = 20
    for _ in range(runs):
        vm["main"](*args)
    per = {k: 1e3 * v / runs for k, v in totals.items() if not k.startswith("vm.builtin")}
    return sorted(per.items(), key=lambda kv: -kv[1])[:top]


def _ort_profile(model, top: int = 8) -> list[tuple[str, float]]:
    """ONNX Runtime per-node mean time (ms), the ``top`` largest (one thread, all opts)."""
    import numpy as np
    import onnxruntime as ort

    from measure.inputs import as_bytes, as_proto, input_specs, random_inputs

    so = ort.SessionOptions()
    so.intra_op_num_threads = so.inter_op_num_threads = 1
    so.enable_profiling = True
    so.profile_file_prefix = str(Path(tempfile.mkdtemp()) / "ort")
    sess = ort.InferenceSession(as_bytes(model), so, providers=["CPUExecutionProvider"])
    feed = {k: np.ascontiguousarray(v)
            for k, v in random_inputs(input_specs(as_proto(model)), 0).items()}
    for _ in range(50):
        sess.run(None, feed)
    path = sess.end_profiling()
    per: dict[str, float] = {}
    events = json.loads(Path(path).read_text())
    for ev in events:
        if ev.get("cat") == "Node" and ev.get("name", "").endswith("_kernel_time"):
            key = f"{ev['args'].get('op_name', '?')}:{ev['name'][:-len('_kernel_time')]}"
            per[key] = per.get(key, 0.0) + ev["dur"] / 1e3 / 50
    return sorted(per.items(), key=lambda kv: -kv[1])[:top]


def run(cells: int, trials: int, population: int | None, max_tasks: int) -> dict:
    from costmodels.spaces import get_space
    from measure.config import MeasureConfig
    from measure.tune import extract_space_tasks, tune_space
    from measure.tvm import target_dict

    space = get_space("nb201")
    archs = space.sample(cells, seed=0)
    models = [space.build_onnx(a) for a in archs]
    base = MeasureConfig(warmup=10, repeat=50, max_retries=1)
    tvm_cfg = replace(base, runtime="tvm")
    target = target_dict(tvm_cfg)
    work = tempfile.mkdtemp(prefix="bench-tvm-")
    t0 = time.perf_counter()
    tasks = extract_space_tasks(list(zip(archs, models, strict=True)), target,
                                show_progress=False)
    extract_s = time.perf_counter() - t0
    chosen = tasks[:max_tasks] if max_tasks else tasks
    summary = tune_space(chosen, work, target, trials, show_progress=False,
                         population=population)
    profile_tvm = _tvm_profile(models[0], tvm_cfg, work)
    ort_res = _measure_all(models, replace(base, runtime="ort"))
    untuned = _measure_all(models, tvm_cfg)
    tuned = _measure_all(models, replace(tvm_cfg, tvm_work_dir=work))
    rows = []
    for a, o, u, t in zip(archs, ort_res, untuned, tuned, strict=True):
        rows.append({"arch": a, "ort_ms": o.median_ms, "untuned_ms": u.median_ms,
                     "tuned_ms": t.median_ms, "tuned_ok": t.ok,
                     "tasks": t.meta.get("tuning_tasks"), "found": t.meta.get("tuning_tasks_found"),
                     "tvm_tuned": t.meta.get("tvm_tuned"), "error": t.error[:100]})
    return {"cells": cells, "archs": archs, "target": target, "tasks": len(tasks),
            "tuned_tasks": len(chosen), "extract_s": round(extract_s, 1),
            "tune": summary.to_dict(), "rows": rows, "loadavg": os.getloadavg()[0],
            "profile_tvm": profile_tvm,
            "profile_ort": _ort_profile(models[0])}


def _ratio(rows, key: str) -> float | None:
    r = [row[key] / row["ort_ms"] for row in rows if row["ort_ms"] == row["ort_ms"]
         and row[key] == row[key] and row["ort_ms"] > 0]
    return statistics.median(r) if r else None


def markdown(res: dict) -> str:
    tune = res["tune"]
    lines = [
        "## TVM tuned from one space-wide database vs ONNX Runtime (`bench/bench_tvm.py`)",
        "",
        f"{res['cells']} NAS-Bench-201 cells (cifar10, batch 1, one thread), target "
        f"`{json.dumps(res['target'])}`; {res['tasks']} distinct tasks across them "
        f"(extraction {res['extract_s']} s), {res['tuned_tasks']} tuned with "
        f"{tune['trials_per_task']} trials each in {tune['seconds']:.0f} s "
        f"({tune['records_after']} records). 1-min load average {res['loadavg']:.1f} "
        "(shared 2-core machine: timings noisy).",
        "",
        "| cell | ORT ms | TVM untuned ms (x ORT) | TVM from DB ms (x ORT) | tasks in DB |",
        "|---|---:|---:|---:|---|",
    ]
    for r in res["rows"]:
        o = r["ort_ms"]
        flag = "" if r["tvm_tuned"] else " (partial: untuned tasks)"
        lines.append(f"| `{r['arch']}` | {o:.3f} | {r['untuned_ms']:.3f} "
                     f"({r['untuned_ms'] / o:.1f}x) | {r['tuned_ms']:.3f} ({r['tuned_ms'] / o:.1f}x)"
                     f" | {r['found']}/{r['tasks']}{flag} |")
    lines += ["", f"Median ratio to ONNX Runtime: untuned {_ratio(res['rows'], 'untuned_ms'):.1f}x, "
              f"from the database {_ratio(res['rows'], 'tuned_ms'):.1f}x.", "",
              "Where the time goes in the first cell (mean ms per call site, largest first):", "",
              "| TVM kernel (from DB) | ms | ORT node | ms |", "|---|---:|---|---:|"]
    tv, ov = res["profile_tvm"], res["profile_ort"]
    for i in range(max(len(tv), len(ov))):
        a = tv[i] if i < len(tv) else ("", float("nan"))
        b = ov[i] if i < len(ov) else ("", float("nan"))
        lines.append(f"| {a[0]} | {a[1]:.4f} | {b[0]} | {b[1]:.4f} |")
    return "\n".join(lines) + "\n"


def section(quick: bool = False) -> str:
    if quick:
        return markdown(run(cells=2, trials=4, population=16, max_tasks=4))
    return markdown(run(cells=8, trials=32, population=None, max_tasks=0))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--cells", type=int)
    p.add_argument("--trials-per-task", type=int)
    p.add_argument("--population", type=int)
    p.add_argument("--max-tasks", type=int, default=None)
    args = p.parse_args()
    if args.cells is None and args.trials_per_task is None:
        print(section(args.quick))
        return 0
    print(markdown(run(args.cells or 8, args.trials_per_task or 32, args.population,
                       args.max_tasks or 0)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
