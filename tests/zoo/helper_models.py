"""Zoo models built with ``onnx.helper``: forms torch does not write, with hand-counted MACs.

Each builder returns ``(model, entry)``; ``entry["macs"]`` is the textbook count
written out beside the graph (``out elements x in channels / groups x kernel area``
for convolutions, ``M x N x K`` for matrix products), not read from costmodels.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

Entry = dict[str, Any]
_RNG = np.random.default_rng(0)


def _f(shape: tuple[int, ...], name: str, dtype: Any = np.float32) -> onnx.TensorProto:
    return numpy_helper.from_array((_RNG.normal(size=shape) * 0.1).astype(dtype), name)


def _const(name: str, array: np.ndarray) -> onnx.NodeProto:
    return helper.make_node("Constant", [], [name], name=f"const_{name}",
                            value=numpy_helper.from_array(array, name))


def _vi(name: str, shape: list, elem: int = TensorProto.FLOAT) -> onnx.ValueInfoProto:
    return helper.make_tensor_value_info(name, elem, shape)


def _model(nodes: list, inputs: list, outputs: list, inits: list, opset: int,
           ir_version: int, name: str) -> onnx.ModelProto:
    if ir_version < 4:  # IR 3 lists every initializer among the graph inputs
        inputs = inputs + [helper.make_tensor_value_info(t.name, t.data_type, list(t.dims))
                           for t in inits]
    g = helper.make_graph(nodes, name, inputs, outputs, inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)],
                          producer_name="onnx.helper")
    m.ir_version = ir_version
    onnx.checker.check_model(m)
    return m


def opset7_cnn() -> tuple[onnx.ModelProto, Entry]:
    """Conv, BatchNormalization, Relu, MaxPool, Reshape, Gemm, Softmax at opset 7."""
    nodes = [
        helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1],
                         kernel_shape=[3, 3]),
        helper.make_node("BatchNormalization", ["c", "g", "b", "m", "v"], ["bn"], name="bn"),
        helper.make_node("Relu", ["bn"], ["r"], name="relu"),
        helper.make_node("MaxPool", ["r"], ["p"], name="pool", kernel_shape=[2, 2], strides=[2, 2]),
        helper.make_node("Reshape", ["p", "shape"], ["flat"], name="flatten"),
        helper.make_node("Gemm", ["flat", "fc_w", "fc_b"], ["logits"], name="fc", transB=1),
        helper.make_node("Softmax", ["logits"], ["y"], name="softmax", axis=1),
    ]
    inits = [_f((8, 3, 3, 3), "w"), _f((8,), "g"), _f((8,), "b"), _f((8,), "m"),
             numpy_helper.from_array(np.ones(8, np.float32), "v"),
             numpy_helper.from_array(np.array([1, 512], np.int64), "shape"),
             _f((10, 512), "fc_w"), _f((10,), "fc_b")]
    m = _model(nodes, [_vi("x", [1, 3, 16, 16])], [_vi("y", [1, 10])], inits, 7, 3, "opset7")
    macs = 1 * 8 * 16 * 16 * 3 * 9 + 1 * 10 * 512
    return m, {"form": "opset 7 CNN (BatchNormalization, Reshape by initializer, Gemm)",
               "macs": macs, "key_ops": ["Conv", "Gemm", "Softmax"]}


def opset21_block() -> tuple[onnx.ModelProto, Entry]:
    """LayerNormalization, Gelu (opset 20), Einsum, Softmax, MatMul at opset 21."""
    nodes = [
        helper.make_node("LayerNormalization", ["x", "ln_s", "ln_b"], ["n"], name="ln", axis=-1),
        helper.make_node("MatMul", ["n", "w1"], ["h"], name="fc1"),
        helper.make_node("Gelu", ["h"], ["a"], name="gelu"),
        helper.make_node("MatMul", ["a", "w2"], ["o"], name="fc2"),
        helper.make_node("Add", ["o", "x"], ["r"], name="residual"),
        helper.make_node("Einsum", ["r", "r"], ["s"], name="scores", equation="bnd,bmd->bnm"),
        helper.make_node("Softmax", ["s"], ["p"], name="softmax", axis=-1),
        helper.make_node("MatMul", ["p", "r"], ["y"], name="context"),
    ]
    inits = [_f((32,), "ln_s"), _f((32,), "ln_b"), _f((32, 64), "w1"), _f((64, 32), "w2")]
    m = _model(nodes, [_vi("x", [1, 16, 32])], [_vi("y", [1, 16, 32])], inits, 21, 10,
               "opset21")
    macs = 16 * 64 * 32 + 16 * 32 * 64 + 16 * 16 * 32 + 16 * 32 * 16
    return m, {"form": "opset 21 transformer block (Gelu op, LayerNormalization, Einsum)",
               "macs": macs, "key_ops": ["Gelu", "LayerNormalization", "Einsum"]}


def paddle_like() -> tuple[onnx.ModelProto, Entry]:
    """What paddle2onnx writes: a dynamic batch, Constant-node weights, an Identity-shared
    zero bias, Shape->Gather->Concat->Reshape before a MatMul whose weight is a Constant
    node, Shape->Expand of a per-channel scale, and a weight stored as float16 + Cast."""
    nodes = [
        _const("w1", (_RNG.normal(size=(8, 3, 3, 3)) * 0.1).astype(np.float32)),
        helper.make_node("Identity", ["zero_b"], ["b1"], name="share_b1"),
        helper.make_node("Identity", ["zero_b"], ["b2"], name="share_b2"),
        helper.make_node("Conv", ["x", "w1", "b1"], ["c1"], name="conv1", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["c1"], ["r1"], name="relu1"),
        helper.make_node("Cast", ["w2_f16"], ["w2"], name="cast_w2", to=TensorProto.FLOAT),
        helper.make_node("Conv", ["r1", "w2", "b2"], ["c2"], name="conv2"),
        helper.make_node("Shape", ["c2"], ["c2_shape"], name="shape_c2"),
        helper.make_node("Expand", ["ch_scale", "c2_shape"], ["scale_full"], name="expand_scale"),
        helper.make_node("Mul", ["c2", "scale_full"], ["scaled"], name="scale"),
        helper.make_node("GlobalAveragePool", ["scaled"], ["gap"], name="gap"),
        helper.make_node("Shape", ["gap"], ["gap_shape"], name="shape_gap"),
        helper.make_node("Gather", ["gap_shape", "zero_i"], ["batch"], name="gather_batch", axis=0),
        helper.make_node("Unsqueeze", ["batch", "axes0"], ["batch1"], name="unsq_batch"),
        helper.make_node("Concat", ["batch1", "minus1"], ["flat_shape"], name="concat_shape",
                         axis=0),
        helper.make_node("Reshape", ["gap", "flat_shape"], ["flat"], name="reshape_flat"),
        _const("fc_w", (_RNG.normal(size=(8, 10)) * 0.1).astype(np.float32)),
        helper.make_node("MatMul", ["flat", "fc_w"], ["mm"], name="fc"),
        helper.make_node("Add", ["mm", "b_fc"], ["y"], name="fc_bias"),
    ]
    inits = [numpy_helper.from_array(np.zeros(8, np.float32), "zero_b"),
             _f((8, 8, 1, 1), "w2_f16", np.float16), _f((1, 8, 1, 1), "ch_scale"),
             numpy_helper.from_array(np.array(0, np.int64), "zero_i"),
             numpy_helper.from_array(np.array([0], np.int64), "axes0"),
             numpy_helper.from_array(np.array([-1], np.int64), "minus1"),
             _f((10,), "b_fc")]
    batch = "p2o.DynamicDimension.0"
    m = _model(nodes, [_vi("x", [batch, 3, 8, 8])], [_vi("y", [batch, 10])], inits, 13, 7,
               "paddle_like")
    n = 2
    macs = n * 8 * 8 * 8 * 3 * 9 + n * 8 * 8 * 8 * 8 + n * 10 * 8
    return m, {"form": "paddle2onnx-style: dynamic batch, Constant weights, Identity-shared "
                       "bias, Shape->Gather->Concat->Reshape->MatMul(Constant weight)",
               "macs": macs, "input_shape": f"{n}x3x8x8",
               "key_ops": ["Shape", "Gather", "Concat", "Identity", "Constant", "Expand"]}


def shared_initializers() -> tuple[onnx.ModelProto, Entry]:
    """One weight initializer read by two convolutions, zero biases shared through
    Identity (as after BatchNorm folding), a weight reshaped from a flat initializer."""
    nodes = [
        helper.make_node("Identity", ["zeros"], ["bias_a"], name="id_a"),
        helper.make_node("Identity", ["zeros"], ["bias_b"], name="id_b"),
        helper.make_node("Conv", ["x", "w", "bias_a"], ["a"], name="conv_a", pads=[1, 1, 1, 1]),
        helper.make_node("Relu", ["a"], ["ra"], name="relu_a"),
        helper.make_node("Conv", ["ra", "w", "bias_b"], ["b"], name="conv_b", pads=[1, 1, 1, 1]),
        helper.make_node("Reshape", ["dw_flat", "dw_shape"], ["dw"], name="reshape_dw"),
        helper.make_node("Conv", ["b", "dw"], ["c"], name="conv_dw", group=8, pads=[1, 1, 1, 1]),
        helper.make_node("Add", ["c", "ra"], ["y"], name="add"),
    ]
    inits = [numpy_helper.from_array(np.zeros(8, np.float32), "zeros"), _f((8, 8, 3, 3), "w"),
             _f((72,), "dw_flat"),
             numpy_helper.from_array(np.array([8, 1, 3, 3], np.int64), "dw_shape")]
    m = _model(nodes, [_vi("x", [1, 8, 12, 12])], [_vi("y", [1, 8, 12, 12])], inits, 17, 8,
               "shared_initializers")
    macs = 2 * (8 * 12 * 12 * 8 * 9) + 8 * 12 * 12 * 9
    return m, {"form": "shared initializers: one weight, Identity-shared zero biases, "
                       "Reshape of a flat weight", "macs": macs,
               "key_ops": ["Identity", "Reshape"]}


def quantized_qlinear() -> tuple[onnx.ModelProto, Entry]:
    """QuantizeLinear, QLinearConv, ConvInteger, QLinearMatMul, MatMulInteger,
    DequantizeLinear with int8/uint8 tensors."""

    def scalar(name: str, value: float | int, dtype: Any) -> onnx.TensorProto:
        return numpy_helper.from_array(np.array(value, dtype), name)

    w_q = _RNG.integers(-20, 20, size=(8, 3, 3, 3)).astype(np.int8)
    ci_w = _RNG.integers(0, 20, size=(4, 3, 1, 1)).astype(np.uint8)
    mm_w = _RNG.integers(-20, 20, size=(512, 10)).astype(np.int8)
    mi_w = _RNG.integers(-20, 20, size=(512, 4)).astype(np.int8)
    nodes = [
        helper.make_node("QuantizeLinear", ["x", "s", "zp_u8"], ["xq"], name="quant_x"),
        helper.make_node("QLinearConv", ["xq", "s", "zp_u8", "w_q", "s", "zp_i8", "s", "zp_u8",
                                         "b_q"], ["cq"], name="qconv", pads=[1, 1, 1, 1]),
        helper.make_node("ConvInteger", ["xq", "ci_w"], ["ci"], name="conv_integer"),
        helper.make_node("DequantizeLinear", ["cq", "s", "zp_u8"], ["c"], name="dequant_c"),
        helper.make_node("Reshape", ["c", "flat_shape"], ["flat"], name="flatten"),
        helper.make_node("QuantizeLinear", ["flat", "s", "zp_u8"], ["fq"], name="quant_flat"),
        helper.make_node("QLinearMatMul", ["fq", "s", "zp_u8", "mm_w", "s", "zp_i8", "s",
                                           "zp_u8"], ["yq"], name="qmatmul"),
        helper.make_node("MatMulInteger", ["fq", "mi_w"], ["y2"], name="matmul_integer"),
        helper.make_node("DequantizeLinear", ["yq", "s", "zp_u8"], ["y"], name="dequant_y"),
    ]
    inits = [scalar("s", 0.05, np.float32), scalar("zp_u8", 128, np.uint8),
             scalar("zp_i8", 0, np.int8), numpy_helper.from_array(w_q, "w_q"),
             numpy_helper.from_array(np.zeros(8, np.int32), "b_q"),
             numpy_helper.from_array(ci_w, "ci_w"),
             numpy_helper.from_array(np.array([1, 512], np.int64), "flat_shape"),
             numpy_helper.from_array(mm_w, "mm_w"), numpy_helper.from_array(mi_w, "mi_w")]
    outs = [_vi("y", [1, 10]), _vi("y2", [1, 4], TensorProto.INT32),
            _vi("ci", [1, 4, 8, 8], TensorProto.INT32)]
    m = _model(nodes, [_vi("x", [1, 3, 8, 8])], outs, inits, 13, 7, "quantized")
    macs = 8 * 8 * 8 * 3 * 9 + 4 * 8 * 8 * 3 + 10 * 512 + 4 * 512
    return m, {"form": "quantized operators (QLinearConv, ConvInteger, QLinearMatMul, "
                       "MatMulInteger, Quantize/DequantizeLinear), int8 weights",
               "macs": macs, "weight_bytes": {"qconv": 8 * 27 + 8 * 4, "qmatmul": 512 * 10},
               "key_ops": ["QLinearConv", "QLinearMatMul", "MatMulInteger", "ConvInteger"]}


BUILDERS = {
    "opset7_cnn.onnx": opset7_cnn,
    "opset21_block.onnx": opset21_block,
    "paddle_like.onnx": paddle_like,
    "shared_initializers.onnx": shared_initializers,
    "quantized_qlinear.onnx": quantized_qlinear,
}


def write_all(directory: Path) -> dict[str, Entry]:
    """Write every helper-built model into ``directory``; their zoo entries by file name."""
    entries: dict[str, Entry] = {}
    for name, build in BUILDERS.items():
        model, entry = build()
        onnx.save(model, str(directory / name))
        entries[name] = {"exporter": "onnx.helper", "input_shape": None, **entry}
    return entries


def control_flow_model(op: str, constant: bool = False) -> onnx.ModelProto:
    """A model with one ``If`` or ``Loop`` node named ``flow`` (for the error tests); the
    ``If``'s condition is the sign of the input's sum (a runtime value), or with
    ``constant`` an initializer (a branch the import inlines)."""
    then_g = helper.make_graph([helper.make_node("Relu", ["x"], ["t"], name="then_relu")],
                               "then", [], [_vi("t", [1, 4])])
    else_g = helper.make_graph([helper.make_node("Neg", ["x"], ["e"], name="else_neg")],
                               "else", [], [_vi("e", [1, 4])])
    inits = [numpy_helper.from_array(np.array(True), "cond"),
             numpy_helper.from_array(np.array(3, np.int64), "trips")]
    if op == "If":
        pre = [] if constant else [
            helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0, name="sum"),
            helper.make_node("Greater", ["s", "zero"], ["pos"], name="sign")]
        inits.append(numpy_helper.from_array(np.array(0, np.float32), "zero"))
        node = helper.make_node("If", ["cond" if constant else "pos"], ["y"], name="flow",
                                then_branch=then_g, else_branch=else_g)
        return _model([*pre, node], [_vi("x", [1, 4])], [_vi("y", [1, 4])], inits, 17, 8, "if")
    else:
        body = helper.make_graph(
            [helper.make_node("Identity", ["c_in"], ["c_out"], name="body_cond"),
             helper.make_node("Relu", ["v_in"], ["v_out"], name="body_relu")], "body",
            [_vi("i", [], TensorProto.INT64), _vi("c_in", [], TensorProto.BOOL),
             _vi("v_in", [1, 4])],
            [_vi("c_out", [], TensorProto.BOOL), _vi("v_out", [1, 4])])
        node = helper.make_node("Loop", ["trips", "cond", "x"], ["y"], name="flow", body=body)
    return _model([node], [_vi("x", [1, 4])], [_vi("y", [1, 4])], inits, 17, 8, op.lower())
