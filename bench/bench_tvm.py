"""Benchmark: tuned TVM from one space-wide database, against ONNX Runtime (issue 17).

For a sample of NAS-Bench-201 cells outside the covering set the database was tuned on
(8; quick: 2):

1. ONNX Runtime, TVM untuned, and TVM compiled from the space database with no further
   trial; per cell the ratio to ONNX Runtime, the median ratios, and how many of each
   cell's anchor-block tasks the database holds.
2. The tuning cost, read from the database's ledger (wall seconds of the tuning runs,
   extraction included; tasks; trials).
3. How many anchor-block tasks a sample of random cells adds beyond the covering set.
4. Where the time goes in one tuned cell: every TVM kernel timed alone
   (``time_evaluator``, x its calls per inference) beside ONNX Runtime's per-node
   profile, both grouped by what the kernel computes (conv k x k Cin->Cout at HxW, pool,
   element-wise, layout), and for the groups where TVM loses most: achieved GFLOP/s and
   the tuner's own best time of the task.

    python bench/bench_tvm.py [--quick] [--work-dir DB] [--cells N] [--coverage N]

``--work-dir DB`` (or ``COSTMODELS_TVM_WORK_DIR``) reuses a database ``costmodels tvm tune``
wrote; without one, a fresh database is tuned here on the covering set (quick: 4 tasks,
4 trials; full: ``--trials-total 400``) and the section says so. Timing on a shared
2-core machine is noisy (the 1-minute load average is printed).
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
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

ENV_WORK_DIR = "COSTMODELS_TVM_WORK_DIR"
FRESH_TRIALS_TOTAL = 400


# ---------------------------------------------------------------------------- kernel groups
def _group(kind: str, weight: list[int] | None, out: list[int]) -> str:
    """One label for what a kernel computes, the same for TVM and ONNX Runtime."""
    hw = "x".join(str(d) for d in out[2:]) if len(out) > 2 else "x".join(map(str, out))
    if kind == "conv" and weight:
        return f"conv {weight[2]}x{weight[3]} {weight[1]}->{weight[0]} @{hw}"
    if len(out) > 2:
        return f"{kind} {out[1]}ch @{hw}"
    return kind


def _conv_gflop(label: str) -> float:
    """GFLOP of one call of a ``conv KxK CIN->COUT @HxW`` group (0 for other groups)."""
    if not label.startswith("conv "):
        return 0.0
    _, k, ch, hw = label.split()
    kh, kw = (int(v) for v in k.split("x"))
    cin, cout = (int(v) for v in ch.split("->"))
    h, w = (int(v) for v in hw[1:].split("x"))
    return 2.0 * kh * kw * cin * cout * h * w / 1e9


def _tvm_kind(name: str) -> str:
    for word, kind in (("conv2d", "conv"), ("pool2d", "pool"), ("matmul", "gemm"),
                       ("mean", "global pool"), ("reshape", "view")):
        if word in name:
            return kind
    return "element-wise"


ORT_KINDS = {"Conv": "conv", "FusedConv": "conv", "AveragePool": "pool", "MaxPool": "pool",
             "GlobalAveragePool": "global pool", "ReduceMean": "global pool", "Gemm": "gemm",
             "MatMul": "gemm", "FusedGemm": "gemm", "ReorderInput": "layout",
             "ReorderOutput": "layout", "Flatten": "view", "Reshape": "view"}


# ---------------------------------------------------------------------------- profiles
def tvm_profile(model, target: dict, work_dir: str, ledger: dict, repeat: int = 5
                ) -> list[dict[str, Any]]:
    """Every kernel of one network compiled from the database: calls per inference (VM
    hook), median ms per call timed alone (``time_evaluator``, 50 runs x ``repeat``), its
    group, its task's trials and tuner-measured best ms from the ledger, and how many
    512-bit (``%zmm``) and 256-bit (``%ymm``) register operands its x86 assembly has."""
    import numpy as np
    import tvm

    from measure.tune import apply_database, lower, task_key

    lowered = lower(model, target)
    keys = {gv.name_hint: task_key(tvm.IRModule({"main": f}))
            for gv, f in lowered.functions.items() if type(f).__name__ == "PrimFunc"}
    applied, _ = apply_database(lowered, target, work_dir)
    tgt = tvm.target.Target(target)
    calls = _calls_per_inference(tvm.compile(applied, target=tgt), model)
    rng = np.random.default_rng(0)
    rows = []
    for gv, f in applied.functions.items():
        name = gv.name_hint
        if type(f).__name__ != "PrimFunc" or name not in calls:
            continue
        shapes = [[int(d) for d in p.shape] for p in f.params]
        built = tvm.compile(tvm.IRModule({"main": f.with_attr("global_symbol", "main")}),
                            target=tgt)
        asm = built.mod.inspect_source("asm")
        lib = built.jit()
        args = [tvm.runtime.tensor(rng.normal(size=s).astype("float32")) for s in shapes]
        ms = lib.time_evaluator("main", tvm.cpu(), number=50, repeat=repeat)(*args).median * 1e3
        kind = _tvm_kind(name)
        entry = ledger.get(keys.get(name, ""), {})
        rows.append({"name": name, "group": _group(kind, shapes[1] if kind == "conv" else None,
                                                    shapes[-1]),
                     "calls": calls[name], "ms_per_call": ms, "ms": ms * calls[name],
                     "trials": entry.get("trials", 0), "tuner_best_ms": entry.get("best_ms"),
                     "zmm": asm.count("%zmm"), "ymm": asm.count("%ymm")})
    return rows


def _calls_per_inference(ex, model) -> dict[str, int]:
    """How often the VM calls each kernel in one inference (an instrument hook)."""
    import numpy as np
    import tvm
    from tvm import relax

    from measure.inputs import as_proto, input_specs, random_inputs

    dev = tvm.cpu()
    vm = relax.VirtualMachine(ex, dev)
    inputs = random_inputs(input_specs(as_proto(model)), 0)
    args = [tvm.runtime.tensor(np.ascontiguousarray(a), dev) for a in inputs.values()]
    counts: dict[str, int] = {}

    def instrument(func, name, before, ret, *rest):
        if before:
            counts[name] = counts.get(name, 0) + 1
        return 0  # VMInstrumentReturnKind.NO_OP

    vm.set_instrument(instrument)
    vm["main"](*args)
    return {k: v for k, v in counts.items() if not k.startswith("vm.builtin")}


def ort_profile(model, runs: int = 100) -> list[dict[str, Any]]:
    """ONNX Runtime per-node mean ms per inference (one thread, all graph optimisations),
    with the group of what each node computes."""
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
    for _ in range(10):
        sess.run(None, feed)
    sess.end_profiling()
    sess = ort.InferenceSession(as_bytes(model), so, providers=["CPUExecutionProvider"])
    for _ in range(runs):
        sess.run(None, feed)
    path = sess.end_profiling()
    nodes: dict[str, dict[str, Any]] = {}
    for ev in json.loads(Path(path).read_text()):
        if ev.get("cat") != "Node" or not ev.get("name", "").endswith("_kernel_time"):
            continue
        a = ev["args"]
        op = a.get("op_name", "?")
        ins = [next(iter(d.values())) for d in a.get("input_type_shape", [])]
        outs = [next(iter(d.values())) for d in a.get("output_type_shape", [])]
        kind = ORT_KINDS.get(op, "element-wise")
        row = nodes.setdefault(ev["name"][:-len("_kernel_time")], {
            "name": ev["name"][:-len("_kernel_time")], "op": op, "ms": 0.0,
            "group": _group(kind, ins[1] if kind == "conv" and len(ins) > 1 else None,
                            outs[0] if outs else [])})
        row["ms"] += ev["dur"] / 1e3 / runs
    Path(path).unlink(missing_ok=True)
    return sorted(nodes.values(), key=lambda r: -r["ms"])


def compare_groups(tvm_rows: list[dict], ort_rows: list[dict]) -> list[dict[str, Any]]:
    """Per group: TVM kernels, calls, ms; ORT nodes, ms; TVM - ORT ms; largest gap first."""
    groups: dict[str, dict[str, Any]] = {}

    def group(label: str) -> dict[str, Any]:
        return groups.setdefault(label, {"group": label, "tvm_ms": 0.0, "tvm_calls": 0,
                                         "ort_ms": 0.0, "ort_nodes": 0, "tvm_kernels": []})

    for r in tvm_rows:
        g = group(r["group"])
        g["tvm_ms"] += r["ms"]
        g["tvm_calls"] += r["calls"]
        g["tvm_kernels"].append(r)
    for r in ort_rows:
        g = group(r["group"])
        g["ort_ms"] += r["ms"]
        g["ort_nodes"] += 1
    for g in groups.values():
        g["gap_ms"] = g["tvm_ms"] - g["ort_ms"]
    return sorted(groups.values(), key=lambda g: -g["gap_ms"])


# ---------------------------------------------------------------------------- the run
def _bench_cells(space, cover: list[str], n: int, seed: int = 0) -> list[str]:
    """``n`` random cells not in the covering set (the first ``n`` of a seeded sample)."""
    skip = set(cover)
    return [a for a in space.sample(n + len(cover), seed) if a not in skip][:n]


def _fresh_database(space, target: dict, quick: bool) -> tuple[str, str]:
    """Tune a new database on the covering set here; (work_dir, how it was tuned)."""
    from measure.tune import covering_archs, extract_space_tasks, tune_space

    work = tempfile.mkdtemp(prefix="bench-tvm-")
    cover, _ = covering_archs(space)
    t0 = time.perf_counter()
    tasks = extract_space_tasks([(a, space.build_onnx(a)) for a in cover], target,
                                show_progress=False)
    extract_s = time.perf_counter() - t0
    if quick:
        tasks = tasks[:4]
        tune_space(tasks, work, target, 4, show_progress=False, population=16,
                   networks=len(cover), extract_s=extract_s)
        return work, "a fresh quick database (4 tasks x 4 trials, population 16)"
    tune_space(tasks, work, target, trials_total=FRESH_TRIALS_TOTAL, show_progress=False,
               networks=len(cover), extract_s=extract_s)
    return work, f"a fresh database (--trials-total {FRESH_TRIALS_TOTAL})"


def run(cells: int = 8, work_dir: str | None = None, coverage: int = 30,
        quick: bool = False) -> dict[str, Any]:
    from costmodels.spaces import get_space
    from measure import measure
    from measure.config import MeasureConfig
    from measure.tune import (
        covering_archs,
        database_dir,
        extract_space_tasks,
        ledger_cost,
        read_ledger,
        read_ledger_doc,
    )
    from measure.tvm import target_dict

    space = get_space("nb201")
    base = MeasureConfig(warmup=10, repeat=50, max_retries=1)
    tvm_cfg = replace(base, runtime="tvm")
    target = target_dict(tvm_cfg)
    how = f"the database in `{work_dir}`"
    if not work_dir:
        work_dir, how = _fresh_database(space, target, quick)
    db_dir = database_dir(work_dir, target)
    ledger = read_ledger(db_dir)
    cover, cover_how = covering_archs(space)
    archs = _bench_cells(space, cover, max(cells, coverage))
    models = {a: space.build_onnx(a) for a in archs[:cells]}

    extra: dict[str, Any] = {"cells": 0}
    if coverage:
        t0 = time.perf_counter()
        tasks = extract_space_tasks([(a, models[a] if a in models else space.build_onnx(a))
                                     for a in archs[:coverage]],
                                    target, show_progress=False)
        missing = [t for t in tasks if t.key not in ledger]
        extra = {"cells": coverage, "tasks": len(tasks), "missing": len(missing),
                 "missing_names": sorted({t.name for t in missing}),
                 "missing_flop_share": (sum(t.flop_calls for t in missing)
                                        / max(1e-9, sum(t.flop_calls for t in tasks))),
                 "extract_s": round(time.perf_counter() - t0, 1)}

    rows = []
    for a, m in models.items():
        o = measure(m, replace(base, runtime="ort"))
        u = measure(m, tvm_cfg)
        t = measure(m, replace(tvm_cfg, tvm_work_dir=str(work_dir)))
        rows.append({"arch": a, "ort_ms": o.median_ms, "untuned_ms": u.median_ms,
                     "tuned_ms": t.median_ms, "tuned_ok": t.ok,
                     "tasks": t.meta.get("tuning_tasks"), "found": t.meta.get("tuning_tasks_found"),
                     "tvm_tuned": t.meta.get("tvm_tuned"), "error": (t.error or u.error)[:100]})
    first = next(iter(models.values()))
    tvm_rows = tvm_profile(first, target, str(work_dir), ledger)
    ort_rows = ort_profile(first)
    return {"cells": cells, "archs": list(models), "target": target, "how": how,
            "cost": ledger_cost(db_dir), "ledger_runs": read_ledger_doc(db_dir).get("runs", []),
            "cover": cover, "cover_how": cover_how, "coverage": extra, "rows": rows,
            "loadavg": os.getloadavg()[0], "tvm_profile": tvm_rows, "ort_profile": ort_rows,
            "groups": compare_groups(tvm_rows, ort_rows)}


# ---------------------------------------------------------------------------- markdown
def _ratio(rows, key: str) -> float:
    r = [row[key] / row["ort_ms"] for row in rows if row["ort_ms"] == row["ort_ms"]
         and row[key] == row[key] and row["ort_ms"] > 0]
    return statistics.median(r) if r else float("nan")


def _cell_lines(res: dict) -> list[str]:
    lines = ["| cell | ORT ms | TVM untuned ms (x ORT) | TVM from DB ms (x ORT) | tasks in DB |",
             "|---|---:|---:|---:|---|"]
    for r in res["rows"]:
        o = r["ort_ms"]
        flag = "" if r["tvm_tuned"] else " (partial: untuned tasks)"
        lines.append(f"| `{r['arch']}` | {o:.3f} | {r['untuned_ms']:.3f} "
                     f"({r['untuned_ms'] / o:.1f}x) | {r['tuned_ms']:.3f} ({r['tuned_ms'] / o:.2f}x)"
                     f" | {r['found']}/{r['tasks']}{flag} |")
    return lines


def _group_lines(res: dict, top: int = 12) -> list[str]:
    groups = res["groups"]
    tvm_total = sum(g["tvm_ms"] for g in groups)
    ort_total = sum(g["ort_ms"] for g in groups)
    lines = ["| kernel group | TVM calls | TVM ms | ORT nodes | ORT ms | TVM - ORT ms |",
             "|---|---:|---:|---:|---:|---:|"]
    for g in groups[:top]:
        lines.append(f"| {g['group']} | {g['tvm_calls']} | {g['tvm_ms']:.4f} | {g['ort_nodes']} "
                     f"| {g['ort_ms']:.4f} | {g['gap_ms']:+.4f} |")
    if len(groups) > top:
        rest = groups[top:]
        lines.append(f"| ({len(rest)} more groups) | {sum(g['tvm_calls'] for g in rest)} | "
                     f"{sum(g['tvm_ms'] for g in rest):.4f} | {sum(g['ort_nodes'] for g in rest)}"
                     f" | {sum(g['ort_ms'] for g in rest):.4f} | "
                     f"{sum(g['gap_ms'] for g in rest):+.4f} |")
    lines.append(f"| **sum** | | **{tvm_total:.4f}** | | **{ort_total:.4f}** | "
                 f"**{tvm_total - ort_total:+.4f}** |")
    return lines


def _why_lines(res: dict, top: int = 3) -> list[str]:
    lines = []
    for g in [g for g in res["groups"] if g["gap_ms"] > 0][:top]:
        gflop = _conv_gflop(g["group"])
        speed = ""
        if gflop and g["tvm_calls"] and g["ort_nodes"] and g["ort_ms"] > 0:
            tvm_rate = gflop * g["tvm_calls"] / (g["tvm_ms"] / 1e3)
            ort_rate = gflop * g["ort_nodes"] / (g["ort_ms"] / 1e3)
            speed = f"; {tvm_rate:.1f} GFLOP/s against ORT's {ort_rate:.1f}"
        kernels = "; ".join(
            f"`{k['name']}` {k['ms_per_call'] * 1e3:.1f} µs/call alone, tuner's best "
            + (f"{k['tuner_best_ms'] * 1e3:.1f} µs" if k["tuner_best_ms"] else "none")
            + f" after {k['trials']} trials" for k in g["tvm_kernels"][:3])
        if not g["ort_nodes"]:
            cause = ("no ORT node of this group: ORT fuses this work into a neighbouring "
                     "kernel, TVM runs it as its own kernel")
        elif not g["tvm_calls"]:
            cause = "no TVM kernel of this group"
        else:
            cause = (f"{g['tvm_ms'] / g['ort_ms']:.1f}x ORT's time for the same work{speed}")
        lines.append(f"- **{g['group']}**: {g['gap_ms'] * 1e3:+.0f} µs per inference; {cause}. "
                     f"{kernels or ''}")
    return lines


def _feature_line(prof: list[dict]) -> str:
    """Which vector registers the tuned kernels' assembly uses, and their time share."""
    wide = [k for k in prof if k["zmm"]]
    conv = [k for k in wide if k["group"].startswith("conv")]
    total_ms = sum(k["ms"] for k in prof) or float("nan")
    return (f"Target features used: {len(wide)} of {len(prof)} TVM kernels of this cell use "
            f"512-bit `zmm` registers (AVX-512; {sum(k['zmm'] for k in prof)} zmm and "
            f"{sum(k['ymm'] for k in prof)} ymm operands in their assembly); the {len(conv)} "
            f"conv kernels among them take {100 * sum(k['ms'] for k in conv) / total_ms:.0f}% "
            "of TVM's kernel time.")


def markdown(res: dict) -> str:
    cost, cov = res["cost"], res["coverage"]
    lines = [
        "## TVM tuned from one space-wide database vs ONNX Runtime (`bench/bench_tvm.py`)",
        "",
        f"{res['cells']} NAS-Bench-201 cells (cifar10, batch 1, one thread, pinned), not in "
        f"the covering set, measured with {res['how']}; target `{json.dumps(res['target'])}`. "
        f"1-min load average {res['loadavg']:.1f} (shared 2-core machine: timings noisy).",
        "",
        f"Tuning cost (from the ledger): {cost['wall_s']:.0f} s wall over {cost['runs']} "
        f"run(s) (task extraction included), {cost['tasks']} anchor-block tasks, "
        f"{cost['trials']} trials ({cost['tune_s']:.0f} s inside the tuner), tasks extracted "
        f"from {cost['networks']} network(s): the covering set ({res['cover_how']['how']}: "
        f"{len(res['cover'])} cell(s)).",
        "",
    ]
    lines += _cell_lines(res)
    lines += ["", f"Median ratio to ONNX Runtime: untuned {_ratio(res['rows'], 'untuned_ms'):.1f}x, "
              f"from the database {_ratio(res['rows'], 'tuned_ms'):.2f}x.", ""]
    if cov.get("cells"):
        names = ", ".join(f"`{n}`" for n in cov["missing_names"][:8]) or "none"
        lines += [f"Coverage: {cov['cells']} random cells outside the covering set hold "
                  f"{cov['tasks']} distinct anchor-block tasks; {cov['missing']} of them are not "
                  f"in the database ({names}; {100 * cov['missing_flop_share']:.2f}% of their "
                  f"FLOP x calls); extraction {cov['extract_s']:.0f} s.", ""]
    lines += [f"Where the time goes in `{res['archs'][0]}`: every TVM kernel timed alone "
              "(median of 50-run batches) x its calls per inference, beside ONNX Runtime's "
              "per-node profile (mean of 100 inferences; ORT fuses Conv+BN+Add+Relu into one "
              "NCHWc Conv and adds layout reorders), grouped by what the kernel computes; "
              "largest TVM excess first:", ""]
    lines += _group_lines(res)
    lines += ["", _feature_line(res["tvm_profile"])]
    why = _why_lines(res)
    if why:
        lines += ["", "What holds TVM back (from the profile above):", ""] + why
    return "\n".join(lines) + "\n"


def section(quick: bool = False) -> str:
    work_dir = os.environ.get(ENV_WORK_DIR) or None
    if quick:
        return markdown(run(cells=2, work_dir=work_dir, coverage=0, quick=True))
    return markdown(run(cells=8, work_dir=work_dir, coverage=30))


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    p.add_argument("--work-dir", default=os.environ.get(ENV_WORK_DIR) or None,
                   help=f"reuse this tuning database (default ${ENV_WORK_DIR}; none: tune one)")
    p.add_argument("--cells", type=int, default=None, help="cells measured (8; quick 2)")
    p.add_argument("--coverage", type=int, default=None,
                   help="random cells whose tasks are checked against the database (30; quick 0)")
    p.add_argument("--json", metavar="FILE", help="also write the raw results as JSON")
    args = p.parse_args()
    res = run(cells=args.cells or (2 if args.quick else 8), work_dir=args.work_dir,
              coverage=args.coverage if args.coverage is not None else (0 if args.quick else 30),
              quick=args.quick)
    if args.json:
        Path(args.json).write_text(json.dumps(res, indent=1, default=str))
    print(markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
