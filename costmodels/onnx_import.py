"""The one place that reads ONNX into the IR.

``import_onnx(path_or_model, input_shapes=...)`` turns an ONNX model as
exporters write it into a :class:`~costmodels.network.Network`:

1. **Read and check** (:func:`load_model_proto`): protobuf parse, weights kept in
   external data files (each location must resolve inside the model's folder),
   a wiring check (every input produced earlier: what truncation breaks); ``If``/``Loop``/``Scan`` are refused by node name
   (:class:`~costmodels.errors.UnsupportedOperator`): their cost depends on run-time
   values.
2. **Fix the inputs**: ``--input-shape`` replaces dynamic dimensions; one that
   contradicts a static dimension is an :class:`~costmodels.errors.OnnxImportError`.
3. **Fold constant sub-graphs** with `onnxslim <https://github.com/inisis/OnnxSlim>`_
   (pinned in ``pyproject.toml``), on a copy in memory (the user's file is never
   written): ``Shape -> Gather -> Concat -> Reshape`` chains, run-time masks
   (``Range``/``Mod``/``Equal``/``Where``/``Expand``), ``Constant`` arithmetic.
   Only onnxslim's *constant folding* runs; its graph fusions, common
   sub-expression elimination and weight tying are switched off, so the IR keeps
   the operators the user exported (runtime fusion is modelled separately, in
   :mod:`costmodels.fusion`) in their original order.
   Why onnxslim and not onnxsim: onnxslim is pure Python (no compiled extension to
   break against a new onnx or protobuf; installs wherever onnx does), works on a
   ``ModelProto`` in memory, lets each optimisation be switched off, and folds by
   running the constant partitions through ONNX Runtime, which costmodels already
   depends on. onnxsim 0.8.1 folds the same chains but is a 10 MB C++ wheel that
   rewrites the graph as a whole.
4. **Infer shapes** with ONNX's strict shape inference (with data propagation),
   after onnxslim has already run ONNX Runtime's symbolic shape inference.
5. **Build layers** with :func:`~costmodels.network.make_layer`. Constants are
   weights, not activations: initializers, ``Constant`` nodes, and the outputs of
   nodes whose inputs are all constants (``Identity``-shared biases, ``Cast``,
   ``Reshape``, ``Transpose`` or ``DequantizeLinear`` of a weight); such nodes are
   weight preparation done once, not layers (counted in ``meta["constant_nodes"]``).
   Shape-like inputs (``Reshape``'s shape, ``Slice``'s starts, quantization scales
   and zero points) are neither activations nor parameters. A layer's ``params``
   are the elements of the original weights its constants come from (a bias
   broadcast by ``Expand`` counts its own size), counted in the first layer that
   reads them (a tied weight of varied values counts once, however it is read; a stored
   tensor of equal values counts in each layer that reads it, directly or through an
   ``Identity``: torch's exporters keep one copy of fresh norm weights and zero biases,
   :func:`_uniform_constants`); one-element constants are not parameters.

Nothing is dropped silently: an operator outside :data:`costmodels.ops.SUPPORTED_OPS`
raises :class:`~costmodels.errors.UnsupportedOperator` naming the node.
"""

from __future__ import annotations

import contextlib
import functools
import io
import math
import os
import re
from collections import Counter
from collections.abc import Callable, Container, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple

from costmodels.errors import OnnxImportError, UnsupportedOperator, read_capped, short_repr
from costmodels.network import DTYPE_BYTES, Layer, Network, Shape, make_layer, numel
from costmodels.ops import (
    CONTROL_FLOW_OPS,
    CONV_OPS,
    ELEMENTWISE_OPS,
    MAC_OPS,
    RESIZE_OPS,
    RESIZE_TAPS,
    SUPPORTED_OPS,
)

__all__ = ["SUPPORTED_OPS", "import_onnx", "load_model_proto", "parse_input_shapes",
           "with_input_shapes"]

_DTYPES = {1: "float32", 2: "uint8", 3: "int8", 4: "uint16", 5: "int16", 6: "int32", 7: "int64",
           9: "bool", 10: "float16", 11: "float64", 12: "uint32", 13: "uint64", 16: "bfloat16",
           17: "float8e4m3fn", 18: "float8e4m3fnuz", 19: "float8e5m2", 20: "float8e5m2fnuz",
           21: "uint4", 22: "int4", 23: "float4e2m1", 24: "float8e8m0", 25: "uint2", 26: "int2",
           27: "float6e2m3", 28: "float6e3m2"}
# Bytes per element as stored: the IR's activation types, and the weight-only ones (packed
# sub-byte types a fraction; a tensor's total is rounded up).
_ITEMSIZE = {**DTYPE_BYTES, "uint16": 2, "uint32": 4, "uint64": 8, "float8e4m3fn": 1,
             "float8e4m3fnuz": 1, "float8e5m2": 1, "float8e5m2fnuz": 1, "float8e8m0": 1,
             "uint4": 0.5, "int4": 0.5, "float4e2m1": 0.5, "uint2": 0.25, "int2": 0.25,
             "float6e2m3": 0.75, "float6e3m2": 0.75}
_DEFAULT_DOMAINS = ("", "ai.onnx")
_MIN_OPSET = 7

# Inputs that carry data (activations or weights), by position; the others are
# shape-like or quantization parameters. Ops not listed: every input is data.
_DATA_INPUTS: dict[str, tuple[int, ...]] = {
    "QLinearConv": (0, 3, 8), "QLinearMatMul": (0, 3), "ConvInteger": (0, 1),
    "MatMulInteger": (0, 1), "QuantizeLinear": (0,), "DequantizeLinear": (0,),
    "DynamicQuantizeLinear": (0,), "Reshape": (0,), "Expand": (0,), "Tile": (0,),
    "Slice": (0,), "Pad": (0,), "Resize": (0,), "Upsample": (0,), "Squeeze": (0,),
    "Unsqueeze": (0,), "Split": (0,), "Clip": (0,), "CumSum": (0,), "Dropout": (0,),
    "ConstantOfShape": (), "Range": (), "OneHot": (0,), "Trilu": (0,), "Shape": (0,),
    "Size": (0,), "ReduceMean": (0,), "ReduceMax": (0,), "ReduceMin": (0,), "ReduceSum": (0,),
    "ReduceProd": (0,), "ReduceL1": (0,), "ReduceL2": (0,), "ReduceLogSum": (0,),
    "ReduceLogSumExp": (0,), "ReduceSumSquare": (0,), "EyeLike": (0,), "TopK": (0,),
    # X, W, R, B, initial_h[, initial_c, P]; sequence_lens (4) is an index, not data
    "LSTM": (0, 1, 2, 3, 5, 6, 7), "GRU": (0, 1, 2, 3, 5), "RNN": (0, 1, 2, 3, 5),
}


class _Const(NamedTuple):
    """A constant tensor: its shape and the bytes per element it is stored in."""

    shape: Shape
    itemsize: float  # bytes per element; a fraction for packed sub-byte types


# ------------------------------------------------------------------ input shapes
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
        if math.prod(shape) > MAX_TENSOR_ELEMENTS:
            raise OnnxImportError(f"--input-shape {item:.80}: {math.prod(shape):.3g} elements, "
                                  f"more than the {MAX_TENSOR_ELEMENTS:,} costmodels costs in "
                                  "one tensor")
        if sep and not name.strip():
            raise OnnxImportError(f"--input-shape {item!r}: the input's name before '=' is "
                                  "empty; give NAME=DxD... or the dims alone")
        if sep:
            if name in named and named[name] != shape:
                raise OnnxImportError(f"--input-shape: input {name!r} is given twice "
                                      f"({'x'.join(map(str, named[name]))} and {dims}); give "
                                      "it once")
            named[name] = shape
        else:
            plain.append(shape)
    if named and plain:
        raise OnnxImportError("--input-shape: name every shape (NAME=1x3x224x224) or none")
    return named or plain


# ------------------------------------------------------------------ reading
def load_model_proto(path: str | os.PathLike[str], ops: bool = True) -> Any:
    """Read an ONNX file, with its external data, and check it; an ``onnx.ModelProto``.

    External data locations must be relative and resolve inside the model's folder.
    Raises :class:`OnnxImportError` naming the file for anything unreadable, and
    :class:`UnsupportedOperator` for control flow unless ``ops`` is False (a model a
    runtime is to run, not the IR to cost).
    """
    source = str(path)
    try:  # from a pipe at most protobuf's 2 GiB
        data = read_capped(source, 2 << 30, "an ONNX model file", OnnxImportError)
    except OSError as exc:
        raise OnnxImportError(f"{source}: cannot read the model file: {exc.strerror}; "
                              "check the path") from None
    proto = _parse(data, source)
    _load_external(proto, Path(source).resolve().parent, source)
    _densify_sparse(proto, source)
    proto = _inline_functions(proto, source)
    _check(proto, source, ops)
    return proto


def _inline_functions(proto: Any, source: str) -> Any:
    """The model with its local functions (``export_modules_as_functions``) inlined:
    their nodes are what runs, and a node calling one is not an operator of any runtime."""
    if not proto.functions:
        return proto
    import onnx.inliner

    try:
        return onnx.inliner.inline_local_functions(proto)
    except Exception as exc:  # onnx raises its C++ errors as plain exceptions
        raise OnnxImportError(f"{source}: cannot inline the model's local functions "
                              f"({', '.join(f.name for f in proto.functions)}): "
                              f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
                              "; export without export_modules_as_functions") from None


def _densify_sparse(proto: Any, source: str) -> None:
    """Sparse initializers (``graph.sparse_initializer``) become dense initializers, as ONNX
    Runtime loads them: the layer that reads one is what runs (and its dense size is what
    a runtime stores). Indices out of range, or values and indices of different lengths,
    are refused naming the tensor."""
    if not proto.graph.sparse_initializer:
        return
    import numpy as np
    from onnx import numpy_helper

    dense = []
    for sp in proto.graph.sparse_initializer:
        name, dims = sp.values.name, tuple(int(d) for d in sp.dims)
        try:
            vals = numpy_helper.to_array(sp.values).reshape(-1)
            idx = numpy_helper.to_array(sp.indices).astype(np.int64)
            if any(d < 0 for d in dims) or math.prod(dims) * vals.itemsize > 2 << 30:
                raise ValueError(f"dimensions {'x'.join(map(str, dims))} out of range")
            flat = (idx.reshape(-1) if idx.ndim == 1 else
                    np.ravel_multi_index(tuple(idx.T), dims) if idx.ndim == 2
                    and idx.shape[1] == len(dims) else None)
            if flat is None or len(flat) != len(vals):
                raise ValueError(f"{len(vals)} values for indices of shape {idx.shape}")
            if len(flat) and (flat.min() < 0 or flat.max() >= math.prod(dims)):
                raise ValueError("an index is outside the tensor")
            arr = np.zeros(math.prod(dims), vals.dtype)
            arr[flat] = vals
        except (ValueError, TypeError) as exc:  # onnx's own errors on a malformed tensor
            raise OnnxImportError(f"{source}: sparse initializer {name!r}: {exc}; export "
                                  "the model again") from None
        dense.append(numpy_helper.from_array(arr.reshape(dims), name))
    proto.graph.initializer.extend(dense)
    del proto.graph.sparse_initializer[:]


def _parse(data: bytes, source: str) -> Any:
    import onnx

    try:
        proto = onnx.ModelProto.FromString(data)
    except Exception as exc:  # protobuf raises DecodeError and friends
        raise OnnxImportError(f"{source}: not a valid ONNX model ({type(exc).__name__}); the "
                              "file may be truncated or not ONNX: export it again") from None
    if not proto.HasField("graph"):
        raise OnnxImportError(f"{source}: the file holds no ONNX graph; it may be truncated "
                              "or not ONNX: export it again")
    if not proto.graph.node:
        raise OnnxImportError(f"{source}: the ONNX graph has no nodes (its outputs are its "
                              "inputs or stored tensors): there is nothing to cost; if it "
                              "should hold a network, the file may be truncated: export it "
                              "again")
    return proto


def _tensors(proto: Any) -> list[Any]:
    """Initializers and ``Constant`` node tensors of the main graph."""
    out = list(proto.graph.initializer)
    for node in proto.graph.node:
        out += [a.t for a in node.attribute if a.HasField("t")]
    return out


def _load_external(proto: Any, base: Path, source: str) -> None:
    """Read external weight data into the tensors, refusing locations outside ``base``."""
    from onnx import TensorProto

    for t in _tensors(proto):
        if t.data_location != TensorProto.EXTERNAL:
            continue
        info = {e.key: e.value for e in t.external_data}
        loc = info.get("location", "")
        try:
            target = (base / loc).resolve()
        except (OSError, RuntimeError, ValueError):  # a NUL byte, a loop of links
            raise OnnxImportError(f"{source}: tensor {t.name!r} points to external data "
                                  f"{loc!r:.80}, which is not a readable path") from None
        if not loc or Path(loc).is_absolute() or not target.is_relative_to(base):
            raise OnnxImportError(f"{source}: tensor {t.name!r} points to external data "
                                  f"{loc!r} outside the model's folder; keep weight files "
                                  "beside the model")
        if target.exists() and not target.is_file():  # a FIFO blocked the read forever
            raise OnnxImportError(f"{source}: tensor {t.name!r}: external data {loc!r} is not "
                                  "a regular file (a folder, a pipe or a device)")
        need = _tensor_bytes(t)
        try:
            offset, length = int(info.get("offset", 0)), info.get("length")
            size = target.stat().st_size
            if offset < 0 or (length is not None and int(length) < 0):
                raise ValueError
        except (OSError, ValueError) as exc:
            why = exc.strerror if isinstance(exc, OSError) else "bad offset or length"
            raise OnnxImportError(f"{source}: tensor {t.name!r}: cannot read external data "
                                  f"{loc!r} ({why}); copy the weight file beside the model"
                                  ) from None
        want = int(length) if length is not None else max(size - offset, 0)
        if need is not None and want != need:  # checked before reading: a length of 100 GB
            raise OnnxImportError(f"{source}: tensor {t.name!r} ({'x'.join(map(str, t.dims))}) "
                                  f"needs {need} bytes, but its external data {loc!r} has "
                                  f"{want} at offset {offset}; export the model and its "
                                  "weights again")
        if offset + want > size:
            raise OnnxImportError(f"{source}: tensor {t.name!r}: external data {loc!r} is "
                                  f"{size} bytes, shorter than the {offset + want} recorded "
                                  "(truncated weight file?)")
        try:
            with target.open("rb") as fh:
                fh.seek(offset)
                raw = fh.read(want)
        except (OSError, ValueError) as exc:
            why = exc.strerror if isinstance(exc, OSError) else "bad offset or length"
            raise OnnxImportError(f"{source}: tensor {t.name!r}: cannot read external data "
                                  f"{loc!r} ({why}); copy the weight file beside the model"
                                  ) from None
        if len(raw) != want:  # the file shrank since it was sized above
            raise OnnxImportError(f"{source}: tensor {t.name!r}: external data {loc!r} is "
                                  "shorter than recorded (truncated weight file?)")
        t.raw_data = raw
        del t.external_data[:]
        t.data_location = TensorProto.DEFAULT


# Bytes per element of the ONNX tensor types whose raw data is one element per item
# (packed 4-bit types and strings are not checked).
_ELEMENT_BYTES = {1: 4, 2: 1, 3: 1, 4: 2, 5: 2, 6: 4, 7: 8, 9: 1, 10: 2, 11: 8, 12: 4,
                  13: 8, 16: 2}


def _tensor_bytes(t: Any) -> int | None:
    """Bytes a tensor of a fixed-size element type holds (None where not checked)."""
    item = _ELEMENT_BYTES.get(t.data_type)
    return None if item is None else math.prod(t.dims) * item


def _opset(proto: Any) -> int:
    return max((o.version for o in proto.opset_import if o.domain in _DEFAULT_DOMAINS),
               default=0)


IF_LATER = "if-later"  # `ops` of _check: an If may hold a constant condition (inlined later)


# Experimental ops of the first opsets that ONNX has since dropped (their schemas are gone,
# so nothing infers their shapes), which old exports such as the Model Zoo's tiny-YOLOv2
# still hold and ONNX Runtime still runs: each is rewritten into the standard ops that
# compute the same (:func:`_rewrite_experimental`)
EXPERIMENTAL_OPS = frozenset({"ImageScaler", "Scale", "Crop"})


def _rewrite_experimental(proto: Any, source: str) -> None:
    """``ImageScaler`` (``x * scale + bias[c]``) as a Mul and an Add, ``Scale`` as a Mul and
    ``Crop`` (``border`` = left, top, right, bottom; ``scale`` = height, width kept) as a
    Slice of the two spatial axes, with their constants as initializers, in place. Only
    below opset 10, where ONNX Runtime still runs them; attributes it would refuse are
    refused, naming the node."""
    import numpy as np
    from onnx import helper, numpy_helper

    g = proto.graph
    opset = _opset(proto)
    if opset >= 10 or not any(n.op_type in EXPERIMENTAL_OPS and n.domain in _DEFAULT_DOMAINS
                              for n in g.node):
        return
    taken = ({t for n in g.node for t in (*n.input, *n.output)}
             | {t.name for t in g.initializer} | {vi.name for vi in g.input})

    def fresh(base: str) -> str:
        name, k = base, 1
        while name in taken:
            name, k = f"{base}_{k}", k + 1
        taken.add(name)
        return name

    def const(base: str, arr: Any) -> str:
        name = fresh(base)
        t = numpy_helper.from_array(arr, name)
        g.initializer.append(t)
        if proto.ir_version < 4:  # IR 3 lists every initializer among the graph inputs
            g.input.append(helper.make_tensor_value_info(name, t.data_type, list(t.dims)))
        return name

    nodes = []
    for i, n in enumerate(g.node):
        if n.op_type not in EXPERIMENTAL_OPS or n.domain not in _DEFAULT_DOMAINS \
                or not n.input or not n.output:
            nodes.append(n)
            continue
        a = {x.name: helper.get_attribute_value(x) for x in n.attribute}
        name, x, y = _node_name(n, i), n.input[0], n.output[0]
        why = _experimental_attrs_problem(n.op_type, a)
        if why:
            raise OnnxImportError(f"{source}: node {name!r} ({n.op_type}): {why} (ONNX Runtime "
                                  "refuses it); export the model again")
        if n.op_type in ("Scale", "ImageScaler"):
            scale = const(f"{name}/scale", np.array(a.get("scale", 1.0), np.float32))
            bias = a.get("bias") if n.op_type == "ImageScaler" else None
            mid = fresh(f"{y}/scaled") if bias else y
            nodes.append(helper.make_node("Mul", [x, scale], [mid], name=f"{name}/mul"))
            if bias:
                b = const(f"{name}/bias", np.array(bias, np.float32).reshape(1, -1, 1, 1))
                nodes.append(helper.make_node("Add", [mid, b], [y], name=f"{name}/add"))
            continue
        left, top, right, bottom = (list(a.get("border", [])) + [0, 0, 0, 0])[:4]
        kept = list(a.get("scale", []))
        big = 2 ** 62
        starts = [top, left]
        ends = ([top + kept[0], left + kept[1]] if len(kept) == 2
                else [-bottom if bottom else big, -right if right else big])
        # Slice-1 (opset < 10, as here): starts, ends and axes are attributes
        nodes.append(helper.make_node("Slice", [x], [y], name=name, axes=[2, 3],
                                      starts=starts, ends=ends))
    del g.node[:]
    g.node.extend(nodes)


def _experimental_attrs_problem(op: str, a: Mapping[str, Any]) -> str:
    """What is wrong with an experimental op's attributes ("" if nothing)."""
    def number(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)

    if "scale" in a and op in ("Scale", "ImageScaler") and not number(a["scale"]):
        return f"attribute 'scale' is {short_repr(a['scale'])}, not a number"
    if op == "ImageScaler" and "bias" in a and not (
            isinstance(a["bias"], list) and a["bias"] and all(map(number, a["bias"]))):
        return f"attribute 'bias' is {short_repr(a['bias'])}, not a list of numbers"
    if op == "Crop":
        border, kept = a.get("border"), a.get("scale")
        if not (isinstance(border, list) and len(border) == 4
                and all(isinstance(v, int) and v >= 0 for v in border)):
            return (f"attribute 'border' is {short_repr(border)}, not 4 sizes >= 0 (left, top, "
                    "right, bottom)")
        if kept is not None and not (isinstance(kept, list) and len(kept) == 2
                                     and all(isinstance(v, int) and v > 0 for v in kept)):
            return f"attribute 'scale' is {short_repr(kept)}, not 2 sizes > 0 (height, width)"
    return ""


def _check(proto: Any, source: str, ops: bool | str = True) -> None:
    import onnx

    _rewrite_experimental(proto, source)
    opset, newest = _opset(proto), onnx.defs.onnx_opset_version()
    if proto.ir_version > onnx.IR_VERSION:
        raise OnnxImportError(f"{source}: ONNX IR version {proto.ir_version} is newer than "
                              f"this onnx and ONNX Runtime read ({onnx.IR_VERSION}); export "
                              "with an older exporter or opset")
    if not any(o.domain in _DEFAULT_DOMAINS for o in proto.opset_import):
        raise OnnxImportError(f"{source}: the model imports no opset of the default ONNX "
                              "domain (its opset_import has no entry for '' or 'ai.onnx'), "
                              "so its operators have no meaning; export it again")
    if not _MIN_OPSET <= opset <= newest:
        raise OnnxImportError(f"{source}: ONNX opset {opset} is outside {_MIN_OPSET}..{newest}"
                              " (what this onnx reads); export with an opset in that range")
    _check_wiring(proto.graph, source)
    _check_initializer_sizes(proto.graph, source)
    for i, node in enumerate(proto.graph.node if ops else ()):
        if node.domain not in _DEFAULT_DOMAINS:
            continue  # refused by name when its layer is read (unless it only folds)
        if node.op_type in CONTROL_FLOW_OPS and not (ops == IF_LATER and node.op_type == "If"):
            raise UnsupportedOperator(_node_name(node, i), node.op_type, source)
        try:
            schema = onnx.defs.get_schema(node.op_type, opset, "")
        except onnx.defs.SchemaError:  # not an ONNX op at this opset: shapes cannot be inferred
            since = _first_opset(node.op_type)
            raise UnsupportedOperator(
                _node_name(node, i), node.op_type, source,
                why=f"which ONNX opset {opset} (the model's) does not define"
                + (f" (ONNX has it from opset {since})" if since else "")
                + ": a runtime's own op, as an ONNX Runtime-optimized model has; import the "
                  "model as exported" + (f", or export it at opset {since} or later"
                                         if since else "")) from None
        _check_attribute_types(node, _node_name(node, i), schema, source)


def _check_attribute_types(node: Any, name: str, schema: Any, source: str) -> None:
    """Each attribute of the type the operator's schema (at the model's opset) declares:
    ONNX Runtime refuses another, and the costing code would fail on it unnamed."""
    from onnx import AttributeProto

    for a in node.attribute:
        want = schema.attributes.get(a.name)
        if want is not None and a.type != int(want.type):
            kind = AttributeProto.AttributeType.Name
            raise OnnxImportError(
                f"{source}: node {name!r} ({node.op_type}): attribute {a.name!r} is "
                f"{kind(a.type)}, the operator declares {kind(int(want.type))} (ONNX Runtime "
                "refuses it); export the model again")


def _first_opset(op: str) -> int | None:
    """The first ONNX opset that defines ``op`` (default domain), or None."""
    import onnx

    try:
        return min(v for v in (s.since_version for s in onnx.defs.get_all_schemas_with_history()
                               if s.name == op and s.domain == ""))
    except ValueError:
        return None


def _check_initializer_sizes(graph: Any, source: str) -> None:
    """Each embedded initializer holds as many elements as its dims say: ONNX Runtime
    refuses one that does not, and its MACs and parameters would follow the wrong dims."""
    values = [(f"initializer {t.name!r}", t) for t in graph.initializer]
    values += [(f"Constant node {_node_name(n, i)!r}", a.t) for i, n in enumerate(graph.node)
               if n.op_type == "Constant" for a in n.attribute if a.name == "value"]
    dims = {t.name: tuple(t.dims) for t in graph.initializer}
    for kind, vis in (("graph input", graph.input), ("value_info", graph.value_info)):
        for vi in vis:
            if vi.name not in dims or not vi.type.tensor_type.HasField("shape"):
                continue
            declared = [d.dim_value if d.HasField("dim_value") else None
                        for d in vi.type.tensor_type.shape.dim]
            real = dims[vi.name]
            if len(declared) != len(real) or any(
                    d is not None and d != r for d, r in zip(declared, real, strict=False)):
                shown = "x".join("?" if d is None else str(d) for d in declared) or "scalar"
                raise OnnxImportError(
                    f"{source}: initializer {vi.name!r} is {'x'.join(map(str, real)) or 'a scalar'}"
                    f" but its {kind} entry declares {shown}; the two disagree: export the "
                    "model again")
    for what, t in values:
        if t.external_data or _tensor_bytes(t) is None:
            continue
        shape = "x".join(map(str, t.dims)) or "scalar"
        if t.raw_data:
            got, need, unit = len(t.raw_data), _tensor_bytes(t), "bytes"
        else:
            got = (len(t.float_data) + len(t.int32_data) + len(t.int64_data)
                   + len(t.double_data) + len(t.uint64_data))
            need, unit = math.prod(t.dims), "values"
        if got != need:
            raise OnnxImportError(f"{source}: {what} ({shape}) needs {need} "
                                  f"{unit} but holds {got}; its dims and data disagree: export "
                                  "the model again")


def _has_cycle(graph: Any, producer: Mapping[str, int]) -> bool:
    """Whether the nodes' data flow has a cycle (no order runs every node after its inputs;
    ``producer``: the node that writes each tensor)."""
    deps = [{producer[t] for t in node.input if t in producer} for node in graph.node]
    state = [0] * len(deps)  # 0 unseen, 1 on the stack, 2 done
    for start in range(len(deps)):
        stack = [(start, iter(deps[start]))] if state[start] == 0 else []
        if stack:
            state[start] = 1
        while stack:
            node, it = stack[-1]
            nxt = next(it, None)
            if nxt is None:
                state[node] = 2
                stack.pop()
            elif state[nxt] == 1:
                return True
            elif state[nxt] == 0:
                state[nxt] = 1
                stack.append((nxt, iter(deps[nxt])))
    return False


def _sort_nodes(graph: Any, known: set[str], producer: dict[str, int]) -> bool:
    """Put the nodes of ``graph`` in an order that runs each after its inputs' producers
    (stable: the file's order where it already does), when the file's order does not
    and no cycle forbids it; whether it moved them. ONNX Runtime sorts such a graph
    itself (ORT's own float16 converter appends its input Casts after their readers)."""
    nodes = graph.node
    if all(t in known or producer.get(t, -1) < i for i, node in enumerate(nodes)
           for t in node.input if t) or _has_cycle(graph, producer):
        return False
    import heapq

    deps = [{producer[t] for t in node.input if t in producer and t not in known}
            for node in nodes]
    users: list[list[int]] = [[] for _ in nodes]
    for i, ds in enumerate(deps):
        for d in ds:
            users[d].append(i)
    waiting = [len(ds) for ds in deps]
    ready = [i for i, n in enumerate(waiting) if n == 0]
    heapq.heapify(ready)
    order = []
    while ready:
        i = heapq.heappop(ready)
        order.append(i)
        for u in users[i]:
            waiting[u] -= 1
            if waiting[u] == 0:
                heapq.heappush(ready, u)
    if len(order) != len(nodes):  # a node reads itself: left to the checks to name
        return False
    _set_nodes(graph, [nodes[i] for i in order])
    return True


def _set_nodes(graph: Any, nodes: Sequence[Any]) -> None:
    """Make ``nodes`` (some of them the graph's own) the graph's node list, in order."""
    nodes = list(nodes)  # extend copies each message, so the old ones may be dropped first
    del graph.node[:]
    graph.node.extend(nodes)


def _check_wiring(graph: Any, source: str) -> None:
    """Every node input is produced earlier (what a truncated or cut file breaks), no
    tensor is defined twice, and the graph has outputs.

    Deliberately not ``onnx.checker``: it refuses models ONNX Runtime runs (graph
    outputs without a declared shape, for instance).
    """
    known = {t.name for t in graph.initializer} | {vi.name for vi in graph.input} | {""}
    writer = {vi.name: f"graph input {vi.name!r}" for vi in graph.input}
    later = {t: i for i, node in enumerate(graph.node) for t in node.output if t}
    if _sort_nodes(graph, known, later):  # out of order, no cycle: run as ONNX Runtime does
        later = {t: i for i, node in enumerate(graph.node) for t in node.output if t}
    named: dict[str, int] = {}
    for i, node in enumerate(graph.node):
        if node.name and named.setdefault(node.name, i) != i:
            raise OnnxImportError(
                f"{source}: nodes {named[node.name]} and {i} are both named {node.name!r}; "
                "node names must differ (ONNX Runtime refuses the model): rename them or "
                "export it again")
        for t in node.input:
            if t not in known:
                if t in later:
                    why = (f"which node {_node_name(graph.node[later[t]], later[t])!r} "
                           "produces later; " + ("the graph has a cycle" if _has_cycle(graph, later)
                                                 else "its nodes are out of order"))
                else:
                    why = ("which no node, initializer or input produces; the file may be "
                           "truncated")
                raise OnnxImportError(
                    f"{source}: node {_node_name(node, i)!r} ({node.op_type}) reads tensor "
                    f"{t!r}, {why}: export it again")
        for t in node.output:
            if t and t in writer:
                raise OnnxImportError(
                    f"{source}: node {_node_name(node, i)!r} ({node.op_type}) writes tensor "
                    f"{t!r}, which {writer[t]} already defines; an ONNX graph defines each "
                    "tensor once (ONNX Runtime refuses it): export it again")
            writer[t] = f"node {_node_name(node, i)!r}"
        known.update(node.output)
    if not graph.output:
        raise OnnxImportError(f"{source}: the graph declares no outputs, so it computes "
                              "nothing; export it again with its outputs")
    for vi in graph.output:
        if vi.name not in known:
            raise OnnxImportError(f"{source}: graph output {vi.name!r} is produced by no node; "
                                  "the file may be truncated: export it again")


def _load(model: Any, ops: bool | str = True) -> tuple[Any, str, str | None]:
    """(a copy of the ModelProto, a name for messages, the file path or None); ``ops``:
    refuse control flow (:func:`load_model_proto`)."""
    import onnx

    if isinstance(model, onnx.ModelProto):
        proto = onnx.ModelProto()
        proto.CopyFrom(model)
        source = model.graph.name or "<model>"
        _load_external(proto, Path.cwd().resolve(), source)
        _check(proto, source, ops)
        return proto, source, None
    if isinstance(model, (bytes, bytearray)):
        proto = _parse(bytes(model), "<bytes>")
        _load_external(proto, Path.cwd().resolve(), "<bytes>")
        _check(proto, "<bytes>", ops)
        return proto, "<bytes>", None
    return load_model_proto(model, ops), str(model), str(Path(model).resolve())


def _node_name(node: Any, i: int) -> str:
    return node.name or next((t for t in node.output if t), f"{node.op_type}_{i}")


# ------------------------------------------------------------------ input shapes
def has_open_dims(vi: Any) -> bool:
    """Whether a graph input leaves its shape open: none declared, or a dimension that is
    not a positive size (a name, or unset)."""
    tt = vi.type.tensor_type
    return not tt.HasField("shape") or any(
        not (d.HasField("dim_value") and d.dim_value > 0) for d in tt.shape.dim)


def _dims(vi: Any) -> list[int | str | None] | None:
    """An input's declared dimensions; ``[]`` for a scalar, None when no shape is declared."""
    tt = vi.type.tensor_type
    if not tt.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") else (d.dim_param or None)
            for d in tt.shape.dim]


def _given_shapes(source: str, graph_inputs: list[Any],
                  input_shapes: Mapping[str, Shape] | Sequence[Shape] | None) -> dict[str, Shape]:
    names = [vi.name for vi in graph_inputs]
    if isinstance(input_shapes, Mapping):
        unknown = set(input_shapes) - set(names)
        if unknown:
            raise OnnxImportError(f"{source}: --input-shape names {sorted(unknown)}, but the "
                                  f"model's inputs are {names}; use one of those names")
        return {k: tuple(v) for k, v in input_shapes.items()}
    shapes = list(input_shapes or [])
    if len(shapes) > len(graph_inputs):
        raise OnnxImportError(f"{source}: {len(shapes)} --input-shape given for "
                              f"{len(graph_inputs)} model input(s) {names}; give one per input")
    return {vi.name: tuple(s) for vi, s in zip(graph_inputs, shapes, strict=False)}


def _fix_inputs(source: str, graph_inputs: list[Any],
                input_shapes: Mapping[str, Shape] | Sequence[Shape] | None) -> dict[str, Shape]:
    """Write the given shapes into the inputs; every input's final static shape."""
    given = _given_shapes(source, graph_inputs, input_shapes)
    final: dict[str, Shape] = {}
    for vi in graph_inputs:
        dims = _dims(vi)
        if vi.name in given:
            shape = given[vi.name]
            text = "x".join(map(str, shape))
            if dims is not None and len(dims) != len(shape):
                raise OnnxImportError(f"{source}: input {vi.name!r} has rank {len(dims)}, but "
                                      f"--input-shape gives {text}; give {len(dims)} dimensions")
            for i, (d, g) in enumerate(zip(dims or (), shape, strict=False)):
                if isinstance(d, int) and d > 0 and d != g:
                    raise OnnxImportError(
                        f"{source}: --input-shape {vi.name}={text} contradicts the model's "
                        f"static dimension {i} of input {vi.name!r} ({_shown(dims)}); change "
                        "only its dynamic dimensions, or export the model with that shape")
            tshape = vi.type.tensor_type.shape
            del tshape.dim[:]
            for d in shape:
                tshape.dim.add().dim_value = int(d)
            final[vi.name] = shape
        elif dims is None or any(not isinstance(d, int) or d <= 0 for d in dims):
            if dims:
                example = "x".join(str(d) if isinstance(d, int) and d > 0 else "N" for d in dims)
                how = (f"--input-shape {vi.name}={example} with each N its size (in Python: "
                       f"input_shapes={{'{vi.name}': (...)}}, {len(dims)} dimensions)")
            else:
                how = (f"--input-shape {vi.name}=D1xD2x... (its full shape; in Python: "
                       f"input_shapes={{'{vi.name}': (...)}})")
            odd = [d for d in dims or () if isinstance(d, int) and d <= 0]
            why = (f"; a declared size of {odd[0]} is read as dynamic, as converters mean it"
                   if odd else "")
            raise OnnxImportError(f"{source}: input {vi.name!r} has a dynamic or unknown shape "
                                  f"({_shown(dims or ())}{why}); fix it with {how}")
        else:
            final[vi.name] = tuple(int(d) for d in dims)
    return final


def _shown(dims: Sequence[Any]) -> str:
    return "x".join(str(d) if isinstance(d, int) and d > 0 else "?" for d in dims) or "unknown"


# ------------------------------------------------------------------ folding and inference
def _inline_constant_ifs(graph: Any, source: str) -> None:
    """Replace (in place) each ``If`` whose condition folding made a constant by the nodes
    of the branch it takes (its outputs through ``Identity`` nodes, which runtimes drop);
    an ``If`` on a runtime value is refused by name, as every control-flow op is. The
    TorchScript exporter writes ``nn.LocalResponseNorm`` with an ``If`` on the input's
    rank, a constant once shapes are known."""
    import numpy as np
    from onnx import helper, numpy_helper

    inits = {t.name: t for t in graph.initializer}
    made = {t for n in graph.node for t in n.output} | set(inits) | {vi.name for vi in graph.input}
    out = []
    for i, node in enumerate(graph.node):
        if node.op_type != "If" or node.domain not in _DEFAULT_DOMAINS:
            out.append(node)
            continue
        cond = inits.get(node.input[0]) if node.input else None
        try:
            value = (numpy_helper.to_array(cond) if cond is not None
                     else _shape_condition(graph, node.input[0]) if node.input else None)
        except Exception:  # noqa: BLE001 - refused below, by name
            value = None
        branch = next((a.g for a in node.attribute if a.name == (
            "then_branch" if value is not None and value.size == 1 and bool(np.ravel(value)[0])
            else "else_branch")), None)
        clash = branch is not None and (
            {t for n in branch.node for t in n.output} | {t.name for t in branch.initializer}
        ) & made
        if value is None or value.size != 1 or branch is None or clash \
                or len(branch.output) != len(node.output):
            raise UnsupportedOperator(_node_name(node, i), node.op_type, source)
        graph.initializer.extend(branch.initializer)
        out.extend(branch.node)
        out.extend(helper.make_node("Identity", [b.name], [o], name=f"{_node_name(node, i)}/{k}")
                   for k, (b, o) in enumerate(zip(branch.output, node.output, strict=True)))
    if any(n.op_type == "If" for n in graph.node):
        _set_nodes(graph, out)


def _shape_condition(graph: Any, cond: str) -> Any:
    """The value of tensor ``cond`` when it depends on the graph inputs' shapes alone (every
    path from an input passes a ``Shape`` or ``Size``), computed with ONNX Runtime on the
    nodes it needs; None when it depends on input values."""
    import numpy as np
    import onnxruntime as ort
    from onnx import helper

    producer = {t: n for n in graph.node for t in n.output if t}
    inits = {t.name for t in graph.initializer}
    inputs = {vi.name: vi for vi in graph.input if vi.name not in inits}
    need: list = []
    seen: set[tuple[str, bool]] = set()
    read: set[str] = set()
    stack = [(cond, False)]  # (tensor, reached through a Shape/Size: its values unused)
    while stack:
        t, shaped = stack.pop()
        if (t, shaped) in seen or t in inits or not t:
            continue
        seen.add((t, shaped))
        if t in inputs:
            if not shaped:
                return None  # a value of an input reaches the condition
            read.add(t)
            continue
        node = producer.get(t)
        if node is None or node.op_type in CONTROL_FLOW_OPS:
            return None
        need.append(node)
        stack.extend((i, shaped or node.op_type in ("Shape", "Size")) for i in node.input)
    order = [n for n in graph.node if any(n is m for m in need)]
    used = {t for n in order for t in n.input}
    model = helper.make_model(
        helper.make_graph(order, "cond", [inputs[n] for n in sorted(read)],
                          [helper.make_tensor_value_info(cond, 9, None)],  # If: bool
                          [t for t in graph.initializer if t.name in used]),
        opset_imports=[helper.make_opsetid("", 17)])
    feeds = {}
    for name in sorted(read):
        tt = inputs[name].type.tensor_type
        shape = [d.dim_value for d in tt.shape.dim]
        if any(d <= 0 for d in shape):
            return None
        feeds[name] = np.zeros(shape, helper.tensor_dtype_to_np_dtype(tt.elem_type))
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    sess = ort.InferenceSession(model.SerializeToString(), opts,
                                providers=["CPUExecutionProvider"])
    return np.asarray(sess.run([cond], feeds)[0])


MAX_FOLD_ELEMENTS = 2 ** 26  # a constant the folder computes: 256 MB of float32
MAX_FOLD_MACS = 2 ** 32       # a constant product the folder computes (seconds of work)


def _check_fold_sizes(proto: Any, source: str) -> None:
    """Refuse a constant sub-graph whose folding would compute a tensor over
    :data:`MAX_FOLD_ELEMENTS` (a 215-byte file of ``ConstantOfShape [8192, 8192] -> MatMul``
    took 18 s and 1.2 GB to fold; 16384 would take minutes and gigabytes). The sizes come
    from ONNX's shape inference of the file as it is, before anything runs."""
    import onnx
    from onnx import helper

    g = proto.graph
    # the weights' values are not needed to infer shapes: a large float initializer goes in
    # as an input of its type and shape (copying a 100 MB model took most of the time)
    small = [t for t in g.initializer if math.prod(t.dims) <= 4096 or t.data_type in (6, 7)]
    big = [helper.make_tensor_value_info(t.name, t.data_type, list(t.dims))
           for t in g.initializer if not (math.prod(t.dims) <= 4096 or t.data_type in (6, 7))]
    work = helper.make_model(helper.make_graph(list(g.node), g.name or "g",
                                               [*g.input, *big], list(g.output), small),
                             opset_imports=list(proto.opset_import))
    work.ir_version = proto.ir_version
    try:
        inferred = onnx.shape_inference.infer_shapes(work, data_prop=True)
    except Exception:  # noqa: BLE001 - the import's own inference names what is wrong
        return
    shapes = {vi.name: vi.type.tensor_type.shape for vi in inferred.graph.value_info
              if vi.type.HasField("tensor_type")}
    for i, node in _constant_nodes(proto.graph):
        ins = [t for t in node.input if t]
        if node.op_type in ("MatMul", "Gemm") and len(ins) >= 2:
            a, b = (_static_dims(shapes.get(t) or _init_shape(proto.graph, t)) for t in ins[:2])
            if a and b and len(a) >= 2 and len(b) >= 2:
                macs = math.prod(a) * b[-1] if node.op_type == "MatMul" else \
                    a[0] * a[1] * max(b)
                if macs > MAX_FOLD_MACS:
                    raise OnnxImportError(
                        f"{source}: node {_node_name(node, i)!r} ({node.op_type}) multiplies "
                        f"constants of {'x'.join(map(str, a))} and {'x'.join(map(str, b))} "
                        f"({macs:.3g} MACs, over the {MAX_FOLD_MACS:.3g} costmodels folds); "
                        "no model needs that: export it again")
        for t in node.output:
            dims = _static_dims(shapes.get(t))
            if dims and (n := math.prod(dims)) > MAX_FOLD_ELEMENTS:
                raise OnnxImportError(
                    f"{source}: node {_node_name(node, i)!r} ({node.op_type}) computes a "
                    f"constant of {'x'.join(map(str, dims))} ({n:.3g} elements, over the "
                    f"{MAX_FOLD_ELEMENTS:.3g} costmodels folds); no model needs one: export "
                    "it again")


def _static_dims(shape: Any) -> list[int] | None:
    """The dims of a TensorShapeProto (or a list) when all are known, else None."""
    if shape is None:
        return None
    if isinstance(shape, list):
        return shape
    dims = [d.dim_value if d.HasField("dim_value") else 0 for d in shape.dim]
    return dims if dims and all(d > 0 for d in dims) else None


def _init_shape(graph: Any, name: str) -> list[int] | None:
    t = next((t for t in graph.initializer if t.name == name), None)
    return list(t.dims) if t is not None else None


MAX_FOLD_PASSES = 8  # constant folding is repeated while a pass folds something


def _constant_nodes(graph: Any) -> Iterator[tuple[int, Any]]:
    """(position, node) of the nodes that compute constants, in order: ``Constant`` nodes
    and those whose inputs are all initializers or earlier constants (what folding runs)."""
    const = {t.name for t in graph.initializer}
    for i, node in enumerate(graph.node):
        ins = [t for t in node.input if t]
        if node.op_type != "Constant" and not (ins and all(t in const for t in ins)):
            continue  # reads a graph input: not folded
        const.update(t for t in node.output if t)
        yield i, node


def _foldable_left(graph: Any) -> bool:
    """Whether another folding pass may fold more: a ``Shape``/``Size`` is left (its input's
    shape may be static now), or a node that reads constants only (initializers and
    ``Constant`` outputs). A cheap test: a further onnxslim pass copies every weight."""
    return any(n.op_type in ("Shape", "Size") for n in graph.node) or any(
        n.op_type != "Constant" and not n.op_type.startswith("Random")
        for _, n in _constant_nodes(graph))


def _fold(proto: Any) -> tuple[Any, str, int, list[str]]:
    """Constant-fold with onnxslim; the original graph with folded nodes replaced.

    Returns (model, how, number of nodes folded away, what failed to evaluate: (name, op,
    message) per node ONNX Runtime refused, e.g. a position-table Gather whose indices run
    past the table: :func:`_check_fold_failures`). ONNX Runtime's own log lines of those
    failures are kept off the terminal (:func:`_native_stderr_to`). The model keeps every node of ``proto`` in its order except
    those whose outputs onnxslim turned into constants (those outputs become
    initializers of the same name): onnxslim's clean-up also drops nodes that reach
    no output, which the IR keeps (the fusion planner decides what a runtime prunes).
    ``how`` names the folder, or says why folding was skipped.
    """
    import onnx

    try:
        import onnxslim
    except ImportError:
        return proto, "not folded: onnxslim is not installed", 0, []
    work = onnx.ModelProto()
    work.CopyFrom(proto)
    _tensor_constants(work.graph)
    skip = ["graph_fusion", "dead_node_elimination", "subexpression_elimination",
            "weight_tying"]
    said = io.StringIO()
    try:
        with contextlib.redirect_stdout(said), _native_stderr_to(said):
            folded = onnxslim.slim(work, skip_optimizations=skip)
    except Exception as exc:  # a folder failure must not stop the import
        return proto, f"not folded: onnxslim failed ({type(exc).__name__})", 0, []
    failed = _fold_failures(said.getvalue())
    if folded is None:
        return proto, "not folded: onnxslim returned nothing", 0, failed
    made = {t.name: t for t in folded.graph.initializer}
    removed = _folded_nodes(proto.graph, made, {t for n in folded.graph.node for t in n.output})
    out = onnx.ModelProto()
    out.CopyFrom(proto)
    keep = [n for i, n in enumerate(proto.graph.node) if i not in removed]
    _set_nodes(out.graph, keep)
    have = {t.name for t in proto.graph.initializer}
    produced = {t for n in keep for t in n.output}
    needed = {t for n in keep for t in n.input} | {vi.name for vi in proto.graph.output}
    out.graph.initializer.extend(t for name, t in made.items()
                                 if name in needed and name not in have | produced)
    del out.graph.value_info[:]
    return out, f"onnxslim {onnxslim.__version__} (constant folding)", len(removed), failed


def _tensor_constants(graph: Any) -> None:
    """Rewrite (in place) each ``Constant`` node given by ``value_float(s)``/``value_int(s)``
    as the same tensor in ``value``: onnxslim 0.1.98 folds ``value_floats`` into a float64
    initializer, which a float operand (Resize's scales) then refuses."""
    from onnx import TensorProto, helper

    kinds = {"value_float": (TensorProto.FLOAT, False), "value_floats": (TensorProto.FLOAT, True),
             "value_int": (TensorProto.INT64, False), "value_ints": (TensorProto.INT64, True)}
    for node in graph.node:
        if node.op_type != "Constant" or node.domain not in _DEFAULT_DOMAINS:
            continue
        for i, a in enumerate(node.attribute):
            if a.name in kinds:
                dtype, many = kinds[a.name]
                vals = helper.get_attribute_value(a)
                vals = list(vals) if many else [vals]
                t = helper.make_tensor(node.output[0] if node.output else "c", dtype,
                                       [len(vals)] if many else [], vals)
                del node.attribute[i]
                node.attribute.append(helper.make_attribute("value", t))
                break


_ORT_NODE_FAILURE = re.compile(r"running (\w+) node\. Name:'([^']*)' Status Message: ([^\n\x1b]*)")


def _fold_failures(log: str) -> list[tuple[str, str, str]]:
    """(node name, op, message) for each node ONNX Runtime failed to run while folding, from
    its log and onnxslim's (first occurrence of each node, in order)."""
    out: dict[str, tuple[str, str, str]] = {}
    for op, name, msg in _ORT_NODE_FAILURE.findall(log):
        out.setdefault(name, (name, op, msg.strip()))
    return list(out.values())


def _live_nodes(graph: Any) -> set[int]:
    """Positions of the nodes some graph output depends on."""
    by_output = {t: i for i, n in enumerate(graph.node) for t in n.output if t}
    live: set[int] = set()
    todo = [vi.name for vi in graph.output]
    seen: set[str] = set()
    while todo:
        t = todo.pop()
        if t in seen or t not in by_output:
            continue
        seen.add(t)
        live.add(by_output[t])
        todo.extend(x for x in graph.node[by_output[t]].input if x)
    return live


def _check_fold_failures(graph: Any, failed: Sequence[tuple[str, str, str]], source: str
                         ) -> set[int]:
    """Refuse a model whose constant part ONNX Runtime cannot run at these input shapes;
    else the positions of the dead nodes (no output depends on them) to drop and fold again.

    A node that fails on constant inputs fails the same way when the model runs (e.g. a
    position-table Gather past the table's end: a sequence longer than the model allows).
    Whether onnxslim then folds its neighbours depends on the order it tries partitions
    in, which varies between processes, so without this check the same import succeeded
    in one process and failed with "shape not known" in the next. A failing node no output
    depends on is one a runtime drops: then the dead nodes are dropped and folding runs
    again. A name not in the graph counts as live.
    """
    live = _live_nodes(graph)
    live_names = {graph.node[i].name for i in live}
    names = {n.name for n in graph.node}
    for name, op, msg in failed:
        if name in live_names or name not in names:
            raise OnnxImportError(
                f"{source}: node {name!r} ({op}) fails in ONNX Runtime at these input shapes, "
                f"on constant inputs: {msg}; are the --input-shape sizes within what the model "
                "allows (e.g. a sequence no longer than its position table)?")
    return set(range(len(graph.node))) - live


@contextlib.contextmanager
def _native_stderr_to(sink: io.StringIO):
    """Send what native code (ONNX Runtime's logger) writes to file descriptor 2 into
    ``sink`` for the duration; a no-op where descriptor 2 cannot be redirected."""
    import sys
    import tempfile

    try:
        tmp = tempfile.TemporaryFile(mode="w+b")
    except OSError:  # no writable temporary folder: leave the terminal as it is
        yield
        return
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):
        tmp.close()
        yield
        return
    with tmp:
        try:
            os.dup2(tmp.fileno(), 2)
            yield
        finally:
            try:
                sys.stderr.flush()
            except (OSError, ValueError):
                pass
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            sink.write(tmp.read().decode("utf-8", "replace"))


def _folded_nodes(graph: Any, made: Mapping[str, Any], survivors: set[str]) -> set[int]:
    """Indices of the nodes folding replaced: those whose outputs became constants,
    and the constant chains behind them (gone from the folded graph, every consumer
    folded). Nodes that reach no output in the original graph stay."""
    consumers: dict[str, list[int]] = {}
    for i, node in enumerate(graph.node):
        for t in node.input:
            consumers.setdefault(t, []).append(i)
    outputs = {vi.name for vi in graph.output}
    removed: set[int] = set()
    for i in range(len(graph.node) - 1, -1, -1):
        outs = [t for t in graph.node[i].output if t]
        if outs and all(t in made for t in outs):
            removed.add(i)
            continue
        users = [j for t in outs for j in consumers.get(t, [])]
        if (outs and users and not any(t in survivors or t in outputs for t in outs)
                and all(j in removed for j in users)):
            removed.add(i)
    return removed


def _provenance(graph: Any, folded: set[str]) -> dict[str, frozenset[str]]:
    """For every constant tensor, the original initializers and Constant tensors it is
    computed from (to count parameters once, not once per broadcast element).

    A ``Shape`` or ``Size`` reads no values, so what is computed from it and constants is
    followed too: a dynamic-axes export's position table read at ``Range(Shape(x))`` folds
    once the input shapes are fixed, and is still that table's parameters."""
    prov: dict[str, frozenset[str]] = {t.name: frozenset({t.name}) for t in graph.initializer}
    for node in graph.node:
        outs = [t for t in node.output if t]
        if node.op_type == "Constant":
            prov.update({t: frozenset({t}) for t in outs})
        elif node.op_type in ("Shape", "Size") and node.domain in _DEFAULT_DOMAINS:
            prov.update({t: frozenset() for t in outs})
        elif outs and (all(t in folded for t in outs)
                       or all(t in prov for t in node.input if t)):
            src = frozenset().union(*(prov.get(t, frozenset()) for t in _param_inputs(node)))
            prov.update({t: src for t in outs})
    return prov


def _uniform_constants(graph: Any) -> set[str]:
    """Original constants (initializers, ``Constant`` values) of a weight type with more
    than one element, all of them equal: what exporters store once for several layers.

    torch's exporters keep one copy of equal-valued tensors (fresh norm weights of ones,
    biases of zeros, the zero biases left by folding BatchNorm): the default exporter lets
    every other layer read it through an ``Identity``, the dynamo exporter's optimizer
    lets them read it directly. Such a tensor is a parameter of *each* layer that reads
    it (torch counts each layer's own); a tied weight of varied values (a shared
    embedding) is one parameter however many layers read it.
    """
    return set(_equal_valued(graph, _PARAM_DTYPES, min_size=2))


def _equal_valued(graph: Any, dtypes: Container[int], min_size: int = 1,
                  max_size: int | None = None) -> dict[str, Any]:
    """Stored constants (:func:`_stored_tensors`) of one of ``dtypes`` and ``min_size`` to
    ``max_size`` elements whose elements are all equal: name -> that value."""
    import numpy as np
    from onnx import numpy_helper

    out = {}
    for name, t in _stored_tensors(graph):
        n = math.prod(t.dims)
        if t.data_type not in dtypes or n < min_size or (max_size is not None and n > max_size):
            continue
        try:
            arr = numpy_helper.to_array(t)
        except Exception:  # noqa: BLE001 - data the import refuses elsewhere, by name
            continue
        if arr.size >= min_size and np.all(arr == arr.flat[0]):
            out[name] = arr.flat[0]
    return out


def _tie_transposed(graph: Any, prov: dict[str, frozenset[str]], uniform: set[str]) -> None:
    """Count a stored matrix that is another's transpose as that one (in ``prov``).

    A tied weight read as ``x @ W.T`` (a language model's head sharing the embedding) is
    stored twice by the TorchScript exporter: the embedding and its transpose, folded into
    a second initializer. torch counts it once; so does the import (the dynamo exporter
    keeps one tensor and a ``Transpose``, which provenance already follows)."""
    import hashlib

    import numpy as np
    from onnx import numpy_helper

    def key(a: Any) -> tuple:
        return (a.shape, str(a.dtype), hashlib.sha256(a.tobytes()).hexdigest())

    cands = [(name, t) for name, t in _stored_tensors(graph)
             if len(t.dims) == 2 and t.data_type in _PARAM_DTYPES and name not in uniform
             and min(t.dims) > 1]
    # only a matrix whose transposed shape another one has can be its transpose: the rest
    # are not hashed (every weight's bytes, twice, on a large model)
    shapes = Counter(tuple(t.dims) for _, t in cands)
    cands = [(n, t) for n, t in cands
             if shapes[tuple(t.dims)[::-1]] > (1 if t.dims[0] == t.dims[1] else 0)]
    seen: dict[tuple, str] = {}
    flipped: list[tuple[tuple, str]] = []
    for name, t in cands:
        try:
            arr = numpy_helper.to_array(t)
        except Exception:  # noqa: BLE001 - data the import refuses elsewhere, by name
            continue
        seen.setdefault(key(arr), name)
        flipped.append((key(np.ascontiguousarray(arr.T)), name))
    alias = {name: seen[k] for k, name in flipped if seen.get(k, name) != name}
    # the first of a pair stays itself: a tensor and its transpose, each the other's flip
    alias = {b: a for b, a in alias.items() if alias.get(a) != b or a < b}
    if not alias:
        return
    for t, src in prov.items():
        if src & alias.keys():
            prov[t] = frozenset(alias.get(x, x) for x in src)


def _param_inputs(node: Any) -> list[str]:
    """The inputs whose values a constant node's output carries as parameters: a
    (de)quantizer's data, not its scale and zero point; every input of any other op."""
    ins = [t for t in node.input if t]
    return ins[:1] if node.op_type in ("DequantizeLinear", "QuantizeLinear") else ins


# Weight types: floating point of any width and the integers quantized weights are stored in
# (4-, 8- and 16-bit, int32 biases); not int64/uint32/uint64/bool (shapes, indices, masks).
_PARAM_DTYPES = {1, 2, 3, 4, 5, 6, 10, 11, 16, *range(17, 29)}
# Recurrent ops' sequence_lens and initial state operands: parameters only when learned
# (not all zero); torch's default exporter stores a zero h0/c0 as an initializer.
_STATE_OPERANDS = {"LSTM": (4, 5, 6), "GRU": (4, 5), "RNN": (4, 5)}


# ops whose constant operands are conditions or fill values, never a module's parameters
_SELECT_OPS = frozenset({"Where", "Equal", "Greater", "GreaterOrEqual", "Less", "LessOrEqual",
                         "And", "Or", "Xor", "Not", "IsNaN", "IsInf"})


def _source_params(graph: Any) -> dict[str, int]:
    """Parameters held by each original constant: its element count if it is a weight
    type (floating point or a quantized integer) with more than one element; 0 for
    int64/bool shape data, for scalars (scales, epsilons, mask fill values) and for a
    ``Constant`` node of all ones or all zeros (what an exporter writes for an identity
    affine; trained weights are initializers, and an untrained initializer of ones still
    counts; unless the file keeps its weights in ``Constant`` nodes, as paddle2onnx does
    without folding: more of varied values there than initializers; then they count as
    initializers do), for the ones and zeros of an ``InstanceNormalization`` between two reshapes
    (the identity affine inside torch's GroupNorm export, an initializer in the dynamo
    exporter's file), and for a recurrent layer's all-zero initial state or sequence
    lengths (:data:`_STATE_OPERANDS`) and the all-zero recurrence half of its bias; nor an
    operand of a selection or comparison
    (:data:`_SELECT_OPS`: ``torch.where``'s fill of zeros) or a tensor holding infinities
    or its type's extreme values (an additive attention mask; torch's parameters are
    ordinary numbers)."""
    import numpy as np
    from onnx import numpy_helper

    out = {t.name: n if t.data_type in _PARAM_DTYPES and (n := math.prod(t.dims)) > 1 else 0
           for t in graph.initializer}
    reshaped = {t for n in graph.node if n.op_type == "Reshape" for t in n.output}
    inits = {t.name: t for t in graph.initializer}
    for node in graph.node:  # an all-zero initial state (torch's default exporter's h0/c0)
        for i in _STATE_OPERANDS.get(node.op_type, ()):
            t = inits.get(node.input[i]) if i < len(node.input) else None
            if t is not None and not np.any(numpy_helper.to_array(t)):
                out[t.name] = 0
        b = inits.get(node.input[3]) if (node.op_type in _STATE_OPERANDS
                                         and len(node.input) > 3) else None
        if b is not None and out.get(b.name):
            # B = [Wb, Rb]: a framework with one bias per gate (Keras, through tf2onnx)
            # fills Rb with zeros; those are not parameters of its layer
            arr = numpy_helper.to_array(b)
            half = arr.shape[-1] // 2 if arr.ndim else 0
            if half and not np.any(arr[..., half:]) and np.any(arr[..., :half]):
                out[b.name] = arr.size // 2
    # the weights of Constant nodes (a weight type, more than one element), decoded once
    weights = {name: numpy_helper.to_array(t) for name, t in _stored_tensors(graph)
               if name not in inits and t.data_type in _PARAM_DTYPES
               and math.prod(t.dims) > 1}
    # weights stored in Constant nodes (more weight-typed tensors of varied values there
    # than initializers): their ones and zeros are untrained weights, as an initializer's are
    in_constants = sum(bool(np.any(a != a.flat[0])) for a in weights.values()) > sum(
        t.data_type in _PARAM_DTYPES and math.prod(t.dims) > 1 for t in graph.initializer)
    for node in graph.node:
        if node.op_type == "Constant" and node.output:
            for a in node.attribute:
                if a.name == "value":
                    arr = weights.get(node.output[0])
                    n = 0 if arr is None else int(arr.size)
                    if n and not in_constants and (np.all(arr == 1) or not np.any(arr)):
                        n = 0  # an exporter's identity scale or zero shift
                    out[node.output[0]] = n
                elif a.name == "value_floats":
                    fl = list(a.floats)
                    trivial = not in_constants and (all(f == 1 for f in fl) or not any(fl))
                    out[node.output[0]] = len(fl) if len(fl) > 1 and not trivial else 0
    for node in graph.node:  # fill values and masks: not parameters of any torch module
        for t in node.input:
            if t not in inits or not out.get(t):
                continue
            if node.op_type in _SELECT_OPS:  # torch.where(c, h, zeros_like(h)): a fill
                out[t] = 0
            elif inits[t].data_type in (1, 10, 11, 16):
                arr = numpy_helper.to_array(inits[t])
                big = np.finfo(arr.dtype).max / 2  # an additive mask of -inf or the type's
                if not np.all(np.abs(arr) < big):  # lowest value (causal SDPA)
                    out[t] = 0
    reshape_inputs = {n.input[0] for n in graph.node if n.op_type == "Reshape" and n.input}
    for node in graph.node:  # the identity affine of torch's GroupNorm export
        if (node.op_type == "InstanceNormalization" and len(node.input) == 3
                and node.input[0] in reshaped and node.output
                and node.output[0] in reshape_inputs):
            scale, bias = (_values(graph, t) for t in node.input[1:3])
            if (scale is not None and bias is not None and np.all(scale == 1)
                    and not np.any(bias)):
                out[node.input[1]] = out[node.input[2]] = 0
    return out


def _stored_tensors(graph: Any) -> list[tuple[str, Any]]:
    """``(name, TensorProto)`` of the original constants: initializers, then ``Constant``
    nodes' ``value`` tensors."""
    out = [(t.name, t) for t in graph.initializer]
    out += [(n.output[0], a.t) for n in graph.node if n.op_type == "Constant" and n.output
            for a in n.attribute if a.name == "value"]
    return out


def _values(graph: Any, name: str) -> Any:
    """The values of an original constant (initializer or ``Constant`` value), or None."""
    from onnx import numpy_helper

    t = next((t for n, t in _stored_tensors(graph) if n == name), None)
    return None if t is None else numpy_helper.to_array(t)


# Operators whose first output has the type and shape of their first input, and for which
# onnx's own inference can leave the output untyped (GroupNormalization-21's function body in
# onnx 1.23: every later node then fails strict inference on a model ONNX Runtime runs).
_SAME_SHAPE_OPS = frozenset({"GroupNormalization", "LayerNormalization", "RMSNormalization",
                             "InstanceNormalization"})


def _typed_same_shape(proto: Any) -> Any | None:
    """A copy of ``proto`` where each :data:`_SAME_SHAPE_OPS` output that onnx's lenient
    inference leaves untyped is declared with its input's type and shape; None if none is."""
    from onnx import shape_inference

    try:
        lenient = shape_inference.infer_shapes(proto, strict_mode=False, data_prop=True)
    except Exception:
        return None
    known = {vi.name: vi for vi in (*lenient.graph.input, *lenient.graph.value_info,
                                    *lenient.graph.output) if vi.type.tensor_type.elem_type}
    known.update((t.name, None) for t in lenient.graph.initializer)
    added = []
    for node in lenient.graph.node:
        if (node.op_type in _SAME_SHAPE_OPS and node.input and node.output
                and node.output[0] not in known and known.get(node.input[0]) is not None):
            vi = type(known[node.input[0]])()
            vi.CopyFrom(known[node.input[0]])
            vi.name = node.output[0]
            known[vi.name] = vi
            added.append(vi)
    if not added:
        return None
    typed = type(proto)()
    typed.CopyFrom(proto)
    typed.graph.value_info.extend(added)
    return typed


def _infer(proto: Any, source: str, given: bool = False) -> Any:
    from onnx import shape_inference

    try:
        return shape_inference.infer_shapes(proto, strict_mode=True, data_prop=True)
    except Exception:
        del proto.graph.value_info[:]  # stale symbolic shapes: infer from scratch
        for vi in proto.graph.output:  # an output declared with a 0/-1 (dynamic) size
            for d in vi.type.tensor_type.shape.dim:
                if d.HasField("dim_value") and d.dim_value <= 0:
                    d.Clear()
    try:
        return shape_inference.infer_shapes(proto, strict_mode=True, data_prop=True)
    except Exception as exc:
        typed = _typed_same_shape(proto)
        if typed is not None:
            with contextlib.suppress(Exception):
                return shape_inference.infer_shapes(typed, strict_mode=True, data_prop=True)
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:200]
        check = ("check the --input-shape values (rank and sizes) against the model's inputs"
                 if given else "the model's declared shapes contradict its operators: export "
                 "it again")
        raise OnnxImportError(f"{source}: ONNX shape inference failed ({first}); {check}"
                              ) from None


# ------------------------------------------------------------------ the importer
def with_input_shapes(model: Any, input_shapes: Mapping[str, Shape] | Sequence[Shape] | None
                      ) -> Any:
    """The model (path, bytes or ModelProto; a path is read and checked) as a ModelProto
    with its dynamic inputs fixed to ``input_shapes``, checked as :func:`import_onnx` checks
    them (rank, static dimensions, every input static), without importing its layers: for
    a model the IR cannot cost but a runtime can run (control flow is not refused). A
    given ModelProto is not changed."""
    proto, source, _ = _load(model, ops=False)  # a copy
    init_names = {t.name for t in proto.graph.initializer}
    _fix_inputs(source, [vi for vi in proto.graph.input if vi.name not in init_names],
                input_shapes)
    return proto


def _initializer_inputs_typed(graph: Any, ir_version: int = 8) -> None:
    """An initializer also listed as a graph input (IR 3 files list every weight there) with
    no shape or a symbolic one takes its own dims and type, as ONNX Runtime reads it (shape
    inference took the input's missing shape, and every layer after it was unknown)."""
    inits = {t.name: t for t in graph.initializer}
    for vi in graph.input:
        t = inits.get(vi.name)
        if t is None or (vi.type.WhichOneof("value") not in (None, "tensor_type")):
            continue
        tt = vi.type.tensor_type  # an entry without a type gets the initializer's
        dims = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
        if tt.HasField("shape") and dims == list(t.dims):
            continue
        tt.elem_type = t.data_type
        tt.shape.Clear()
        for d in t.dims:
            tt.shape.dim.add().dim_value = d
    if ir_version < 4:  # IR 3 lists every initializer among the inputs; ORT reads one that is
        # not listed too, and ONNX's shape inference then needs the entry
        from onnx import helper

        listed = {vi.name for vi in graph.input}
        graph.input.extend(helper.make_tensor_value_info(t.name, t.data_type, list(t.dims))
                           for t in graph.initializer if t.name not in listed)


def import_onnx(model: Any, input_shapes: Mapping[str, Shape] | Sequence[Shape] | None = None,
                name: str | None = None) -> Network:
    """Read an ONNX model (path, bytes or ModelProto) into a :class:`Network`.

    ``input_shapes``: ``{input_name: shape}`` or shapes in input order, fixing
    dynamic dimensions. ``meta`` records ``source`` (the absolute file path, or
    None for an in-memory model), ``opset``, ``input_shapes`` (every input's final
    shape), ``folding`` (what folded constants) and ``constant_nodes`` (nodes that
    only compute constants: folded away or weight preparation, not layers).
    """
    proto, source, path = _load(model, ops=IF_LATER)
    init_names = {t.name for t in proto.graph.initializer}
    _initializer_inputs_typed(proto.graph, proto.ir_version)
    graph_inputs = [vi for vi in proto.graph.input if vi.name not in init_names]
    # did the given shapes decide anything (an open dimension, an input without a shape)?
    open_dims = any(has_open_dims(vi) for vi in graph_inputs)
    final_inputs = _fix_inputs(source, graph_inputs, input_shapes)
    _check_fold_sizes(proto, source)
    folded, how, n_folded, fold_failed = _fold(proto)
    if fold_failed:
        dead = _check_fold_failures(proto.graph, fold_failed, source)
        _set_nodes(proto.graph, [n for i, n in enumerate(proto.graph.node) if i not in dead])
        folded, how, n_folded, fold_failed = _fold(proto)
        _check_fold_failures(proto.graph, fold_failed, source)
        how += f"; {len(dead)} dead nodes dropped first (ONNX Runtime cannot run them)"
    # onnxslim does not fold everything in one pass (a TorchScript Swin at opset 17 kept
    # shape arithmetic until a second pass: its Reshape had no known shape): again while a
    # pass folds something
    for _ in range(MAX_FOLD_PASSES - 1):
        if not n_folded or not _foldable_left(folded.graph):
            break
        _check_fold_sizes(folded, source)
        again, _, n_folded, failed = _fold(folded)
        if failed:  # what ONNX Runtime cannot run stays as the first passes left it
            break
        folded = again
    _inline_constant_ifs(folded.graph, source)
    params = _source_params(proto.graph)
    prov = _provenance(proto.graph, {t.name for t in folded.graph.initializer})
    uniform = _uniform_constants(proto.graph)
    _tie_transposed(proto.graph, prov, uniform)
    inferred = _infer(folded, source, given=bool(input_shapes) and open_dims)
    layers, n_const, marks = _layers(inferred.graph, source, prov, params, uniform,
                                     given=bool(input_shapes) and open_dims,
                                     opset=_opset(proto))
    if not layers:
        raise OnnxImportError(f"{source}: every node of the graph computes a constant "
                              f"(its {len(proto.graph.node)} node(s) read no graph input): "
                              "nothing runs per inference, so there is nothing to cost")
    _check_sizes(layers, source)
    outputs = tuple(vi.name for vi in proto.graph.output)
    layers, n_ln = fuse_layer_norms(layers, outputs, _opset(proto))
    layers, n_gelu = fuse_gelus(layers, outputs, marks["gelu_constant"])
    layers, n_hswish = fuse_hard_swishes(layers, outputs, marks["swish_sigmoid"])
    layers = elide_noops(layers, marks["noop"])  # after the fusions: a layer norm's * 1, + 0
    meta = {"source": path, "opset": _opset(proto),
            "input_shapes": {k: list(v) for k, v in final_inputs.items()},
            "folding": how, "constant_nodes": n_folded + n_const}
    if n_ln or n_gelu or n_hswish:  # what the importer wrote as one layer (ORT fuses them too)
        meta["fused"] = {"LayerNormalization": n_ln, "Gelu": n_gelu, "HardSwish": n_hswish}
    return Network(
        name=name or (Path(path).stem if path else source) or "model",
        inputs=tuple(final_inputs.items()), layers=tuple(layers), outputs=outputs, meta=meta)


def _permuted(layers: Sequence[Layer], made: Mapping[str, int],
              users: Mapping[str, list[int]], x: str, transposed_after: bool) -> bool:
    """Whether ONNX Runtime's transpose optimizer pushes a Transpose into a written-out
    layer norm reading tensor ``x`` (so its LayerNormFusion no longer matches; checked on
    its optimised graph): ``x`` is a Transpose's output, or (``transposed_after``: a
    Transpose reads the norm's output) one reached from ``x`` up a chain of one-input
    element-wise layers, each (but ``x``'s) read by the next alone, which the two
    Transposes then cancel through."""
    i = made.get(x)
    if i is None:
        return False
    if layers[i].op == "Transpose":
        return True
    while transposed_after and i is not None and layers[i].op in ELEMENTWISE_OPS \
            and len(layers[i].inputs) == 1 \
            and (layers[i].outputs[0] == x or len(users.get(layers[i].outputs[0], [])) == 1):
        i = made.get(layers[i].inputs[0])
        if i is not None and layers[i].op == "Transpose":
            return True
    return False


def _readers(layers: Sequence[Layer], outputs: Sequence[str]) -> dict[str, list[int]]:
    """Tensor -> the layers reading it (-1 for a graph output)."""
    users: dict[str, list[int]] = {}
    for i, la in enumerate(layers):
        for t in la.inputs:
            users.setdefault(t, []).append(i)
    for t in outputs:
        users.setdefault(t, []).append(-1)
    return users


def _sole_reader(layers: Sequence[Layer], users: Mapping[str, list[int]], i: int | None,
                 op: str) -> int | None:
    """The one layer reading layer ``i``'s output when it is an ``op`` (None when ``i`` is
    None, when others read that output too, or when it is a graph output)."""
    if i is None or not layers[i].outputs:
        return None
    u = users.get(layers[i].outputs[0], [])
    return u[0] if len(u) == 1 and u[0] >= 0 and layers[u[0]].op == op else None


def _fused(layers: Sequence[Layer], drop: set[int], put: Mapping[int, Layer]
           ) -> tuple[list[Layer], int]:
    """``layers`` less those in ``drop``, each fused layer (``put``) where its last part was;
    and how many were fused."""
    if not put:
        return list(layers), 0
    return [put.get(i, la) for i, la in enumerate(layers) if i not in drop or i in put], len(put)


def fuse_gelus(layers: Sequence[Layer], outputs: Sequence[str] = (),
               constants: Container[str] | None = None) -> tuple[list[Layer], int]:
    """Layers with each exact GELU written out as ONNX Runtime's GeluFusion finds it
    (``Div -> Erf -> Add``, then ``x * (1 + erf)`` by 0.5, as the TorchScript exporter
    writes it, or ``(x * 0.5) * (1 + erf)``) as one ``Gelu`` layer, and how many were
    (opset 20 writes one ``Gelu``). ``x * (0.5 * (1 + erf))``, the dynamo exporter's order
    below opset 20, stays five layers: ORT 1.32 runs it unfused (checked on its optimised
    graph at opsets 13, 17 and 18). The constants' values are not in the IR: the pattern
    is the ops, their single-use chain and scalar constants, and (``constants``: the names
    of the layers whose constant is right, :func:`_is_gelu_constant`) the Div by sqrt 2,
    the Add of 1 and the Mul by 0.5 (``x / 2`` or ``3 + erf`` is not a GELU)."""
    only = functools.partial(_sole_reader, layers, _readers(layers, outputs))
    made = {t: i for i, la in enumerate(layers) for t in la.outputs}

    def scalar(i: int) -> bool:
        return len(layers[i].inputs) == 1 and tuple(layers[i].weight_shapes) in (((),), ((1,),))

    drop: set[int] = set()
    put: dict[int, Layer] = {}
    for dv, la in enumerate(layers):
        if la.op != "Div" or not scalar(dv) or dv in drop:
            continue
        x = la.inputs[0]
        erf = only(dv, "Erf")
        add = only(erf, "Add")
        m1 = only(add, "Mul") if add is not None and scalar(add) else None
        if m1 is None or scalar(m1):  # 0.5 * (1 + erf) first, then times x (the dynamo
            continue                  # exporter's order): ORT runs its five ops
        a_out = layers[add].outputs[0]
        if set(layers[m1].inputs) == {x, a_out}:  # x * (1 + erf), then by 0.5
            m2 = only(m1, "Mul")
            ok = m2 is not None and scalar(m2)
            part = [dv, erf, add, m1, m2]
        else:  # (x * 0.5) * (1 + erf)
            half = next((made.get(t) for t in layers[m1].inputs if t != a_out), None)
            m2 = m1
            ok = (half is not None and layers[half].op == "Mul" and scalar(half)
                  and tuple(layers[half].inputs) == (x,) and only(half, "Mul") == m1)
            part = [dv, erf, add, half, m1]
        if not ok or any(p in drop for p in part) or len({layers[p].dtype for p in part}) != 1:
            continue
        if constants is not None and not all(
                layers[p].name in constants for p in part if layers[p].op != "Erf"
                and not (layers[p].op == "Mul" and len(layers[p].inputs) == 2)):
            continue
        shape = tuple(la.input_shapes[0])
        drop.update(part)
        put[m2] = make_layer(la.name, "Gelu", (x,), layers[m2].outputs, (shape,), shape,
                             dtype=la.dtype)
    return _fused(layers, drop, put)


def _is_swish_sigmoid(node: Any) -> bool:
    """A HardSigmoid of hard swish's slope and offset (alpha 1/6, beta 1/2; ONNX's default
    alpha is 0.2)."""
    a = _attrs(node)
    return abs(float(a.get("alpha", 0.2)) - 1 / 6) < 1e-6 and float(a.get("beta", 0.5)) == 0.5


def fuse_hard_swishes(layers: Sequence[Layer], outputs: Sequence[str] = (),
                      sigmoids: set[str] | None = None) -> tuple[list[Layer], int]:
    """Layers with each ``x * HardSigmoid(x)`` (how torch exports ``nn.Hardswish`` below
    opset 14) as one ``HardSwish`` layer, and how many were: ONNX Runtime runs both files
    alike (a conv absorbs either), so a MobileNetV3 costs the same whichever opset wrote it
    (its opset-13 file read 16% more on the roofline). The HardSigmoid is read by the Mul
    alone, the Mul reads exactly x and it, and (when ``sigmoids`` names them) it has hard
    swish's slope: ``x * HardSigmoid(x)`` of another slope is not a hard swish."""
    only = functools.partial(_sole_reader, layers, _readers(layers, outputs))
    drop: set[int] = set()
    put: dict[int, Layer] = {}
    for h, la in enumerate(layers):
        if la.op != "HardSigmoid" or len(la.inputs) != 1 or la.weight_shapes or (
                sigmoids is not None and la.name not in sigmoids):
            continue
        x, m = la.inputs[0], only(h, "Mul")
        if m is None or m in drop or sorted(layers[m].inputs) != sorted((x, la.outputs[0])) \
                or layers[m].weight_shapes or layers[m].dtype != la.dtype \
                or tuple(layers[m].output_shape) != tuple(la.input_shapes[0]):
            continue
        shape = tuple(la.input_shapes[0])
        drop.update((h, m))
        put[m] = make_layer(la.name, "HardSwish", (x,), layers[m].outputs, (shape,), shape,
                            dtype=la.dtype)
    return _fused(layers, drop, put)


def fuse_layer_norms(layers: Sequence[Layer], outputs: Sequence[str] = (),
                     opset: int | None = None) -> tuple[list[Layer], int]:
    """Layers with each layer norm written out in element-wise ops as one
    ``LayerNormalization`` layer, and how many were.

    The TorchScript exporter below opset 17 writes ``nn.LayerNorm`` as ``ReduceMean -> Sub
    -> Pow -> ReduceMean -> Add(eps) -> Sqrt -> Div -> Mul(gamma) [-> Add(beta)]`` over the
    last axis; the dynamo exporter and opset 17 write one ``LayerNormalization``, and ONNX
    Runtime fuses the former into the latter (LayerNormFusion). One layer either way, so a
    network costs the same whichever exporter wrote it (a BERT encoder's roofline read 39%
    more from the opset-13 file). Only the whole pattern is fused: every intermediate read
    by the next op alone, the reductions over the last axis, gamma (and beta) of its size;
    and not, below opset 17 (``opset``, the model's), where ORT's transpose optimizer pushes
    a permute into the ops (:func:`_permuted`: a norm reading a Transpose, or ``x.permute ->
    layer norm -> permute back`` with element-wise ops between, ConvNeXt's channel norm),
    which it then runs unfused; from opset 17, where LayerNormalization is an ONNX op, ORT
    fuses those too (checked on its optimised graph at opsets 13, 17 and 18).
    """
    users = _readers(layers, outputs)
    only = functools.partial(_sole_reader, layers, users)
    made = {t: i for i, la in enumerate(layers) for t in la.outputs}
    drop: set[int] = set()
    put: dict[int, Layer] = {}
    for r1, la in enumerate(layers):
        if la.op != "ReduceMean" or len(la.input_shapes) != 1 or r1 in drop:
            continue
        shape = tuple(la.input_shapes[0])
        if len(shape) < 2 or tuple(la.output_shape) != shape[:-1] + (1,):
            continue
        x = la.inputs[0]
        sub = only(r1, "Sub")
        if sub is None or layers[sub].inputs != (x, la.outputs[0]):
            continue
        readers = users.get(layers[sub].outputs[0], [])
        pw = next((j for j in readers if j >= 0 and layers[j].op == "Pow"), None)
        dv = next((j for j in readers if j >= 0 and layers[j].op == "Div"), None)
        if len(readers) != 2 or pw is None or dv is None:
            continue
        r2 = only(pw, "ReduceMean")
        eps = only(r2, "Add")
        sq = only(eps, "Sqrt")
        if sq is None or only(sq, "Div") != dv or layers[dv].inputs != (
                layers[sub].outputs[0], layers[sq].outputs[0]):
            continue
        if tuple(layers[r2].output_shape) != shape[:-1] + (1,) or \
                tuple(layers[eps].weight_shapes) not in (((),), ((1,),)):
            continue
        mul = only(dv, "Mul")
        if mul is None or tuple(layers[mul].weight_shapes) != ((shape[-1],),):
            continue
        add = only(mul, "Add")
        if add is not None and tuple(layers[add].weight_shapes) != ((shape[-1],),):
            add = None
        affine = [layers[mul]] + ([layers[add]] if add is not None else [])
        last = add if add is not None else mul
        part = [r1, sub, pw, r2, eps, sq, dv, mul] + ([add] if add is not None else [])
        if any(p in drop for p in part) or len({layers[p].dtype for p in part}) != 1:
            continue
        if opset is not None and opset < 17 \
                and _permuted(layers, made, users, x, only(last, "Transpose") is not None):
            continue  # ORT pushes a permute into the ops: LayerNormFusion no longer matches
        drop.update(part)
        put[last] = make_layer(
            la.name, "LayerNormalization", (x,), layers[last].outputs, (shape,), shape,
            tuple(a.weight_shapes[0] for a in affine), dtype=la.dtype,
            bytes_weights=sum(a.bytes_weights for a in affine),
            weight_params=tuple(a.params for a in affine))
    return _fused(layers, drop, put)


# No runtime here runs a tensor this large (2**36 elements: 256 GiB of float32); a shape
# over it is a wrong attribute, a wrong --input-shape or a corrupt file, and costing it
# gives absurd figures (and analytical mappers that loop over its extent never end).
MAX_TENSOR_ELEMENTS = 2 ** 36


_SAME_ELEMENTS = frozenset({"Reshape", "Flatten", "Squeeze", "Unsqueeze"})


def _check_sizes(layers: Sequence[Layer], source: str) -> None:
    """Refuse a layer with a tensor over :data:`MAX_TENSOR_ELEMENTS`, or a reshape whose
    output holds another number of values than its input (a target shape fixed in the file
    for another input size: ONNX Runtime refuses to run it), naming it."""
    for layer in layers:
        if layer.op in _SAME_ELEMENTS and layer.input_shapes \
                and numel(layer.input_shapes[0]) != numel(layer.output_shape):
            dims = ["x".join(map(str, s)) for s in (layer.input_shapes[0], layer.output_shape)]
            raise OnnxImportError(
                f"{source}: node {layer.name!r} ({layer.op}) makes {dims[1][:60]} "
                f"({numel(layer.output_shape):,} values) of an input of {dims[0][:60]} "
                f"({numel(layer.input_shapes[0]):,} values): a shape fixed in the file for "
                "another input size (exported at another size?), which ONNX Runtime refuses "
                "to run; give the input shape the model was exported with, or export it with "
                "that dimension dynamic")
        for what, shape in (*(("input", s) for s in layer.input_shapes),
                            ("output", layer.output_shape),
                            *(("weight", s) for s in layer.weight_shapes)):
            n = numel(shape)
            if n > MAX_TENSOR_ELEMENTS:
                dims = "x".join(map(str, shape))
                raise OnnxImportError(
                    f"{source}: node {layer.name!r} ({layer.op}) has an {what} of shape "
                    f"{dims[:120]} ({n:.3g} elements, over the {MAX_TENSOR_ELEMENTS:.3g} "
                    "that fit in 256 GiB of float32): check its attributes (pads, "
                    "strides, repeats, shapes) and --input-shape")


def _static(dims: Any) -> bool:
    """Are these dimensions (:func:`_dims`) all known sizes?"""
    return dims is not None and all(isinstance(d, int) and d >= 0 for d in dims)


def _constants(graph: Any) -> dict[str, _Const]:
    consts: dict[str, _Const] = {}
    for t in graph.initializer:
        consts[t.name] = _Const(tuple(t.dims), _ITEMSIZE.get(_DTYPES.get(t.data_type, ""), 4))
    for node in graph.node:
        if node.op_type != "Constant" or not node.output:
            continue
        for a in node.attribute:
            if a.name == "value":
                consts[node.output[0]] = _Const(tuple(a.t.dims),
                                                _ITEMSIZE.get(_DTYPES.get(a.t.data_type, ""), 4))
            elif a.name in ("value_float", "value_int"):
                consts[node.output[0]] = _Const((), 4 if a.name == "value_float" else 8)
            elif a.name in ("value_floats", "value_ints"):
                consts[node.output[0]] = _Const((len(a.floats) or len(a.ints),), 4)
    return consts


@functools.lru_cache(maxsize=1024)
def _type_constraints(op: str, opset: int, domain: str) -> tuple[list, dict] | None:
    """An op's formal inputs and its type constraints at ``opset`` (None: no schema)."""
    from onnx import defs

    try:
        schema = defs.get_schema(op, opset, domain)
    except Exception:  # noqa: BLE001 - no schema: nothing to check against
        return None
    formal = list(schema.inputs)
    if not formal:
        return None
    return formal, {c.type_param_str: frozenset(c.allowed_type_strs)
                    for c in schema.type_constraints}


def _check_types(node: Any, node_name: str, elem_of: Callable[[str], int], opset: int,
                 source: str) -> None:
    """Refuse a node whose inputs break its op's type constraints, as ONNX Runtime refuses the
    model (a float Conv with a float64, int8 or complex weight): two inputs that must share
    a type and do not, or an input of a type the op does not take. Types not known, and ops
    whose schema is not found at ``opset``, are not checked."""
    from onnx import TensorProto

    found = _type_constraints(node.op_type, opset, node.domain or "")
    if found is None:
        return
    formal, allowed = found
    seen: dict[str, tuple[str, int]] = {}
    for k, t in enumerate(node.input):
        if not t:
            continue
        f = formal[min(k, len(formal) - 1)]
        if k >= len(formal) and not f.is_homogeneous:
            continue
        et = elem_of(t)
        if not et:
            continue
        name = TensorProto.DataType.Name(et).lower()
        if f.type_str in allowed and f"tensor({name})" not in allowed[f.type_str]:
            raise OnnxImportError(
                f"{source}: node {node_name!r} ({node.op_type}): input {t!r} is of type {name}, "
                f"which {node.op_type} does not take there (ONNX Runtime refuses such a model; "
                "export it again with one floating-point type)")
        first = seen.setdefault(f.type_str, (t, et))
        if f.type_str in allowed and first[1] != et:
            other = TensorProto.DataType.Name(first[1]).lower()
            raise OnnxImportError(
                f"{source}: node {node_name!r} ({node.op_type}): inputs {first[0]!r} ({other}) "
                f"and {t!r} ({name}) must be of one type (ONNX Runtime refuses such a model; "
                "export it again with one floating-point type)")


def _layers(graph: Any, source: str, prov: dict[str, frozenset[str]],
            params: Mapping[str, int], per_layer: set[str] = frozenset(), given: bool = False,
            opset: int = 0) -> tuple[list[Layer], int, dict[str, set[str]]]:
    """The graph's layers, how many nodes were constant (weight preparation), and names of
    layers the IR cannot tell apart by itself: ``noop`` those that do nothing
    (:func:`_is_noop`), ``swish_sigmoid`` the HardSigmoids of hard swish's slope
    (:func:`_is_swish_sigmoid`).

    ``prov`` maps constant tensors to the original constants they come from (updated
    here for the weight-preparation nodes met); ``params`` is what each of those holds;
    ``per_layer``: those that are a parameter of every layer that reads them
    (:func:`_uniform_constants`), where any other counts once, in the first layer.
    ``given``: the dynamic inputs were fixed by the caller (what an unknown shape then
    suggests).
    """
    info: dict[str, tuple[list, int]] = {}
    for vi in list(graph.value_info) + list(graph.input) + list(graph.output):
        dims = _dims(vi)
        if vi.name not in info or dims is not None:  # a shapeless output keeps its shape
            info[vi.name] = (dims, vi.type.tensor_type.elem_type)
    consts = _constants(graph)
    init_types = {t.name: t.data_type for t in graph.initializer}

    def elem_of(t: str) -> int:
        return info[t][1] if t in info and info[t][1] else init_types.get(t, 0)

    scalars = _scalar_constants(graph)
    neutral = {name: v for name, v in scalars.items() if v in (0.0, 1.0)}  # make no-ops
    graph_inputs = {vi.name for vi in graph.input}
    marks: dict[str, set[str]] = {"noop": set(), "swish_sigmoid": set(), "gelu_constant": set()}

    def shape_of(tensor: str, node_name: str, op: str) -> Shape:
        dims = info.get(tensor, (None, 0))[0]
        if not _static(dims):
            raise OnnxImportError(
                f"{source}: node {node_name!r} ({op}): the shape of tensor {tensor!r} is not "
                "known after folding and shape inference, with every model input fixed: "
                + ("are the --input-shape sizes within what the model allows (e.g. a "
                   "sequence no longer than its position table)?" if given else
                   "it depends on values computed at run time, which the IR cannot cost"))
        return tuple(int(d) for d in dims)

    layers: list[Layer] = []
    n_const = 0
    counted: set[str] = set()
    this_layer: set[str] = set()

    def params_of(tensor: str) -> int:
        """Parameters of a weight not yet counted (a tied weight counts once, in the first
        layer that reads it; a ``per_layer`` one once in each layer)."""
        src = prov.get(tensor, frozenset({tensor}))
        new = (src - per_layer - counted) | ((src & per_layer) - this_layer)
        counted.update(new)
        this_layer.update(new)
        return sum(params.get(s, 0) for s in new)

    for i, node in enumerate(graph.node):
        if node.op_type == "Constant":
            continue
        this_layer.clear()
        node_name = _node_name(node, i)
        ins = [t for t in node.input if t]
        if (node.op_type in ("Shape", "Size") and node.domain in _DEFAULT_DOMAINS and ins
                and _static(info.get(ins[0], (None, 0))[0])):
            # reads no values: a constant once its input's shape is known (ONNX Runtime
            # folds it; what is left of it is a branch nobody reads, which it then drops)
            n_const += 1
            for out in (t for t in node.output if t):
                dims = info.get(out, (None, 0))[0]  # a Shape's start/end may cut it
                consts[out] = _Const(tuple(dims) if _static(dims) else
                                     (len(info[ins[0]][0]),) if node.op_type == "Shape"
                                     else (), 8)
                prov[out] = frozenset()
            continue
        if ins and all(t in consts for t in ins):  # weight preparation (Identity, Cast, ...)
            n_const += 1
            keep = node.op_type == "DequantizeLinear"  # runtimes fuse it: int8 stays int8
            for out in (t for t in node.output if t):
                elem = _ITEMSIZE.get(_DTYPES.get(info.get(out, ([], 1))[1], ""), 4)
                consts[out] = _Const(shape_of(out, node_name, node.op_type),
                                     consts[ins[0]].itemsize if keep else elem)
                prov[out] = frozenset().union(*(prov.get(t, frozenset({t}))
                                                for t in _param_inputs(node)))
            continue
        if node.domain not in _DEFAULT_DOMAINS or node.op_type not in SUPPORTED_OPS:
            raise UnsupportedOperator(node_name, node.op_type, source, node.domain)
        if not any(node.output):
            raise OnnxImportError(f"{source}: node {node_name!r} ({node.op_type}) names no "
                                  "output: an ONNX node must name at least one (an empty "
                                  "name marks an optional output left out)")
        try:
            if opset:
                _check_types(node, node_name, elem_of, opset, source)
            layers.append(_layer(node, node_name, consts, info, shape_of, params_of))
            if _is_noop(node, layers[-1], neutral, graph_inputs):
                marks["noop"].add(node_name)
            elif node.op_type == "HardSigmoid" and _is_swish_sigmoid(node):
                marks["swish_sigmoid"].add(node_name)
            if _is_gelu_constant(node, scalars):
                marks["gelu_constant"].add(node_name)
        except OnnxImportError as exc:
            if source and not str(exc).startswith(source):
                raise OnnxImportError(f"{source}: {exc}") from None  # name the file
            raise
    return layers, n_const, marks


# an element-wise op by this constant leaves its other operand as it is (the constant second
# for Sub and Div): ONNX Runtime's NoopElimination removes it, when it broadcasts nothing
_NEUTRAL = {"Add": (0.0, (0, 1)), "Sub": (0.0, (1,)), "Mul": (1.0, (0, 1)), "Div": (1.0, (1,))}


def _scalar_constants(graph: Any) -> dict[str, float]:
    """One-element constants (initializers, ``Constant`` values, folded tensors) of a float
    type: name -> value (those of 0 or 1 make no-ops, :func:`_is_noop`; others a GELU's
    parts, :func:`_is_gelu_constant`)."""
    from onnx import TensorProto

    floats = (TensorProto.FLOAT, TensorProto.FLOAT16, TensorProto.DOUBLE, TensorProto.BFLOAT16)
    return {name: float(v) for name, v in _equal_valued(graph, floats, max_size=1).items()}


# the constant of each op of an exact GELU written out, as ORT's GeluFusion checks it
_GELU_CONSTANTS = {"Div": math.sqrt(2.0), "Add": 1.0, "Mul": 0.5}


def _is_gelu_constant(node: Any, scalars: Mapping[str, float]) -> bool:
    """Whether ``node`` is a Div by sqrt 2, an Add of 1 or a Mul by 0.5 (one-element
    constants): the constant parts of an exact GELU (:func:`fuse_gelus`)."""
    want = _GELU_CONSTANTS.get(node.op_type)
    return want is not None and len(node.input) == 2 and any(
        t in scalars and math.isclose(scalars[t], want, rel_tol=1e-3)
        for t in node.input[1 if node.op_type == "Div" else 0:])


def _is_noop(node: Any, layer: Layer, neutral: Mapping[str, float],
             graph_inputs: Container[str]) -> bool:
    """x + 0, x - 0, x * 1, x / 1 by a one-element constant (``neutral``: those of
    :func:`_scalar_constants` holding 0 or 1) that broadcasts nothing, on a tensor that is not a graph
    input: what ORT 1.32's NoopElimination removes (checked on its optimised graph: a
    per-channel constant of zeros or ones stays, as does an op reading a graph input
    directly, a Keras model's input normalisation)."""
    if layer.op not in _NEUTRAL or len(layer.inputs) != 1 or len(node.input) != 2:
        return False
    value, positions = _NEUTRAL[layer.op]
    k = next((i for i, t in enumerate(node.input) if t in neutral), None)
    return (k in positions and neutral[node.input[k]] == value and len(layer.input_shapes) == 1
            and layer.inputs[0] not in graph_inputs
            and tuple(layer.input_shapes[0]) == tuple(layer.output_shape)
            and not layer.out_dtype)


def elide_noops(layers: Sequence[Layer], noops: set[str]) -> list[Layer]:
    """The layers with those named in ``noops`` (:func:`_is_noop`) as ``Identity`` layers
    (their constant still counts as parameters), after the fusions that read such a
    layer as part of a pattern (a layer norm's ``* gamma`` of ones, ``+ beta`` of zeros)."""
    return [la._replace(op="Identity", elem_ops=0) if la.name in noops else la for la in layers]


def _layer(node: Any, node_name: str, consts: Mapping[str, _Const],
           info: Mapping[str, tuple[list, int]],
           shape_of: Callable[[str, str, str], Shape],
           params_of: Callable[[str], int]) -> Layer:
    op = node.op_type
    positions = _DATA_INPUTS.get(op, tuple(range(len(node.input))))
    data = [node.input[p] for p in positions if p < len(node.input) and node.input[p]]
    acts = [t for t in data if t not in consts]
    wts = [t for t in data if t in consts]
    in_shapes = [shape_of(t, node_name, op) for t in acts]
    outs = [t for t in node.output if t]
    out_shape = shape_of(outs[0], node_name, op)

    def dtype_of(t: str) -> str:
        return _DTYPES.get(info.get(t, ([], 1))[1], "float32")

    dtype = dtype_of(acts[0]) if acts else dtype_of(outs[0])
    out_dtype = dtype_of(outs[0])
    kw: dict[str, Any] = {}
    a = _attrs(node)
    if op in MAC_OPS:
        kw["operand_shapes"] = [consts[t].shape if t in consts else shape_of(t, node_name, op)
                                for t in data]
    if op in CONV_OPS:
        kw.update(_conv_attrs(node, node_name, a, kw["operand_shapes"], in_shapes))
    elif op in ("MaxPool", "AveragePool", "LpPool"):
        kernel = tuple(a["kernel_shape"])
        stride = tuple(a.get("strides", (1,) * len(kernel)))
        dilation = tuple(a.get("dilations", (1,) * len(kernel)))
        kw = dict(kernel=kernel, stride=stride,
                  pads=_pads(a, in_shapes[0][2:], kernel, stride, dilation))
        if any(d != 1 for d in dilation):  # kept only where it changes the kernel
            kw["dilation"] = dilation
    elif op == "Einsum":
        kw["equation"] = a["equation"].decode() if isinstance(a["equation"], bytes) else str(
            a["equation"])
    elif op == "LRN":  # its window, as pooling keeps one: the cost grows with it
        kw["kernel"] = (int(a.get("size", 1)),)
    elif op in RESIZE_OPS and in_shapes:
        kw["kernel"] = resize_taps(a.get("mode", b"nearest"), in_shapes[0], out_shape)
    extra_out = 0  # the other outputs' bytes (Split's parts, MaxPool's indices, LSTM's states)
    for t in outs[1:]:
        try:
            extra_out += math.prod(shape_of(t, node_name, op)) * DTYPE_BYTES.get(dtype_of(t), 4)
        except OnnxImportError:  # an optional output shape inference leaves unknown
            pass
    return make_layer(node_name, op, acts, outs, in_shapes, out_shape,
                      [consts[t].shape for t in wts], dtype=dtype, extra_bytes_out=extra_out,
                      out_dtype=out_dtype if out_dtype != dtype else None,
                      bytes_weights=sum(math.ceil(math.prod(consts[t].shape) * consts[t].itemsize)
                                        for t in wts),
                      weight_params=[0 if _is_index(node, t) else params_of(t) for t in wts],
                      **kw)


def _is_index(node: Any, tensor: str) -> bool:
    """Is ``tensor`` the indices operand of a gather (positions, not parameters)?"""
    return (node.op_type in ("Gather", "GatherElements", "GatherND") and len(node.input) > 1
            and node.input[1] == tensor and node.input[0] != tensor)


def resize_taps(mode: Any, in_shape: Sequence[int], out_shape: Sequence[int]) -> tuple[int, ...]:
    """A Resize/Upsample's interpolation window, as its ``kernel``: the taps of ``mode`` on
    each axis whose size changes (``(2, 2)`` for a bilinear 2-D upsample, ``()`` when no
    axis changes). An unknown mode counts as nearest (ONNX Runtime refuses it when run)."""
    text = (mode.decode() if isinstance(mode, bytes) else str(mode)).lower()
    taps = RESIZE_TAPS.get("linear" if text == "bilinear" else text, 1)
    changed = sum(1 for i, o in zip(in_shape, out_shape, strict=False) if i != o)
    return (taps,) * changed if taps > 1 else ()


def _conv_attrs(node: Any, node_name: str, a: Mapping[str, Any],
                operands: Sequence[Shape], in_shapes: Sequence[Shape]) -> dict[str, Any]:
    widx = 1  # the weight is the second data operand (QLinearConv's input 3)
    if len(operands) <= widx or len(operands[widx]) < 3 or not in_shapes:
        raise OnnxImportError(f"node {node_name!r} ({node.op_type}) has no weight shape; "
                              "check the model")
    w = operands[widx]
    nd = len(w) - 2
    kernel = tuple(a.get("kernel_shape", w[2:]))
    if kernel != tuple(w[2:]):  # ONNX Runtime refuses it; its MACs would be the attribute's
        raise OnnxImportError(f"node {node_name!r} ({node.op_type}): kernel_shape "
                              f"{'x'.join(map(str, kernel))} is not its weight's "
                              f"{'x'.join(map(str, w[2:]))}; export the model again")
    stride = tuple(a.get("strides", (1,) * nd))
    dilation = tuple(a.get("dilations", (1,) * nd))
    groups = int(a.get("group", 1))
    cin = in_shapes[0][1] if len(in_shapes[0]) > 1 else 0
    transposed = node.op_type == "ConvTranspose"
    w_in = w[0] if transposed else w[1] * groups  # weight (C_in, C_out/g, ...) if transposed
    if groups < 1 or (cin and (cin % groups or w_in != cin)):
        raise OnnxImportError(
            f"node {node_name!r} ({node.op_type}): group={groups} with {cin} input channels "
            f"and a weight of shape {'x'.join(map(str, w))} do not fit together (ONNX Runtime "
            "refuses to run it); export the model again")
    return dict(kernel=kernel, stride=stride, dilation=dilation, groups=groups,
                pads=_pads(a, in_shapes[0][2:], kernel, stride, dilation))


def _attrs(node: Any) -> dict[str, Any]:
    from onnx import helper

    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


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
