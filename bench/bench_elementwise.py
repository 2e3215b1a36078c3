"""The roofline on costly element-wise ops: what each costs per element here, against the work
the roofline gives it (``analytical.roofline.TRANSCENDENTAL_WORK``, ``SOFTMAX_WORK``).

Each op is timed with ONNX Runtime (one thread, the project's interleaved rounds, outputs
bound) as one node and as eight nodes reading the same input (no chain: a chain of Exp or
Cosh overflows); seven nodes' time over seven times the elements is the op's time per
element. Its work is that over the unit of the ``transcendental`` class (an element of
``roofline calibrate``'s chain, Gelu and Erf in turn). The eight-node models are also costed
by a roofline calibrated in the same run, two ways:

* **now**: the ops' own work (``TRANSCENDENTAL_WORK``; Softmax by its row length);
* **before** (the baseline, the roofline of 2026-12-07): only Gelu, Erf and QuickGelu in the
  ``transcendental`` class, every other op one element-wise pass (a Resize too: the
  ``Resize:*`` rows, one plain NCHW Resize node of each mode, ``RESIZE_WORK`` now).

    python bench/bench_elementwise.py [--quick]
"""

from __future__ import annotations

import math
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import numpy as np

BRANCHES = 8
REFERENCE = ("Relu",)
SOFTMAX_ROWS = (56, 197, 384)


RESIZES = {"Resize:nearest": (1, 16, 64, 64), "Resize:linear": (1, 16, 64, 64),
           "Resize:cubic": (1, 8, 32, 32)}  # a 2x upsampling of each input, half_pixel


def out_shape(op: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    return shape[:2] + tuple(2 * d for d in shape[2:]) if op in RESIZES else shape


def model(op: str, shape: tuple[int, ...], n: int):
    """``n`` nodes of ``op``, each reading the input, each an output."""
    from onnx import TensorProto, helper, numpy_helper

    kw = {"axis": -1} if op in ("Softmax", "LogSoftmax") else {}
    inits = []
    if op in RESIZES:
        mode = op.split(":")[1]
        inits = [numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "sc")]
        nodes = [helper.make_node("Resize", ["x", "", "sc"], [f"y{i}"], mode=mode,
                                  coordinate_transformation_mode="asymmetric"
                                  if mode == "nearest" else "half_pixel") for i in range(n)]
    elif op == "QuickGelu":  # x * Sigmoid(x), as exported: ONNX Runtime and the planner fuse it
        nodes = [n for i in range(n) for n in (
            helper.make_node("Sigmoid", ["x"], [f"s{i}"]),
            helper.make_node("Mul", ["x", f"s{i}"], [f"y{i}"]))]
    else:
        nodes = [helper.make_node(op, ["x"], [f"y{i}"], **kw) for i in range(n)]
    graph = helper.make_graph(
        nodes, op.lower().replace(":", "_"),
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, shape)],
        [helper.make_tensor_value_info(f"y{i}", TensorProto.FLOAT, out_shape(op, shape))
         for i in range(n)], inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 20)])
    proto.ir_version = 9
    return proto


@contextmanager
def before():
    """The roofline's element-wise work as it was: only Gelu, Erf, QuickGelu transcendental."""
    import analytical.roofline as r

    saved = r.TRANSCENDENTAL_WORK, r.TRANSCENDENTAL_OPS, r.RESIZE_WORK
    r.RESIZE_WORK = {}  # a resize streamed as one element-wise pass
    r.TRANSCENDENTAL_WORK = {"Gelu": 1.0, "Erf": 1.0, "QuickGelu": 0.5}
    r.TRANSCENDENTAL_OPS = frozenset(r.TRANSCENDENTAL_WORK)
    old = r.transcendental_work

    def work(layer):
        if layer.op in r.SOFTMAX_OPS:
            return None
        return old(layer)

    r.transcendental_work = work
    try:
        yield
    finally:
        r.TRANSCENDENTAL_WORK, r.TRANSCENDENTAL_OPS, r.RESIZE_WORK = saved
        r.transcendental_work = old


def section(quick: bool = False) -> str:
    from analytical.calibrate import calibrate, write_spec
    from analytical.roofline import (
        RESIZE_WORK,
        SOFTMAX_WORK,
        TRANSCENDENTAL_WORK,
        RooflineModel,
    )
    from analytical.specs import RooflineSpec, load_spec
    from costmodels.onnx_import import import_onnx
    from costmodels.ops import RESIZE_TAPS
    from measure import MeasureConfig
    from measure.rounds import measure_many

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        spec_path = Path(tmp) / "roofline.toml"
        write_spec(calibrate(repeats=5 if quick else 15), spec_path)
        spec = load_spec(str(spec_path), RooflineSpec)
    shapes = [(1, 64, 56, 56)] if quick else [(1, 64, 56, 56), (1, 8, 384, 384)]
    cases = [(op, s) for s in shapes for op in (*REFERENCE, *TRANSCENDENTAL_WORK)]
    cases += [("Softmax", (1, 4, 2 ** 16 // r, r)) for r in SOFTMAX_ROWS]
    cases += list(RESIZES.items())
    config = MeasureConfig(runtime="ort", repeat=30 if quick else 60, rounds=5,
                           min_round_s=0.02 if quick else 0.1)
    models, names = [], []
    for op, s in cases:
        for n in (1, BRANCHES):
            models.append(model(op, s, n))
            names.append(f"{op}{s}x{n}")
    res = measure_many(models, config, names, bind_outputs=True)
    bad = [f"{n}: {r.error}" for n, r in zip(names, res, strict=True) if not r.ok]
    if bad:
        raise RuntimeError("; ".join(bad))
    per_elem = {}
    for i, (op, s) in enumerate(cases):
        one, many = res[2 * i].median_ms, res[2 * i + 1].median_ms
        per_elem[op, s] = (many - one) / ((BRANCHES - 1) * math.prod(out_shape(op, s)))
    units = {s: (per_elem["Gelu", s] + per_elem["Erf", s]) / 2 for s in shapes}
    now_model = RooflineModel(spec)
    rows, errs_now, errs_before = [], [], []
    for op, s in cases:
        unit = units.get(s, np.mean(list(units.values())))  # Softmax's: the shapes' mean
        work = per_elem[op, s] / unit
        shipped = (SOFTMAX_WORK[0] + SOFTMAX_WORK[1] / s[-1] if op == "Softmax"
                   else RESIZE_WORK.get(RESIZE_TAPS[op[7:]], float("nan"))
                   if op in RESIZES else TRANSCENDENTAL_WORK.get(op, float("nan")))
        net = import_onnx(model(op, s, BRANCHES))
        truth = res[cases.index((op, s)) * 2 + 1].median_ms
        now = now_model.estimate(net).latency_ms
        with before():
            was = RooflineModel(spec).estimate(net).latency_ms
        errs_now.append(math.log(now / truth))
        errs_before.append(math.log(was / truth))
        label = (f"{op} (rows of {s[-1]})" if op == "Softmax" else
                 f"{op} (2x, per output element)" if op in RESIZES else op)
        rows.append(f"| {label} | {'x'.join(map(str, s))} | {per_elem[op, s] * 1e6:.2f} | "
                    f"{work:.2f} | {shipped:.2f} | {truth:.3f} | {now:.3f} ({now / truth:.2f}x) "
                    f"| {was:.3f} ({was / truth:.2f}x) |")
        print(f"[bench_elementwise] {rows[-1]}", file=sys.stderr, flush=True)
    en, eb = np.abs(errs_now), np.abs(errs_before)
    return "\n".join([
        f"### The roofline on costly element-wise ops ({len(cases)} cases, "
        "bench/bench_elementwise.py; ONNX Runtime, one thread, outputs bound)", "",
        "Per element: seven more nodes' time over seven times the elements. Work: that over "
        "the transcendental class's unit (the mean of a Gelu's and an Erf's element at the "
        "same shape; for Softmax, over the shapes). Shipped: the work the roofline gives the op. The last two columns cost "
        f"the {BRANCHES}-node model with a roofline calibrated in this run.", "",
        "| op | shape | ns / element | work measured | work shipped | "
        f"{BRANCHES} nodes ms | roofline now | roofline before |",
        "|---|---|---|---|---|---|---|---|", *rows, "",
        "| costing | geomean factor off | within ±25% | worst factor |", "|---|---|---|---|",
        f"| now | {math.exp(en.mean()):.2f} | {np.mean(en < math.log(1.25)):.0%} | "
        f"{math.exp(en.max()):.1f} |",
        f"| before (baseline) | {math.exp(eb.mean()):.2f} | {np.mean(eb < math.log(1.25)):.0%} "
        f"| {math.exp(eb.max()):.1f} |", "",
        f"*{time.perf_counter() - t0:.0f} s.*", ""])


if __name__ == "__main__":
    print(section("--quick" in sys.argv))
