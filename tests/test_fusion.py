"""The core planner: fusion rules (data) -> kernels, on hand-made graphs, the shipped rule
files, ORT itself, the committed LUT's index, and both of its users (LUT, roofline)."""

from __future__ import annotations

import json
from collections import Counter

import pytest

from costmodels.errors import ModelFileError
from costmodels.fusion import (
    KernelKey,
    kernels,
    load_rules,
    parse_key,
    rules_from_json,
    shipped_rules,
)
from costmodels.network import Network, make_layer
from tests.conftest import ROOT

LUT = ROOT / "datasets" / "nb201" / "xeon-2c-ort-cifar10-lut.sqlite"

X = (1, 16, 8, 8)


def conv(name, src, k=3, cin=16, cout=16):
    return make_layer(name, "Conv", [src], [name], [(1, cin, 8, 8)], (1, cout, 8, 8),
                      [(cout, cin, k, k)], kernel=(k, k), stride=(1, 1),
                      pads=(k // 2,) * 4, dilation=(1, 1))


def bn(name, src):
    return make_layer(name, "BatchNormalization", [src], [name], [X], X, [(16,)] * 4)


def unary(name, op, src, weights=()):
    return make_layer(name, op, [src], [name], [X], X, weights)


def add(name, a, b):
    return make_layer(name, "Add", [a, b], [name], [X, X], X)


def net(*layers, out=None):
    return Network("hand", (("x", X),), tuple(layers), (out or layers[-1].name,))


def ops_of(ks):
    return [k.ops for k in ks]


@pytest.fixture(scope="module")
def ort_rules():
    return load_rules("ort")


@pytest.fixture(scope="module")
def ort_here():
    """The ort rules as a LUT built on this machine plans with them (its NCHWc block: 16
    with AVX-512, 8 with AVX2): what a test compares with ONNX Runtime's graph here."""
    from measure.config import MeasureConfig
    from measure.lut.build import host_rules

    return host_rules(load_rules("ort"), MeasureConfig())


def test_conv_bn_relu_is_one_kernel_and_identity_is_removed(ort_rules):
    n = net(conv("c", "x"), bn("b", "c"), unary("r", "Relu", "b"), unary("i", "Identity", "r"),
            conv("c2", "i"))
    ks = kernels(n, ort_rules)
    assert ops_of(ks) == [("ReorderInput",), ("Conv", "BatchNormalization", "Relu"), ("Conv",),
                          ("ReorderOutput",)]
    assert ks[1].names == ("c", "b", "r")
    assert ks[1].layout == "nchwc"


def test_relu_shared_by_two_consumers_is_not_fused(ort_rules):
    n = net(conv("c", "x"), unary("r", "Relu", "c"), conv("c2", "r"), conv("c3", "c"),
            add("a", "c2", "c3"))
    ks = kernels(n, ort_rules)
    assert ("Conv", "Relu") not in ops_of(ks)
    assert ("Relu",) in ops_of(ks)


def test_identical_relus_are_merged_then_fused(ort_rules):
    # CSE: two Relu(c) become one, which then has a single use and fuses into the conv.
    n = net(conv("c", "x"), unary("r1", "Relu", "c"), unary("r2", "Relu", "c"),
            conv("c2", "r1"), conv("c3", "r2"), add("a", "c2", "c3"))
    ks = kernels(n, ort_rules)
    assert ops_of(ks).count(("Conv", "Relu")) == 1
    assert not any(k.ops == ("Relu",) for k in ks)


def test_identical_nodes_that_are_graph_outputs_are_kept(ort_rules):
    """ONNX Runtime's CSE keeps every node whose output is a graph output (eight Sigmoid(x)
    outputs stay eight nodes in its optimised graph); internal twins are merged."""
    n = Network("hand", (("x", X),), (unary("s1", "Sigmoid", "x"), unary("s2", "Sigmoid", "x")),
                ("s1", "s2"))
    assert ops_of(kernels(n, ort_rules)) == [("Sigmoid",), ("Sigmoid",)]
    inner = net(unary("s1", "Sigmoid", "x"), unary("s2", "Sigmoid", "x"), add("a", "s1", "s2"))
    assert ops_of(kernels(inner, ort_rules)).count(("Sigmoid",)) == 1


def test_add_fuses_into_first_conv_only_when_other_input_is_blocked(ort_rules):
    n = net(conv("c1", "x"), bn("b1", "c1"), conv("c2", "x"), bn("b2", "c2"),
            add("a", "b1", "b2"), unary("r", "Relu", "a"))
    ks = kernels(n, ort_rules)
    fused = [k for k in ks if "Add" in k.ops]
    assert [k.ops for k in fused] == [("Conv", "BatchNormalization", "Add", "Relu")]
    assert fused[0].names[0] == "c1"  # pick: first
    assert fused[0].key.input_shapes == (X, X)
    # the other input plain (a zero node is not NCHWc): no fusion, reorders instead
    z = unary("z", "Mul", "x", [()])
    n2 = net(conv("c1", "x"), bn("b1", "c1"), z, add("a", "b1", "z"))
    ks2 = kernels(n2, ort_rules)
    assert ("Add",) in ops_of(ks2)
    assert ("ReorderOutput",) in ops_of(ks2)


def test_zero_nodes_are_merged_and_cost_reorders(ort_rules):
    n = net(conv("c", "x"), unary("r", "Relu", "c"), conv("c2", "r"),
            unary("z1", "Mul", "c2", [()]), unary("z2", "Mul", "c2", [()]),
            unary("r2", "Relu", "c2"), add("a", "z1", "z2"), add("a2", "a", "r2"))
    c = Counter(k.ops for k in kernels(n, ort_rules))
    assert c[("Mul",)] == 1  # CSE of equal scalar multiplications
    # c2 (to the plain Mul) and r2 (to the plain Add) leave NCHWc, once per tensor
    assert c[("ReorderOutput",)] == 2
    assert c[("Conv",)] == 1 and c[("Conv", "Relu")] == 1


def test_mul_by_constant_folds_into_a_single_use_conv(ort_rules):
    n = net(conv("c", "x"), bn("b", "c"), unary("z", "Mul", "b", [()]), conv("c2", "z"))
    assert ("Conv", "BatchNormalization", "Mul") in ops_of(kernels(n, ort_rules))


def test_naive_rules_keep_one_kernel_per_layer():
    n = net(conv("c", "x"), bn("b", "c"), unary("r", "Relu", "b"), unary("i", "Identity", "r"))
    ks = kernels(n, load_rules("naive"))
    assert ops_of(ks) == [("Conv",), ("BatchNormalization",), ("Relu",), ("Identity",)]


def test_tvm_rules_prune_dead_branches():
    n = net(conv("c", "x"), unary("dead", "Relu", "x"), bn("b", "c"), out="b")
    ks = kernels(n, load_rules("tvm"))
    assert ops_of(ks) == [("Conv", "BatchNormalization")]
    assert len(kernels(n, load_rules("ort"))) > 1  # ORT runs dead nodes


def test_rules_are_data_and_validated(tmp_path):
    doc = json.loads(load_rules("ort").doc)
    doc["fusion"] = []
    custom = tmp_path / "nofuse.json"
    custom.write_text(json.dumps(doc))
    rules = load_rules(str(custom))
    n = net(conv("c", "x"), bn("b", "c"))
    assert ops_of(kernels(n, rules))[1:3] == [("Conv",), ("BatchNormalization",)]
    assert rules.hash != load_rules("ort").hash
    with pytest.raises(ModelFileError, match="not a costmodels fusion-rules"):
        rules_from_json('{"format": "other"}')
    doc = json.loads(load_rules("ort").doc)
    doc["fusion"][0]["anchor"] = ["Conv"]  # a list where an op name goes (found by fuzzing)
    with pytest.raises(ModelFileError, match="'fusion\\[\\].anchor' must be a string"):
        rules_from_json(json.dumps(doc))
    for field, value, says in (("qdq", "yes", "'qdq' must be an object"),
                               ("slices_to_split", "yes", "must be true or false")):
        doc = json.loads(load_rules("ort").doc)
        doc[field] = value
        with pytest.raises(ModelFileError, match=says):
            rules_from_json(json.dumps(doc))
    for field, value, says in (("max_rank", 0, "'fusion\\[\\].chain\\[\\].max_rank' must be a whole"),
                               ("gemm_bias", "yes", "gemm_bias' must be true or false")):
        doc = json.loads(load_rules("ort").doc)
        doc["fusion"][2]["chain"][0][field] = value
        with pytest.raises(ModelFileError, match=says):
            rules_from_json(json.dumps(doc))
    doc = json.loads(load_rules("ort").doc)
    doc["qdq"]["activation_dtypes"] = [8]
    with pytest.raises(ModelFileError, match="list of type names"):
        rules_from_json(json.dumps(doc))
    with pytest.raises(ModelFileError, match="no fusion rules named 'nosuchruntime'"):
        load_rules("nosuchruntime")
    with pytest.raises(ModelFileError, match="cannot read"):
        load_rules(str(tmp_path / "absent.json"))


def test_every_shipped_rules_file_loads():
    assert {"ort", "ort_arm", "tvm", "eager", "naive"} <= set(shipped_rules())
    for name in shipped_rules():
        assert load_rules(name).name == name


def test_key_text_round_trip():
    key = KernelKey(("Conv", "BatchNormalization", "Add"), (X, X), X, ((16, 16, 3, 3),),
                    (3, 3), (1, 1), (1, 1, 1, 1), (1, 1), 1, "float32")
    assert parse_key(key.text) == KernelKey(key.ops, key.input_shapes, key.output_shape,
                                            key.weight_shapes, key.kernel, key.stride,
                                            key.pads, (), 1, "float32")
    assert "," not in key.text
    with pytest.raises(ValueError, match="not a kernel key"):
        parse_key("Conv")
    with pytest.raises(ValueError, match="unknown field"):
        parse_key("Conv|in=1x2|out=1x2|zz=3")


@pytest.mark.parametrize("arch", [
    "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|",
    "|none~0|+|none~0|none~1|+|none~0|nor_conv_3x3~1|nor_conv_3x3~2|",
    "|nor_conv_1x1~0|+|skip_connect~0|avg_pool_3x3~1|+|skip_connect~0|avg_pool_3x3~1|skip_connect~2|",
    "|nor_conv_3x3~0|+|none~0|none~1|+|none~0|none~1|none~2|",
])
def test_ort_rules_match_what_ort_executes(arch, tmp_path, ort_here):
    """The kernels of a cell equal the nodes of ORT's optimized graph (op, Sum input, Relu)."""
    import onnx
    import onnxruntime as ort

    from costmodels.spaces import nb201

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = 1
    so.log_severity_level = 3
    so.optimized_model_filepath = str(tmp_path / "opt.onnx")
    ort.InferenceSession(nb201.build_onnx(arch).SerializeToString(), so,
                         providers=["CPUExecutionProvider"])
    opt = onnx.load(str(tmp_path / "opt.onnx"))
    theirs = Counter()
    for node in opt.graph.node:
        if node.op_type == "Conv":
            has_sum = len([i for i in node.input if i]) >= 4
            has_act = any(a.name == "activation" for a in node.attribute)
            theirs[("Conv", has_sum, has_act)] += 1
        else:
            theirs[(node.op_type,)] += 1
    mine = Counter()
    for k in kernels(nb201.build_network(arch), ort_here):
        if k.ops[0] == "Conv" or (k.ops[0] == "BatchNormalization" and k.layout == "nchwc"):
            mine[("Conv", "Add" in k.ops, "Relu" in k.ops)] += 1
        else:
            mine[(k.ops[0],)] += 1
    assert mine == theirs


def test_committed_lut_rules_and_index_still_match():
    """The committed LUT's stored rules are the ort rules (same name), and both they and
    the shipped ones give its stored per-cell kernel counts: later versions of ort.json
    only add fusions of ops NB201 does not have, so its entries and index stay valid."""
    import numpy as np

    from costmodels.spaces import nb201
    from measure.lut.build import index_networks
    from measure.lut.table import LutFile

    if not LUT.exists():
        pytest.skip(f"{LUT} not built")
    shipped = load_rules("ort")
    with LutFile(LUT, readonly=True) as lut:
        stored = rules_from_json(lut.get_meta("rules"))
        assert stored.name == shipped.name and lut.get_meta("rules_hash") == stored.hash
        keys, counts = lut.get_index("nb201", "cifar10", 1, stored.hash)
    cells = list(range(0, nb201.NUM_ARCHS, 157))
    nets = [nb201.build_network(i, "cifar10", 1) for i in cells]
    for rules in (stored, shipped):
        mine, _, mc = index_networks(nets, rules)
        assert set(mine) <= set(keys)
        col = {k: j for j, k in enumerate(mine)}
        again = np.stack([mc[:, col[k]] if k in col else np.zeros(len(cells), mc.dtype)
                          for k in keys], axis=1)
        assert np.array_equal(again, counts[cells])


def _ort_node_ops(model, tmp_path) -> list[str]:
    """Op types of the graph ONNX Runtime optimises ``model`` into (ORT_ENABLE_ALL)."""
    import onnx
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.intra_op_num_threads = 1
    so.log_severity_level = 3
    so.optimized_model_filepath = str(tmp_path / "opt.onnx")
    ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])
    return [n.op_type for n in onnx.load(str(tmp_path / "opt.onnx")).graph.node]


@pytest.mark.parametrize("act,after_add,fused", [
    ("Clip", False, True), ("HardSigmoid", False, True), ("LeakyRelu", False, True),
    ("Sigmoid", False, True), ("Tanh", False, True), ("Clip", True, False),
    ("Sigmoid", True, True)])
def test_conv_activation_fusion_matches_ort(act, after_add, fused, tmp_path, ort_here):
    """Conv (+ residual Add) + activation: one kernel exactly when ORT runs one Conv."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    from costmodels.onnx_import import import_onnx

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(size=(16, 16, 3, 3)).astype(np.float32), "w"),
             numpy_helper.from_array(rng.normal(size=(16, 16, 1, 1)).astype(np.float32), "w2"),
             numpy_helper.from_array(np.array(0, np.float32), "lo"),
             numpy_helper.from_array(np.array(6, np.float32), "hi")]
    nodes = [helper.make_node("Conv", ["x", "w"], ["c1"], pads=[1, 1, 1, 1]),
             helper.make_node("Conv", ["c1", "w2"], ["c2"])]
    src = "c2"
    if after_add:
        nodes.append(helper.make_node("Add", ["c2", "c1"], ["s"]))
        src = "s"
    nodes.append(helper.make_node(act, [src] + (["lo", "hi"] if act == "Clip" else []), ["y"]))
    g = helper.make_graph(nodes, "act", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                       [1, 16, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 16, 8, 8])],
                          inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    theirs = _ort_node_ops(model, tmp_path)
    assert (act not in theirs) == fused  # ORT itself, as the rules claim
    ks = kernels(import_onnx(model), ort_here)
    mine = [k.ops for k in ks if k.ops[0] == "Conv"][-1]
    assert (act in mine) == fused
    assert [k for k in ks if k.ops[0] not in ("Conv", "ReorderInput", "ReorderOutput")] == (
        [] if fused else [k for k in ks if k.ops == (act,)])


@pytest.mark.parametrize("arch", [1462, 5000, 12345,
    "|nor_conv_1x1~0|+|skip_connect~0|avg_pool_3x3~1|+|skip_connect~0|avg_pool_3x3~1|skip_connect~2|"])
def test_roofline_and_lut_plan_identical_kernels(arch):
    """Both users of the planner see the same kernels: ops, layers covered, layout."""
    from analytical.roofline import from_spec
    from costmodels.spaces import nb201
    from measure.lut.model import LookupTable

    if not LUT.exists():
        pytest.skip(f"{LUT} not built")
    net = nb201.build_network(arch)
    lut_kernels = [("+".join(k.ops), k.names, k.layout) for k in LookupTable(LUT).kernels(net)]
    est = from_spec("xeon_2c").estimate(net)
    roof = [(c.op, c.meta["fused"], c.meta["layout"]) for c in est.per_layer]
    assert roof == lut_kernels
    assert any(op.startswith("Reorder") for op, _, _ in roof)


@pytest.mark.parametrize("mid,between", [(33, "Relu"), (36, "Relu"), (48, "Relu"), (33, "Add"),
                                         (36, "Add"), (33, "MaxPool")])
def test_layout_reorders_match_ort_at_unaligned_channels(mid, between, tmp_path, ort_here):
    """Conv -> (Relu | Add | MaxPool) -> Conv with a middle tensor of ``mid`` channels: the
    reorders ORT inserts (none can take 33 channels) are the planner's."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    from costmodels.onnx_import import import_onnx

    rng = np.random.default_rng(0)
    inits = [numpy_helper.from_array(rng.normal(size=(mid, 32, 1, 1)).astype(np.float32), "w1"),
             numpy_helper.from_array(rng.normal(size=(32, mid, 1, 1)).astype(np.float32), "w2")]
    mids = {"Relu": helper.make_node("Relu", ["c"], ["r"]),
            "Add": helper.make_node("Add", ["c", "c"], ["r"]),
            "MaxPool": helper.make_node("MaxPool", ["c"], ["r"], kernel_shape=[2, 2],
                                        strides=[2, 2])}
    nodes = [helper.make_node("Conv", ["x", "w1"], ["c"]), mids[between],
             helper.make_node("Conv", ["r", "w2"], ["y"])]
    side = 8 if between == "MaxPool" else 16
    g = helper.make_graph(nodes, "mid", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                       [1, 32, 16, 16])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT,
                                                         [1, 32, side, side])], inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    theirs = Counter(op for op in _ort_node_ops(model, tmp_path) if op.startswith("Reorder"))
    mine = Counter(k.ops[0] for k in kernels(import_onnx(model), ort_here)
                   if k.ops[0].startswith("Reorder"))
    assert mine == theirs


def _graph_model(nodes, x_shape, inits):
    from onnx import TensorProto, helper

    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT,
                                                                     list(x_shape))],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    model = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _w(rng, name, shape):
    import numpy as np
    from onnx import numpy_helper

    return numpy_helper.from_array(rng.normal(size=shape).astype(np.float32) * 0.1, name)


@pytest.mark.parametrize("block", ["silu_se", "depthwise_after_nchw", "channel_concat",
                                   "residual_44", "hardswish_se", "grouped_4_per_group",
                                   "resize", "resize_linear", "resize_cubic",
                                   "maxpool_24"])
def test_layouts_of_mobile_blocks_match_ort(block, tmp_path, ort_here):
    """The reorders ORT inserts in blocks of real mobile networks are the planner's: SiLU
    (x * sigmoid(x)) and squeeze-excitation (EfficientNet: the equal-shape Mul stays
    blocked, the broadcasting one does not), a depthwise conv after a conv left in NCHW
    (MobileNetV2 x1.4: ORT reorders the depthwise conv's input), a channel Concat of
    whole blocks (SqueezeNet's fire module: blocked), a residual block of 44 channels (a
    conv reads an NCHW input only when it has fewer channels than the block: here ORT
    reorders the 44-channel inputs), MobileNetV3's HardSwish (fused into the conv) and
    squeeze-excitation, ResNeXt's grouped conv of 4 channels per group (NCHW), a UNet's
    Resize as torch exports it (blocked; a linear one too, a cubic one in NCHW: ORT's
    blocked Upsample is nearest or linear), a MaxPool of 24 channels (NCHW: a pool stays
    blocked only on whole blocks of channels)."""
    import numpy as np
    from onnx import helper, numpy_helper

    from costmodels.onnx_import import import_onnx

    rng = np.random.default_rng(0)
    n = helper.make_node
    if block == "silu_se":
        nodes = [n("Conv", ["x", "w1"], ["c"]), n("Sigmoid", ["c"], ["s"]),
                 n("Mul", ["c", "s"], ["a"]), n("GlobalAveragePool", ["a"], ["p"]),
                 n("Conv", ["p", "w2"], ["q"]), n("Sigmoid", ["q"], ["qs"]),
                 n("Mul", ["q", "qs"], ["qa"]), n("Conv", ["qa", "w3"], ["e"]),
                 n("Sigmoid", ["e"], ["es"]), n("Mul", ["a", "es"], ["m"]),
                 n("Conv", ["m", "w4"], ["y"])]
        inits = [_w(rng, "w1", (32, 32, 1, 1)), _w(rng, "w2", (8, 32, 1, 1)),
                 _w(rng, "w3", (32, 8, 1, 1)), _w(rng, "w4", (32, 32, 1, 1))]
        x = (1, 32, 16, 16)
    elif block == "depthwise_after_nchw":
        nodes = [n("Conv", ["x", "w1"], ["c"]), n("Clip", ["c", "lo", "hi"], ["r"]),
                 n("Conv", ["r", "w2"], ["d"], group=132, pads=[1, 1, 1, 1]),
                 n("Clip", ["d", "lo", "hi"], ["dr"]), n("Conv", ["dr", "w3"], ["y"])]
        inits = [_w(rng, "w1", (132, 22, 1, 1)), _w(rng, "w2", (132, 1, 3, 3)),
                 _w(rng, "w3", (32, 132, 1, 1)),
                 numpy_helper.from_array(np.float32(0), "lo"),
                 numpy_helper.from_array(np.float32(6), "hi")]
        x = (1, 22, 16, 16)
    elif block == "hardswish_se":  # MobileNetV3: HardSwish fuses into the conv
        nodes = [n("Conv", ["x", "w1"], ["c"]), n("HardSwish", ["c"], ["h"]),
                 n("GlobalAveragePool", ["h"], ["p"]), n("Conv", ["p", "w2"], ["q"]),
                 n("Relu", ["q"], ["qr"]), n("Conv", ["qr", "w3"], ["e"]),
                 n("HardSigmoid", ["e"], ["es"]), n("Mul", ["h", "es"], ["m"]),
                 n("Conv", ["m", "w4"], ["y"])]
        inits = [_w(rng, "w1", (64, 64, 1, 1)), _w(rng, "w2", (16, 64, 1, 1)),
                 _w(rng, "w3", (64, 16, 1, 1)), _w(rng, "w4", (32, 64, 1, 1))]
        x = (1, 64, 16, 16)
    elif block == "grouped_4_per_group":  # ResNeXt 32x4d: not whole blocks per group
        nodes = [n("Conv", ["x", "w1"], ["c"]), n("Relu", ["c"], ["r"]),
                 n("Conv", ["r", "w2"], ["g"], group=32, pads=[1, 1, 1, 1]),
                 n("Relu", ["g"], ["gr"]), n("Conv", ["gr", "w3"], ["y"])]
        inits = [_w(rng, "w1", (128, 64, 1, 1)), _w(rng, "w2", (128, 4, 3, 3)),
                 _w(rng, "w3", (64, 128, 1, 1))]
        x = (1, 64, 16, 16)
    elif block == "resize":  # a UNet's upsampling as torch exports it: blocked
        nodes = [n("Conv", ["x", "w1"], ["c"]), n("Resize", ["c", "", "sc"], ["u"],
                                                   mode="nearest", nearest_mode="floor",
                                                   coordinate_transformation_mode="asymmetric"),
                 n("Conv", ["u", "w2"], ["y"])]
        inits = [_w(rng, "w1", (32, 32, 1, 1)), _w(rng, "w2", (32, 32, 1, 1)),
                 numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "sc")]
        x = (1, 32, 16, 16)
    elif block in ("resize_linear", "resize_cubic"):  # blocked linear, NCHW cubic
        nodes = [n("Conv", ["x", "w1"], ["c"]),
                 n("Resize", ["c", "", "sc"], ["u"], mode=block.split("_")[1],
                   coordinate_transformation_mode="half_pixel"),
                 n("Conv", ["u", "w2"], ["y"])]
        inits = [_w(rng, "w1", (32, 32, 1, 1)), _w(rng, "w2", (32, 32, 1, 1)),
                 numpy_helper.from_array(np.array([1, 1, 2, 2], np.float32), "sc")]
        x = (1, 32, 16, 16)
    elif block == "maxpool_24":  # a pool of 24 channels: not blocked
        nodes = [n("Conv", ["x", "w1"], ["c"]), n("Relu", ["c"], ["r"]),
                 n("MaxPool", ["r"], ["p"], kernel_shape=[2, 2], strides=[2, 2]),
                 n("Conv", ["p", "w2"], ["y"])]
        inits = [_w(rng, "w1", (24, 32, 1, 1)), _w(rng, "w2", (32, 24, 1, 1))]
        x = (1, 32, 16, 16)
    elif block == "residual_44":
        nodes = [n("Conv", ["x", "w1"], ["c"]), n("Relu", ["c"], ["r"]),
                 n("Conv", ["r", "w2"], ["p"]), n("Add", ["x", "p"], ["a"]),
                 n("Conv", ["a", "w3"], ["y"])]
        inits = [_w(rng, "w1", (264, 44, 1, 1)), _w(rng, "w2", (44, 264, 1, 1)),
                 _w(rng, "w3", (264, 44, 1, 1))]
        x = (1, 44, 28, 28)
    else:
        nodes = [n("Conv", ["x", "w1"], ["c"]), n("Relu", ["c"], ["r"]),
                 n("Conv", ["r", "w2"], ["e1"]), n("Relu", ["e1"], ["r1"]),
                 n("Conv", ["r", "w3"], ["e3"], pads=[1, 1, 1, 1]), n("Relu", ["e3"], ["r3"]),
                 n("Concat", ["r1", "r3"], ["cat"], axis=1), n("Conv", ["cat", "w4"], ["y"])]
        inits = [_w(rng, "w1", (16, 32, 1, 1)), _w(rng, "w2", (64, 16, 1, 1)),
                 _w(rng, "w3", (64, 16, 3, 3)), _w(rng, "w4", (32, 128, 1, 1))]
        x = (1, 32, 16, 16)
    model = _graph_model(nodes, x, inits)
    theirs = Counter(op for op in _ort_node_ops(model, tmp_path) if op.startswith("Reorder"))
    mine = Counter(k.ops[0] for k in kernels(import_onnx(model), ort_here)
                   if k.ops[0].startswith("Reorder"))
    assert mine == theirs


def test_committed_fbnet_lut_plans_with_its_stored_rules():
    """A LUT plans with the rules stored in it, layout version included: the committed FBNet
    LUT (version-1 rules) still covers FBNet networks whose grouped convs the shipped
    version-2 rules run in NCHW (and so with other kernels)."""
    from costmodels.spaces import get_space
    from measure.lut.model import LookupTable

    path = ROOT / "datasets" / "fbnet" / \
        "epyc-2c-ort-fbnet-cifar100-lut.sqlite"
    if not path.exists():
        pytest.skip(f"{path} not committed")
    lut = LookupTable(path)
    assert lut.rules_.layout.version == 1 and load_rules("ort").layout.version == 2
    space = get_space("fbnet")
    archs = [a for a in space.sample(40, seed=3) if "g2" in a][:4] or space.sample(4, seed=3)
    for arch in archs:
        net = space.build_network(arch, "cifar100")
        assert lut.estimate(net).latency_ms > 0


def _qdq_model(zero_point_dtype):
    """A model quantized in the QDQ format (as onnxruntime.quantization writes it): a conv,
    ReLU, max-pool, 1x1 conv + residual Add, depthwise conv, a float HardSigmoid between a
    DQ and a Q, a bilinear and a nearest Resize, a Split whose parts are each quantized, a
    channel Concat, global pool and Gemm head; weights int8, biases int32."""
    import numpy as np
    from onnx import helper, numpy_helper

    rng = np.random.default_rng(0)
    zdt = np.dtype(zero_point_dtype)
    nodes, inits = [], []
    n = helper.make_node

    def const(name, arr):
        inits.append(numpy_helper.from_array(arr, name))
        return name

    const("s", np.array(0.05, np.float32))
    const("sb", np.array(0.0025, np.float32))
    const("z", np.array(-128 if zdt == np.int8 else 0, zdt))  # a ReLU output's zero point
    const("zw", np.array(0, np.int8))
    const("zb", np.array(0, np.int32))
    count = [0]

    def fresh(prefix):
        count[0] += 1
        return f"{prefix}{count[0]}"

    def qdq(x):
        q, d = fresh("q"), fresh("d")
        nodes.extend([n("QuantizeLinear", [x, "s", "z"], [q]),
                      n("DequantizeLinear", [q, "s", "z"], [d])])
        return d

    def conv(x, cin, cout, k=3, group=1, stride=1):
        w = const(fresh("w"), rng.integers(-4, 4, (cout, cin // group, k, k)).astype(np.int8))
        b = const(fresh("b"), rng.integers(-4, 4, cout).astype(np.int32))
        wd, bd, y = fresh("wd"), fresh("bd"), fresh("c")
        nodes.extend([n("DequantizeLinear", [w, "s", "zw"], [wd]),
                      n("DequantizeLinear", [b, "sb", "zb"], [bd]),
                      n("Conv", [x, wd, bd], [y], pads=[k // 2] * 4, group=group,
                        strides=[stride, stride])])
        return y

    def op(kind, ins, **attrs):
        y = fresh("o")
        nodes.append(n(kind, ins, [y], **attrs))
        return y

    x = qdq("x")
    y = qdq(conv(x, 16, 32))
    y = qdq(op("Relu", [y]))
    y = qdq(op("MaxPool", [y], kernel_shape=[2, 2], strides=[2, 2]))
    y = qdq(op("Add", [y, qdq(conv(y, 32, 32, 1))]))
    y = qdq(conv(y, 32, 32, 3, group=32))
    y = qdq(op("HardSigmoid", [y]))
    const("up", np.array([1, 1, 2, 2], np.float32))
    lin = qdq(op("Resize", [y, "", "up"], mode="linear"))
    near = qdq(op("Resize", [y, "", "up"], mode="nearest"))
    y = qdq(op("Add", [lin, near]))
    const("parts", np.array([16, 16], np.int64))
    a, b = fresh("sp"), fresh("sp")
    nodes.append(n("Split", [y, "parts"], [a, b], axis=1))
    y = qdq(op("Concat", [qdq(b), qdq(a)], axis=1))
    y = qdq(conv(y, 32, 32, 3, stride=2))
    y = qdq(op("GlobalAveragePool", [y]))
    const("shape", np.array([1, 32], np.int64))
    y = qdq(op("Reshape", [y, "shape"]))
    fw = const("fw", rng.integers(-4, 4, (10, 32)).astype(np.int8))
    fb = const("fb", rng.integers(-4, 4, 10).astype(np.int32))
    nodes.extend([n("DequantizeLinear", [fw, "s", "zw"], ["fwd"]),
                  n("DequantizeLinear", [fb, "sb", "zb"], ["fbd"]),
                  n("Gemm", [y, "fwd", "fbd"], ["logits"], transB=1)])
    nodes.append(n("Identity", [qdq("logits")], ["y"]))
    return _graph_model(nodes, (1, 16, 32, 32), inits)


def _ort_kernel_name(op: str) -> str:
    """ORT's quantized op named as the planner keys it (QLinearConv -> q:Conv)."""
    if op == "QGemm":
        return "q:Gemm"
    if op.startswith("QLinear"):
        return "q:" + op[len("QLinear"):]
    return {"NhwcMaxPool": "MaxPool"}.get(op, op)


def _plan_kernel_name(ops: tuple[str, ...]) -> str:
    if len(ops) == 3 and ops[0] == "DequantizeLinear" and ops[2] == "QuantizeLinear":
        return "q:" + ops[1]
    return "+".join(ops)


@pytest.mark.parametrize("dtype", ["uint8", "int8"])
def test_qdq_model_plans_the_kernels_ort_runs(tmp_path, ort_here, dtype):
    """A QDQ model: each fused op is one quantized kernel (QLinearConv, QLinearAdd, QGemm
    ...), data movement runs on the quantized tensor, a ReLU vanishes, float ops keep their
    DQ and Q (and dequantize their int8 weights at every run, in NCHW: not constant, no
    NCHWc), and the NHWC region costs one Transpose at each end: the planner's kernels are
    ORT's nodes, one for one. With int8 activations (onnxruntime.quantization's default)
    ORT on x86 runs a Q -> DQ link read once as uint8 and fuses a group only when its
    tensors are then of one type, a Conv or MatMul only on uint8."""
    from costmodels.onnx_import import import_onnx

    model = _qdq_model(dtype)
    theirs = Counter(_ort_kernel_name(op) for op in _ort_node_ops(model, tmp_path))
    ks = kernels(import_onnx(model), ort_here)
    mine = Counter(_plan_kernel_name(k.ops) for k in ks)
    assert mine == theirs
    if dtype == "int8":  # a residual Add reads a DQ twice-read link: int8 there, float
        assert theirs["q:Conv"] == 3 and theirs["q:Add"] == 1 and theirs["Conv"] == 1
        assert theirs["DequantizeLinear"] >= 2  # the float conv's weight and bias
        return
    assert theirs["q:Conv"] == 4 and theirs["Transpose"] == 2  # the test exercises them
    # without the qdq rules every Q and DQ is a kernel of its own
    plain = rules_from_json(json.dumps({k: v for k, v in json.loads(ort_here.doc).items()
                                        if k != "qdq"}))
    assert sum(k.ops == ("QuantizeLinear",) for k in kernels(import_onnx(model), plain)) > 15
    # qdq rules without a blocked layout (a runtime without NCHWc) plan it too
    no_layout = rules_from_json(json.dumps({k: v for k, v in json.loads(ort_here.doc).items()
                                            if k != "layout"}))
    assert Counter(_plan_kernel_name(k.ops) for k in kernels(import_onnx(model), no_layout)) \
        == mine


def test_qdq_kernels_build_as_the_quantized_kernel_ort_runs(tmp_path, ort_here):
    """The LUT's one-kernel model of each quantized kernel of the QDQ model runs as ORT's
    one quantized node, and its wrappers (the NHWC Transposes) are what ORT adds."""
    import onnx

    from costmodels.onnx_import import import_onnx
    from measure.lut.kernel_onnx import kernel_model, wrappers

    keys = {k.text: k.key for dt in ("uint8", "int8")
            for k in kernels(import_onnx(_qdq_model(dt)), ort_here)
            if k.ops[0] == "DequantizeLinear" and len(k.ops) == 3}
    assert len(keys) >= 8
    for text, key in keys.items():
        ops = _ort_node_ops(kernel_model(key), tmp_path)
        fused = [op for op in ops if op != "Transpose"]
        assert [_ort_kernel_name(op) for op in fused] == [_plan_kernel_name(key.ops)], text
        assert ops.count("Transpose") == len(wrappers(key, ort_here)), text
    assert onnx.checker.check_model(kernel_model(next(iter(keys.values())))) is None
    # the uint8 max-pool of the channels-last region: ORT's NhwcMaxPool (its NCHW uint8
    # MaxPool, which the entry had measured, is 50x slower), in no float layout of its own
    pool = next(k for k in kernels(import_onnx(_qdq_model("uint8")), ort_here)
                if k.ops == ("MaxPool",))
    assert pool.layout == "nhwc" and pool.key.attr("layout") == "nhwc"
    assert _ort_node_ops(kernel_model(pool.key), tmp_path) == ["NhwcMaxPool"]
    assert wrappers(pool.key, ort_here) == []


@pytest.mark.parametrize("neutral", ["none", "add0", "mul1", "sub0_first"])
def test_mobileone_block_plans_the_kernels_ort_runs(neutral, tmp_path, ort_here):
    """MobileOne's block (TorchScript): conv branches summed with a BatchNormalization of
    the input, then (+ 0, as its export writes) a ReLU. ORT runs the BatchNormalization as a
    1x1 depthwise NCHWc conv that absorbs the sum and the ReLU, and removes x + 0 and x * 1
    (NoopElimination; 0 - x is a negation and stays): the planner's kernels are ORT's
    (it had planned the BatchNormalization, the Add, the + 0 and the ReLU each alone). The
    one-kernel model of the fused BatchNormalization runs as ORT's one conv."""
    import numpy as np
    from onnx import helper, numpy_helper

    from costmodels.onnx_import import import_onnx
    from measure.lut.kernel_onnx import kernel_model, wrappers

    rng = np.random.default_rng(0)
    n = helper.make_node
    nodes = [n("Conv", ["x", "w1"], ["c1"]), n("Conv", ["c1", "w2"], ["c2"]),
             n("Conv", ["c1", "w3"], ["c3"], pads=[1, 1, 1, 1]), n("Add", ["c2", "c3"], ["s"]),
             n("BatchNormalization", ["c1", "g", "b", "m", "v"], ["bn"]),
             n("Add", ["s", "bn"], ["a"])]
    last = "a"
    if neutral != "none":
        op, value, ins = {"add0": ("Add", 0.0, ["a", "k"]), "mul1": ("Mul", 1.0, ["k", "a"]),
                          "sub0_first": ("Sub", 0.0, ["k", "a"])}[neutral]
        nodes.append(n(op, ins, ["a2"]))
        last = "a2"
    nodes.append(n("Relu", [last], ["y"]))
    inits = [_w(rng, "w1", (32, 32, 1, 1)), _w(rng, "w2", (32, 32, 1, 1)),
             _w(rng, "w3", (32, 32, 3, 3)), _w(rng, "b", (32,)), _w(rng, "m", (32,)),
             numpy_helper.from_array(np.full(32, 1.2, np.float32), "g"),
             numpy_helper.from_array(np.full(32, 0.8, np.float32), "v"),
             numpy_helper.from_array(np.float32({"mul1": 1.0}.get(neutral, 0.0)), "k")]
    model = _graph_model(nodes, (1, 32, 16, 16), inits)
    theirs = Counter(_ort_node_ops(model, tmp_path))
    ks = kernels(import_onnx(model), ort_here)
    assert sum(theirs.values()) == len(ks)
    assert theirs["Conv"] == sum(k.ops[0] in ("Conv", "BatchNormalization") for k in ks)
    if neutral != "sub0_first":
        assert theirs["Conv"] == 4 and "BatchNormalization+Add+Relu" in {"+".join(k.ops)
                                                                         for k in ks}
    bn = next(k for k in ks if k.ops[0] == "BatchNormalization")
    ops = _ort_node_ops(kernel_model(bn.key), tmp_path)
    assert ops.count("Conv") + ops.count("BatchNormalization") == 1 and "Relu" not in ops
    assert len(ops) - 1 == len(wrappers(bn.key, ort_here))


@pytest.mark.parametrize("spans,axis", [([(0, 16), (16, 32)], 1), ([(0, 8), (8, 20), (20, 32)], 1),
                                        ([(16, 32), (0, 16)], 1), ([(0, 4), (4, 8)], 2),
                                        ([(0, 8), (8, 16)], 1), ([(0, 16)], 1)])
def test_slices_cutting_a_tensor_into_parts_are_one_split(spans, axis, tmp_path, ort_here):
    """ShuffleNet's channel split, as the TorchScript exporter writes it (two Slices of one
    tensor): ORT runs one Split (GatherSliceToSplitFusion) when the parts make up the axis,
    in any order; parts that leave some out stay Slices. The planner's kernels are ORT's
    (a ShuffleNetV2 x0.5 planned 26 Slices where ORT runs 13 Splits)."""
    import numpy as np
    from onnx import helper, numpy_helper

    from costmodels.onnx_import import import_onnx

    n = helper.make_node
    nodes, inits = [n("Relu", ["x"], ["r"])], []
    for i, (a, b) in enumerate(spans):
        inits += [numpy_helper.from_array(np.array([v], np.int64), f"{k}{i}")
                  for k, v in (("s", a), ("e", b), ("a", axis))]
        nodes += [n("Slice", ["r", f"s{i}", f"e{i}", f"a{i}"], [f"p{i}"]),
                  n("Sigmoid", [f"p{i}"], [f"q{i}"])]
    nodes.append(n("Concat", [f"q{i}" for i in range(len(spans))], ["y"], axis=axis))
    model = _graph_model(nodes, (1, 32, 8, 8), inits)
    theirs = Counter(_ort_node_ops(model, tmp_path))
    mine = Counter(k.ops[0] for k in kernels(import_onnx(model), ort_here))
    assert mine == theirs


@pytest.mark.parametrize("x_shape,other,act,gemms", [
    ((4, 64), (32,), None, 1), ((1, 8, 64), (32,), None, 1), ((64,), (32,), None, 1),
    ((1, 1, 8, 64), (32,), None, 1), ((4, 64), (4, 1), None, 1), ((4, 64), (1, 32), None, 1),
    ((4, 64), "residual", None, 1), ((1, 8, 64), "residual", None, 0),
    ((1, 8, 64), (1, 32), None, 0), ((1, 8, 64), (), None, 0), ((4, 64), (1,), None, 0),
    ((4, 64), (32,), "Relu", 1), ((4, 64), (32,), "Softplus", 1), ((4, 64), (32,), "Clip", 1),
    ((1, 8, 64), (32,), "Relu", 1), ((4, 64), None, "Relu", 0)])
def test_matmul_add_and_activation_plan_the_gemms_ort_runs(x_shape, other, act, gemms,
                                                           tmp_path, ort_here):
    """MatMulAddFusion and GemmActivationFusion, as ORT 1.32 applies them (a TF probe's
    Dense layers at a dynamic batch, MatMul + Add, were planned as two kernels where ORT
    runs one Gemm): the planned MatMul+Add kernels are ORT's Gemm/FusedGemm nodes, and
    an activation is in a kernel of its own exactly when ORT left it apart."""
    import numpy as np
    from onnx import helper, numpy_helper

    from costmodels.onnx_import import import_onnx

    rng = np.random.default_rng(0)
    inits = [_w(rng, "w", (64, 32))]
    nodes = [helper.make_node("MatMul", ["x", "w"], ["m"])]
    src = "m"
    if other is not None:
        if other == "residual":  # the product plus another product of x: an activation
            inits.append(_w(rng, "w2", (64, 32)))
            nodes.append(helper.make_node("MatMul", ["x", "w2"], ["r"]))
            nodes.append(helper.make_node("Add", ["m", "r"], ["s"]))
        else:
            inits.append(numpy_helper.from_array(
                np.asarray(rng.normal(size=other), np.float32), "b"))
            nodes.append(helper.make_node("Add", ["m", "b"], ["s"]))
        src = "s"
    if act:
        extra = []
        if act == "Clip":
            inits += [numpy_helper.from_array(np.array(v, np.float32), n)
                      for n, v in (("lo", 0), ("hi", 6))]
            extra = ["lo", "hi"]
        nodes.append(helper.make_node(act, [src, *extra], ["y"]))
    else:
        nodes[-1].output[0] = "y"
    model = _graph_model(nodes, x_shape, inits)
    theirs = _ort_node_ops(model, tmp_path)
    assert sum(op in ("Gemm", "FusedGemm") for op in theirs) == gemms, theirs  # ORT itself
    ks = kernels(import_onnx(model), ort_here)
    assert sum(k.ops[:2] == ("MatMul", "Add") for k in ks) == gemms
    if act:
        assert (act in theirs) == any(k.ops == (act,) for k in ks), (theirs, ops_of(ks))


@pytest.mark.parametrize("shape,conv,second_reader", [
    ((1, 16, 8, 8), True, False), ((4, 64), False, False), ((1, 8, 64), False, False),
    ((1, 8, 64), False, True)])
def test_silu_plans_the_quick_gelu_ort_runs(shape, conv, second_reader, tmp_path, ort_here):
    """x * Sigmoid(x) is one QuickGelu in ORT (QuickGeluFusion; a TF probe's EfficientNet
    had 49), blocked after a blocked conv; a Sigmoid that something else reads too stays.
    Its one-kernel LUT model is that QuickGelu, with no wrapper."""
    import numpy as np
    from onnx import helper

    from costmodels.onnx_import import import_onnx
    from measure.lut.kernel_onnx import kernel_model, wrappers

    rng = np.random.default_rng(0)
    inits, nodes, x = [], [], "x"
    if conv:
        inits.append(_w(rng, "w", (16, 16, 3, 3)))
        nodes.append(helper.make_node("Conv", ["x", "w"], ["c"], pads=[1] * 4))
        x = "c"
    nodes += [helper.make_node("Sigmoid", [x], ["s"]), helper.make_node("Mul", [x, "s"], ["m"])]
    nodes.append(helper.make_node("Add", ["m", "s"], ["y"]) if second_reader
                 else helper.make_node("Relu", ["m"], ["y"]))
    model = _graph_model(nodes, shape, inits)
    theirs = _ort_node_ops(model, tmp_path)
    ks = kernels(import_onnx(model), ort_here)
    mine = [k.ops[0] for k in ks if k.ops[0] in ("QuickGelu", "Sigmoid", "Mul")]
    assert mine == [op for op in theirs if op in ("QuickGelu", "Sigmoid", "Mul")], theirs
    assert ("QuickGelu" in mine) == (not second_reader)
    if conv:
        assert [k.layout for k in ks if k.ops == ("QuickGelu",)] == ["nchwc"]
    for k in ks:
        if k.ops == ("QuickGelu",):
            assert _ort_node_ops(kernel_model(k.key), tmp_path) == ["QuickGelu"]
            assert wrappers(k.key, ort_here) == []


@pytest.mark.parametrize("op,cshape,on_input", [
    ("Add", (), False), ("Mul", (1,), False), ("Sub", (1, 3, 1, 1), False),
    ("Div", (1, 3, 8, 8), False), ("Add", (), True), ("Mul", (1, 3, 1, 1), True)])
def test_neutral_ops_are_elided_exactly_where_ort_removes_them(op, cshape, on_input, tmp_path,
                                                               ort_here):
    """ORT's NoopElimination removes x+0, x-0, x*1, x/1 only by a one-element constant and
    not on a graph input: a TF probe's Keras input normalisation (per-channel zeros and
    ones on the input) was elided, though ORT runs both ops (0.56 ms each there)."""
    import numpy as np
    from onnx import helper, numpy_helper

    from costmodels.onnx_import import import_onnx

    value = 1.0 if op in ("Mul", "Div") else 0.0
    c = numpy_helper.from_array(np.full(cshape, value, np.float32), "c")
    src = "x" if on_input else "r"
    nodes = ([] if on_input else [helper.make_node("Relu", ["x"], ["r"])])
    nodes += [helper.make_node(op, [src, "c"], ["a"]), helper.make_node("Sigmoid", ["a"], ["y"])]
    model = _graph_model(nodes, (1, 3, 8, 8), [c])
    theirs = _ort_node_ops(model, tmp_path)
    ks = kernels(import_onnx(model), ort_here)
    assert (op in theirs) == any(op in k.ops for k in ks), (theirs, ops_of(ks))


def test_rules_without_the_int8_fields_plan_a_qdq_model_as_before(ort_rules):
    """A LUT plans with the rules stored in it: ort.json as stored before the int8 fields
    (activation_dtypes uint8 only, no int8_to_uint8, uint8_only, dequantize_weights) leaves
    int8 groups unfused and adds no weight dequantizers, as LUTs built then planned."""
    from costmodels.onnx_import import import_onnx

    doc = json.loads(ort_rules.doc)
    for field in ("int8_to_uint8", "uint8_only", "dequantize_weights"):
        del doc["qdq"][field]
    doc["qdq"]["activation_dtypes"] = ["uint8"]
    old = rules_from_json(json.dumps(doc))
    i8 = import_onnx(_qdq_model("int8"))
    before = kernels(i8, old)
    assert not any(k.ops[0] == "DequantizeLinear" and len(k.ops) == 3 for k in before)
    assert not any(k.layers and k.layers[0].name.endswith("/weight_dq0") for k in before)
    now = kernels(i8, ort_rules)
    assert any(k.ops[0] == "DequantizeLinear" and len(k.ops) == 3 for k in now)
    assert any(k.layers and k.layers[0].name.endswith("/weight_dq0") for k in now)
