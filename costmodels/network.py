"""Network IR: an ordered DAG of layers with shapes and costs.

Every backend consumes this IR. Two front-ends produce it: the ONNX importer
(:mod:`costmodels.onnx_import`) and the NAS-Bench-201 builder
(:mod:`costmodels.spaces.nb201`). Both compute costs with :func:`make_layer`, so
the same operator always costs the same, whoever built it.

Units: ``macs`` are multiply-accumulates; ``elem_ops`` are the other arithmetic
operations (one per output element for element-wise ops, kernel area per output
element for pooling); every ``bytes_*`` figure is in bytes at the layer's dtype.
Shapes are tuples of ints in the ONNX layout (NCHW for images).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, NamedTuple

Shape = tuple[int, ...]

DTYPE_BYTES: dict[str, int] = {
    "float32": 4, "float16": 2, "bfloat16": 2, "float64": 8,
    "int8": 1, "uint8": 1, "int16": 2, "int32": 4, "int64": 8, "bool": 1,
}

# Ops whose MACs are counted (the NAS-Bench-201 / FLOPs-counter convention).
MAC_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})
POOL_OPS = frozenset({"MaxPool", "AveragePool"})
GLOBAL_POOL_OPS = frozenset({"GlobalAveragePool", "GlobalMaxPool", "ReduceMean", "ReduceMax",
                             "ReduceMin", "ReduceSum", "ReduceProd", "ReduceL2", "ArgMax",
                             "ArgMin"})
# Ops that only move or relabel data: no arithmetic (their bytes still count).
DATA_MOVEMENT_OPS = frozenset({
    "Identity", "Dropout", "Reshape", "Flatten", "Squeeze", "Unsqueeze", "Transpose", "Concat",
    "Split", "Slice", "Gather", "Pad", "Expand", "Tile", "Cast", "Shape", "DepthToSpace",
    "SpaceToDepth", "ConstantOfShape", "Range"})


class Layer(NamedTuple):
    """One operator of the network (an ONNX node), with its costs.

    ``inputs`` are the activation tensors it reads (weights excluded);
    ``weight_shapes`` are the shapes of its constant inputs (initializers).
    ``kernel``/``stride``/``pads``/``dilation`` are empty for ops without them.
    """

    name: str
    op: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    input_shapes: tuple[Shape, ...]
    output_shape: Shape
    weight_shapes: tuple[Shape, ...] = ()
    kernel: Shape = ()
    stride: Shape = ()
    pads: Shape = ()
    dilation: Shape = ()
    groups: int = 1
    dtype: str = "float32"
    macs: int = 0
    elem_ops: int = 0
    params: int = 0
    bytes_in: int = 0
    bytes_out: int = 0
    bytes_weights: int = 0

    @property
    def bytes_total(self) -> int:
        """Bytes moved by the layer if nothing stays on chip: inputs + outputs + weights."""
        return self.bytes_in + self.bytes_out + self.bytes_weights

    @property
    def in_channels(self) -> int:
        return self.input_shapes[0][1] if self.input_shapes and len(self.input_shapes[0]) > 1 else 0

    @property
    def out_channels(self) -> int:
        return self.output_shape[1] if len(self.output_shape) > 1 else 0

    @property
    def is_depthwise(self) -> bool:
        return self.op == "Conv" and self.groups > 1 and self.groups == self.in_channels


def numel(shape: Sequence[int]) -> int:
    return math.prod(shape) if shape else 1


def make_layer(
    name: str,
    op: str,
    inputs: Sequence[str],
    outputs: Sequence[str],
    input_shapes: Sequence[Shape],
    output_shape: Shape,
    weight_shapes: Sequence[Shape] = (),
    *,
    kernel: Shape = (),
    stride: Shape = (),
    pads: Shape = (),
    dilation: Shape = (),
    groups: int = 1,
    dtype: str = "float32",
) -> Layer:
    """Build a :class:`Layer` and compute its MACs, element ops, params and bytes.

    The one place where operator costs are defined; both front-ends call it.
    """
    itemsize = DTYPE_BYTES.get(dtype, 4)
    out_elems = numel(output_shape)
    macs = 0
    elem_ops = 0
    if op == "Conv":
        cin = input_shapes[0][1]
        macs = out_elems * (cin // groups) * numel(kernel)
    elif op == "ConvTranspose":
        cout = output_shape[1]
        macs = numel(input_shapes[0]) * (cout // groups) * numel(kernel)
    elif op in ("Gemm", "MatMul"):
        a = input_shapes[0] if input_shapes else weight_shapes[0]
        # MatMul: A is [..., M, K]. Gemm: A is (M, K) or, transposed, (K, M).
        k = a[-1] if op == "MatMul" else numel(a) // max(output_shape[0], 1)
        macs = out_elems * k
    elif op in POOL_OPS:
        elem_ops = out_elems * numel(kernel)
    elif op in GLOBAL_POOL_OPS:
        elem_ops = numel(input_shapes[0]) if input_shapes else out_elems
    elif op == "BatchNormalization":
        elem_ops = 2 * out_elems
    elif op in DATA_MOVEMENT_OPS:
        elem_ops = 0
    else:
        elem_ops = out_elems
    if op == "BatchNormalization":
        # Learnable parameters are scale and bias; the running statistics are buffers.
        params = sum(numel(s) for s in weight_shapes[:2])
    else:
        params = sum(numel(s) for s in weight_shapes)
    return Layer(
        name=name,
        op=op,
        inputs=tuple(inputs),
        outputs=tuple(outputs),
        input_shapes=tuple(tuple(s) for s in input_shapes),
        output_shape=tuple(output_shape),
        weight_shapes=tuple(tuple(s) for s in weight_shapes),
        kernel=tuple(kernel),
        stride=tuple(stride),
        pads=tuple(pads),
        dilation=tuple(dilation),
        groups=groups,
        dtype=dtype,
        macs=int(macs),
        elem_ops=int(elem_ops),
        params=int(params),
        bytes_in=sum(numel(s) for s in input_shapes) * itemsize,
        bytes_out=out_elems * itemsize,
        bytes_weights=sum(numel(s) for s in weight_shapes) * itemsize,
    )


@dataclass(frozen=True, eq=False)
class Network:
    """A network: graph inputs, layers in topological order, graph outputs.

    ``meta`` carries where the network came from (``space``, ``arch_str``,
    ``arch_index``, ``dataset``, ``source`` file, cell connectivity, ...).
    Equality and :attr:`fingerprint` are structural: two networks with the same
    operators, shapes, attributes and wiring are equal whatever their names.
    """

    name: str
    inputs: tuple[tuple[str, Shape], ...]
    layers: tuple[Layer, ...]
    outputs: tuple[str, ...]
    meta: Mapping[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.layers)

    def __iter__(self) -> Iterator[Layer]:
        return iter(self.layers)

    @cached_property
    def macs(self) -> int:
        return sum(layer.macs for layer in self.layers)

    @cached_property
    def params(self) -> int:
        return sum(layer.params for layer in self.layers)

    @cached_property
    def elem_ops(self) -> int:
        return sum(layer.elem_ops for layer in self.layers)

    @cached_property
    def bytes(self) -> int:
        """Bytes moved if every layer reads its inputs and weights and writes its output."""
        return sum(layer.bytes_total for layer in self.layers)

    @cached_property
    def bytes_weights(self) -> int:
        return sum(layer.bytes_weights for layer in self.layers)

    @cached_property
    def bytes_activations(self) -> int:
        return sum(layer.bytes_in + layer.bytes_out for layer in self.layers)

    def totals(self) -> dict[str, int]:
        return {
            "layers": len(self.layers),
            "macs": self.macs,
            "params": self.params,
            "elem_ops": self.elem_ops,
            "bytes": self.bytes,
            "bytes_weights": self.bytes_weights,
            "bytes_activations": self.bytes_activations,
        }

    def structure(self) -> tuple:
        """Name-free description: each layer with its inputs as producer positions."""
        producer: dict[str, int] = {name: -1 - i for i, (name, _) in enumerate(self.inputs)}
        rows = []
        for i, layer in enumerate(self.layers):
            srcs = tuple(producer.get(t, -999) for t in layer.inputs)
            rows.append((layer.op, srcs, layer.input_shapes, layer.output_shape,
                         layer.weight_shapes, layer.kernel, layer.stride, layer.pads,
                         layer.dilation, layer.groups, layer.dtype))
            for t in layer.outputs:
                producer[t] = i
        outs = tuple(producer.get(t, -999) for t in self.outputs)
        return (tuple(s for _, s in self.inputs), tuple(rows), outs)

    @cached_property
    def fingerprint(self) -> str:
        """Stable SHA-256 (hex, 16 chars) of :meth:`structure`; same across processes."""
        return hashlib.sha256(repr(self.structure()).encode()).hexdigest()[:16]

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Network):
            return NotImplemented
        return self.structure() == other.structure()

    def __hash__(self) -> int:
        return hash(self.fingerprint)

    def __repr__(self) -> str:
        return (f"Network({self.name!r}, layers={len(self.layers)}, macs={self.macs:,}, "
                f"params={self.params:,})")
