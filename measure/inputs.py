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
    """Graph inputs that are not initializers: (name, shape, dtype); unknown dims become 1."""
    inits = {t.name for t in proto.graph.initializer}
    specs = []
    for vi in proto.graph.input:
        if vi.name in inits:
            continue
        tt = vi.type.tensor_type
        shape = tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else 1
                      for d in tt.shape.dim)
        dtype = np.dtype(_ONNX_DTYPES.get(tt.elem_type, np.float32))
        specs.append((vi.name, shape, dtype))
    return specs


def random_inputs(specs, seed: int = 0) -> dict[str, np.ndarray]:
    """Fixed random inputs (same ``seed`` -> same arrays): N(0, 1) floats, small integers."""
    rng = np.random.default_rng(seed)
    out = {}
    for name, shape, dtype in specs:
        if dtype.kind == "f":
            arr = rng.standard_normal(shape).astype(dtype)
        elif dtype.kind == "b":
            arr = rng.random(shape) < 0.5
        else:
            arr = rng.integers(0, 8, size=shape).astype(dtype)
        out[name] = arr
    return out
