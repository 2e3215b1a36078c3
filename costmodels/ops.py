"""The one operator taxonomy: which ONNX ops do what, defined once.

Every module that treats operators by kind (the IR's cost formulas, the
importer, the analytical models, the features, the LUT) imports these sets or
:func:`op_class` from here instead of keeping its own list.

Sets (ONNX ``op_type`` names of the default domain):

- :data:`MAC_OPS` -- ops whose multiply-accumulates are counted (convolutions
  and matrix products, float and quantized, and the recurrent :data:`RNN_OPS`).
- :data:`VIEW_OPS` -- pure relabels: the output aliases the input's bytes (no
  copy, no arithmetic). A backend may treat them as free.
- :data:`DATA_MOVEMENT_OPS` -- ops with zero arithmetic that may copy or
  rearrange data (Transpose, Concat, Gather, Expand, Cast ...); a superset of
  :data:`VIEW_OPS`. Their bytes count, their element ops are zero.
- :data:`POOL_OPS` -- windowed pools (one op per window element per output).
- :data:`GLOBAL_POOL_OPS` -- global pools and every reduction (``Reduce*``,
  ``ArgMax``/``ArgMin``, ``TopK``): one op per *input* element. All reductions are here,
  ``ReduceMin`` included (the review found lists that disagreed on it).
- :data:`NORM_OPS` -- normalisations (a few ops per element).
- :data:`SOFTMAX_OPS` -- softmax-like (exp, sum, divide per element).
- :data:`ELEMENTWISE_OPS` -- one op per output element (activations,
  arithmetic, comparisons, ``Where``, ``Mod``, resize).
- :data:`QUANT_OPS` -- (de)quantisation: one op per element.
- :data:`CONTROL_FLOW_OPS` -- ``If``/``Loop``/``Scan``: sub-graphs whose cost
  depends on run-time values; the importer refuses them by name.

:data:`SUPPORTED_OPS` is everything the importer costs.
"""

from __future__ import annotations

from typing import Any

QUANT_MAC_OPS = frozenset({"QLinearConv", "QLinearMatMul", "MatMulInteger", "ConvInteger"})
CONV_OPS = frozenset({"Conv", "ConvTranspose", "QLinearConv", "ConvInteger"})
MATMUL_OPS = frozenset({"MatMul", "Einsum", "QLinearMatMul", "MatMulInteger"})
# Recurrent layers: per time step and direction, x_t W^T and h_{t-1} R^T for every gate
# (LSTM 4, GRU 3, RNN 1); costed as the matrix products they are (class ``gemm``).
RNN_OPS = frozenset({"LSTM", "GRU", "RNN"})
RNN_GATES = {"LSTM": 4, "GRU": 3, "RNN": 1}
# Resize/Upsample: interpolation taps per resized axis of each ONNX mode (kept as the
# layer's kernel); Upsample before opset 10 also says "bilinear" for "linear"
RESIZE_TAPS = {"nearest": 1, "linear": 2, "cubic": 4}
RESIZE_OPS = frozenset({"Resize", "Upsample"})
MAC_OPS = frozenset(CONV_OPS | MATMUL_OPS | RNN_OPS | {"Gemm"})

VIEW_OPS = frozenset({"Identity", "Dropout", "Reshape", "Flatten", "Squeeze", "Unsqueeze"})
DATA_MOVEMENT_OPS = frozenset(VIEW_OPS | {
    "Transpose", "Concat", "Split", "Slice", "Gather", "GatherElements", "GatherND", "Pad",
    "Expand", "Tile", "Cast", "CastLike", "Shape", "Size", "DepthToSpace", "SpaceToDepth",
    "ConstantOfShape", "Range", "ScatterND", "ScatterElements", "Trilu", "OneHot",
    "ReverseSequence", "EyeLike"})

POOL_OPS = frozenset({"MaxPool", "AveragePool", "LpPool"})
REDUCE_OPS = frozenset({
    "ReduceMean", "ReduceMax", "ReduceMin", "ReduceSum", "ReduceProd", "ReduceL1", "ReduceL2",
    "ReduceLogSum", "ReduceLogSumExp", "ReduceSumSquare", "ArgMax", "ArgMin", "TopK"})
GLOBAL_POOL_OPS = frozenset({"GlobalAveragePool", "GlobalMaxPool", "GlobalLpPool"} | REDUCE_OPS)

NORM_OPS = frozenset({"BatchNormalization", "InstanceNormalization", "LayerNormalization",
                      "GroupNormalization", "LpNormalization", "MeanVarianceNormalization",
                      "RMSNormalization", "LRN"})
SOFTMAX_OPS = frozenset({"Softmax", "LogSoftmax", "Hardmax"})
ACTIVATION_OPS = frozenset({
    "Relu", "LeakyRelu", "PRelu", "Elu", "Selu", "Celu", "Gelu", "Erf", "Sigmoid", "HardSigmoid",
    "HardSwish", "Swish", "Tanh", "Softplus", "Softsign", "Mish", "ThresholdedRelu", "Clip",
    "Shrink"})
ELEMENTWISE_OPS = frozenset(ACTIVATION_OPS | {
    "Add", "Sub", "Mul", "Div", "Pow", "Mod", "Neg", "Abs", "Reciprocal", "Sqrt", "Exp", "Log",
    "Sin", "Cos", "Tan", "Asin", "Acos", "Atan", "Sinh", "Cosh", "Asinh", "Acosh", "Atanh",
    "Floor", "Ceil", "Round",
    "Sign", "Not", "And", "Or", "Xor", "BitShift", "Equal", "Less", "Greater", "LessOrEqual",
    "GreaterOrEqual", "IsNaN", "IsInf", "Where", "Min", "Max", "Mean", "Sum", "CumSum",
    "Resize", "Upsample"})
QUANT_OPS = frozenset({"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear"})
CONTROL_FLOW_OPS = frozenset({"If", "Loop", "Scan"})

SUPPORTED_OPS = frozenset(MAC_OPS | DATA_MOVEMENT_OPS | POOL_OPS | GLOBAL_POOL_OPS | NORM_OPS
                          | SOFTMAX_OPS | ELEMENTWISE_OPS | QUANT_OPS)

OP_CLASSES: tuple[str, ...] = (
    "conv", "depthwise_conv", "grouped_conv", "gemm", "matmul", "pool", "global_pool", "norm",
    "softmax", "elementwise", "quant", "data_movement", "view", "control_flow", "other")
"""Every value :func:`op_class` returns."""


def _class_of_op(op: str) -> str:
    if op in CONV_OPS:
        return "conv"
    if op == "Gemm" or op in RNN_OPS:
        return "gemm"
    if op in MATMUL_OPS:
        return "matmul"
    if op in POOL_OPS:
        return "pool"
    if op in GLOBAL_POOL_OPS:
        return "global_pool"
    if op in NORM_OPS:
        return "norm"
    if op in SOFTMAX_OPS:
        return "softmax"
    if op in ELEMENTWISE_OPS:
        return "elementwise"
    if op in QUANT_OPS:
        return "quant"
    if op in VIEW_OPS:
        return "view"
    if op in DATA_MOVEMENT_OPS:
        return "data_movement"
    if op in CONTROL_FLOW_OPS:
        return "control_flow"
    return "other"


def op_class(layer_or_op: Any) -> str:
    """The coarse class of a layer (a :class:`~costmodels.network.Layer`) or an op name.

    One of :data:`OP_CLASSES`. Convolutions are split by their ``groups`` when a
    layer is given: ``depthwise_conv`` (groups == input channels > 1),
    ``grouped_conv`` (1 < groups < input channels), else ``conv``; an op name
    alone gives ``conv``. ``Gemm`` and the recurrent ops are ``gemm``; ``MatMul``,
    ``Einsum`` and the quantized matrix products are ``matmul``.
    """
    if isinstance(layer_or_op, str):
        return _class_of_op(layer_or_op)
    op = layer_or_op.op
    cls = _class_of_op(op)
    if cls == "conv":
        groups = int(getattr(layer_or_op, "groups", 1) or 1)
        if groups > 1:
            shapes = layer_or_op.input_shapes
            cin = shapes[0][1] if shapes and len(shapes[0]) > 1 else 0
            return "depthwise_conv" if groups == cin else "grouped_conv"
    return cls
