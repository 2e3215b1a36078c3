"""Network IR: an ordered DAG of layers with shapes and costs.

Every backend consumes this IR. Two front-ends produce it: the ONNX importer
(:mod:`costmodels.onnx_import`) and the NAS-Bench-201 builder
(:mod:`costmodels.spaces.nb201`). Both compute costs with :func:`make_layer`, so
the same operator always costs the same, whoever built it.

Units: ``macs`` are multiply-accumulates (Conv, Gemm, MatMul, Einsum and their
quantized forms, and LSTM/GRU/RNN: per time step and batch row, the gates' input and
recurrent products of every direction, ``numel(W) + numel(R)``;
:data:`~costmodels.ops.MAC_OPS`); ``elem_ops`` are the other arithmetic operations, by
convention: one per output element for element-wise and (de)quantize ops, kernel area
per output element for pooling, LRN (its ``size``) and Resize (its interpolation taps,
kept as its ``kernel``: 1 nearest, 4 bilinear, 16 bicubic), one per input element for global pools
and reductions, 2 per element for BatchNormalization (scale and shift), 5 for the other normalisations
(mean, variance, normalise, scale, shift), 3 for softmax (exp, sum, divide), 0 for
data movement (:data:`~costmodels.ops.DATA_MOVEMENT_OPS`). Every ``bytes_*`` figure is
in bytes at the tensor's dtype.
Shapes are tuples of ints in the ONNX layout (NCHW for images).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, NamedTuple

from costmodels.ops import (
    CONV_OPS,
    DATA_MOVEMENT_OPS,
    GLOBAL_POOL_OPS,
    MAC_OPS,
    NORM_OPS,
    POOL_OPS,
    RESIZE_OPS,
    RNN_GATES,
    RNN_OPS,
    SOFTMAX_OPS,
    VIEW_OPS,
)

Shape = tuple[int, ...]

DTYPE_BYTES: dict[str, int] = {
    "float32": 4, "float16": 2, "bfloat16": 2, "float64": 8,
    "int8": 1, "uint8": 1, "int16": 2, "int32": 4, "int64": 8, "bool": 1,
}

# The op taxonomy lives in costmodels.ops; these names stay importable from here.
__all__ = ["DATA_MOVEMENT_OPS", "DTYPE_BYTES", "GLOBAL_POOL_OPS", "MAC_OPS", "POOL_OPS",
           "VIEW_OPS", "Layer", "Network", "Recurrence", "Shape", "einsum_macs", "make_layer",
           "numel", "recurrence"]


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
    equation: str = ""       # Einsum's equation ("" for every other op)
    out_dtype: str = ""      # the output's dtype where it differs from ``dtype`` ("" = same)

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
        return (self.op in CONV_OPS and self.op != "ConvTranspose" and self.groups > 1
                and self.groups == self.in_channels)


def numel(shape: Sequence[int]) -> int:
    return math.prod(shape) if shape else 1


class Recurrence(NamedTuple):
    """The geometry of an LSTM/GRU/RNN layer, read off its shapes (:func:`recurrence`)."""

    seq: int        # time steps, run one after the other
    batch: int
    dirs: int       # 1, or 2 (bidirectional: a second pass, backwards)
    gates: int      # LSTM 4, GRU 3, RNN 1
    hidden: int
    inputs: int     # features of x_t
    layout: int     # ONNX ``layout``: 0 seq-first [seq, batch, in], 1 batch-first

    @property
    def y_shape(self) -> Shape:
        """The shape of output ``Y`` (every step's hidden state) in this layout."""
        if self.layout == 0:
            return (self.seq, self.dirs, self.batch, self.hidden)
        return (self.batch, self.seq, self.dirs, self.hidden)

    @property
    def y_h_shape(self) -> Shape:
        """The shape of output ``Y_h`` (the last hidden state) in this layout."""
        if self.layout == 0:
            return (self.dirs, self.batch, self.hidden)
        return (self.batch, self.dirs, self.hidden)


def recurrence(op: str, x: Shape, weight_shapes: Sequence[Shape],
               output_shape: Shape) -> Recurrence | None:
    """Geometry of a recurrent layer from its input ``x``, weights ``W, R[, ...]`` (ONNX
    order) and output (``Y`` or ``Y_h``); None when the shapes are not those of ``op``.
    The layout is the one whose ``Y``/``Y_h`` shape the output has (seq-first first)."""
    gates = RNN_GATES.get(op)
    ws = list(weight_shapes)
    if gates is None or len(x) != 3 or len(ws) < 2 or len(ws[0]) != 3 or len(ws[1]) != 3:
        return None
    dirs, gh, hidden = ws[1]
    if gh != gates * hidden or tuple(ws[0][:2]) != (dirs, gh):
        return None
    out = tuple(output_shape)
    for layout, (seq, batch) in ((0, (x[0], x[1])), (1, (x[1], x[0]))):
        geo = Recurrence(seq, batch, dirs, gates, hidden, x[2], layout)
        if out in (geo.y_shape, geo.y_h_shape):
            return geo
    return None


def einsum_macs(equation: str, operand_shapes: Sequence[Shape], output_shape: Shape) -> int:
    """Multiplies of an Einsum evaluated pairwise, left to right (as ONNX Runtime does).

    Two operands: output elements x summed-out index sizes (``"bhqd,bhkd->bhqk"`` with
    q=k=49, d=32 gives ``numel(out) * 32``). More operands: each step multiplies the
    running product into the next operand over the union of their indices, and keeps only
    the indices a later operand or the output needs (``"bi,oij,bj->bo"``: O*I*J + O*J per
    batch row, not 2*O*I*J). A one-operand equation (transpose, trace, sum) has no
    multiplies (0). Ellipsis dimensions are counted through the output shape (with more
    than two operands and an ellipsis: output elements x summed sizes x (operands - 1)).
    """
    lhs, _, rhs = equation.replace(" ", "").partition("->")
    terms = lhs.split(",")
    if len(terms) != len(operand_shapes) or len(terms) < 2:
        return 0
    size: dict[str, int] = {}
    for term, shape in zip(terms, operand_shapes, strict=True):
        head, ell, tail = term.partition("...")
        dims = list(shape)
        pairs = list(zip(head, dims, strict=False))
        if ell:
            pairs += list(zip(tail, dims[len(dims) - len(tail):], strict=False))
        for letter, d in pairs:
            size[letter] = max(size.get(letter, 1), int(d))
    if not rhs and "->" not in equation:  # implicit output: letters used once, sorted
        rhs = "".join(sorted(c for c in size if lhs.count(c) == 1))
    if len(terms) > 2 and "..." not in equation:
        macs, live = 0, set(terms[0])
        for i, term in enumerate(terms[1:], start=1):
            step = live | set(term)
            macs += numel([size[c] for c in step])
            later = set(rhs).union(*terms[i + 1:])
            live = step & later
        return macs
    summed = numel([d for c, d in size.items() if c not in rhs])
    return numel(output_shape) * summed * (len(terms) - 1)


def _macs(op: str, input_shapes: Sequence[Shape], output_shape: Shape,
          weight_shapes: Sequence[Shape], operand_shapes: Sequence[Shape] | None,
          kernel: Shape, groups: int, equation: str) -> int:
    """Multiply-accumulates of a MAC op (:data:`~costmodels.ops.MAC_OPS`)."""
    out_elems = numel(output_shape)
    ops = list(operand_shapes) if operand_shapes else list(input_shapes) + list(weight_shapes)
    if op in CONV_OPS:
        if op == "ConvTranspose":
            return numel(ops[0]) * (output_shape[1] // groups) * numel(kernel)
        return out_elems * (ops[0][1] // groups) * numel(kernel)
    if op == "Einsum":
        return einsum_macs(equation, ops, output_shape)
    if op in RNN_OPS:  # X [seq, batch, in] (or batch-first), W [dirs, gates*h, in], R [.., h]
        if len(ops) < 3 or not ops[0]:
            return 0
        steps = numel(ops[0]) // max(ops[0][-1], 1)  # seq x batch, either layout
        return steps * (numel(ops[1]) + numel(ops[2]))
    a = ops[0]
    if op == "Gemm":  # A is (M, K) or, transposed, (K, M)
        return out_elems * (numel(a) // max(output_shape[0], 1))
    return out_elems * (a[-1] if a else 1)  # MatMul family: A is [..., M, K] or (K,)


VARIADIC_OPS = frozenset({"Sum", "Mean", "Max", "Min"})  # element-wise over n operands


def _elem_ops(op: str, input_shapes: Sequence[Shape], output_shape: Shape,
              kernel: Shape, operands: int | None = None) -> int:
    """Non-MAC arithmetic of a layer (conventions in the module docstring); ``operands``:
    how many inputs an Einsum has, weights included (default: its activations)."""
    out_elems = numel(output_shape)
    if op == "Einsum" and (len(input_shapes) if operands is None else operands) == 1:
        # a transpose or a reduction
        return numel(input_shapes[0])
    if op in MAC_OPS:
        return 0
    if op in POOL_OPS or op in RESIZE_OPS or op == "LRN":  # window / taps
        return out_elems * numel(kernel)
    if op in GLOBAL_POOL_OPS:
        return numel(input_shapes[0]) if input_shapes else out_elems
    if op == "BatchNormalization":
        return 2 * out_elems
    if op in NORM_OPS:
        return 5 * out_elems
    if op in SOFTMAX_OPS:
        return 3 * out_elems
    if op in DATA_MOVEMENT_OPS:
        return 0
    if op in VARIADIC_OPS:  # one op per element for each operand past the first
        n = operands if operands is not None else len(input_shapes)
        return max(n - 1, 1) * out_elems + (out_elems if op == "Mean" else 0)
    return out_elems


def _params(op: str, weight_shapes: Sequence[Shape], weight_params: Sequence[int] | None) -> int:
    # One-element constants (scales, epsilons, fill values) are not parameters: the
    # importer's rule too, so both front ends count the same.
    counts = list(weight_params) if weight_params is not None else [
        numel(s) if numel(s) > 1 else 0 for s in weight_shapes]
    if op == "BatchNormalization":
        # Learnable parameters are scale and bias; the running statistics are buffers.
        return sum(counts[:2])
    return sum(counts)


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
    out_dtype: str | None = None,
    operand_shapes: Sequence[Shape] | None = None,
    equation: str = "",
    bytes_weights: int | None = None,
    weight_params: Sequence[int] | None = None,
    extra_bytes_out: int = 0,
) -> Layer:
    """Build a :class:`Layer` and compute its MACs, element ops, params and bytes.

    The one place where operator costs are defined; both front-ends call it.
    ``dtype`` is the type the layer computes on (its inputs'); ``out_dtype`` that of
    its output when it differs (quantize, compare, ``MatMulInteger``'s int32).
    ``operand_shapes`` are the shapes of a MAC op's inputs in ONNX order, weights
    included (``None``: activations then weights); ``equation`` is an Einsum's.
    ``bytes_weights`` overrides the weight bytes when weights are stored in another
    type than ``dtype`` (int8 weights, int32 biases). ``weight_params`` overrides
    the parameters each weight holds (default: its element count), for weights
    computed from smaller ones (a bias broadcast by ``Expand``). ``extra_bytes_out``: the
    bytes of a layer's outputs after the first (``Split``'s parts, ``MaxPool``'s indices).
    """
    itemsize = DTYPE_BYTES.get(dtype, 4)
    out_itemsize = DTYPE_BYTES.get(out_dtype or dtype, 4)
    macs = (_macs(op, input_shapes, output_shape, weight_shapes, operand_shapes, kernel, groups,
                  equation) if op in MAC_OPS else 0)
    if bytes_weights is None:
        bytes_weights = sum(numel(s) for s in weight_shapes) * itemsize
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
        elem_ops=int(_elem_ops(op, input_shapes, output_shape, kernel,
                               len(operand_shapes) if operand_shapes is not None
                               else len(input_shapes) + len(weight_shapes))),
        params=int(_params(op, weight_shapes, weight_params)),
        bytes_in=sum(numel(s) for s in input_shapes) * itemsize,
        bytes_out=numel(output_shape) * out_itemsize + int(extra_bytes_out),
        bytes_weights=int(bytes_weights),
        equation=equation if op == "Einsum" else "",
        out_dtype=out_dtype if out_dtype and out_dtype != dtype else "",
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
            row = (layer.op, srcs, layer.input_shapes, layer.output_shape,
                   layer.weight_shapes, layer.kernel, layer.stride, layer.pads,
                   layer.dilation, layer.groups, layer.dtype)
            if layer.equation or layer.out_dtype:  # only where set: old fingerprints hold
                row += (layer.equation, layer.out_dtype)
            rows.append(row)
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
