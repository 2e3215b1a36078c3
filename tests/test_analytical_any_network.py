"""Every analytical backend costs every network the importer produces, or says per layer
what it cannot cost (``meta['uncosted_layers']``); never an exception from a shape.

The graphs are built with ``onnx.helper``: depthwise, grouped, 1-D and transposed convs,
pools, FC heads, attention (MatMul of rank 3 and 4, Transpose, Softmax, LayerNorm, GELU
through Erf, Einsum), quantized int8 ops, weights shared through ``Identity`` and a 3-D
conv that the row-stationary models cannot map.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from costmodels.onnx_import import import_onnx
from costmodels.registry import create

BACKENDS = ["roofline:x86_generic", "roofline:xeon_2c", "eyeriss", "eyeriss:eyeriss_rs",
            "fpga", "fpga:zc706"]
RNG = np.random.default_rng(0)


def _w(name, shape, dtype=np.float32):
    if np.issubdtype(dtype, np.integer):
        return numpy_helper.from_array(RNG.integers(-8, 8, shape).astype(dtype), name)
    return numpy_helper.from_array(RNG.normal(0, 0.1, shape).astype(dtype), name)


def _model(nodes, inputs, outputs, inits, opset=17):
    vi = lambda n, s, t=TensorProto.FLOAT: helper.make_tensor_value_info(n, t, s)  # noqa: E731
    g = helper.make_graph(nodes, "g", [vi(*i) for i in inputs], [vi(*o) for o in outputs],
                          inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return m


def cnn_zoo():
    """Depthwise, grouped, 1x1, transposed convs, pools and a Gemm head (transB)."""
    n = helper.make_node
    nodes = [
        n("Conv", ["x", "w0"], ["a"], kernel_shape=[3, 3], pads=[1] * 4, strides=[2, 2]),
        n("Relu", ["a"], ["a1"]),
        n("Conv", ["a1", "wd"], ["b"], kernel_shape=[3, 3], pads=[1] * 4, group=16),
        n("Conv", ["b", "wg"], ["c"], kernel_shape=[3, 3], pads=[1] * 4, group=4),
        n("HardSwish", ["c"], ["c1"]),
        n("ConvTranspose", ["c1", "wt"], ["d"], kernel_shape=[2, 2], strides=[2, 2]),
        n("MaxPool", ["d"], ["e"], kernel_shape=[3, 3], pads=[1] * 4, strides=[2, 2]),
        n("Identity", ["bias"], ["bias_shared"]),
        n("Conv", ["e", "w1", "bias_shared"], ["f"], kernel_shape=[1, 1]),
        n("Add", ["f", "e2"], ["g"]),
        n("GlobalAveragePool", ["g"], ["h"]),
        n("Flatten", ["h"], ["h1"]),
        n("Gemm", ["h1", "wfc", "bfc"], ["y"], transB=1),
    ]
    inits = [_w("w0", (16, 3, 3, 3)), _w("wd", (16, 1, 3, 3)), _w("wg", (32, 4, 3, 3)),
             _w("wt", (32, 16, 2, 2)), _w("w1", (16, 16, 1, 1)), _w("bias", (16,)),
             _w("e2", (1, 16, 16, 16)), _w("wfc", (10, 16)), _w("bfc", (10,))]
    return _model(nodes, [("x", [1, 3, 32, 32])], [("y", [1, 10])], inits)


def attention_block():
    """One pre-norm self-attention + GELU MLP block on 1 x 8 tokens x 32 features."""
    n = helper.make_node
    nodes = [
        n("LayerNormalization", ["x", "ln_s", "ln_b"], ["xn"], axis=-1),
        n("MatMul", ["xn", "wq"], ["q"]), n("MatMul", ["xn", "wk"], ["k"]),
        n("MatMul", ["xn", "wv"], ["v"]),
        n("Reshape", ["q", "heads"], ["q4"]), n("Reshape", ["k", "heads"], ["k4"]),
        n("Reshape", ["v", "heads"], ["v4"]),
        n("Transpose", ["q4"], ["qt"], perm=[0, 2, 1, 3]),
        n("Transpose", ["k4"], ["kt"], perm=[0, 2, 3, 1]),
        n("Transpose", ["v4"], ["vt"], perm=[0, 2, 1, 3]),
        n("MatMul", ["qt", "kt"], ["s"]), n("Softmax", ["s"], ["p"], axis=-1),
        n("MatMul", ["p", "vt"], ["o"]), n("Transpose", ["o"], ["ot"], perm=[0, 2, 1, 3]),
        n("Reshape", ["ot", "flat"], ["o3"]),
        n("Einsum", ["o3", "wo"], ["proj"], equation="btd,de->bte"),
        n("Add", ["x", "proj"], ["r"]),
        n("MatMul", ["r", "w1"], ["m1"]), n("Div", ["m1", "sqrt2"], ["m2"]),
        n("Erf", ["m2"], ["m3"]), n("Add", ["m3", "one"], ["m4"]), n("Mul", ["m1", "m4"], ["m5"]),
        n("MatMul", ["m5", "w2"], ["m6"]), n("Add", ["r", "m6"], ["y"]),
    ]
    inits = [_w("ln_s", (32,)), _w("ln_b", (32,)), _w("wq", (32, 32)), _w("wk", (32, 32)),
             _w("wv", (32, 32)), _w("wo", (32, 32)), _w("w1", (32, 128)), _w("w2", (128, 32)),
             numpy_helper.from_array(np.array([1, 8, 4, 8], np.int64), "heads"),
             numpy_helper.from_array(np.array([1, 8, 32], np.int64), "flat"),
             numpy_helper.from_array(np.array(1.4142, np.float32), "sqrt2"),
             numpy_helper.from_array(np.array(1.0, np.float32), "one")]
    return _model(nodes, [("x", [1, 8, 32])], [("y", [1, 8, 32])], inits)


def quantized():
    """QuantizeLinear -> QLinearConv -> DequantizeLinear, then MatMulInteger (int8)."""
    n = helper.make_node
    f32 = lambda name, v: numpy_helper.from_array(np.array(v, np.float32), name)  # noqa: E731
    i8 = lambda name, v: numpy_helper.from_array(np.array(v, np.int8), name)  # noqa: E731
    nodes = [
        n("QuantizeLinear", ["x", "xs", "xz"], ["xq"]),
        n("QLinearConv", ["xq", "xs", "xz", "wq", "ws", "wz", "ys", "yz"], ["yq"],
          kernel_shape=[3, 3], pads=[1] * 4),
        n("DequantizeLinear", ["yq", "ys", "yz"], ["y1"]),
        n("Flatten", ["yq"], ["fq"]),
        n("MatMulInteger", ["fq", "wm"], ["mi"]),
        n("Cast", ["mi"], ["y"], to=TensorProto.FLOAT),
    ]
    inits = [f32("xs", 0.1), i8("xz", 0), _w("wq", (8, 4, 3, 3), np.int8), f32("ws", 0.05),
             i8("wz", 0), f32("ys", 0.2), i8("yz", 0), _w("wm", (8 * 8 * 8, 10), np.int8)]
    return _model(nodes, [("x", [1, 4, 8, 8])], [("y", [1, 10]), ("y1", [1, 8, 8, 8])], inits,
                  opset=13)


def conv1d_and_3d():
    """A 1-D conv (audio-style) and a 3-D conv (video-style)."""
    n = helper.make_node
    nodes = [n("Conv", ["x", "w1"], ["a"], kernel_shape=[5], pads=[2, 2]),
             n("Conv", ["v", "w3"], ["b"], kernel_shape=[3, 3, 3], pads=[1] * 6)]
    inits = [_w("w1", (8, 4, 5)), _w("w3", (4, 2, 3, 3, 3))]
    return _model(nodes, [("x", [1, 4, 64]), ("v", [1, 2, 4, 8, 8])],
                  [("a", [1, 8, 64]), ("b", [1, 4, 4, 8, 8])], inits)


ZOO = {"cnn": cnn_zoo, "attention": attention_block, "quantized": quantized,
       "conv1d_3d": conv1d_and_3d}


@pytest.fixture(scope="module")
def models():
    return {name: create(spec) for name, spec in ((s, s) for s in BACKENDS)}


@pytest.mark.parametrize("graph", sorted(ZOO))
@pytest.mark.parametrize("backend", BACKENDS)
def test_every_backend_costs_every_imported_graph(models, graph, backend):
    net = import_onnx(ZOO[graph]())
    model = models[backend]
    est = model.estimate(net)
    assert math.isfinite(est.latency_ms) and est.latency_ms > 0
    if est.energy_mj is not None:
        assert math.isfinite(est.energy_mj) and est.energy_mj > 0
    assert est.latency_ms == pytest.approx(sum(lc.latency_ms for lc in est.per_layer))
    [fast] = model.estimate_many([net])
    assert fast.latency_ms == pytest.approx(est.latency_ms)
    uncosted = {u["name"]: u["reason"] for u in est.meta["uncosted_layers"]}
    costed = {lc.name for lc in est.per_layer}
    assert not costed & set(uncosted)
    mac_layers = [x for x in net.layers if x.macs > 0]
    if backend.startswith(("eyeriss", "fpga")):
        # every MAC layer is costed except the 3-D conv, which is reported with the reason
        for layer in mac_layers:
            if len(layer.input_shapes[0]) == 5:
                assert "3-D" in uncosted[layer.name], uncosted
            else:
                assert layer.name in costed or layer.name.startswith(tuple(costed)), layer.name
    else:
        assert not uncosted


def test_reference_eyeriss_maps_groups_and_heads(models):
    """The reference model's problems: a depthwise conv is 16 one-channel problems, the
    grouped conv 4 problems of 4 -> 8 channels, the Gemm an FC of 16 -> 10."""
    net = import_onnx(cnn_zoo())
    est = models["eyeriss"].estimate(net)
    by_op = {}
    for lc in est.per_layer:
        by_op.setdefault(lc.op, []).append(lc.meta)
    dw, grouped = by_op["Conv"][1], by_op["Conv"][2]
    assert (dw["problem"]["c"], dw["problem"]["m"], dw["repeats"]) == (1, 1, 16)
    assert (grouped["problem"]["c"], grouped["problem"]["m"], grouped["repeats"]) == (4, 8, 4)
    fc = by_op["Gemm"][0]["problem"]
    assert (fc["kind"], fc["c"], fc["m"]) == ("fc", 16, 10)
    assert est.meta["free_layers"] >= 4  # Relu, HardSwish, Add, Flatten (Identity folded)


def test_cli_and_harness_refuse_totals_that_leave_out_mac_layers(tmp_path, capsys):
    """A 3-D conv holds the MACs Eyeriss/FPGA cannot map: `estimate` writes an error row
    naming the layer (not a near-zero latency) and the harness scores it as not covered;
    roofline costs it."""
    import csv

    from costmodels import cli
    from costmodels.harness.scoring import estimate_all
    from costmodels.interface import uncosted_compute

    n = helper.make_node
    m = _model([n("Conv", ["v", "w3"], ["b"], kernel_shape=[3, 3, 3], pads=[1] * 6, name="c3"),
                n("Relu", ["b"], ["y"])], [("v", [1, 2, 4, 8, 8])], [("y", [1, 4, 4, 8, 8])],
               [_w("w3", (4, 2, 3, 3, 3))])
    d = tmp_path / "video"
    d.mkdir()
    (d / "clip.onnx").write_bytes(m.SerializeToString())
    net = import_onnx(m)
    for spec in ("eyeriss", "eyeriss:eyeriss_rs", "fpga"):
        model = create(spec)
        est = model.estimate(net)
        assert est.meta["uncosted_layers"]  # the library reports it in the meta ...
        err = uncosted_compute(est, net)
        assert err is not None and "'c3'" in str(err) and "100% of the MACs" in str(err)
        scored = estimate_all(model, [net])  # ... the harness does not score it
        assert not scored.ok[0] and "'c3'" in scored.errors[0]
        out = tmp_path / f"{spec.replace(':', '_')}.csv"
        assert cli.main(["estimate", spec, "--space", f"models:{d}", "-o", str(out)]) == 1
        [row] = list(csv.DictReader(out.open()))
        assert row["latency_ms"] == "" and "'c3'" in row["error"], row
        capsys.readouterr()
        # `roofline layers` shows the layers it costed, and no total without the conv
        assert cli.main(["roofline", "layers", str(d / "clip.onnx"), "--backend", spec]) == 1
        got = capsys.readouterr()
        assert "total" not in got.out and "not costed: c3" in got.out
        assert got.err.startswith("error: no total:") and "'c3'" in got.err
    assert uncosted_compute(create("roofline:x86_generic").estimate(net), net) is None
    out = tmp_path / "roof.csv"
    assert cli.main(["estimate", "roofline:x86_generic", "--space", f"models:{d}",
                     "-o", str(out)]) == 0
    capsys.readouterr()


@pytest.mark.parametrize("equation,shapes,out", [
    ("bi,oij,bj->bo", [(2, 32), (8, 32, 32), (2, 32)], (2, 8)),
    ("ab,bc,cd->ad", [(3, 5), (5, 7), (7, 11)], (3, 11)),
    ("bhqd,bhkd->bhqk", [(1, 2, 4, 8), (1, 2, 6, 8)], (1, 2, 4, 6)),
])
def test_einsum_macs_are_the_pairwise_left_to_right_products(equation, shapes, out):
    from costmodels.network import einsum_macs

    # Independent count: evaluate left to right with np.einsum, one pair at a time,
    # keeping the letters a later operand or the output needs; a step's multiplies are
    # the size of the broadcast product of the pair.
    lhs, rhs = equation.split("->")
    terms = lhs.split(",")
    ops = [np.ones(s) for s in shapes]
    cur, cur_t, expected = ops[0], terms[0], 0
    for i in range(1, len(terms)):
        later = set(rhs).union(*terms[i + 1:])
        union = "".join(dict.fromkeys(cur_t + terms[i]))
        expected += np.einsum(f"{cur_t},{terms[i]}->{union}", cur, ops[i]).size
        keep = "".join(c for c in union if c in later)
        cur, cur_t = np.einsum(f"{cur_t},{terms[i]}->{keep}", cur, ops[i]), keep
    assert einsum_macs(equation, shapes, out) == expected
    if len(terms) == 2:
        assert expected == math.prod(out) * shapes[0][-1]


def _conv_graph(nodes, inits):
    """A graph of ``nodes`` from x (1x8x16x16) to y (1x16x16x16), imported."""
    x, y = (helper.make_tensor_value_info(n, TensorProto.FLOAT, s)
            for n, s in (("x", [1, 8, 16, 16]), ("y", [1, 16, 16, 16])))
    m = helper.make_model(helper.make_graph(nodes, "g", [x], [y], inits),
                          opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return import_onnx(m)


@pytest.mark.parametrize("backend", ["fpga", "eyeriss:eyeriss_rs"])
def test_accelerators_cost_a_qdq_model_as_its_float_original(backend):
    """A QDQ conv (Quantize/DequantizeLinear around it, an int8 weight) on a fixed-point
    accelerator costs what the float conv does: the Q/DQ nodes only name the precision the
    chip computes at (each was a pass over DRAM, a quantized model 2-4x slower)."""
    rng = np.random.default_rng(0)
    w = rng.normal(0, 0.1, (16, 8, 3, 3)).astype(np.float32)
    model = _conv_graph
    plain = model([helper.make_node("Conv", ["x", "w"], ["y"], pads=[1] * 4)],
                  [numpy_helper.from_array(w, "w")])
    consts = [numpy_helper.from_array(np.float32(0.05), "s"),
              numpy_helper.from_array(np.uint8(128), "z"),
              numpy_helper.from_array(np.int8(0), "zw"),
              numpy_helper.from_array((w * 100).astype(np.int8), "wq")]
    qdq = model([helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"]),
                 helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xd"]),
                 helper.make_node("DequantizeLinear", ["wq", "s", "zw"], ["wd"]),
                 helper.make_node("Conv", ["xd", "wd"], ["c"], pads=[1] * 4),
                 helper.make_node("QuantizeLinear", ["c", "s", "z"], ["cq"]),
                 helper.make_node("DequantizeLinear", ["cq", "s", "z"], ["y"])], consts)
    model_ = create(backend)
    a, b = model_.estimate(plain), model_.estimate(qdq)
    assert b.latency_ms == pytest.approx(a.latency_ms, rel=1e-9)
    assert b.energy_mj == pytest.approx(a.energy_mj, rel=1e-9)


def test_fpga_applies_a_separate_bias_add_as_it_does_a_conv_bias():
    """A conv whose bias an old converter wrote as its own Add costs what the conv with the
    bias does (the Add rides on the store path); a residual Add of two activations does not."""
    rng = np.random.default_rng(0)
    w = numpy_helper.from_array(rng.normal(0, 0.1, (16, 8, 3, 3)).astype(np.float32), "w")
    b = numpy_helper.from_array(rng.normal(0, 0.1, (16,)).astype(np.float32), "b")
    b3 = numpy_helper.from_array(rng.normal(0, 0.1, (1, 16, 1, 1)).astype(np.float32), "b3")
    model = _conv_graph
    fused = model([helper.make_node("Conv", ["x", "w", "b"], ["y"], pads=[1] * 4)], [w, b])
    apart = model([helper.make_node("Conv", ["x", "w"], ["c"], pads=[1] * 4),
                   helper.make_node("Add", ["c", "b3"], ["y"])], [w, b3])
    twice = model([helper.make_node("Conv", ["x", "w"], ["c"], pads=[1] * 4),
                   helper.make_node("Add", ["c", "c"], ["y"])], [w])
    fpga = create("fpga")
    assert fpga.estimate(apart).latency_ms == pytest.approx(fpga.estimate(fused).latency_ms)
    assert fpga.estimate(twice).latency_ms > 1.2 * fpga.estimate(fused).latency_ms
