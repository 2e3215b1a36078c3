"""The one place that reads ONNX into the IR.

``import_onnx(path_or_model, input_shapes=...)`` runs ONNX shape inference, then
turns every node into a :class:`~costmodels.network.Layer` with
:func:`~costmodels.network.make_layer`. Nothing is dropped silently: an
operator whose cost cannot be reasoned about raises
:class:`~costmodels.errors.UnsupportedOperator` naming the node.

Constants (initializers and ``Constant`` nodes) are weights, not activations.
Dynamic dimensions must be fixed with ``input_shapes`` (the CLI's
``--input-shape [NAME=]1x3x224x224``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from costmodels.errors import OnnxImportError, UnsupportedOperator
from costmodels.network import Layer, Network, Shape, make_layer

_MAC_OPS = {"Conv", "ConvTranspose", "Gemm", "MatMul"}
_NORM_OPS = {"BatchNormalization", "InstanceNormalization", "LayerNormalization"}
_ELEMENTWISE = {
    "Relu", "Clip", "Sigmoid", "HardSigmoid", "HardSwish", "Tanh", "LeakyRelu", "PRelu", "Elu",
    "Selu", "Gelu", "Erf", "Exp", "Log", "Sqrt", "Pow", "Neg", "Abs", "Reciprocal", "Softplus",
    "Mish", "Floor", "Ceil", "Round", "Sign", "Not", "Equal", "Less", "Greater", "LessOrEqual",
    "GreaterOrEqual", "And", "Or", "Where", "Min", "Max", "Mean", "Sum", "Add", "Sub", "Mul", "Div",
    "Softmax", "LogSoftmax", "Resize", "Upsample",
}
_POOLS = {"MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool", "ReduceMean",
          "ReduceMax", "ReduceMin", "ReduceSum", "ReduceProd", "ReduceL2", "ArgMax", "ArgMin"}
_DATA_MOVEMENT = {
    "Flatten", "Reshape", "Transpose", "Squeeze", "Unsqueeze", "Slice", "Concat", "Split",
    "Gather", "Pad", "Expand", "Tile", "Cast", "Identity", "Dropout", "Shape", "DepthToSpace",
    "SpaceToDepth", "ConstantOfShape", "Range",
}
SUPPORTED_OPS = frozenset(_MAC_OPS | _NORM_OPS | _ELEMENTWISE | _POOLS | _DATA_MOVEMENT)

_DTYPES = {1: "float32", 2: "uint8", 3: "int8", 5: "int16", 6: "int32", 7: "int64", 9: "bool",
           10: "float16", 11: "float64", 16: "bfloat16"}


def parse_input_shapes(items: Sequence[str]) -> dict[str, Shape] | list[Shape]:
    """``["1x3x224x224"]`` or ``["input=1x3x224x224", ...]`` -> shapes for import_onnx."""
    named: dict[str, Shape] = {}
    plain: list[Shape] = []
    for item in items:
        name, sep, dims = item.rpartition("=")
        try:
            shape = tuple(int(d) for d in dims.lower().replace(",", "x").split("x"))
        except ValueError:
            raise OnnxImportError(f"--input-shape {item!r}: expected [NAME=]DxDxD, e.g. "
                                  "1x3x224x224") from None
        if any(d <= 0 for d in shape):
            raise OnnxImportError(f"--input-shape {item!r}: dimensions must be positive")
        if sep:
            named[name] = shape
        else:
            plain.append(shape)
    if named and plain:
        raise OnnxImportError("--input-shape: name every shape (NAME=1x3x224x224) or none")
    return named or plain


def _load(model: Any) -> tuple[Any, str]:
    import onnx

    if isinstance(model, onnx.ModelProto):
        return model, model.graph.name or "<model>"
    if isinstance(model, (bytes, bytearray)):
        source = "<bytes>"
        data = bytes(model)
    else:
        source = str(model)
        try:
            data = Path(source).read_bytes()
        except OSError as exc:
            raise OnnxImportError(f"{source}: cannot read: {exc.strerror}") from None
    try:
        proto = onnx.load_model_from_string(data)
    except Exception as exc:  # protobuf raises DecodeError and friends
        raise OnnxImportError(f"{source}: not a valid ONNX model (truncated or corrupt file?): "
                              f"{type(exc).__name__}: {exc}") from None
    if not proto.graph.node:
        raise OnnxImportError(f"{source}: the ONNX graph has no nodes (truncated or not an "
                              "ONNX model?)")
    return proto, source


def _dims(vi: Any) -> list[int | str | None]:
    tt = vi.type.tensor_type
    if not tt.HasField("shape"):
        return []
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
            for d in tt.shape.dim]


def _fix_inputs(proto: Any, source: str, graph_inputs: list[Any],
                input_shapes: Mapping[str, Shape] | Sequence[Shape] | None) -> None:
    if isinstance(input_shapes, Mapping):
        unknown = set(input_shapes) - {vi.name for vi in graph_inputs}
        if unknown:
            raise OnnxImportError(f"{source}: --input-shape names {sorted(unknown)}, but the "
                                  f"model's inputs are {[vi.name for vi in graph_inputs]}")
        given = dict(input_shapes)
    else:
        shapes = list(input_shapes or [])
        if len(shapes) > len(graph_inputs):
            raise OnnxImportError(f"{source}: {len(shapes)} --input-shape given for "
                                  f"{len(graph_inputs)} model input(s)")
        given = {vi.name: s for vi, s in zip(graph_inputs, shapes, strict=False)}
    for vi in graph_inputs:
        dims = _dims(vi)
        if vi.name in given:
            shape = given[vi.name]
            if dims and len(dims) != len(shape):
                raise OnnxImportError(f"{source}: input {vi.name!r} has rank {len(dims)}, but "
                                      f"--input-shape gives {'x'.join(map(str, shape))}")
            tshape = vi.type.tensor_type.shape
            del tshape.dim[:]
            for d in shape:
                tshape.dim.add().dim_value = int(d)
        elif not dims or any(not isinstance(d, int) or d <= 0 for d in dims):
            shown = "x".join(str(d) if d else "?" for d in dims) or "unknown"
            raise OnnxImportError(
                f"{source}: input {vi.name!r} has a dynamic or unknown shape ({shown}); fix it "
                f"with --input-shape {vi.name}=1x3x224x224 (input_shapes={{'{vi.name}': ...}})")


def _attrs(node: Any) -> dict[str, Any]:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def import_onnx(model: Any, input_shapes: Mapping[str, Shape] | Sequence[Shape] | None = None,
                name: str | None = None) -> Network:
    """Read an ONNX model (path, bytes or ModelProto) into a :class:`Network`."""
    import onnx
    from onnx import numpy_helper, shape_inference

    proto, source = _load(model)
    proto = onnx.ModelProto.FromString(proto.SerializeToString())  # never modify the caller's
    graph = proto.graph
    weights: dict[str, Shape] = {t.name: tuple(t.dims) for t in graph.initializer}
    for node in graph.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    weights[node.output[0]] = tuple(numpy_helper.to_array(a.t).shape)
                elif a.name in ("value_float", "value_int"):
                    weights[node.output[0]] = ()
                elif a.name in ("value_floats", "value_ints"):
                    weights[node.output[0]] = (len(a.floats) or len(a.ints),)
    graph_inputs = [vi for vi in graph.input if vi.name not in weights]
    _fix_inputs(proto, source, graph_inputs, input_shapes)
    try:
        inferred = shape_inference.infer_shapes(proto, strict_mode=True, data_prop=True)
    except Exception as exc:
        raise OnnxImportError(f"{source}: ONNX shape inference failed: {exc}") from None

    info: dict[str, tuple[list, int]] = {}
    for vi in list(inferred.graph.value_info) + list(inferred.graph.input) + list(
            inferred.graph.output):
        info[vi.name] = (_dims(vi), vi.type.tensor_type.elem_type)

    def shape_of(tensor: str, node_name: str) -> Shape:
        dims, _ = info.get(tensor, ([], 0))
        if tensor not in info or any(not isinstance(d, int) or d <= 0 for d in dims):
            raise OnnxImportError(
                f"{source}: shape inference could not fix the shape of {tensor!r} (node "
                f"{node_name!r}); fix the input shapes with --input-shape, or simplify the model "
                "(onnxsim)")
        return tuple(int(d) for d in dims)

    layers: list[Layer] = []
    for i, node in enumerate(inferred.graph.node):
        if node.op_type == "Constant":
            continue
        node_name = node.name or (node.output[0] if node.output else f"{node.op_type}_{i}")
        if node.domain not in ("", "ai.onnx") or node.op_type not in SUPPORTED_OPS:
            raise UnsupportedOperator(node_name, node.op_type, source)
        layers.append(_layer(node, node_name, weights, shape_of, info))

    outputs = tuple(vi.name for vi in graph.output)
    in_shapes = tuple((vi.name, tuple(int(d) for d in _dims(vi))) for vi in graph_inputs)
    return Network(name=name or Path(source).stem or "model", inputs=in_shapes,
                   layers=tuple(layers), outputs=outputs,
                   meta={"source": source, "opset": max((o.version for o in proto.opset_import
                                                          if o.domain in ("", "ai.onnx")),
                                                         default=0)})


def _layer(node: Any, node_name: str, weights: Mapping[str, Shape], shape_of, info) -> Layer:
    a = _attrs(node)
    acts = [t for t in node.input if t and t not in weights]
    wts = [weights[t] for t in node.input if t and t in weights]
    in_shapes = [shape_of(t, node_name) for t in acts]
    outs = [t for t in node.output if t]
    out_shape = shape_of(outs[0], node_name)
    dtype = _DTYPES.get(info.get(outs[0], ([], 1))[1], "float32")
    op = node.op_type
    kw: dict[str, Any] = {}
    if op in ("Conv", "ConvTranspose"):
        w = wts[0] if wts else (in_shapes[1] if len(in_shapes) > 1 else ())
        if not w:
            raise OnnxImportError(f"node {node_name!r} ({op}) has no weight shape")
        if not wts:  # weights computed at run time: treat the tensor as an activation input
            in_shapes = in_shapes[:1]
        nd = len(w) - 2
        kernel = tuple(a.get("kernel_shape", w[2:]))
        kw = dict(kernel=kernel, stride=tuple(a.get("strides", (1,) * nd)),
                  pads=_pads(a, in_shapes[0][2:], kernel, tuple(a.get("strides", (1,) * nd)),
                             tuple(a.get("dilations", (1,) * nd))),
                  dilation=tuple(a.get("dilations", (1,) * nd)), groups=int(a.get("group", 1)))
    elif op in ("MaxPool", "AveragePool"):
        kernel = tuple(a["kernel_shape"])
        nd = len(kernel)
        stride = tuple(a.get("strides", (1,) * nd))
        kw = dict(kernel=kernel, stride=stride,
                  pads=_pads(a, in_shapes[0][2:], kernel, stride, (1,) * nd))
    return make_layer(node_name, op, acts, outs, in_shapes, out_shape, wts, dtype=dtype, **kw)


def _pads(a: Mapping[str, Any], spatial: Shape, kernel: Shape, stride: Shape,
          dilation: Shape) -> Shape:
    """Explicit pads (begin..., end...), resolving auto_pad SAME_UPPER/SAME_LOWER."""
    auto = a.get("auto_pad", b"NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        begin, end = [], []
        for n, k, s, d in zip(spatial, kernel, stride, dilation, strict=True):
            out = -(-n // s)
            total = max((out - 1) * s + (k - 1) * d + 1 - n, 0)
            small, big = total // 2, total - total // 2
            begin.append(small if auto == "SAME_UPPER" else big)
            end.append(big if auto == "SAME_UPPER" else small)
        return tuple(begin + end)
    return tuple(a.get("pads", (0,) * (2 * len(kernel))))
