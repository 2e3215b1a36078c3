"""One-kernel ONNX models: the model a LUT entry is measured on, built from its key alone.

One description, two views: :func:`plan` turns a :class:`~costmodels.fusion.KernelKey`
into a :class:`KernelPlan` (graph inputs, constants, nodes; each node marked as
part of the kernel or as a wrapper the measurement carries, e.g. the pool that
puts a residual in the layout a network has it in). :func:`kernel_model` writes
the plan as ONNX, :func:`key_network` as the IR; :func:`wrappers` splits that IR
with the fusion rules and returns the kernels that are not the kernel itself
(layout reorders, the residual's pool). Nothing has to agree by hand.

The model's activation inputs are the key's (random at measurement time, fixed
seed); weights are random with a fixed seed; parameter inputs (a Reshape's
shape, a Resize's sizes, a Slice's ends, a Split's sizes) are derived from the
key's shapes; attributes the shapes do not show come from the key's ``a=``
field. Layout reorders are built as ORT's own ``com.microsoft.nchwc`` ops. A
key that cannot be built raises :class:`KernelBuildError` (the build records it
as a failed entry, with the reason).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from costmodels.errors import CostModelError
from costmodels.fusion import BINARY_OPS, FusionRules, KernelKey, kernels
from costmodels.network import DTYPE_BYTES, Network, Shape, make_layer, numel, recurrence
from costmodels.ops import RESIZE_TAPS, RNN_GATES

NCHWC_DOMAIN = "com.microsoft.nchwc"
NCHWC_ALIGN = 4  # ORT reorders a tensor to NCHWc only if its channels are a multiple of this
OPSET = 17
MIN_OPSET = {"Gelu": 20}  # ops that only exist from a later opset
# ONNX element types by the IR's dtype names
ELEM = {"float32": 1, "uint8": 2, "int8": 3, "int16": 5, "int32": 6, "int64": 7, "bool": 9,
        "float16": 10, "float64": 11, "bfloat16": 16}
_NP = {"float32": np.float32, "uint8": np.uint8, "int8": np.int8, "int16": np.int16,
       "int32": np.int32, "int64": np.int64, "bool": np.bool_, "float16": np.float16,
       "float64": np.float64}
_COMPARE = frozenset({"Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual"})
_LOGIC = frozenset({"Not", "And", "Or", "Xor"})
_REDUCE_AXES_INPUT = frozenset({"ReduceSum"})  # opset 13-17: axes as an input
_REDUCE = frozenset({"ReduceMean", "ReduceMax", "ReduceMin", "ReduceSum", "ReduceProd",
                     "ReduceL1", "ReduceL2", "ReduceLogSum", "ReduceLogSumExp",
                     "ReduceSumSquare"})


class KernelBuildError(CostModelError):
    """A kernel key that no one-kernel model can be built for (reason in the message)."""


@dataclass
class PlanNode:
    """One node of a one-kernel model; ``kernel``: part of the measured kernel (else a wrapper)."""

    name: str
    op: str
    inputs: list[str]
    outputs: list[str]
    attrs: dict[str, Any] = field(default_factory=dict)
    domain: str = ""
    kernel: bool = True
    ir: dict[str, Any] = field(default_factory=dict)  # kernel/stride/pads/... of the IR layer


@dataclass
class KernelPlan:
    """Graph inputs, constants and nodes of the one-kernel model of ``key``."""

    key: KernelKey
    inputs: list[str] = field(default_factory=list)
    consts: dict[str, np.ndarray] = field(default_factory=dict)
    nodes: list[PlanNode] = field(default_factory=list)
    shapes: dict[str, Shape] = field(default_factory=dict)
    dtypes: dict[str, str] = field(default_factory=dict)
    outputs: list[str] = field(default_factory=list)

    @property
    def kernel_names(self) -> set[str]:
        return {n.name for n in self.nodes if n.kernel}


class _Builder:
    """Accumulates a :class:`KernelPlan`; random values from one seeded generator."""

    def __init__(self, key: KernelKey, seed: int) -> None:
        self.key = key
        self.p = KernelPlan(key)
        self.rng = np.random.default_rng(seed)

    def input(self, shape: Shape, dtype: str | None = None) -> str:
        name = f"x{len(self.p.inputs)}"
        self.p.inputs.append(name)
        self.p.shapes[name] = tuple(shape)
        self.p.dtypes[name] = dtype or self.key.dtype
        return name

    def const(self, arr: np.ndarray, prefix: str) -> str:
        name = f"{prefix}_c{len(self.p.consts)}"
        arr = np.asarray(arr)
        self.p.consts[name] = arr
        self.p.shapes[name] = tuple(arr.shape)
        self.p.dtypes[name] = str(arr.dtype) if arr.dtype != np.bool_ else "bool"
        return name

    def ints(self, values, prefix: str) -> str:
        return self.const(np.asarray(list(values), dtype=np.int64), prefix)

    def weight(self, shape: Shape, prefix: str, dtype: str | None = None,
               kind: str = "normal") -> str:
        dtype = dtype or self.key.dtype
        shape = tuple(shape)
        np_dt = _NP.get(dtype, np.float32)
        if np.issubdtype(np_dt, np.integer):
            info = np.iinfo(np_dt)
            arr = self.rng.integers(max(info.min, -8), min(info.max, 8) + 1, size=shape)
        elif np_dt is np.bool_:
            from measure.inputs import structured_mask

            arr = structured_mask(shape)
        elif kind == "positive":
            arr = self.rng.uniform(0.5, 1.5, shape)
        else:
            fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
            arr = self.rng.normal(0, (2.0 / max(fan_in, 1)) ** 0.5, shape)
        return self.const(np.asarray(arr).astype(np_dt), prefix)

    @property
    def out_dtype(self) -> str:
        """The kernel's output dtype: the key's ``to`` attribute, else its dtype."""
        return self.key.attr("to") or self.key.dtype

    def node(self, op: str, ins: list[str], out_shape: Shape, *, dtype: str | None = None,
             attrs: dict | None = None, domain: str = "", kernel: bool = True,
             ir: dict | None = None, extra_outputs: list[tuple[Shape, str]] = ()) -> str:
        i = len(self.p.nodes)
        out = f"y{i}"
        outs = [out]
        self.p.shapes[out] = tuple(out_shape)
        self.p.dtypes[out] = dtype or self.out_dtype
        for j, (shape, dt) in enumerate(extra_outputs):
            name = f"y{i}_{j + 1}"
            outs.append(name)
            self.p.shapes[name] = tuple(shape)
            self.p.dtypes[name] = dt
        self.p.nodes.append(PlanNode(f"{op.lower()}{i}", op, ins, outs, attrs or {}, domain,
                                     kernel, ir or {}))
        return out


# ----------------------------------------------------------------------------- shapes
def _axis_of(a: Shape, b: Shape) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), 0)


def _inserted(long: Shape, short: Shape) -> list[int] | None:
    """Positions of ``long`` that are size-1 axes absent from ``short`` (None: no such reading)."""
    out, j = [], 0
    for i, d in enumerate(long):
        if j < len(short) and short[j] == d:
            j += 1
        elif d == 1:
            out.append(i)
        else:
            return None
    return out if j == len(short) else None


def _removed(long: Shape, short: Shape) -> list[int] | None:
    """Axes of ``long`` to drop to get ``short`` (a subsequence; trailing axes first)."""
    out, j = [], len(short) - 1
    for i in range(len(long) - 1, -1, -1):
        if j >= 0 and long[i] == short[j]:
            j -= 1
        else:
            out.append(i)
    return sorted(out) if j < 0 else None


def _reduced_axes(ins: Shape, out: Shape) -> tuple[list[int], int]:
    """(axes, keepdims) of a reduction from ``ins`` to ``out``."""
    if len(ins) == len(out):
        return [i for i, (a, b) in enumerate(zip(ins, out, strict=True)) if a != b], 1
    gone = _removed(ins, out)
    if gone is None:
        raise KernelBuildError(f"reduction: output {out} is not input {ins} with axes removed")
    return gone, 0


def _ratio(a: int, b: int) -> int:
    return max(a // b, 1) if b else 1


# ----------------------------------------------------------------------------- anchors
AnchorFn = Callable[[_Builder, KernelKey, list[Shape]], str]


def _acts(b: _Builder, shapes: list[Shape], dtype: str | None = None) -> list[str]:
    return [b.input(s, dtype) for s in shapes]


def _weights(b: _Builder, key: KernelKey, kind: str = "normal") -> list[str]:
    return [b.weight(s, "anchor", kind=kind) for s in key.weight_shapes]


def _conv_attrs(key: KernelKey) -> dict:
    attrs: dict[str, Any] = {"group": key.groups}
    if key.kernel:
        attrs["kernel_shape"] = list(key.kernel)
    if key.stride:
        attrs["strides"] = list(key.stride)
    if key.pads:
        attrs["pads"] = list(key.pads)
    if key.dilation:
        attrs["dilations"] = list(key.dilation)
    return attrs


def _ir(key: KernelKey) -> dict:
    return dict(kernel=key.kernel, stride=key.stride, pads=key.pads, dilation=key.dilation,
                groups=key.groups)


def _conv(b: _Builder, key: KernelKey, shapes: list[Shape]) -> str:
    ins = _acts(b, shapes) + _weights(b, key)
    attrs = _conv_attrs(key)
    if key.ops[0] == "ConvTranspose" and shapes and key.kernel:
        x, nd = shapes[0], len(key.kernel)
        s = key.stride or (1,) * nd
        d = key.dilation or (1,) * nd
        p = key.pads or (0,) * (2 * nd)
        extra = [key.output_shape[2 + i] - ((x[2 + i] - 1) * s[i] - p[i] - p[nd + i]
                                            + d[i] * (key.kernel[i] - 1) + 1)
                 for i in range(nd)] if len(x) == 2 + nd and len(key.output_shape) == 2 + nd \
            else []
        if any(e > 0 for e in extra):
            attrs["output_padding"] = [max(e, 0) for e in extra]
    return b.node(key.ops[0], ins, key.output_shape, attrs=attrs, ir=_ir(key))


def _pool(b: _Builder, key: KernelKey, shapes: list[Shape]) -> str:
    op = key.ops[0]
    attrs: dict[str, Any] = {"kernel_shape": list(key.kernel)}
    if key.stride:
        attrs["strides"] = list(key.stride)
    if key.pads:
        attrs["pads"] = list(key.pads)
    if key.dilation:
        attrs["dilations"] = list(key.dilation)
    if op == "AveragePool":
        attrs["count_include_pad"] = 0
    x = shapes[0] if shapes else ()
    nd = len(key.kernel)
    if len(x) == 2 + nd and len(key.output_shape) == 2 + nd:
        s = key.stride or (1,) * nd
        p = key.pads or (0,) * (2 * nd)
        d = key.dilation or (1,) * nd
        floor = [(x[2 + i] + p[i] + p[nd + i] - d[i] * (key.kernel[i] - 1) - 1) // s[i] + 1
                 for i in range(nd)]
        if list(key.output_shape[2:]) != floor:
            attrs["ceil_mode"] = 1
    if op == "MaxPool" and key.attr("layout") == "nhwc" and len(x) == 4:
        # a quantized max-pool inside a channels-last region: ORT's NhwcMaxPool on the
        # NHWC tensor (its NCHW uint8 MaxPool is another kernel, 50x slower)
        nhwc = [(s[0], *s[2:], s[1]) for s in (x, tuple(key.output_shape))]
        attrs.pop("dilations", None)
        return b.node("NhwcMaxPool", [b.input(nhwc[0])], nhwc[1], attrs=attrs,
                      domain="com.microsoft", ir=_ir(key))
    return b.node(op, _acts(b, shapes), key.output_shape, attrs=attrs, ir=_ir(key))


def _batchnorm(b: _Builder, key: KernelKey, shapes: list[Shape]) -> str:
    """A BatchNormalization; one that absorbs ops (only blocked ones do: ORT runs them as a
    1x1 depthwise NCHWc conv) reads its input through the residual's 1x1 op, in NCHWc."""
    c = shapes[0][1] if shapes and len(shapes[0]) > 1 else 1
    ws = key.weight_shapes or ((c,),) * 4
    x = [_residual(b, shapes[0], 0)] if len(key.ops) > 1 and shapes else _acts(b, shapes)
    ins = x + [b.weight(s, "anchor", kind="positive" if j in (0, 3) else "normal")
               for j, s in enumerate(ws)]
    return b.node("BatchNormalization", ins, key.output_shape)


def _layernorm(b: _Builder, key: KernelKey, shapes: list[Shape]) -> str:
    rank = len(key.weight_shapes[0]) if key.weight_shapes else 1
    ins = _acts(b, shapes) + _weights(b, key, kind="positive")
    return b.node(key.ops[0], ins, key.output_shape,
                  attrs={"axis": -rank} if key.ops[0] == "LayerNormalization" else {})


def _gemm(b: _Builder, key: KernelKey, shapes: list[Shape]) -> str:
    attrs = {"transA": int(key.attr("transA", "0")), "transB": int(key.attr("transB", "1"))}
    return b.node("Gemm", _acts(b, shapes) + _weights(b, key), key.output_shape, attrs=attrs)


def _matmul_out(a: Shape, c: Shape) -> Shape | None:
    """numpy.matmul's output shape of operands ``a`` and ``c``; None when they do not fit."""
    if not a or not c:
        return None
    a2 = (1, *a) if len(a) == 1 else tuple(a)
    c2 = (*c, 1) if len(c) == 1 else tuple(c)
    if a2[-1] != c2[-2]:
        return None
    try:
        out = (*np.broadcast_shapes(a2[:-2], c2[:-2]), a2[-2], c2[-1])
    except ValueError:
        return None
    if len(a) == 1:
        out = out[:-2] + out[-1:]
    return out[:-1] if len(c) == 1 else tuple(out)


def _matmul(b: _Builder, key: KernelKey, shapes: list[Shape]) -> str:
    """Activations then constants, unless only the other order gives the output (a
    constant-first ``W @ x``)."""
    ins = _acts(b, shapes) + _weights(b, key)
    operands = list(shapes) + list(key.weight_shapes)
    if (len(operands) == 2 and _matmul_out(*operands) != tuple(key.output_shape)
            and _matmul_out(*operands[::-1]) == tuple(key.output_shape)):
        ins = ins[::-1]
    return b.node("MatMul", ins, key.output_shape)


# two-operand products tried, in order, when a key carries no equation
_EINSUM_FORMS = ("...ik,...kj->...ij", "...ik,...jk->...ij", "...ki,...kj->...ij")


def _einsum_fits(eq: str, a: Shape, c: Shape, out: Shape) -> bool:
    if len(a) < 2 or len(c) < 2 or len(a) != len(c) or len(out) != len(a):
        return False
    lhs = eq.split("->")[0].split(",")
    dims: dict[str, int] = {}
    for term, shape in zip(lhs, (a, c), strict=True):
        for ch, d in zip(term[3:], shape[-2:], strict=True):
            if dims.setdefault(ch, d) != d:
                return False
    return (a[:-2] == c[:-2] == out[:-2]) and (dims["i"], dims["j"]) == tuple(out[-2:])


def _einsum(b: _Builder, key: KernelKey, shapes: list[Shape]) -> str:
    eq = key.attr("equation")
    operands = list(shapes) + list(key.weight_shapes)
    if not eq:
        eq = next((f for f in _EINSUM_FORMS if len(operands) == 2
                   and _einsum_fits(f, operands[0], operands[1], key.output_shape)), "")
    if not eq:
        raise KernelBuildError("Einsum without its equation: only a two-operand batched "
                               "matrix product can be rebuilt from shapes")
    ins = _acts(b, shapes) + _weights(b, key)
    order = _einsum_order(eq, operands, key.output_shape)
    return b.node("Einsum", [ins[i] for i in order], key.output_shape, attrs={"equation": eq})


def _einsum_order(eq: str, operands: list[Shape], out: Shape) -> list[int]:
    """The order of ``operands`` (activations, then constants, as the key lists them) that
    the equation's terms take: the first permutation whose ranks and sizes agree (the
    given order when none does; ONNX Runtime then says what is wrong)."""
    from itertools import permutations

    lhs, _, rhs = eq.replace(" ", "").partition("->")
    terms = lhs.split(",")
    if len(terms) != len(operands) or "..." in eq:
        return list(range(len(operands)))
    for order in permutations(range(len(operands))):
        dims: dict[str, int] = {}
        if all(len(terms[t]) == len(operands[i]) and all(
                dims.setdefault(ch, d) == d for ch, d in zip(terms[t], operands[i], strict=True))
               for t, i in enumerate(order)) and (not rhs or len(rhs) != len(out) or all(
                dims.get(ch, d) == d for ch, d in zip(rhs, out, strict=True))):
            return list(order)
    return list(range(len(operands)))


def _concat(b: _Builder, key: KernelKey, shapes: list[Shape]) -> str:
    ins = _acts(b, shapes) + _weights(b, key)
    return b.node("Concat", ins, key.output_shape, attrs={"axis": int(key.attr("axis", "0"))})


def _split(b: _Builder, key: KernelKey, shapes: list[Shape]) -> str:
    if not shapes:
        raise KernelBuildError("Split with no activation input")
    x, out = shapes[0], key.output_shape
    axis, n = int(key.attr("axis", "0")), int(key.attr("n", "1"))
    if not 0 <= axis < len(x) or len(out) != len(x):
        raise KernelBuildError(f"Split axis {axis} does not fit input {x} / output {out}")
    first = out[axis]
    last = x[axis] - first * (n - 1)
    sizes = [first] * (n - 1) + [last] if last > 0 else [x[axis] // n] * n
    sizes[-1] += x[axis] - sum(sizes)
    extra = [(tuple(d if i != axis else s for i, d in enumerate(x)), key.dtype)
             for s in sizes[1:]]
    ins = [b.input(x), b.ints(sizes, "split")]
    return b.node("Split", ins, out, attrs={"axis": axis}, extra_outputs=extra)


def _transpose(b: _Builder, key: KernelKey, shapes: list[Shape]) -> str:
    rank = len(key.output_shape)
    text = key.attr("perm")
    perm = [int(v) for v in text.split("x")] if text else list(range(rank))
    return b.node("Transpose", _acts(b, shapes), key.output_shape, attrs={"perm": perm})


def _reshape(b: _Builder, key: KernelKey, shapes: list[Shape]) -> str:
    ins = _acts(b, shapes[:1]) + [b.ints(key.output_shape, "shape")]
    return b.node("Reshape", ins, key.output_shape)


def _squeeze(b: _Builder, key: KernelKey, shapes: list[Shape]) -> str:
    op, x, out = key.ops[0], shapes[0] if shapes else (), key.output_shape
    axes = _inserted(x, out) if op == "Squeeze" else _inserted(out, x)
    if axes is None:  # not a pure squeeze: the same view as a Reshape
        return _reshape(b, key, shapes)
    return b.node(op, [b.input(x), b.ints(axes, "axes")], out)


def _flatten(b: _Builder, key: KernelKey, shapes: list[Shape]) -> str:
    x = shapes[0] if shapes else ()
    lead = key.output_shape[0] if key.output_shape else 1
    axis = next((a for a in range(len(x) + 1) if math.prod(x[:a]) == lead), 1)
    return b.node("Flatten", _acts(b, shapes[:1]), key.output_shape, attrs={"axis": axis})


def _slice(b: _Builder, key: KernelKey, shapes: list[Shape]) -> str:
    x, out = shapes[0] if shapes else (), key.output_shape
    if len(x) != len(out) or any(o > i for i, o in zip(x, out, strict=True)):
        raise KernelBuildError(f"Slice output {out} is not a slice of input {x}")
    axes = [i for i, (a, o) in enumerate(zip(x, out, strict=True)) if a != o] or [0]
    ins = [b.input(x), b.ints([0] * len(axes), "starts"), b.ints([out[a] for a in axes], "ends"),
           b.ints(axes, "axes")]
    return b.node("Slice", ins, out)


def _pad(b: _Builder, key: KernelKey, shapes: list[Shape]) -> str:
    x, out = shapes[0] if shapes else (), key.output_shape
    if len(x) != len(out):
        raise KernelBuildError(f"Pad output {out} has another rank than input {x}")
    diff = [o - i for i, o in zip(x, out, strict=True)]
    begin = [d // 2 for d in diff]
    return b.node("Pad", [b.input(x), b.ints(begin + [d - s for d, s in zip(diff, begin,
                                                                             strict=True)],
                                              "pads")], out)


def _expand(b: _Builder, key: KernelKey, shapes: list[Shape]) -> str:
    src = shapes[:1] or list(key.weight_shapes[:1])
    x = b.input(src[0]) if shapes else b.weight(src[0], "anchor")
    return b.node("Expand", [x, b.ints(key.output_shape, "shape")], key.output_shape)


def _tile(b: _Builder, key: KernelKey, shapes: list[Shape]) -> str:
    x, out = shapes[0] if shapes else (), key.output_shape
    reps = [_ratio(o, i) for i, o in zip(x, out, strict=False)]
    return b.node("Tile", [b.input(x), b.ints(reps, "repeats")], out)


def _resize(b: _Builder, key: KernelKey, shapes: list[Shape]) -> str:
    """Resize to the output's sizes, in the mode its taps (the key's kernel) say."""
    taps = key.kernel[0] if key.kernel else 1
    mode = next((m for m, t in RESIZE_TAPS.items() if t == taps), "nearest")
    ins = [b.input(shapes[0]), "", "", b.ints(key.output_shape, "sizes")]
    return b.node("Resize", ins, key.output_shape, attrs={"mode": mode})


def _depth_space(b: _Builder, key: KernelKey, shapes: list[Shape]) -> str:
    x, out = shapes[0], key.output_shape
    block = _ratio(out[2], x[2]) if key.ops[0] == "DepthToSpace" else _ratio(x[2], out[2])
    return b.node(key.ops[0], [b.input(x)], out, attrs={"blocksize": block})


def _gather(b: _Builder, key: KernelKey, shapes: list[Shape]) -> str:
    """Data and indices: whichever reading of (activation, constant) gives the output shape."""
    out = tuple(key.output_shape)
    x = shapes[0] if shapes else ()
    idx = key.weight_shapes[0] if key.weight_shapes else (shapes[1] if len(shapes) > 1 else ())
    for a in range(len(x)):  # data is the activation, indices the other operand
        if tuple(x[:a]) + tuple(idx) + tuple(x[a + 1:]) == out:
            ind = (b.const(b.rng.integers(0, max(x[a], 1), size=idx).astype(np.int64), "idx")
                   if key.weight_shapes else b.input(idx, "int64"))
            return b.node("Gather", [b.input(x), ind], out, attrs={"axis": a})
    if key.weight_shapes and tuple(x) + tuple(idx[1:]) == out:  # an embedding table
        return b.node("Gather", [b.weight(idx, "table", b.out_dtype), b.input(x, "int64")], out)
    raise KernelBuildError(f"Gather: no axis of data {x} with indices {idx} gives {out}")


def _cast(b: _Builder, key: KernelKey, shapes: list[Shape]) -> str:
    to = key.attr("to", key.dtype)
    return b.node("Cast", _acts(b, shapes[:1]), key.output_shape, attrs={"to": ELEM.get(to, 1)})


def _where(b: _Builder, key: KernelKey, shapes: list[Shape]) -> str:
    """Condition first (bool), then the two values (the output's dtype)."""
    operands = [(s, True) for s in shapes] + [(s, False) for s in key.weight_shapes]
    while len(operands) < 3:
        operands.append((key.output_shape, False))
    (cs, cact), rest = operands[0], operands[1:3]
    data = b.out_dtype if b.out_dtype != "bool" else "float32"
    cond = b.input(cs, "bool") if cact else b.weight(cs, "cond", "bool")
    ins = [cond] + [b.input(s, data) if act else b.weight(s, "anchor", data) for s, act in rest]
    return b.node("Where", ins, key.output_shape, dtype=data)


def _compare(b: _Builder, key: KernelKey, shapes: list[Shape]) -> str:
    src = key.dtype if key.dtype != "bool" else "float32"
    ins = _acts(b, shapes, src) + [b.weight(s, "anchor", src) for s in key.weight_shapes]
    return b.node(key.ops[0], ins, key.output_shape, dtype="bool")


def _logic(b: _Builder, key: KernelKey, shapes: list[Shape]) -> str:
    ins = _acts(b, shapes, "bool") + [b.weight(s, "anchor", "bool") for s in key.weight_shapes]
    return b.node(key.ops[0], ins, key.output_shape, dtype="bool")


def _mod(b: _Builder, key: KernelKey, shapes: list[Shape]) -> str:
    ins = _acts(b, shapes) + [b.weight(s, "anchor", kind="positive") for s in key.weight_shapes]
    fmod = 1 if key.dtype.startswith(("float", "bfloat")) else 0
    return b.node("Mod", ins, key.output_shape, attrs={"fmod": fmod})


def _clip(b: _Builder, key: KernelKey, shapes: list[Shape]) -> str:
    bounds = [b.const(np.array(v, dtype=_NP.get(key.dtype, np.float32)), "clip")
              for v in (0.0, 6.0)[:len(key.weight_shapes)]]
    return b.node("Clip", _acts(b, shapes) + bounds, key.output_shape)


def _pow(b: _Builder, key: KernelKey, shapes: list[Shape]) -> str:
    exps = [b.const(np.full(s, 2.0, dtype=_NP.get(key.dtype, np.float32)), "exp")
            for s in key.weight_shapes]
    return b.node("Pow", _acts(b, shapes) + exps, key.output_shape)


def _reduce(b: _Builder, key: KernelKey, shapes: list[Shape]) -> str:
    op, x = key.ops[0], shapes[0] if shapes else ()
    axes, keep = _reduced_axes(x, key.output_shape)
    if op in ("ArgMax", "ArgMin"):
        return b.node(op, [b.input(x)], key.output_shape, dtype="int64",
                      attrs={"axis": axes[0] if axes else 0, "keepdims": keep})
    if op in _REDUCE_AXES_INPUT:
        return b.node(op, [b.input(x), b.ints(axes, "axes")], key.output_shape,
                      attrs={"keepdims": keep})
    return b.node(op, [b.input(x)], key.output_shape, attrs={"axes": axes, "keepdims": keep})


def _reorder(b: _Builder, key: KernelKey, shapes: list[Shape]) -> str:
    op = key.ops[0]
    attrs = {"channels": key.output_shape[1]} if op == "ReorderOutput" else {}
    return b.node(op, _acts(b, shapes), key.output_shape, attrs=attrs, domain=NCHWC_DOMAIN)


def _null(b: _Builder, key: KernelKey, shapes: list[Shape]) -> str:
    return b.node("Identity", _acts(b, shapes), key.output_shape)


def _quantize(b: _Builder, key: KernelKey, shapes: list[Shape]) -> str:
    q = b.out_dtype if b.out_dtype in ("uint8", "int8") else "uint8"
    ins = [b.input(shapes[0], "float32"), b.const(np.array(0.05, np.float32), "scale"),
           b.const(np.array(0, _NP[q]), "zp")]
    return b.node("QuantizeLinear", ins, key.output_shape, dtype=q)


def _dequantize(b: _Builder, key: KernelKey, shapes: list[Shape]) -> str:
    q = key.dtype if key.dtype in ("uint8", "int8", "int32") else "uint8"
    ins = [b.input(shapes[0], q), b.const(np.array(0.05, np.float32), "scale"),
           b.const(np.array(0, _NP[q]), "zp")]
    return b.node("DequantizeLinear", ins, key.output_shape, dtype="float32")


def _qscalars(b: _Builder, q: str) -> list[str]:
    return [b.const(np.array(0.05, np.float32), "s"), b.const(np.array(0, _NP[q]), "zp")]


def _big_weight(key: KernelKey, rank: int) -> Shape:
    big = [s for s in key.weight_shapes if len(s) == rank]
    if not big:
        raise KernelBuildError(f"{key.ops[0]}: no rank-{rank} weight among "
                               f"{list(key.weight_shapes)}")
    return big[0]


def _q(key: KernelKey) -> str:
    return key.dtype if key.dtype in ("uint8", "int8") else "uint8"


def _qlinear_conv(b: _Builder, key: KernelKey, shapes: list[Shape]) -> str:
    q = _q(key)
    w = _big_weight(key, len(shapes[0]))
    ins = [b.input(shapes[0], q), *_qscalars(b, q), b.weight(w, "w", "int8"),
           *_qscalars(b, "int8"), *_qscalars(b, q)]
    if any(s == (w[0],) for s in key.weight_shapes):
        ins.append(b.weight((w[0],), "bias", "int32"))
    return b.node("QLinearConv", ins, key.output_shape, dtype=q, attrs=_conv_attrs(key),
                  ir=_ir(key))


def _qlinear_matmul(b: _Builder, key: KernelKey, shapes: list[Shape]) -> str:
    q = _q(key)
    a = [b.input(shapes[0], q), *_qscalars(b, q)]
    other = (b.input(shapes[1], "int8") if len(shapes) > 1
             else b.weight(_big_weight(key, 2), "w", "int8"))
    ins = a + [other, *_qscalars(b, "int8"), *_qscalars(b, q)]
    return b.node("QLinearMatMul", ins, key.output_shape, dtype=q)


def _integer(b: _Builder, key: KernelKey, shapes: list[Shape]) -> str:
    op = key.ops[0]
    rank = len(shapes[0]) if op == "ConvInteger" else 2
    other = (b.input(shapes[1], "int8") if len(shapes) > 1
             else b.weight(_big_weight(key, rank), "w", "int8"))
    attrs = _conv_attrs(key) if op == "ConvInteger" else {}
    return b.node(op, [b.input(shapes[0], _q(key)), other], key.output_shape, dtype="int32",
                  attrs=attrs, ir=_ir(key) if op == "ConvInteger" else None)


def _rnn(b: _Builder, key: KernelKey, shapes: list[Shape]) -> str:
    """LSTM / GRU / RNN from its shapes: weights W, R[, B][, initial states] in ONNX order;
    hidden size, direction and layout (seq- or batch-first) read off W, R and the output."""
    op, ws = key.ops[0], list(key.weight_shapes)
    if not shapes or len(ws) < 2 or len(ws[1]) != 3:
        raise KernelBuildError(f"{op}: needs an input and weights W, R (got {ws})")
    x, (dirs, gh, hidden), out = shapes[0], ws[1], key.output_shape
    if gh != RNN_GATES[op] * hidden or ws[0][:2] != ws[1][:2]:
        raise KernelBuildError(f"{op}: weights {ws[0]} / {ws[1]} are not W, R of "
                               f"{RNN_GATES[op]} gates")
    geo = recurrence(op, tuple(x), ws, tuple(out))
    if geo is None:
        raise KernelBuildError(f"{op}: output {out} is neither Y nor Y_h of input {x}")
    layout = geo.layout
    ins = [b.input(x), b.weight(ws[0], "anchor"), b.weight(ws[1], "anchor")]
    rest = ws[2:]
    bias = bool(rest) and len(rest[0]) == 2 and rest[0][1] == 2 * gh
    ins.append(b.weight(rest.pop(0), "anchor") if bias else "")
    ins.append("")  # sequence_lens: every sequence full length
    # initial_h[, initial_c]: constants first, then activation inputs, as many as the op has
    states = [(s, False) for s in rest if len(s) == 3] + [(s, True) for s in shapes[1:]]
    ins += [b.input(s) if act else b.weight(s, "anchor")
            for s, act in states[:2 if op == "LSTM" else 1]]
    attrs = {"hidden_size": int(hidden), "layout": layout,
             "direction": "bidirectional" if dirs == 2 else "forward"}
    name = b.node(op, ins, out, attrs=attrs)
    if tuple(out) != geo.y_shape:  # the key's output is Y_h: the op's second output
        b.p.nodes[-1].outputs = ["", name]
    return name


def _topk(b: _Builder, key: KernelKey, shapes: list[Shape]) -> str:
    """TopK along the one axis the output shortens (the last when none does)."""
    x, out = shapes[0], key.output_shape
    axis = next((i for i, (a, c) in enumerate(zip(x, out, strict=True)) if a != c),
                len(x) - 1)
    k = b.ints([out[axis]], "k")
    return b.node("TopK", [b.input(x), k], out, attrs={"axis": axis},
                  extra_outputs=[(tuple(out), "int64")])


def _cumsum(b: _Builder, key: KernelKey, shapes: list[Shape]) -> str:
    """CumSum along the last axis (the shapes do not show which; the work is the same)."""
    axis = b.const(np.array(len(shapes[0]) - 1, dtype=np.int64), "axis")
    return b.node("CumSum", [b.input(shapes[0]), axis], key.output_shape)


def _operands(key: KernelKey, shapes: list[Shape]) -> list[tuple[Shape, bool]]:
    """A kernel's operands as (shape, is an input): its activations, then its constants."""
    return [(tuple(s), True) for s in shapes] + [(tuple(s), False) for s in key.weight_shapes]


def _operand(b: _Builder, p: tuple[Shape, bool], prefix: str) -> str:
    """Operand ``p`` of :func:`_operands` in the model: an input, or a weight named ``prefix``."""
    return b.input(p[0]) if p[1] else b.weight(p[0], prefix)


def _scatter_nd(b: _Builder, key: KernelKey, shapes: list[Shape]) -> str:
    """ScatterND: data (the output's shape), int64 indices (last axis <= its rank, random
    valid rows), updates; each an input or a constant as the key has it."""
    out = tuple(key.output_shape)
    pool = _operands(key, shapes)
    data = next((p for p in pool if p[0] == out), None)
    if data is None:
        raise KernelBuildError(f"ScatterND: no operand has the output's shape {out}")
    pool.remove(data)
    ind = next((p for p in sorted(pool, key=lambda p: p[1])  # constants first: exports
                if len(p[0]) >= 1 and 0 < p[0][-1] <= len(out)), None)  # fold indices
    if ind is None or len(pool) != 2:
        raise KernelBuildError(f"ScatterND: operands {pool} are not indices and updates")
    pool.remove(ind)
    upd = pool[0]
    q = ind[0][-1]
    idx = np.stack([b.rng.integers(0, max(out[j], 1), size=ind[0][:-1]) for j in range(q)],
                   axis=-1).astype(np.int64)

    return b.node("ScatterND", [_operand(b, data, "data"), b.const(idx, "idx"),
                                _operand(b, upd, "upd")], out)


def _dynamic_quantize(b: _Builder, key: KernelKey, shapes: list[Shape]) -> str:
    """DynamicQuantizeLinear: float in, uint8 out, with its scale and zero point."""
    return b.node("DynamicQuantizeLinear", _acts(b, shapes[:1], "float32"), key.output_shape,
                  dtype="uint8", extra_outputs=[((), "float32"), ((), "uint8")])


def _gather_elements(b: _Builder, key: KernelKey, shapes: list[Shape]) -> str:
    """GatherElements: data and int64 indices of the output's shape (random valid ones, along
    the first axis where they differ from the data, else axis 0)."""
    out = tuple(key.output_shape)
    pool = _operands(key, shapes)
    if len(pool) != 2:
        raise KernelBuildError(f"GatherElements: needs data and indices (got {pool})")
    (data, dact), (ind, iact) = pool if pool[1][0] == out else pool[::-1]
    if ind != out or len(data) != len(out):
        raise KernelBuildError(f"GatherElements: no operand of {pool} is indices of {out}")
    axis = next((i for i, (d, o) in enumerate(zip(data, out, strict=True)) if d != o), 0)
    idx = b.rng.integers(0, max(data[axis], 1), size=out).astype(np.int64)
    x = _operand(b, (data, dact), "data")
    return b.node("GatherElements", [x, b.const(idx, "idx")], out, attrs={"axis": axis})


def _scatter_elements(b: _Builder, key: KernelKey, shapes: list[Shape]) -> str:
    """ScatterElements: data (the output's shape), int64 indices and updates of one shape
    (random valid indices, along the first axis where they differ from the data, else axis
    0); the indices are the constant operand where one is (exports fold them), each other
    operand an input or a constant as the key has it."""
    out = tuple(key.output_shape)
    pool = _operands(key, shapes)
    data = next((p for p in pool if p[0] == out), None)
    if data is None or len(pool) != 3:
        raise KernelBuildError(f"ScatterElements: operands {pool} are not data, indices and "
                               f"updates of the output's shape {out}")
    pool.remove(data)
    ind = next((p for p in pool if not p[1]), pool[0])
    pool.remove(ind)
    upd = pool[0]
    if ind[0] != upd[0] or len(ind[0]) != len(out):
        raise KernelBuildError(f"ScatterElements: indices {ind[0]} and updates {upd[0]} are "
                               f"not of one shape of rank {len(out)}")
    axis = next((i for i, (d, o) in enumerate(zip(ind[0], out, strict=True)) if d != o), 0)
    idx = b.rng.integers(0, max(out[axis], 1), size=ind[0]).astype(np.int64)

    return b.node("ScatterElements", [_operand(b, data, "data"), b.const(idx, "idx"),
                                      _operand(b, upd, "upd")], out, attrs={"axis": axis})


def _one_hot(b: _Builder, key: KernelKey, shapes: list[Shape]) -> str:
    """OneHot: int64 indices, a constant depth (the output's new axis) and (off, on) values."""
    x, out = tuple(shapes[0]) if shapes else (), tuple(key.output_shape)
    for a in range(len(x) + 1):
        if x[:a] + (out[a] if a < len(out) else -1,) + x[a:] == out:
            depth = b.const(np.array([out[a]], dtype=np.int64), "depth")
            vals = b.const(np.array([0, 1], dtype=_NP.get(b.out_dtype, np.float32)), "values")
            return b.node("OneHot", [b.input(x, "int64"), depth, vals], out, attrs={"axis": a})
    raise KernelBuildError(f"OneHot: no axis of indices {x} gives {out}")


def _lrn(b: _Builder, key: KernelKey, shapes: list[Shape]) -> str:
    """LRN over its window (the layer's kernel: the ``size`` attribute)."""
    size = int(key.kernel[0]) if key.kernel else 5
    return b.node("LRN", _acts(b, shapes[:1]), key.output_shape, attrs={"size": size})


def _quick_gelu(b: _Builder, key: KernelKey, shapes: list[Shape]) -> str:
    """ONNX Runtime's fused ``x * Sigmoid(x)`` (its contrib op, alpha 1)."""
    return b.node("QuickGelu", _acts(b, shapes), key.output_shape, attrs={"alpha": 1.0},
                  domain="com.microsoft")


def _generic(b: _Builder, key: KernelKey, shapes: list[Shape]) -> str:
    """Any other op: its activation inputs, then its constants, no attributes."""
    return b.node(key.ops[0], _acts(b, shapes) + _weights(b, key), key.output_shape)


ANCHORS: dict[str, AnchorFn] = {
    "Conv": _conv, "ConvTranspose": _conv, "AveragePool": _pool, "MaxPool": _pool,
    "LpPool": _pool, "BatchNormalization": _batchnorm, "LayerNormalization": _layernorm,
    "InstanceNormalization": _layernorm, "Gemm": _gemm, "MatMul": _matmul, "Einsum": _einsum,
    "Concat": _concat, "Split": _split, "Transpose": _transpose, "Reshape": _reshape,
    "Squeeze": _squeeze, "Unsqueeze": _squeeze, "Flatten": _flatten, "Slice": _slice,
    "Pad": _pad, "Expand": _expand, "Tile": _tile, "Resize": _resize, "Upsample": _resize,
    "DepthToSpace": _depth_space, "SpaceToDepth": _depth_space, "Gather": _gather,
    "Cast": _cast, "Where": _where, "Mod": _mod, "Clip": _clip, "Pow": _pow,
    "ArgMax": _reduce, "ArgMin": _reduce, "ReorderInput": _reorder, "ReorderOutput": _reorder,
    "Null": _null, "QuantizeLinear": _quantize, "DequantizeLinear": _dequantize,
    "QLinearConv": _qlinear_conv, "QLinearMatMul": _qlinear_matmul, "MatMulInteger": _integer,
    "ConvInteger": _integer, "LSTM": _rnn, "GRU": _rnn, "RNN": _rnn, "TopK": _topk,
    "CumSum": _cumsum, "ScatterND": _scatter_nd, "DynamicQuantizeLinear": _dynamic_quantize,
    "GatherElements": _gather_elements, "ScatterElements": _scatter_elements, "LRN": _lrn,
    "OneHot": _one_hot,
    "QuickGelu": _quick_gelu,
    **{op: _compare for op in _COMPARE}, **{op: _logic for op in _LOGIC},
    **{op: _reduce for op in _REDUCE},
}


# ----------------------------------------------------------------------------- plan
def _residual(b: _Builder, shape: Shape, i: int) -> str:
    """A fused op's second activation input, entering through a 1x1 op if 4-D.

    Runtimes fuse an Add into a Conv only when both run in the same layout; a 1x1
    AveragePool puts the residual in the layout a network would have it in (ORT's
    NCHWc). ORT reorders only tensors whose channels are a multiple of 4
    (``NCHWC_ALIGN``); other residuals come from a 1x1 Conv, which runs NCHWc at any
    channel count. That op (and any reorder) is a wrapper: measured as a kernel of its
    own and taken off.
    """
    x = b.input(shape)
    if len(shape) != 4:
        return x
    if shape[1] % NCHWC_ALIGN == 0:
        return b.node("AveragePool", [x], shape, kernel=False,
                      attrs={"kernel_shape": [1, 1], "strides": [1, 1], "pads": [0, 0, 0, 0]},
                      ir=dict(kernel=(1, 1), stride=(1, 1), pads=(0, 0, 0, 0)))
    c = shape[1]
    w = b.weight((c, c, 1, 1), f"n{i}_res")
    return b.node("Conv", [x, w], shape, kernel=False,
                  attrs={"kernel_shape": [1, 1], "strides": [1, 1], "pads": [0, 0, 0, 0]},
                  ir=dict(kernel=(1, 1), stride=(1, 1), pads=(0, 0, 0, 0), dilation=(1, 1)))


def _absorbed(b: _Builder, op: str, cur: str, takes: int, shapes: list[Shape], i: int) -> str:
    """Node ``i`` of a fused kernel: ``op`` applied to ``cur`` (+ its operand)."""
    out = b.key.output_shape
    ins = [cur]
    if op == "BatchNormalization":
        c = out[1] if len(out) > 1 else 1
        ins += [b.weight((c,), f"n{i}", kind="positive" if j in (0, 3) else "normal")
                for j in range(4)]
    elif takes:
        ins += [_residual(b, s, i) for s in shapes]
    elif op == "Add" and b.key.ops[0] == "MatMul":  # a Gemm's bias (MatMulAddFusion)
        ins.append(b.weight((out[-1],), f"n{i}"))
    elif op in BINARY_OPS:  # a constant operand (ConvMulFusion / ConvAddFusion)
        value = 0.0 if op == "Mul" else 1.0
        ins.append(b.const(np.array(value, dtype=_NP.get(b.key.dtype, np.float32)), f"n{i}"))
    elif op == "Clip":
        ins += [b.const(np.array(v, dtype=np.float32), f"n{i}") for v in (0.0, 6.0)]
    return b.node(op, ins, out)


def _is_qdq(key: KernelKey) -> bool:
    """A quantized kernel of the QDQ rules: ``DequantizeLinear+OP+QuantizeLinear`` on uint8/int8."""
    return (len(key.ops) == 3 and key.ops[0] == "DequantizeLinear"
            and key.ops[2] == "QuantizeLinear" and key.dtype in ("uint8", "int8"))


def _plan_qdq(key: KernelKey, seed: int) -> KernelPlan:
    """``OP``'s float one-kernel model between quantized tensors: each activation input a
    ``DequantizeLinear`` of a uint8/int8 input, each float constant a ``DequantizeLinear``
    of an int8 one (a Conv's or Gemm's bias int32), the output quantized. ONNX Runtime
    fuses it into its ``QLinear*`` kernel as it does in a QDQ model."""
    q = key.dtype
    p = plan(key._replace(ops=(key.ops[1],), dtype="float32"), seed)
    p.key = key
    scale, bias_scale = "qdq_scale", "qdq_bias_scale"  # a bias's is input x weight scale
    for name, v in ((scale, 0.05), (bias_scale, 0.05 * 0.05)):
        p.consts[name] = np.array(v, np.float32)
        p.shapes[name], p.dtypes[name] = (), "float32"
    zps: dict[str, str] = {}

    def zp(dt: str) -> str:
        if dt not in zps:
            zps[dt] = f"qdq_zp_{dt}"
            p.consts[zps[dt]] = np.array(0, _NP[dt])
            p.shapes[zps[dt]], p.dtypes[zps[dt]] = (), dt
        return zps[dt]

    front: list[PlanNode] = []
    rename: dict[str, str] = {}
    for x in p.inputs:  # graph input x (now quantized) -> DequantizeLinear -> x_f
        rename[x] = f"{x}_f"
        p.shapes[rename[x]], p.dtypes[rename[x]] = p.shapes[x], "float32"
        p.dtypes[x] = q
        front.append(PlanNode(f"dq_{x}", "DequantizeLinear", [x, scale, zp(q)], [rename[x]]))
    # a matrix product's weights are int8 (its bias int32); an element-wise op's constant
    # operand is quantized as its activations are (QLinearAdd takes one type)
    mac = key.ops[1] in ("Conv", "Gemm", "MatMul")
    bias_int32 = key.ops[1] in ("Conv", "Gemm")
    for n in p.nodes:
        for t in n.inputs:
            if t in p.consts and t not in rename and p.dtypes[t] == "float32" \
                    and t not in (scale, bias_scale) and n.kernel:
                dt = ("int32" if bias_int32 and len(p.shapes[t]) == 1
                      else "int8" if mac else q)
                arr = p.consts[t]
                p.consts[t] = np.clip(np.round(arr / 0.05), 0 if dt == "uint8" else -8,
                                      8).astype(_NP[dt])
                p.dtypes[t] = dt
                rename[t] = f"{t}_f"
                p.shapes[rename[t]], p.dtypes[rename[t]] = p.shapes[t], "float32"
                front.append(PlanNode(f"dq_{t}", "DequantizeLinear",
                                      [t, bias_scale if dt == "int32" else scale, zp(dt)],
                                      [rename[t]]))
        n.inputs = [rename.get(t, t) for t in n.inputs]
    last = p.nodes[-1]
    y = last.outputs[0]
    out = f"{y}_q"
    p.shapes[out], p.dtypes[out] = p.shapes[y], q
    p.nodes = front + p.nodes + [PlanNode("q_out", "QuantizeLinear", [y, scale, zp(q)], [out])]
    p.outputs = [out]
    return p


def plan(key: KernelKey, seed: int = 0) -> KernelPlan:
    """The one-kernel model of ``key`` as a :class:`KernelPlan` (raises :class:`KernelBuildError`)."""
    if not key.ops or not key.ops[0]:
        raise KernelBuildError(f"kernel key {key.text!r} names no op")
    if _is_qdq(key):
        return _plan_qdq(key, seed)
    b = _Builder(key, seed)
    arity = key.arity
    if len(arity) != len(key.ops) or sum(arity) != len(key.input_shapes):
        raise KernelBuildError(f"kernel key {key.text!r}: {len(key.input_shapes)} inputs do not "
                               f"split over its {len(key.ops)} ops as {arity}")
    shapes = list(key.input_shapes)
    take, shapes = shapes[:arity[0]], shapes[arity[0]:]
    try:
        cur = ANCHORS.get(key.ops[0], _generic)(b, key, take)
        for i, op in enumerate(key.ops[1:], start=1):
            mine, shapes = shapes[:arity[i]], shapes[arity[i]:]
            cur = _absorbed(b, op, cur, arity[i], mine, i)
    except (IndexError, ValueError, ZeroDivisionError) as exc:
        raise KernelBuildError(f"kernel key {key.text!r}: shapes do not fit op "
                               f"{key.ops[0]} ({type(exc).__name__}: {exc})") from None
    last = b.p.nodes[-1]
    b.p.outputs = [o for o in last.outputs if o]
    return b.p


def kernel_model(key: KernelKey, seed: int = 0, opset: int = OPSET):
    """An ``onnx.ModelProto`` that runs exactly the kernel named by ``key`` (its :func:`plan`)."""
    from onnx import helper, numpy_helper

    p = plan(key, seed)

    def info(name: str):
        return helper.make_tensor_value_info(name, ELEM.get(p.dtypes[name], 1),
                                             list(p.shapes[name]))

    nodes = [helper.make_node(n.op, n.inputs, n.outputs, name=n.name, domain=n.domain, **n.attrs)
             for n in p.nodes]
    inits = [numpy_helper.from_array(arr, name) for name, arr in p.consts.items()]
    graph = helper.make_graph(nodes, f"kernel_{key.ops[0]}", [info(t) for t in p.inputs],
                              [info(t) for t in p.outputs], inits)
    opset = max([opset] + [MIN_OPSET.get(n.op, 0) for n in p.nodes])
    opsets = [helper.make_opsetid("", opset)]
    for domain in sorted({n.domain for n in p.nodes} - {""}):
        opsets.append(helper.make_opsetid(domain, 1))
    model = helper.make_model(graph, opset_imports=opsets, producer_name="costmodels-lut")
    model.ir_version = min(model.ir_version, 8)
    model.doc_string = key.text
    return model


def plan_network(p: KernelPlan) -> Network:
    """The IR of a plan (graph inputs ``x0``, ...; layer names as the nodes')."""
    layers = []
    # a DequantizeLinear of a constant is the quantized constant (the importer folds it)
    folded = {n.outputs[0]: n.inputs[0] for n in p.nodes
              if n.op == "DequantizeLinear" and n.inputs[0] in p.consts}
    for n in p.nodes:
        if n.outputs[0] in folded:
            continue
        ins = [folded.get(t, t) for t in n.inputs]
        acts = [t for t in ins if t and t not in p.consts]
        consts = [t for t in ins if t and t in p.consts]
        out = _first(n.outputs)
        dtype = p.dtypes[acts[0]] if acts else p.dtypes[out]
        layers.append(make_layer(n.name, n.op, acts, n.outputs, [p.shapes[t] for t in acts],
                                 p.shapes[out], [p.shapes[t] for t in consts],
                                 dtype=dtype, out_dtype=p.dtypes[out],
                                 bytes_weights=sum(numel(p.shapes[t]) * DTYPE_BYTES.get(
                                     p.dtypes[t], 4) for t in consts),
                                 **n.ir))
    return Network(f"kernel:{p.key.text}", tuple((t, p.shapes[t]) for t in p.inputs),
                   tuple(layers), tuple(p.outputs))


def _first(outputs: list[str]) -> str:
    """A node's first output that exists (an RNN whose Y is omitted gives Y_h)."""
    return next(o for o in outputs if o)


def key_network(key: KernelKey) -> Network:
    """The IR of :func:`kernel_model` (graph inputs ``x0``, ...), for the rules to split."""
    return plan_network(plan(key))


def wrappers(key: KernelKey, rules: FusionRules) -> list[str]:
    """Keys of the kernels the one-kernel model of ``key`` runs besides the kernel itself.

    The model's IR is split with ``rules``; every kernel that covers none of the
    plan's kernel nodes (a layout reorder, the residual's pool) is a wrapper.
    Raises :class:`KernelBuildError` when ``key`` cannot be built.
    """
    p = plan(key)
    mine = p.kernel_names
    return [k.text for k in kernels(plan_network(p), rules) if not mine.intersection(k.names)]
