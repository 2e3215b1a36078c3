"""LUTs for any network: keys for any op, one-kernel models ORT runs, a model folder built
and estimated, estimates that never go negative. Fast (a few short ORT runs)."""

from __future__ import annotations

import json
import math
from collections import Counter

import numpy as np
import pytest

from costmodels.errors import MissingKernel
from costmodels.fusion import KernelKey, kernels, load_rules, op_attrs, parse_key
from costmodels.network import Network, make_layer
from measure.lut.calibrate import fit
from measure.lut.kernel_onnx import KernelBuildError, kernel_model, plan, wrappers

RULES = load_rules("ort")


# ----------------------------------------------------------------------------- fixture models
def _save(model, path) -> None:
    import onnx

    model.ir_version = 8
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def _w(rng, *shape):
    return rng.normal(0, 0.1, shape).astype(np.float32)


def _concat_dw_model(path) -> None:
    """Two branches (1x1 conv, depthwise 3x3 conv) concatenated on channels, then a Relu."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(_w(rng, 8, 8, 1, 1), "w1"),
             numpy_helper.from_array(_w(rng, 8, 1, 3, 3), "wd"),
             numpy_helper.from_array(_w(rng, 16, 16, 1, 1), "w2")]
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"], name="pw"),
             helper.make_node("Conv", ["x", "wd"], ["b"], name="dw", group=8, pads=[1, 1, 1, 1]),
             helper.make_node("Concat", ["a", "b"], ["c"], name="cat", axis=1),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("Conv", ["r", "w2"], ["y"], name="mix")]
    g = helper.make_graph(nodes, "concat_dw",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8, 16, 16])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, 16, 16])],
                          inits)
    _save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)


def _attention_model(path) -> None:
    """Q @ K^T through a Transpose, Softmax, @ V; LayerNormalization; a Gemm-free MLP."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(1)
    t, d = 16, 32
    inits = [numpy_helper.from_array(_w(rng, d, d), n) for n in ("wq", "wk", "wv", "wo")]
    inits += [numpy_helper.from_array(np.ones(d, np.float32), "g"),
              numpy_helper.from_array(np.zeros(d, np.float32), "bta")]
    nodes = [helper.make_node("LayerNormalization", ["x", "g", "bta"], ["n"], name="ln",
                              axis=-1),
             helper.make_node("MatMul", ["n", "wq"], ["q"], name="q"),
             helper.make_node("MatMul", ["n", "wk"], ["k"], name="k"),
             helper.make_node("MatMul", ["n", "wv"], ["v"], name="v"),
             helper.make_node("Transpose", ["k"], ["kt"], name="kt", perm=[0, 2, 1]),
             helper.make_node("MatMul", ["q", "kt"], ["s"], name="qk"),
             helper.make_node("Softmax", ["s"], ["p"], name="softmax", axis=-1),
             helper.make_node("MatMul", ["p", "v"], ["o"], name="pv"),
             helper.make_node("MatMul", ["o", "wo"], ["y0"], name="out"),
             helper.make_node("Add", ["y0", "x"], ["y"], name="residual")]
    g = helper.make_graph(nodes, "attention",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, t, d])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, t, d])],
                          inits)
    _save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)


def _resize_model(path) -> None:
    """Conv, nearest Resize x2 by scales, Split into two halves, Add."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(2)
    inits = [numpy_helper.from_array(_w(rng, 16, 4, 3, 3), "w"),
             numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "scales"),
             numpy_helper.from_array(np.array([8, 8], np.int64), "split")]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Resize", ["c", "", "scales"], ["u"], name="up", mode="nearest"),
             helper.make_node("Split", ["u", "split"], ["s0", "s1"], name="split", axis=1),
             helper.make_node("Add", ["s0", "s1"], ["y"], name="add")]
    g = helper.make_graph(nodes, "resize",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 16, 16])],
                          inits)
    _save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)


def _head_model(path) -> None:
    """A classifier head: GlobalAveragePool, Flatten, Gemm with an untransposed weight."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(3)
    inits = [numpy_helper.from_array(_w(rng, 24, 10), "w"),
             numpy_helper.from_array(np.zeros(10, np.float32), "b")]
    nodes = [helper.make_node("GlobalAveragePool", ["x"], ["p"], name="gap"),
             helper.make_node("Flatten", ["p"], ["f"], name="flat", axis=1),
             helper.make_node("Gemm", ["f", "w", "b"], ["y"], name="fc", transB=0)]
    g = helper.make_graph(nodes, "head",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 24, 7, 7])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])],
                          inits)
    _save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)


def _sequence_model(path) -> None:
    """Recurrent and sequence ops: a bidirectional LSTM, a GRU (only Y_h used; ORT runs
    seq-first recurrences only, torch wraps batch-first ones in Transposes), an Elman RNN, TopK, an embedding Gather on int64 tokens, CumSum and
    ScatterND."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(4)
    a = numpy_helper.from_array
    inits = [a(_w(rng, 2, 24, 8), "lw"), a(_w(rng, 2, 24, 6), "lr"), a(_w(rng, 2, 48), "lb"),
             a(np.zeros((2, 2, 6), np.float32), "h0"), a(np.zeros((2, 2, 6), np.float32), "c0"),
             a(np.array([5, 2, 12], np.int64), "shp"), a(_w(rng, 1, 12, 12), "gw"),
             a(_w(rng, 1, 12, 4), "gr"), a(_w(rng, 1, 3, 8), "rw"), a(_w(rng, 1, 3, 3), "rr"),
             a(np.array([4], np.int64), "k"), a(_w(rng, 20, 6), "table"),
             a(np.array(1, np.int64), "axis"), a(np.array([[0, 1], [1, 3]], np.int64), "ind"),
             a(_w(rng, 2, 6), "upd")]
    n = helper.make_node
    nodes = [n("LSTM", ["x", "lw", "lr", "lb", "", "h0", "c0"], ["ly"], name="lstm",
               hidden_size=6, direction="bidirectional"),
             n("Transpose", ["ly"], ["lt"], name="lt", perm=[0, 2, 1, 3]),
             n("Reshape", ["lt", "shp"], ["l3"], name="l3"),
             n("GRU", ["l3", "gw", "gr"], ["", "gh"], name="gru", hidden_size=4),
             n("RNN", ["x", "rw", "rr"], ["ry"], name="rnn", hidden_size=3),
             n("TopK", ["l3", "k"], ["top", "top_i"], name="topk"),
             n("Gather", ["table", "tokens"], ["emb"], name="emb"),
             n("CumSum", ["emb", "axis"], ["cs"], name="cumsum"),
             n("ScatterND", ["emb", "ind", "upd"], ["sc"], name="scatter")]
    f = TensorProto.FLOAT
    g = helper.make_graph(
        nodes, "sequence",
        [helper.make_tensor_value_info("x", f, [5, 2, 8]),
         helper.make_tensor_value_info("tokens", TensorProto.INT64, [2, 5])],
        [helper.make_tensor_value_info(name, f, shape) for name, shape in (
            ("gh", [1, 2, 4]), ("ry", [5, 1, 2, 3]), ("top", [5, 2, 4]), ("cs", [2, 5, 6]),
            ("sc", [2, 5, 6]))], inits)
    _save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), path)


FIXTURES = {"concat_dw": _concat_dw_model, "attention": _attention_model,
            "resize_split": _resize_model, "head": _head_model, "sequence": _sequence_model}


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    for name, write in FIXTURES.items():
        write(d / f"{name}.onnx")
    return d


@pytest.fixture(scope="module")
def nets(model_dir):
    from costmodels.spaces import get_space

    space = get_space(f"models:{model_dir}")
    return {a: space.build_network(a) for a in space.archs()}


def _run_once(model) -> list[tuple[int, ...]]:
    """Run a model once in ORT (graph optimisations on); the shapes of its outputs."""
    import onnxruntime as ort

    from measure.inputs import input_specs, random_inputs

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(), so,
                                providers=["CPUExecutionProvider"])
    outs = sess.run(None, random_inputs(input_specs(model), 0))
    return [tuple(o.shape) for o in outs]


# ----------------------------------------------------------------------------- keys
def test_keys_carry_the_attributes_a_model_needs(nets):
    ks = {k.ops[0]: k.key for name, net in nets.items() if name != "sequence"  # own Transposes
          for k in kernels(net, RULES)}
    assert ks["Concat"].attr("axis") == "1"
    assert ks["Split"].attr("axis") == "1" and ks["Split"].attr("n") == "2"
    assert ks["Transpose"].attr("perm") == "0x2x1"
    assert ks["Gemm"].attr("transB") == "0"
    dw = [k.key for k in kernels(nets["concat_dw"], RULES) if k.key.groups == 8]
    assert dw and dw[0].weight_shapes[0] == (8, 1, 3, 3)
    for key in ks.values():
        assert parse_key(key.text).text == key.text and "," not in key.text


def test_nb201_keys_are_unchanged_by_attributes():
    """Keys of NB201 kernels carry no a= field: the committed LUT's entries still match."""
    from costmodels.spaces import nb201

    for arch in (0, 1462, 15624):
        for k in kernels(nb201.build_network(arch), RULES):
            assert "|a=" not in k.text


def test_attribute_text_is_quoted_and_round_trips():
    key = KernelKey(("Einsum",), ((1, 4, 8), (1, 4, 8)), (1, 4, 4),
                    attrs=(("equation", "bik,bjk->bij"),))
    assert "," not in key.text and "|a=equation:" in key.text
    assert parse_key(key.text).attr("equation") == "bik,bjk->bij"


@pytest.mark.parametrize("layer", [
    make_layer("s", "Relu", ["x"], ["s"], [()], ()),                         # a scalar
    make_layer("v", "Add", ["x", "y"], ["v"], [(7,), (7,)], (7,)),           # 1-D, two inputs
    make_layer("c", "ConstantOfShape", [], ["c"], [], (2, 3)),               # no input at all
    make_layer("t", "Transpose", ["x"], ["t"], [(2, 3)], (5, 7)),            # shapes that lie
    make_layer("g", "Gemm", [], ["g"], [], (4, 4), [(4,)]),                  # 1-D weight only
    make_layer("k", "Split", ["x"], ["k0", "k1", "k2"], [(1, 9, 2)], (1, 3, 2)),
    make_layer("m", "Mod", ["x"], ["m"], [(1, 8, 4, 4)], (1, 8, 4, 4), [()]),
])
def test_planner_gives_any_layer_a_key(layer):
    """No shape assumption in the planner: odd layers get a key, even next to NCHWc convs."""
    conv = make_layer("cv", "Conv", ["x4"], ["cv"], [(1, 16, 4, 4)], (1, 16, 4, 4),
                      [(16, 16, 1, 1)], kernel=(1, 1), stride=(1, 1), pads=(0, 0, 0, 0))
    inputs = [("x4", (1, 16, 4, 4))] + [(t, s) for t, s in zip(layer.inputs, layer.input_shapes,
                                                                strict=True)]
    add = make_layer("a", "Add", ["cv", layer.outputs[0]], ["a"],
                     [(1, 16, 4, 4), layer.output_shape], (1, 16, 4, 4))
    net = Network("odd", tuple(dict(inputs).items()), (conv, layer, add), ("a",))
    ks = kernels(net, RULES)
    assert any(layer.name in k.names for k in ks)
    assert all(parse_key(k.text).text == k.text for k in ks)
    assert isinstance(op_attrs(layer), tuple)


# ----------------------------------------------------------------------------- one-kernel models
def test_every_kernel_of_the_folder_builds_and_runs_in_ort(nets):
    """Each kernel kind as its own model: ORT runs it and its output has the key's shape
    (planned as a LUT built here plans, at this machine's NCHWc block)."""
    from measure.config import MeasureConfig
    from measure.lut.build import host_rules

    here = host_rules(RULES, MeasureConfig())
    seen = {k.text: k.key for net in nets.values() for k in kernels(net, here)}
    kinds = {"+".join(k.ops) for k in seen.values()}
    assert {"Concat", "Split", "Resize", "Transpose", "MatMul", "Gemm", "LayerNormalization",
            "Softmax", "LSTM", "GRU", "RNN", "TopK", "Gather", "CumSum", "ScatterND"} <= kinds
    for key in seen.values():
        shapes = _run_once(kernel_model(key))
        assert shapes[0] == key.output_shape, key.text
        assert all(parse_key(w) for w in wrappers(key, here))


def test_fused_kernel_plans_place_each_input(nets):
    """A Conv+BN+Add(const)+Add(residual) kernel: the residual goes to the second Add."""
    key = KernelKey(("Conv", "Add", "Add", "Relu"), ((1, 16, 8, 8), (1, 16, 8, 8)),
                    (1, 16, 8, 8), ((16, 16, 3, 3),), (3, 3), (1, 1), (1, 1, 1, 1),
                    attrs=(("ar", "1x0x1x0"),))
    p = plan(key)
    adds = [n for n in p.nodes if n.op == "Add"]
    assert adds[0].inputs[1] in p.consts and adds[1].inputs[1] not in p.consts
    assert _run_once(kernel_model(key))[0] == key.output_shape
    w = wrappers(key, RULES)
    assert any(t.startswith("AveragePool") for t in w)  # the residual's pool is taken off


def test_a_key_that_cannot_be_built_says_why():
    key = KernelKey(("Slice",), ((1, 4),), (1, 8))  # a "slice" larger than its input
    with pytest.raises(KernelBuildError, match="Slice"):
        kernel_model(key)


# ----------------------------------------------------------------------------- estimates
def test_overhead_fit_has_no_negative_term():
    sums = np.array([0.2, 0.5, 1.0, 2.0, 4.0, 8.0])
    y = 1.02 * sums - 0.1  # least squares would give a negative intercept
    rec = fit(sums, [5, 9, 14, 20, 30, 44], y)
    assert rec["intercept_ms"] >= 0 and rec["per_kernel_ms"] >= 0 and rec["scale"] >= 0
    assert "intercept" in rec["dropped"]


def test_best_effort_never_subtracts(tmp_path, nets):
    """A negative intercept (as an old LUT may have) is not taken off a partial sum; a
    scale below 1 is applied to it (the raw partial sum exceeded the complete estimate of
    a probe's network: not the lower bound it is said to be)."""
    from measure.lut.model import LookupTable
    from measure.lut.table import Entry, LutFile

    net = nets["concat_dw"]
    ks = [k.text for k in kernels(net, RULES)]
    path = tmp_path / "neg.sqlite"
    with LutFile.create(path, "ort", RULES.doc, RULES.hash, {}, {}) as lut:
        for t in ks[:1]:
            lut.put(Entry(t, t.split("|")[0], median_ms=0.05, cv=0.01, count=3))
        lut.set_meta("calibration", json.dumps({"intercept_ms": -0.5, "per_kernel_ms": 0.0,
                                                "scale": 1.0}))
    with pytest.raises(MissingKernel):
        LookupTable(path).estimate(net)
    for est in (LookupTable(path, best_effort=True).estimate(net),
                LookupTable(path, best_effort=True).estimate_many([net])[0]):
        assert est.latency_ms >= est.meta["kernel_sum_ms"] == pytest.approx(0.05)
        assert est.meta["lower_bound"] and len(est.meta["missing_kernels"]) == len(set(ks)) - 1
    with LutFile(path) as lut:  # every kernel but one, a scale below 1
        for t in ks[1:-1]:
            lut.put(Entry(t, t.split("|")[0], median_ms=0.05, cv=0.01, count=3))
        lut.set_meta("calibration", json.dumps({"intercept_ms": 0.01, "per_kernel_ms": 0.001,
                                                "scale": 0.5}))
    partial = LookupTable(path, best_effort=True).estimate(net)
    with LutFile(path) as lut:
        lut.put(Entry(ks[-1], ks[-1].split("|")[0], median_ms=0.05, cv=0.01, count=3))
    full = LookupTable(path).estimate(net)
    assert partial.meta["lower_bound"] and partial.meta["missing_kernels"] == (ks[-1],)
    assert partial.latency_ms == pytest.approx(full.latency_ms - 0.5 * 0.05)
    assert partial.latency_ms < full.latency_ms < partial.meta["kernel_sum_ms"] + 0.05


def test_lut_built_on_a_model_folder_estimates_it(tmp_path, model_dir, nets):
    """`lut build --space models:DIR` (few repeats), then `lut:` on the same space."""
    import argparse

    from costmodels.spaces import nb201
    from measure import lut_cli
    from measure.lut.model import LookupTable

    parser = argparse.ArgumentParser()
    lut_cli.register(parser.add_subparsers())
    db = tmp_path / "models.sqlite"
    args = parser.parse_args(["lut", "build", "--space", f"models:{model_dir}", "--db", str(db),
                              "--repeat", "3", "--warmup", "1", "--max-retries", "0",
                              "--rounds", "2", "--min-round-s", "0", "--calibrate",
                              str(len(nets))])
    assert args.func(args) == 0
    model = LookupTable(db)
    ests = model.estimate_many(list(nets.values()))
    for net, est in zip(nets.values(), ests, strict=True):
        assert math.isfinite(est.latency_ms) and est.latency_ms > 0
        assert est.meta["missing_kernels"] == ()
        assert est.latency_ms == pytest.approx(model.estimate(net).latency_ms)
    cal = model.calibration_
    assert cal["n_points"] == len(nets) and cal["intercept_ms"] >= 0
    other = LookupTable(db, best_effort=True).estimate(nb201.build_network(1462))
    assert other.meta["missing_kernels"] and other.latency_ms >= other.meta["kernel_sum_ms"]
    fp = json.loads((tmp_path / "models.fingerprint.json").read_text())
    assert fp["space"].startswith("models:") and fp["failed"] == 0


# ----------------------------------------------------------------------------- resuming
def _sha(path) -> str:
    import hashlib

    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_resume_refuses_other_rules_untouched_and_takes_over_a_newer_version(tmp_path):
    """Rules of another name: refused, file byte-identical. Same name, other hash (a newer
    shipped file): taken over, entries kept."""
    from costmodels.errors import ModelFileError
    from costmodels.fusion import rules_from_json
    from measure.config import MeasureConfig
    from measure.lut.build import open_or_create
    from measure.lut.table import Entry, LutFile

    config = MeasureConfig()
    path = tmp_path / "old.sqlite"
    old = json.loads(RULES.doc)
    old["doc"] = "an older version of the ort rules"
    old_rules = rules_from_json(json.dumps(old))
    with LutFile.create(path, "ort", old_rules.doc, old_rules.hash, {}, config.to_dict()) as lut:
        lut.put(Entry("Relu|in=1x4|out=1x4|dt=float32", "Relu", median_ms=0.01, count=3))
    before = _sha(path)
    with pytest.raises(ModelFileError, match="naive"):
        open_or_create(str(path), load_rules("naive"), config)
    assert _sha(path) == before and not list(tmp_path.glob("*-wal"))
    with open_or_create(str(path), RULES, config) as lut:
        assert lut.get_meta("rules_hash") == RULES.hash and len(lut) == 1


def test_recurrent_layers_count_their_gates_products(nets):
    """Per step and batch row: gates x hidden x (input + hidden), per direction."""
    layers = {x.op: x for x in nets["sequence"].layers}
    assert layers["LSTM"].macs == 5 * 2 * 2 * (4 * 6) * (8 + 6)
    assert layers["GRU"].macs == 5 * 2 * (3 * 4) * (12 + 4)
    assert layers["RNN"].macs == 5 * 2 * 3 * (8 + 3)
    assert layers["TopK"].macs == 0 and layers["TopK"].elem_ops == 5 * 2 * 12


def test_resize_modes_are_three_kernels_built_in_their_own_mode(tmp_path):
    """Nearest, bilinear and bicubic Resize of the same shapes cost differently (ORT: about
    0.6 / 1.6 / 76 ms at 32x64x64 -> 128x128): the taps are the layer's kernel, so they are
    three LUT keys, each one-kernel model is built in its mode, and element ops follow."""
    from onnx import TensorProto, helper, numpy_helper

    from costmodels.fusion import kernels, load_rules
    from costmodels.onnx_import import import_onnx
    from measure.lut.kernel_onnx import kernel_model

    keys, elem = {}, {}
    for mode in ("nearest", "linear", "cubic"):
        sc = numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "sc")
        g = helper.make_graph(
            [helper.make_node("Resize", ["x", "", "sc"], ["y"], mode=mode)], "r",
            [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 8, 8])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [sc])
        net = import_onnx(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]))
        (k,) = kernels(net, load_rules("ort"))
        keys[mode], elem[mode] = k.key, net.layers[0].elem_ops
        (node,) = [n for n in kernel_model(k.key).graph.node if n.op_type == "Resize"]
        assert helper.get_attribute_value(
            next(a for a in node.attribute if a.name == "mode")).decode() == mode
    assert len(set(keys.values())) == 3
    out = 4 * 16 * 16
    assert elem == {"nearest": out, "linear": 4 * out, "cubic": 16 * out}


def test_dilated_max_pool_keeps_its_dilation_in_the_kernel(tmp_path):
    """A dilated MaxPool is its own kernel, built dilated (not guessed as ceil_mode)."""
    from onnx import TensorProto, helper

    from costmodels.fusion import kernels, load_rules
    from costmodels.onnx_import import import_onnx
    from measure.lut.kernel_onnx import kernel_model
    from measure.ort import build

    g = helper.make_graph(
        [helper.make_node("MaxPool", ["x"], ["y"], kernel_shape=[3, 3], dilations=[2, 2])],
        "p", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)])
    net = import_onnx(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]))
    assert net.layers[0].output_shape == (1, 4, 12, 12) and net.layers[0].dilation == (2, 2)
    (k,) = [k for k in kernels(net, load_rules("ort")) if k.layers]  # no layout reorders
    model = kernel_model(k.key)
    (node,) = [n for n in model.graph.node if n.op_type == "MaxPool"]
    attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
    assert attrs["dilations"] == [2, 2] and "ceil_mode" not in attrs
    assert build(model).ok  # ONNX Runtime accepts the kernel as built


def _one_node_model(node, inputs, inits=(), opset=17, domain_opsets=()):
    from onnx import TensorProto, helper

    g = helper.make_graph([node], "g", [helper.make_tensor_value_info(n, t, s)
                                        for n, t, s in inputs],
                          [helper.make_tensor_value_info(o, TensorProto.UNDEFINED, None)
                           for o in node.output if o][:1], list(inits))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset),
                                               *domain_opsets])


@pytest.mark.parametrize("case", ["matmul-weight-first", "einsum-weight-middle",
                                  "einsum-weight-first", "dynamic-quantize",
                                  "gather-elements", "lrn", "one-hot", "small-embedding",
                                  "scatter-elements"])
def test_kernels_the_probe_could_not_build_now_build_and_run(case):
    """One-kernel models of exports a model probe met (each failed to build or to run
    before): a constant-first MatMul and Einsum (operands in the equation's order),
    DynamicQuantizeLinear (three outputs), GatherElements (int64 indices), LRN (its size),
    OneHot (its depth and values inputs), an embedding table of 2 rows (BERT's token types:
    the random indices must stay below 2), ScatterElements of constant indices (torch's
    index_add: they were built as float)."""
    from onnx import TensorProto, helper, numpy_helper

    from costmodels.fusion import kernels, load_rules
    from costmodels.onnx_import import import_onnx
    from measure.lut.kernel_onnx import kernel_model
    from measure.ort import build, burst_timer

    rng = np.random.default_rng(0)
    f = TensorProto.FLOAT

    def w(name, *shape):
        return numpy_helper.from_array(rng.standard_normal(shape).astype(np.float32), name)

    if case == "matmul-weight-first":
        m = _one_node_model(helper.make_node("MatMul", ["w", "x"], ["y"]),
                            [("x", f, [4, 32])], [w("w", 8, 4)])
    elif case == "einsum-weight-middle":
        m = _one_node_model(helper.make_node("Einsum", ["x", "w", "z"], ["y"],
                                             equation="bi,oij,bj->bo"),
                            [("x", f, [2, 32]), ("z", f, [2, 32])], [w("w", 8, 32, 32)])
    elif case == "einsum-weight-first":
        m = _one_node_model(helper.make_node("Einsum", ["w", "x"], ["y"],
                                             equation="oc,bsc->bso"),
                            [("x", f, [2, 5, 16])], [w("w", 8, 16)])
    elif case == "dynamic-quantize":
        m = _one_node_model(helper.make_node("DynamicQuantizeLinear", ["x"], ["q", "s", "z"]),
                            [("x", f, [4, 16])])
    elif case == "gather-elements":
        idx = numpy_helper.from_array(rng.integers(0, 6, (2, 3)).astype(np.int64), "i")
        m = _one_node_model(helper.make_node("GatherElements", ["x", "i"], ["y"], axis=1),
                            [("x", f, [2, 6])], [idx])
    elif case == "one-hot":
        m = _one_node_model(helper.make_node("OneHot", ["x", "depth", "vals"], ["y"], axis=-1),
                            [("x", TensorProto.INT64, [1, 16])],
                            [numpy_helper.from_array(np.array([16], np.int64), "depth"),
                             numpy_helper.from_array(np.array([0, 1], np.float32), "vals")])
    elif case == "scatter-elements":  # torch's index_add: constant int64 indices
        idx = numpy_helper.from_array(rng.integers(0, 10, (1, 3, 32)).astype(np.int64), "i")
        m = _one_node_model(helper.make_node("ScatterElements", ["x", "i", "v"], ["y"], axis=1,
                                             reduction="add"),
                            [("x", f, [1, 10, 32]), ("v", f, [1, 3, 32])], [idx], opset=16)
    elif case == "small-embedding":
        m = _one_node_model(helper.make_node("Gather", ["emb", "ids"], ["y"]),
                            [("ids", TensorProto.INT64, [1, 24])], [w("emb", 2, 16)])
    else:
        m = _one_node_model(helper.make_node("LRN", ["x"], ["y"], size=3),
                            [("x", f, [1, 8, 6, 6])])
    if case == "small-embedding":  # the whole model measures too
        m.graph.output[0].CopyFrom(helper.make_tensor_value_info("y", f, [1, 24, 16]))
        whole = build(m)
        assert whole.ok, whole.error
        burst_timer(whole)
    net = import_onnx(m)
    ks = [k for k in kernels(net, load_rules("ort")) if k.layers]
    assert ks
    for k in ks:
        model = kernel_model(k.key)
        built = build(model)
        assert built.ok, (k.key.text, built.error)
        burst_timer(built)  # runs it once, untimed; raises if ORT cannot run it
        if case == "lrn":
            (node,) = [n for n in model.graph.node if n.op_type == "LRN"]
            assert helper.get_attribute_value(node.attribute[0]) == 3


def test_a_models_calibration_point_is_its_network_not_its_file_name(tmp_path):
    """A model replaced under the same file name is a new calibration point (the old one's
    end-to-end time was paired with the new network's kernels: scale 0.99 -> 0.33); a
    renamed one is the same point (nothing measured again)."""
    import argparse

    from onnx import save

    from costmodels.fusion import kernels, load_rules
    from costmodels.spaces import get_space
    from measure import lut_cli
    from measure.lut.build import point_name
    from measure.lut.calibrate import point_kernels
    from measure.lut.table import LutFile
    from measure.testing import tiny_model

    d = tmp_path / "m"
    d.mkdir()
    save(tiny_model(size=16), str(d / "a.onnx"))
    save(tiny_model(size=24), str(d / "b.onnx"))
    parser = argparse.ArgumentParser()
    lut_cli.register(parser.add_subparsers())
    db = tmp_path / "lut.sqlite"

    def build() -> tuple[list, dict]:
        args = parser.parse_args(["lut", "build", "--space", f"models:{d}", "--db", str(db),
                                  "--repeat", "3", "--warmup", "1", "--max-retries", "0",
                                  "--rounds", "2", "--min-round-s", "0", "--calibrate", "9"])
        assert args.func(args) == 0
        with LutFile(db, readonly=True) as lut:
            return lut.points(), point_kernels(lut)

    def listed(net) -> dict:  # planned as the build plans: at this machine's NCHWc block
        from measure.config import MeasureConfig
        from measure.lut.build import host_rules

        rules = host_rules(load_rules("ort"), MeasureConfig())
        return dict(Counter(k.text for k in kernels(net, rules)))

    points, lists = build()
    assert len(points) == 2
    first = {p.name: p.latency_ms for p in points}
    (d / "b.onnx").rename(d / "c.onnx")
    points, _ = build()
    assert {p.name: p.latency_ms for p in points} == first  # the same networks, as measured
    old = get_space(f"models:{d}").build_network("a")
    save(tiny_model(size=40), str(d / "a.onnx"))
    new = get_space(f"models:{d}").build_network("a")
    points, lists = build()
    assert len(points) == 3 and point_name(new) != point_name(old)
    assert lists[point_name(new)] == listed(new) and lists[point_name(old)] == listed(old)


def test_calibration_weighs_every_network_alike_and_never_makes_the_fit_worse():
    """Fitted in milliseconds, a folder's largest network set the scale (a probe's 28 ms
    Whisper encoder, its bare sum -48%: scale 1.64, the other eleven +26..+107%, MAPE
    53% in-sample). The fit is on relative errors now, and one that misses the networks
    by more than their bare kernel sums is not kept."""
    from measure.lut.calibrate import describe, fit

    sums = [0.85, 2.3, 0.7, 13.3, 0.49, 0.13, 0.32, 1.76, 1.43, 5.2, 1.17, 14.6]
    truth = [0.85, 2.29, 0.71, 13.33, 0.48, 0.13, 0.32, 1.76, 1.43, 5.25, 1.17, 28.3]
    n = [40] * len(sums)
    rec = fit(sums, n, truth)
    assert rec["mape"] <= rec["raw_mape"] and rec["mape"] < 0.1
    assert 0.95 < rec["scale"] < 1.1  # the eleven that agree decide it
    # no fit of the terms misses them by less than the sums themselves: kept as they are
    assert rec["kept_uncalibrated"] and rec["scale"] == 1.0 and rec["mape"] == rec["raw_mape"]
    assert "stays uncalibrated" in describe(rec)
    # sums that are off by one factor: the fit finds it
    rec = fit([1.0, 2.0, 4.0], [10, 10, 10], [1.5, 3.0, 6.0], terms=("scale",))
    assert rec["scale"] == pytest.approx(1.5) and rec["mape"] < 1e-9
    assert not rec.get("kept_uncalibrated")


def test_a_where_kernel_is_measured_on_a_mask_not_on_coin_tosses():
    """A random condition made ORT's Where 3-6x slower than in the network it came from
    (an attention mask, or IsNaN of a softmax: all false), its branches mispredicted; a
    bool input or constant is a mask now: the first half of the last axis True."""
    from measure.inputs import random_inputs, structured_mask
    from measure.lut.kernel_onnx import plan

    m = structured_mask((2, 3, 5))
    assert m.dtype == bool and m[..., :3].all() and not m[..., 3:].any()
    assert structured_mask(()).shape == ()
    feeds = random_inputs([("c", (1, 4), np.dtype(bool))])
    assert feeds["c"].tolist() == [[True, True, False, False]]
    p = plan(parse_key("Where|in=1x4x8x8|out=1x4x8x8|w=1x4x8x8;1x4x8x8|dt=float32"))
    assert p.dtypes[p.inputs[0]] == "bool"  # the condition: an input, fed a mask


def test_the_lut_plans_with_the_nchwc_block_of_this_machine(tmp_path):
    """ORT's NCHWc block is 16 with AVX-512 and 8 with AVX2; the shipped rules say 16. A
    LUT built here plans with this machine's block (read from the graph ORT optimises), so
    a conv of 8 output channels gets a reorder ORT runs: at block 16 on an AVX2 machine the
    kernel was a 16-channel buffer reordered to 8 channels, which ORT refuses."""
    from onnx import TensorProto, helper, numpy_helper

    from costmodels.onnx_import import import_onnx
    from measure.config import MeasureConfig
    from measure.lut.build import host_rules
    from measure.ort import build, burst_timer, ort_nchwc_block

    block = ort_nchwc_block()
    try:
        flags = next(line for line in open("/proc/cpuinfo") if line.startswith("flags"))
    except (OSError, StopIteration):
        flags = ""
    if "avx512f" in flags.split():
        assert block == 16
    elif "avx2" in flags.split():
        assert block == 8
    rules = host_rules(RULES, MeasureConfig())
    assert rules.layout.block == (block or RULES.layout.block) and rules.name == RULES.name
    assert host_rules(rules, MeasureConfig()) is rules
    tvm = load_rules("tvm")
    assert host_rules(tvm, MeasureConfig(runtime="tvm")) is tvm
    rng = np.random.default_rng(0)
    g = helper.make_graph(
        [helper.make_node("Conv", ["x", "w1"], ["a"], pads=[1, 1, 1, 1]),
         helper.make_node("Relu", ["a"], ["b"]),
         helper.make_node("Conv", ["b", "w2"], ["y"], pads=[1, 1, 1, 1])], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 16, 16])],
        [numpy_helper.from_array(rng.standard_normal((16, 3, 3, 3)).astype(np.float32), "w1"),
         numpy_helper.from_array(rng.standard_normal((8, 16, 3, 3)).astype(np.float32), "w2")])
    net = import_onnx(helper.make_model(g, opset_imports=[helper.make_opsetid("", 13)]))
    planned = [k.key for k in kernels(net, rules)]
    assert any(k.ops == ("ReorderOutput",) for k in planned)
    for key in planned:
        built = build(kernel_model(key))
        assert built.ok, (key.text, built.error)
        burst_timer(built)
