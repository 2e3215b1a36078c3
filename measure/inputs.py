"""Models as the runners take them (ONNX proto, bytes or path) and their fixed random inputs."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import onnx

# ONNX TensorProto element type -> numpy dtype (the ones a model input can sensibly have).
_ONNX_DTYPES = {1: np.float32, 2: np.uint8, 3: np.int8, 5: np.int16, 6: np.int32, 7: np.int64,
                9: np.bool_, 10: np.float16, 11: np.float64, 12: np.uint32, 13: np.uint64}


def as_proto(model) -> onnx.ModelProto:
    """ModelProto, serialized bytes or a path -> ModelProto (raises on a malformed model)."""
    import onnx

    if isinstance(model, onnx.ModelProto):
        return model
    if isinstance(model, (bytes, bytearray, memoryview)):
        return onnx.load_from_string(bytes(model))
    if isinstance(model, (str, Path)):
        path = Path(model)
        if not path.is_file():
            raise FileNotFoundError(f"{path}: no such ONNX file")
        return onnx.load(str(path))
    raise TypeError(f"expected an onnx.ModelProto, bytes or a path, not {type(model).__name__}")


def as_bytes(model) -> bytes:
    """The serialized model (what a worker process or ORT takes)."""
    if isinstance(model, (bytes, bytearray, memoryview)):
        return bytes(model)
    return as_proto(model).SerializeToString()


def input_specs(proto: onnx.ModelProto) -> list[tuple[str, tuple[int, ...], np.dtype]]:
    """Graph inputs that are not initializers: (name, shape, dtype); unknown dims become 1 (a
    declared 0 stays: an empty tensor, such as a zero-length slice's kernel reads)."""
    inits = {t.name for t in proto.graph.initializer}
    specs = []
    for vi in proto.graph.input:
        if vi.name in inits:
            continue
        tt = vi.type.tensor_type
        shape = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value >= 0 else 1
                      for d in tt.shape.dim)
        dtype = np.dtype(_ONNX_DTYPES.get(tt.elem_type, np.float32))
        specs.append((vi.name, shape, dtype))
    return specs


# Integer inputs are drawn from [0, INT_HIGH) unless an index bound says less.
INT_HIGH = 8
# Ops an index passes through unchanged in value on its way to a gather (index_bounds).
_INDEX_PASSTHROUGH = frozenset({"Cast", "Reshape", "Squeeze", "Unsqueeze", "Flatten",
                                "Identity", "Expand", "Transpose", "Tile"})


def index_bounds(proto: onnx.ModelProto) -> dict[str, int]:
    """Graph inputs used as indices, and how many rows they may address: ``{name: n}``.

    An integer input that reaches (through casts and reshapes) the indices of a ``Gather``
    or ``GatherElements`` whose data has a known size along the axis, or the indices of a
    ``OneHot`` with a constant depth, must stay below that size: an embedding table of 2
    rows (BERT's token types) takes indices 0 and 1 only. Inputs not found here keep
    :data:`INT_HIGH`.
    """
    import onnx
    from onnx import numpy_helper

    g = proto.graph
    dims: dict[str, tuple[int, ...]] = {t.name: tuple(t.dims) for t in g.initializer}
    values = {t.name: t for t in g.initializer}
    for vi in list(g.value_info) + list(g.input):
        d = vi.type.tensor_type.shape.dim
        if vi.name not in dims and d and all(x.HasField("dim_value") for x in d):
            dims[vi.name] = tuple(x.dim_value for x in d)
    consumers: dict[str, list] = {}
    for node in g.node:
        if node.op_type == "Constant":
            for a in node.attribute:
                if a.name == "value":
                    values[node.output[0]] = a.t
                    dims[node.output[0]] = tuple(a.t.dims)
        for pos, name in enumerate(node.input):
            consumers.setdefault(name, []).append((node, pos))

    def attr(node, key, default):
        return next((onnx.helper.get_attribute_value(a) for a in node.attribute
                     if a.name == key), default)

    def bound_of(node, pos) -> int | None:
        if node.op_type in ("Gather", "GatherElements") and pos == 1:
            shape = dims.get(node.input[0])
            if shape:
                axis = int(attr(node, "axis", 0))
                if -len(shape) <= axis < len(shape) and shape[axis] > 0:
                    return int(shape[axis])
        if node.op_type == "OneHot" and pos == 0 and len(node.input) > 1:
            t = values.get(node.input[1])
            if t is not None:
                depth = numpy_helper.to_array(t).ravel()
                if depth.size == 1 and depth[0] > 0:
                    return int(depth[0])
        return None

    out: dict[str, int] = {}
    for vi in g.input:
        if vi.name in values:
            continue
        seen, todo, found = set(), [vi.name], []
        while todo:
            name = todo.pop()
            if name in seen:
                continue
            seen.add(name)
            for node, pos in consumers.get(name, []):
                b = bound_of(node, pos)
                if b is not None:
                    found.append(b)
                elif node.op_type in _INDEX_PASSTHROUGH and pos == 0:
                    todo.extend(node.output[:1])
        if found:
            out[vi.name] = min(found)
    return out


def structured_mask(shape) -> np.ndarray:
    """A boolean tensor as masks are: along the last axis, the first half True and the
    rest False. A random one (each element a coin toss) made ONNX Runtime's Where 3-6x
    slower than on an attention mask or an all-false IsNaN test, its branches
    mispredicted."""
    shape = tuple(shape)
    if not shape:
        return np.array(True)
    return np.broadcast_to(np.arange(shape[-1]) < (shape[-1] + 1) // 2, shape).copy()


def random_inputs(specs, seed: int = 0, bounds: dict[str, int] | None = None
                  ) -> dict[str, np.ndarray]:
    """Fixed random inputs (same ``seed`` -> same arrays): N(0, 1) floats, small integers
    in ``[0, INT_HIGH)``, or below an input's ``bounds`` entry (:func:`index_bounds`);
    booleans a :func:`structured_mask`."""
    rng = np.random.default_rng(seed)
    out = {}
    bounds = bounds or {}
    for name, shape, dtype in specs:
        if dtype.kind == "f":
            arr = rng.standard_normal(shape).astype(dtype)
        elif dtype.kind == "b":
            arr = structured_mask(shape)
        else:
            high = max(1, min(INT_HIGH, bounds.get(name, INT_HIGH)))
            arr = rng.integers(0, high, size=shape).astype(dtype)
        out[name] = arr
    return out
