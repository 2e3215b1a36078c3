"""The roofline on recurrent layers: LSTM / GRU / RNN graphs (``onnx.helper``, seq-first,
random weights) at several sequence lengths, batches, widths and directions, measured
here with ONNX Runtime and costed by this machine's calibrated roofline two ways:

* **steps** (the roofline now): the input projection as one GEMM, then for each time
  step and direction a GEMM call on the recurrent weights and the gates' kernel;
* **one GEMM** (the roofline before, the baseline of the same run): all of the layer's
  MACs as one GEMM kernel.

    python bench/bench_recurrent.py            # prints the section
"""

from __future__ import annotations

import math
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}


def model(op: str, seq: int, batch: int, hidden: int, inputs: int = 16, dirs: int = 1):
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    gh = GATES[op] * hidden
    inits = [numpy_helper.from_array((rng.standard_normal(s) * 0.1).astype(np.float32), n)
             for n, s in (("W", (dirs, gh, inputs)), ("R", (dirs, gh, hidden)),
                          ("B", (dirs, 2 * gh)))]
    node = helper.make_node(op, ["x", "W", "R", "B"], ["y"], hidden_size=hidden,
                            direction="bidirectional" if dirs == 2 else "forward")
    graph = helper.make_graph(
        [node], f"{op.lower()}", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                 [seq, batch, inputs])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [seq, dirs, batch, hidden])],
        inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])


def factor_off(pred, truth, sel=None) -> float:
    """exp(mean |log(pred / truth)|), over the cases ``sel`` (a boolean mask; default all)."""
    sel = np.ones(len(truth), bool) if sel is None else np.asarray(sel)
    return math.exp(float(np.mean(np.abs(np.log(pred[sel] / truth[sel])))))


CASES = [(op, seq, batch, hidden, dirs)
         for op in ("LSTM", "GRU", "RNN") for seq in (10, 100, 1000)
         for batch, hidden, dirs in ((1, 32, 1), (8, 64, 2))]
QUICK = [c for c in CASES if c[1] in (10, 100) and c[0] != "GRU"]


def section(quick: bool = False) -> str:
    from analytical.calibrate import calibrate, write_spec
    from analytical.roofline import RooflineModel, kernel_work
    from analytical.specs import RooflineSpec, load_spec
    from costmodels.fusion import kernels
    from costmodels.harness.metrics import acc_within, mape, spearman
    from costmodels.onnx_import import import_onnx
    from measure import MeasureConfig, measure

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        spec_path = Path(tmp) / "roofline.toml"
        write_spec(calibrate(repeats=5 if quick else 15), spec_path)
        roof = RooflineModel(load_spec(str(spec_path), RooflineSpec))
    config = MeasureConfig(runtime="ort")
    rows, truth, steps, gemm = [], [], [], []
    for op, seq, batch, hidden, dirs in QUICK if quick else CASES:
        proto = model(op, seq, batch, hidden, dirs=dirs)
        res = measure(proto, config)
        if not res.ok:
            raise RuntimeError(f"{op} seq {seq}: {res.error}")
        net = import_onnx(proto)
        now = roof.estimate(net).latency_ms
        before = 0.0
        for k in kernels(net, roof.rules):
            compute, memory, launch = roof._roof(*kernel_work(k))
            before += max(compute, memory) + launch
        truth.append(res.median_ms)
        steps.append(now)
        gemm.append(before)
        rows.append(f"| {op} | {seq} | {batch} | {hidden} | {dirs} | {res.median_ms:.3f} | "
                    f"{now:.3f} ({now / res.median_ms:.2f}x) | "
                    f"{before:.3f} ({before / res.median_ms:.2f}x) |")
        print(f"[bench_recurrent] {rows[-1]}", file=sys.stderr, flush=True)
    t, a, b = (np.asarray(v) for v in (truth, steps, gemm))

    out = [f"### The roofline on recurrent layers ({len(rows)} LSTM/GRU/RNN graphs, "
           "bench/bench_recurrent.py; measured here with ONNX Runtime, one thread)", "",
           "| op | seq | batch | hidden | dirs | measured ms | steps (now) | one GEMM (before) |",
           "|---|---|---|---|---|---|---|---|", *rows, "",
           "| costing | geomean factor off | MAPE % | ±25% | Spearman |", "|---|---|---|---|---|"]
    for name, p in (("steps (now)", a), ("one GEMM (before)", b)):
        out.append(f"| {name} | {factor_off(p, t):.2f} | {mape(t, p):.1f} | "
                   f"{acc_within(t, p, 25) * 100:.0f}% | {spearman(t, p):.3f} |")
    ops_run = [c[0] for c in (QUICK if quick else CASES)]
    out += ["", "Per op (geomean factor off, steps / one GEMM): " + ", ".join(
        f"{op} {factor_off(a, t, np.asarray(ops_run) == op):.2f} / "
        f"{factor_off(b, t, np.asarray(ops_run) == op):.2f}"
        for op in GATES if op in ops_run) + ". The `recurrent` class is calibrated on "
        "LSTM steps only; an op whose implementation is slower per gate element than the "
        "LSTM's (ONNX Runtime's plain RNN here) is underestimated by that ratio."]
    out += ["", "Both costings use the same calibrated spec (`roofline calibrate`, run in "
            f"this section); 'geomean factor off' = exp(mean |log(estimate / measured)|). "
            f"Section {time.perf_counter() - t0:.0f} s.", ""]
    return "\n".join(out)


if __name__ == "__main__":
    print(section("--quick" in sys.argv))
