"""The kernels a runtime executes for a network (the IR), following fusion rules kept as data.

The one planner of "which kernels run": the lookup table sums one measured entry
per kernel, the roofline costs each kernel from the layers it covers. Rules ship
in ``costmodels/fusion_rules/<name>.json`` (``ort``, ``ort_arm``, ``tvm``,
``eager``, ``naive``: each file's ``doc`` states what it assumes and how far it
was checked; :func:`load_rules` also reads any JSON path). This module only
interprets them:

1. ``eliminate``: ops the runtime removes (their consumers read their input).
2. ``cse``: identical weight-free nodes on the same inputs are merged
   (``scalar_constant_ops``: ops whose only constant is a scalar, e.g. NB201's
   ``Mul(x, 0)`` zero nodes, are merged too; the IR keeps no constant values), except
   a node whose output is a graph output (ONNX Runtime keeps each of those).
3. ``prune_dead``: drop nodes no graph output depends on.
4. ``layout``: which ops run in the blocked NCHWc layout (``always``; ``follow``
   = only when every input already is); a ``ReorderInput``/``ReorderOutput``
   kernel is added once per tensor that crosses between layouts.
5. ``fusion``: an ``anchor`` op absorbs the ops of its ``chain`` that follow it
   along single-use edges, in order (``repeat``: may occur several times;
   ``constant_operand``: the absorbed op's other operands must be constants;
   ``other_input_layout``: the absorbed op's other input must be in that layout;
   ``pick``: which producer absorbs an op both inputs could absorb;
   ``gemm_bias``: the absorbed Add must be what ONNX Runtime's MatMulAddFusion turns
   into a ``Gemm``'s C: the anchor a matrix product by a 2-D matrix, the Add's other
   operand a bias of the output's last size, or on a 2-D product any operand that
   broadcasts to it; ``max_rank``: the absorbed op's output has at most that rank;
   ``after_previous``: only right after the previous step absorbed an op).
6. ``qdq`` (before 4 and 5): a model quantized in the QDQ format, as the runtime runs it
   (:class:`QDQRules`: ``DequantizeLinear -> op -> QuantizeLinear`` as one quantized
   kernel keyed ``DequantizeLinear+OP+QuantizeLinear``, data movement on the quantized
   tensor, quantized convs channels-last with a ``Transpose`` where a tensor crosses).
7. ``slices_to_split``: Slices that cut one tensor into parts run as one ``Split``;
   ``quick_gelu``: ``x * Sigmoid(x)`` runs as one ``QuickGelu`` (both before 4 to 6).

A kernel is named by its :class:`KernelKey`: the op sequence fused into it, the
shapes of its activation inputs and of its output, the anchor op's weight
shapes, kernel, stride, pads, dilation, groups, dtype and the anchor's
attributes that the shapes alone do not fix (``a=``: e.g. ``axis:1`` of a
Concat, ``n:3`` outputs of a Split, ``perm:0x2x1x3`` of a Transpose,
``transB:0`` of a Gemm, ``ar:1x0x1`` activation inputs per fused op where the
default reading of ``in=`` would be wrong; only values other than the one-kernel
builder's defaults are written, so keys of NAS-Bench-201 kernels carry none).
Two kernels with the same key cost the same. The planner emits a key for every
layer whatever its op or shapes (:func:`op_attrs` never fails). The key's text
(:attr:`KernelKey.text`) has no commas, so it sits in CSV cells unquoted, and
parses back (:func:`parse_key`)::

    Conv+BatchNormalization+Relu|in=1x16x32x32|out=1x16x32x32|w=16x16x3x3|k=3x3|s=1x1|p=1x1x1x1|g=1|dt=float32
    Concat|in=1x16x8x8;1x32x8x8|out=1x48x8x8|dt=float32|a=axis:1
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property, lru_cache
from importlib import resources
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import quote, unquote

from costmodels.errors import ModelFileError, special_file
from costmodels.network import DTYPE_BYTES, Layer, Network, Shape, make_layer, numel
from costmodels.ops import MAC_OPS, RESIZE_OPS

RULES_FORMAT = "costmodels-fusion-rules"
RULES_SCHEMA = 1
LAYOUT_VERSION = 2  # the newest layout rules this planner knows (ort.json's)
RULES_PACKAGE_DIR = "fusion_rules"
_KEY_FIELDS = ("in", "out", "w", "k", "s", "p", "d", "g", "dt", "a")
# ops whose kernel reads two activations when they anchor a fused kernel (default arity)
BINARY_OPS = frozenset({"Add", "Sub", "Mul", "Div", "Sum", "Max", "Min"})
# absorbed ops that take their second operand as an activation by default (else a constant)
_RESIDUAL_OPS = frozenset({"Add", "Sum"})
_SAFE = "x-_.~"  # attribute text left as it is; anything else (",", "|", ";", "=") %-quoted
# A layer's attributes that decide its result, input_shapes .. dtype (CSE compares them)
_ATTRS = slice(Layer._fields.index("input_shapes"), Layer._fields.index("dtype") + 1)


# ----------------------------------------------------------------------------- kernels
def _dims(shape: Shape) -> str:
    return "x".join(str(int(d)) for d in shape) if shape else "scalar"


def _parse_dims(text: str) -> Shape:
    return () if text == "scalar" else tuple(int(d) for d in text.split("x"))


class KernelKey(NamedTuple):
    """What decides a kernel's cost (what :func:`parse_key` returns and :attr:`text` prints)."""

    ops: tuple[str, ...]
    input_shapes: tuple[Shape, ...]
    output_shape: Shape
    weight_shapes: tuple[Shape, ...] = ()
    kernel: Shape = ()
    stride: Shape = ()
    pads: Shape = ()
    dilation: Shape = ()
    groups: int = 1
    dtype: str = "float32"
    attrs: tuple[tuple[str, str], ...] = ()

    def attr(self, name: str, default: str = "") -> str:
        """The anchor attribute ``name`` as written in the key (``default`` when absent)."""
        for k, v in self.attrs:
            if k == name:
                return v
        return default

    @property
    def arity(self) -> tuple[int, ...]:
        """Activation inputs each op of the kernel reads from ``input_shapes``, in order."""
        text = self.attr("ar")
        if text:
            try:
                return tuple(int(v) for v in text.split("x"))
            except ValueError:
                pass
        return default_arity(self.ops, len(self.input_shapes), bool(self.weight_shapes))

    @property
    def text(self) -> str:
        return _key_text(self)

    def __str__(self) -> str:
        return self.text


@lru_cache(maxsize=1 << 16)
def _key_text(key: KernelKey) -> str:
    """The text of a key (cached: networks of one space share most of their kernels)."""
    parts = ["+".join(key.ops),
             "in=" + ";".join(_dims(s) for s in key.input_shapes),
             "out=" + _dims(key.output_shape)]
    if key.weight_shapes:
        parts.append("w=" + ";".join(_dims(s) for s in key.weight_shapes))
    for name, val in (("k", key.kernel), ("s", key.stride), ("p", key.pads)):
        if val:
            parts.append(f"{name}={_dims(val)}")
    if key.dilation and any(d != 1 for d in key.dilation):
        parts.append(f"d={_dims(key.dilation)}")
    if key.groups != 1 or "Conv" in key.ops:
        parts.append(f"g={key.groups}")
    parts.append(f"dt={key.dtype}")
    if key.attrs:
        parts.append("a=" + ";".join(f"{quote(k, _SAFE)}:{quote(v, _SAFE)}" for k, v in key.attrs))
    return "|".join(parts)


class Kernel(NamedTuple):
    """One kernel of a network as the runtime executes it.

    ``layers``: the IR layers it covers, anchor first (empty for a layout reorder
    the runtime inserts); ``layout``: ``"nchwc"``, ``"nchw"`` or (a quantized region)
    ``"nhwc"``.
    """

    key: KernelKey
    layers: tuple[Layer, ...] = ()
    layout: str = "nchw"

    @property
    def text(self) -> str:
        return self.key.text

    @property
    def ops(self) -> tuple[str, ...]:
        return self.key.ops

    @property
    def names(self) -> tuple[str, ...]:
        """The names of the IR layers it covers."""
        return tuple(layer.name for layer in self.layers)


def parse_key(text: str) -> KernelKey:
    """Key text -> :class:`KernelKey`; raises ``ValueError`` naming the bad part."""
    parts = text.strip().split("|")
    if len(parts) < 3 or not parts[0]:
        raise ValueError(f"not a kernel key: {text!r} (expected 'Op[+Op...]|in=...|out=...|...')")
    fields: dict[str, str] = {}
    for part in parts[1:]:
        name, sep, val = part.partition("=")
        if not sep or name not in _KEY_FIELDS:
            raise ValueError(f"kernel key {text!r}: unknown field {part!r}; fields are "
                             f"{', '.join(_KEY_FIELDS)}")
        fields[name] = val
    if "in" not in fields or "out" not in fields:
        raise ValueError(f"kernel key {text!r} needs in= and out= fields")
    try:
        def many(name: str) -> tuple[Shape, ...]:
            val = fields.get(name, "")
            return tuple(_parse_dims(s) for s in val.split(";")) if val else ()

        return KernelKey(
            ops=tuple(parts[0].split("+")),
            input_shapes=many("in"),
            output_shape=_parse_dims(fields["out"]),
            weight_shapes=many("w"),
            kernel=_parse_dims(fields["k"]) if "k" in fields else (),
            stride=_parse_dims(fields["s"]) if "s" in fields else (),
            pads=_parse_dims(fields["p"]) if "p" in fields else (),
            dilation=_parse_dims(fields["d"]) if "d" in fields else (),
            groups=int(fields.get("g", 1)),
            dtype=fields.get("dt", "float32"),
            attrs=_parse_attrs(fields.get("a", "")),
        )
    except ValueError as exc:
        raise ValueError(f"kernel key {text!r}: bad number in a shape ({exc})") from None


def _parse_attrs(text: str) -> tuple[tuple[str, str], ...]:
    out = []
    for item in filter(None, text.split(";")):
        name, sep, val = item.partition(":")
        if not sep:
            raise ValueError(f"attribute {item!r} is not name:value")
        out.append((unquote(name), unquote(val)))
    return tuple(out)


def default_arity(ops: tuple[str, ...], n_inputs: int, has_weights: bool) -> tuple[int, ...]:
    """How ``n_inputs`` activation inputs of a kernel are read when its key says nothing.

    A single op reads them all; a fused anchor reads one (two for a weight-free
    binary op), each absorbed Add/Sum one more while any are left (a residual),
    every other absorbed op none (its operand is a constant).
    """
    if len(ops) <= 1:
        return (n_inputs,)
    first = min(n_inputs, 2 if ops[0] in BINARY_OPS and not has_weights else 1)
    arity, left = [first], n_inputs - first
    for op in ops[1:]:
        take = 1 if op in _RESIDUAL_OPS and left > 0 else 0
        arity.append(take)
        left -= take
    if left > 0:  # more inputs than the default reading places: the anchor takes them
        arity[0] += left
    return tuple(arity)


def _first_diff(a: Shape, b: Shape) -> int | None:
    """First axis where two shapes of one rank differ (None: same rank nowhere different)."""
    if len(a) != len(b):
        return None
    for i, (x, y) in enumerate(zip(a, b, strict=True)):
        if x != y:
            return i
    return None


def _perm(src: Shape, dst: Shape) -> tuple[int, ...] | None:
    """A permutation p with dst[i] == src[p[i]] (the first unused match for each axis)."""
    if len(src) != len(dst) or sorted(src) != sorted(dst):
        return None
    used: set[int] = set()
    perm = []
    for d in dst:
        j = next(j for j, s in enumerate(src) if s == d and j not in used)
        used.add(j)
        perm.append(j)
    return tuple(perm)


# output element size (bytes) -> the dtype it most likely is, by the input's kind
_OUT_DTYPES = {1: "uint8", 2: "float16", 4: "float32", 8: "int64"}


def _out_dtype(layer: Layer) -> str:
    """The output dtype when its element size differs from the input's ('' when the same).

    The IR keeps the input dtype and the output's bytes; a Cast, a comparison,
    a QuantizeLinear change the element size, and the one-kernel model needs it.
    """
    if len(layer.outputs) > 1:  # bytes_out holds every output's bytes: the IR's own field
        return layer.out_dtype
    n = math.prod(layer.output_shape)
    if n <= 0 or layer.bytes_out == n * DTYPE_BYTES.get(layer.dtype, 4) or layer.bytes_out % n:
        return ""
    size = layer.bytes_out // n
    if size == 1 and layer.op in _BOOL_OUT:
        return "bool"
    if size == 4 and layer.dtype.startswith(("float", "bfloat")) is False:
        return "float32" if layer.op not in ("MatMulInteger", "ConvInteger") else "int32"
    return _OUT_DTYPES.get(size, "")


_BOOL_OUT = frozenset({"Equal", "Less", "Greater", "LessOrEqual", "GreaterOrEqual", "Not", "And",
                       "Or", "Xor", "IsNaN", "IsInf", "Cast"})


def op_attrs(layer: Layer) -> tuple[tuple[str, str], ...]:
    """Attributes of ``layer`` that decide its kernel and that its shapes do not show.

    Derived from what the IR keeps (shapes, dtypes, bytes; an ``equation`` when
    the layer carries one): only the values that differ from what
    :mod:`measure.lut.kernel_onnx` assumes are returned, so most layers have none.
    Never raises.
    """
    to = _out_dtype(layer)
    attrs = _shape_attrs(layer)
    if layer.op == "Einsum" and getattr(layer, "equation", ""):  # an IR that keeps it
        attrs += (("equation", str(layer.equation)),)
    return attrs + ((("to", to),) if to else ())


_SHAPE_ATTR_OPS = frozenset({"Concat", "Split", "Transpose", "Gemm"})


def _shape_attrs(layer: Layer) -> tuple[tuple[str, str], ...]:
    op, ins, out = layer.op, layer.input_shapes, layer.output_shape
    if op not in _SHAPE_ATTR_OPS:
        return ()
    shapes = tuple(ins) + tuple(layer.weight_shapes)
    if op == "Concat":
        axis = next((a for s in shapes if (a := _first_diff(s, out)) is not None), 0)
        return (("axis", str(axis)),)
    if op == "Split":
        n = max(len(layer.outputs), 1)
        axis = _first_diff(ins[0], out) if ins else None
        return (("axis", str(axis or 0)), ("n", str(n)))
    if op == "Transpose" and ins:
        perm = _perm(ins[0], out)
        ident = tuple(range(len(out)))
        if perm is not None and perm != ident:
            return (("perm", "x".join(map(str, perm))),)
        return ()
    if op == "Gemm":
        return _gemm_attrs(ins, layer.weight_shapes, out)
    return ()


def _gemm_attrs(ins: tuple[Shape, ...], weights: tuple[Shape, ...],
                out: Shape) -> tuple[tuple[str, str], ...]:
    """transA/transB of a Gemm whose A is (M, K) and B (N, K) unless the shapes say otherwise."""
    a = ins[0] if ins else (weights[0] if weights else ())
    b = ins[1] if len(ins) > 1 else (weights[0] if ins and weights else
                                     (weights[1] if len(weights) > 1 else ()))
    if len(a) != 2 or len(b) != 2 or len(out) != 2:
        return ()
    attrs = []
    trans_a = a[0] != out[0] and a[1] == out[0]
    if trans_a:
        attrs.append(("transA", "1"))
    k = a[0] if trans_a else a[1]
    if not (b[1] == k and b[0] == out[1]) and b[0] == k and b[1] == out[1]:
        attrs.append(("transB", "0"))
    return tuple(attrs)


# ----------------------------------------------------------------------------- rules
@dataclass(frozen=True)
class ChainStep:
    ops: frozenset[str]
    repeat: bool = False
    constant_operand: bool = False
    other_input_layout: str = ""
    pick: str = "first"
    gemm_bias: bool = False
    max_rank: int = 0  # 0: any
    after_previous: bool = False


@dataclass(frozen=True)
class FusionRule:
    anchor: str
    layout: str  # "any" | "nchwc" | "nchw": the anchor's layout for the rule to apply
    chain: tuple[ChainStep, ...]


@dataclass(frozen=True)
class LayoutRules:
    block: int
    always: frozenset[str]
    follow: frozenset[str]
    plain_input_ok: frozenset[str]
    reorder_input: str
    reorder_output: str
    channel_alignment: int = 1  # a tensor can be reordered only if its channels are a multiple
    # 1: the layouts of the first rules files; 2: ORT's handling of pools, grouped convs,
    # broadcasting binary ops, Concat and plain-conv inputs (rules files that say so): a LUT
    # keeps planning with the version its stored rules name
    version: int = 1  # of the layout rules (1..LAYOUT_VERSION); a LUT plans with its own


@dataclass(frozen=True)
class QDQRules:
    """How the runtime runs a model quantized in the QDQ format (``qdq`` of a rules file).

    ``fuse``: an op whose activation inputs all come from ``DequantizeLinear`` and whose
    only reader is a ``QuantizeLinear`` runs as one quantized kernel (ORT's ``QLinearConv``,
    ``QLinearAdd``, ``QGemm`` ...), keyed ``DequantizeLinear+OP+QuantizeLinear``; ``drop``:
    such an op runs on the quantized tensor itself (its DQ and Q are dropped);
    ``remove_if_uint8``: such an op disappears when the tensors are uint8 (a ReLU the
    quantization's clamp already does). Only activations of ``dtypes`` (``activation_dtypes``,
    default uint8) are rewritten. ``channels_last``: fused kernels of these ops run
    in NHWC, ``channels_last_follow``: ops that stay in NHWC on NHWC inputs; a 4-D tensor
    that crosses between NHWC and NCHW costs a ``Transpose``.

    ``int8_to_uint8`` (ONNX Runtime on x86, whose quantized kernels take uint8 activations:
    its ``QDQS8ToU8Transformer``): an int8 tensor written by a ``QuantizeLinear`` runs as
    uint8 when it is not a graph output, its only reader is one ``DequantizeLinear`` and that
    DQ has at most one reader (a graph output counts); other int8 tensors stay int8. A group
    is rewritten only when its inputs and output are of one type after that, and an int8
    group of a ``uint8_only`` op (Conv, MatMul: no int8 kernel there) stays float.
    ``dequantize_weights``: a float op that reads quantized weights runs a
    ``DequantizeLinear`` of each at every inference and, its weights not constant, no
    blocked layout (rules files without the field, as LUTs stored them before, plan as
    they did).
    """

    fuse: frozenset[str]
    drop: frozenset[str]
    dtypes: frozenset[str] = frozenset({"uint8"})  # activation types the rewrite applies to
    remove_if_uint8: frozenset[str] = frozenset()
    channels_last: frozenset[str] = frozenset()
    channels_last_follow: frozenset[str] = frozenset()
    int8_to_uint8: bool = False
    uint8_only: frozenset[str] = frozenset()
    dequantize_weights: bool = False


@dataclass(frozen=True)
class FusionRules:
    """Parsed rules of one runtime; ``doc`` is the JSON text they came from (stored in a LUT)."""

    runtime: str
    eliminate: frozenset[str]
    cse_ops: frozenset[str]
    cse_scalar_ops: frozenset[str]
    prune_dead: bool
    layout: LayoutRules | None
    fusion: tuple[FusionRule, ...]
    doc: str
    name: str = ""
    qdq: QDQRules | None = None
    slices_to_split: bool = False  # Slices that cut one tensor into parts run as one Split
    quick_gelu: bool = False  # x * Sigmoid(x) runs as one QuickGelu (SiLU, swish)

    @property
    def hash(self) -> str:
        """16-hex SHA-256 of the canonical JSON: equal rules, equal hash."""
        canon = json.dumps(json.loads(self.doc), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canon.encode()).hexdigest()[:16]

    @cached_property
    def _anchors(self) -> dict[tuple[str, str], FusionRule | None]:
        """(op, layout) -> the first rule anchored there, for both layouts of every anchor."""
        table: dict[tuple[str, str], FusionRule | None] = {}
        for rule in self.fusion:
            for lay in ("nchw", "nchwc"):
                if rule.layout in ("any", lay):
                    table.setdefault((rule.anchor, lay), rule)
        return table

    def anchor_rule(self, op: str, layout: str) -> FusionRule | None:
        return self._anchors.get((op, layout))


def rules_from_json(text: str, source: str = "<rules>") -> FusionRules:
    """Parse and validate a rules document; ``ModelFileError`` says what is wrong."""
    try:
        d: dict[str, Any] = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ModelFileError(f"{source}: fusion rules are not valid JSON ({exc})") from None
    except RecursionError:
        raise ModelFileError(f"{source}: fusion rules nested too deep to be rules") from None
    fmt, schema = (d.get("format"), d.get("schema")) if isinstance(d, dict) else (None, None)
    if fmt != RULES_FORMAT or schema != RULES_SCHEMA:
        raise ModelFileError(f"{source}: not a costmodels fusion-rules file of schema "
                             f"{RULES_SCHEMA} (format={fmt!r}, schema={schema!r})")
    try:
        lay = _object(d.get("layout"), "layout")
        layout = None if not lay else LayoutRules(
            block=_count(lay["block"], "layout.block", 1 << 12),
            always=_names(lay["always"], "layout.always"),
            follow=_names(lay["follow"], "layout.follow"),
            plain_input_ok=_names(lay.get("plain_input_ok_if_channels_not_multiple_of_block",
                                          ()), "layout.plain_input_ok_if_channels_not_"
                                               "multiple_of_block"),
            reorder_input=_text(lay["reorder_input"], "layout.reorder_input"),
            reorder_output=_text(lay["reorder_output"], "layout.reorder_output"),
            channel_alignment=_count(lay.get("channel_alignment", 1), "layout.channel_alignment",
                                     1 << 12),
            version=_count(lay.get("version", 1), "layout.version", LAYOUT_VERSION))
        fusion = tuple(
            FusionRule(_text(r["anchor"], "fusion[].anchor"),
                       _text(r.get("layout", "any"), "fusion[].layout"),
                       tuple(ChainStep(_op_set(s["op"]), bool(s.get("repeat", False)),
                                       bool(s.get("constant_operand", False)),
                                       _text(s.get("other_input_layout", ""),
                                             "fusion[].chain[].other_input_layout"),
                                       _text(s.get("pick", "first"), "fusion[].chain[].pick"),
                                       _flag(s.get("gemm_bias", False),
                                             "fusion[].chain[].gemm_bias"),
                                       (_count(s["max_rank"], "fusion[].chain[].max_rank", 64)
                                        if "max_rank" in s else 0),
                                       _flag(s.get("after_previous", False),
                                             "fusion[].chain[].after_previous"))
                             for s in r.get("chain", ())))
            for r in d.get("fusion", ()))
        cse = d.get("cse") or {}
        if not isinstance(cse, dict):
            raise TypeError(f"field 'cse' must be an object with 'ops' and "
                            f"'scalar_constant_ops', not {cse!r:.60}")
        q = _object(d.get("qdq"), "qdq")
        qdq = None if not q else QDQRules(
            fuse=_names(q.get("fuse", ()), "qdq.fuse"),
            drop=_names(q.get("drop", ()), "qdq.drop"),
            dtypes=_names(q.get("activation_dtypes", ["uint8"]), "qdq.activation_dtypes",
                          "type names (uint8, int8)"),
            remove_if_uint8=_names(q.get("remove_if_uint8", ()), "qdq.remove_if_uint8"),
            channels_last=_names(q.get("channels_last", ()), "qdq.channels_last"),
            channels_last_follow=_names(q.get("channels_last_follow", ()),
                                        "qdq.channels_last_follow"),
            int8_to_uint8=_flag(q.get("int8_to_uint8", False), "qdq.int8_to_uint8"),
            uint8_only=_names(q.get("uint8_only", ()), "qdq.uint8_only"),
            dequantize_weights=_flag(q.get("dequantize_weights", False),
                                     "qdq.dequantize_weights"))
        prune = _flag(d.get("prune_dead", False), "prune_dead")
        to_split = _flag(d.get("slices_to_split", False), "slices_to_split")
        quick_gelu = _flag(d.get("quick_gelu", False), "quick_gelu")
        return FusionRules(
            runtime=str(d["runtime"]), eliminate=_names(d.get("eliminate", ()), "eliminate"),
            cse_ops=_names(cse.get("ops", ()), "cse.ops"),
            cse_scalar_ops=_names(cse.get("scalar_constant_ops", ()), "cse.scalar_constant_ops"),
            prune_dead=prune, layout=layout, fusion=fusion,
            doc=text, name=str(d.get("name", d["runtime"])), qdq=qdq,
            slices_to_split=to_split, quick_gelu=quick_gelu)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise ModelFileError(f"{source}: malformed fusion rules ({type(exc).__name__}: {exc})"
                             ) from None


def _object(v: Any, field: str) -> dict | None:
    """An optional JSON object (absent, null or empty: the field is off)."""
    if v is not None and not isinstance(v, dict):
        raise TypeError(f"field {field!r} must be an object, not {v!r:.60}")
    return v or None


def _flag(v: Any, field: str) -> bool:
    if not isinstance(v, bool):
        raise TypeError(f"field {field!r} must be true or false, not {v!r:.60}")
    return v


def _count(v: Any, field: str, most: int) -> int:
    """A whole number in 1..``most`` (a block of 0 divided by zero; "16" or 16.7 passed)."""
    if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v <= most:
        raise ValueError(f"field {field!r} must be a whole number from 1 to {most}, not "
                         f"{v!r:.60}")
    return v


def _names(v: Any, field: str, what: str = "op names") -> frozenset[str]:
    """A list of op names (a string alone would be read as its letters)."""
    if not isinstance(v, (list, tuple)) or not all(isinstance(x, str) for x in v):
        raise TypeError(f"field {field!r} must be a list of {what}, not {v!r:.60}")
    return frozenset(v)


def _op_set(op: str | list[str]) -> frozenset[str]:
    return frozenset([op]) if isinstance(op, str) else _names(op, "fusion[].chain[].op")


def _text(v: Any, field: str) -> str:
    if not isinstance(v, str):
        raise TypeError(f"field {field!r} must be a string, not {v!r:.60}")
    return v


def shipped_rules() -> list[str]:
    """Names of the rules shipped in ``costmodels/fusion_rules/``, sorted."""
    folder = resources.files("costmodels").joinpath(RULES_PACKAGE_DIR)
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".json"))


def with_block(rules: FusionRules, block: int, why: str) -> FusionRules:
    """``rules`` with their blocked layout's channel block set to ``block`` (a new doc and
    hash; ``why`` appended to the doc text); as they are without a blocked layout or when
    the block is already that."""
    if rules.layout is None or rules.layout.block == block:
        return rules
    doc = json.loads(rules.doc)
    doc["layout"]["block"] = block
    doc["doc"] = f"{doc.get('doc', '')} [layout.block {block}: {why}]"
    return rules_from_json(json.dumps(doc, indent=1), f"{rules.name} rules at block {block}")


def load_rules(name_or_path: str | Path) -> FusionRules:
    """Shipped rules by name (``"ort"``, ``"tvm"``, ... see :func:`shipped_rules`) or a JSON path."""
    p = Path(name_or_path)
    if p.suffix == ".json" or p.exists():
        if kind := special_file(p):
            raise ModelFileError(f"{p}: is {kind}, not a fusion-rules JSON file")
        try:
            text = p.read_text()
        except OSError as exc:
            raise ModelFileError(f"{p}: cannot read fusion rules: {exc.strerror}") from None
        return rules_from_json(text, str(p))
    where = f"costmodels/{RULES_PACKAGE_DIR}/{name_or_path}.json"
    res = resources.files("costmodels").joinpath(f"{RULES_PACKAGE_DIR}/{name_or_path}.json")
    if not res.is_file():
        raise ModelFileError(f"no fusion rules named {str(name_or_path)!r} (no {where}); "
                             f"shipped: {', '.join(shipped_rules())}, or give a .json path")
    return rules_from_json(res.read_text(), where)


# ----------------------------------------------------------------------------- graph passes
def _simplify(net: Network, rules: FusionRules) -> tuple[list[tuple[Layer, tuple[str, ...]]],
                                                       list[str]]:
    """Eliminate, CSE and (if asked) prune: layers kept with their rewired inputs, outputs."""
    # alias values are always kept tensors (a layer is aliased when it is reached, to
    # tensors already resolved), so one lookup resolves a name
    alias: dict[str, str] = {}
    kept: list[tuple[Layer, tuple[str, ...]]] = []
    seen: dict[tuple, str] = {}
    eliminate, cse, cse_scalar = rules.eliminate, rules.cse_ops, rules.cse_scalar_ops
    graph_outputs = frozenset(net.outputs)  # ONNX Runtime's CSE keeps a node that makes one
    for layer in net.layers:
        ins = layer.inputs
        if not alias.keys().isdisjoint(ins):
            ins = tuple([alias.get(t, t) for t in ins])
        out = layer.outputs[0] if layer.outputs else layer.name
        op = layer.op
        if op in eliminate and len(ins) == 1:
            alias[out] = ins[0]
            continue
        if (op in cse and not layer.weight_shapes) or (
                op in cse_scalar and len(layer.weight_shapes) == 1
                and not layer.weight_shapes[0]):
            sig = (op, ins, layer[_ATTRS])
            hit = seen.get(sig)
            if hit is not None and out not in graph_outputs:
                alias[out] = hit
                continue
            seen[sig] = out
        kept.append((layer, ins))
    outputs = [alias.get(t, t) for t in net.outputs]
    if rules.prune_dead:
        needed = set(outputs)
        live = []
        for layer, ins in reversed(kept):
            if any(t in needed for t in layer.outputs):
                live.append((layer, ins))
                needed.update(ins)
        kept = live[::-1]
    return kept, outputs


class _Open:
    """A kernel whose anchor has a fusion rule, being grown by fusion."""

    __slots__ = ("anchor", "layers", "ops", "in_shapes", "out_shape", "layout", "chain", "pos",
                 "arity")

    def __init__(self, anchor: Layer, layout: str, rule: FusionRule) -> None:
        self.anchor = anchor
        self.layers = [anchor]
        self.ops = [anchor.op]
        self.in_shapes = list(anchor.input_shapes)
        self.out_shape = anchor.output_shape
        self.layout = layout
        self.chain = rule.chain
        self.pos = 0
        self.arity = [len(anchor.input_shapes)]

    def step_for(self, layer: Layer) -> int:
        """Index of the chain step that can absorb ``layer`` now, or -1."""
        chain = self.chain
        for i in range(self.pos, len(chain)):
            step = chain[i]
            if (layer.op in step.ops and not (step.constant_operand and len(layer.inputs) != 1)
                    and not (step.max_rank and len(layer.output_shape) > step.max_rank)
                    and not (step.after_previous and (i != self.pos or len(self.layers) < 2))):
                return i
        return -1

    def kernel(self) -> Kernel:
        a = self.anchor
        ops, ins = tuple(self.ops), tuple(self.in_shapes)
        attrs = op_attrs(a)
        if tuple(self.arity) != default_arity(ops, len(ins), bool(a.weight_shapes)):
            attrs += (("ar", "x".join(map(str, self.arity))),)
        key = KernelKey(ops, ins, self.out_shape, a.weight_shapes, a.kernel, a.stride, a.pads,
                        a.dilation, a.groups, a.dtype, attrs)
        return Kernel(key, tuple(self.layers), self.layout)


def _single(layer: Layer, layout: str) -> Kernel:
    """The kernel of a layer that absorbs nothing."""
    key = KernelKey((layer.op,), layer.input_shapes, layer.output_shape, layer.weight_shapes,
                    layer.kernel, layer.stride, layer.pads, layer.dilation, layer.groups,
                    layer.dtype, op_attrs(layer))
    return Kernel(key, (layer,), layout)


def _blocked(shape: Shape, block: int) -> Shape:
    """``shape`` with its channel axis rounded up to the layout's block (as is if no channels)."""
    if len(shape) < 2:
        return shape
    c = -(-shape[1] // block) * block
    return (shape[0], c, *shape[2:])


def kernels(net: Network, rules: FusionRules) -> list[Kernel]:
    """The kernels ``rules.runtime`` executes for ``net``, in execution order."""
    kept, outputs = _simplify(net, rules)
    if rules.slices_to_split:
        kept = _slices_to_split(kept)
    if rules.quick_gelu:
        kept = _quick_gelus(kept, outputs)
    q = rules.qdq
    quantized: dict[str, tuple[str, tuple[Layer, ...]]] = {}
    if q is not None:
        kept, outputs, quantized = _quantized(kept, outputs, q)
    uses = Counter(t for _, ins in kept for t in ins)
    uses.update(outputs)
    lay = rules.layout
    layout: dict[str, str] = {name: "nchw" for name, _ in net.inputs}
    shape_of: dict[str, Shape] = dict(net.inputs)
    dtype_of: dict[str, str] = {}
    # open kernels that may still absorb, by the tensor they output
    open_by_out: dict[str, _Open] = {}
    order: list[_Open | Kernel] = []
    reordered: set[tuple[str, str]] = set()

    def reorder(t: str, to: str, shape: Shape) -> None:
        if (t, to) in reordered or lay is None or len(shape) != 4:
            return
        blocked = _blocked(shape, lay.block)
        op, ins, out = ((lay.reorder_input, shape, blocked) if to == "nchwc"
                        else (lay.reorder_output, blocked, shape))
        reordered.add((t, to))
        order.append(Kernel(KernelKey((op,), (ins,), out), (), to))

    def convert(t: str, src: str, to: str, shape: Shape, dtype: str = "float32") -> None:
        """Kernels that bring tensor ``t`` (NCHW ``shape``) from layout ``src`` to ``to``,
        through NCHW: a reorder from or to NCHWc, a Transpose from or to NHWC."""
        if src == "nchwc":
            reorder(t, "nchw", shape)
        done = (t, "transposed to " + ("nhwc" if to == "nhwc" else "nchw"))
        if "nhwc" in (src, to) and done not in reordered and len(shape) == 4:
            reordered.add(done)
            nhwc = (shape[0], *shape[2:], shape[1])
            ins, out, perm = ((shape, nhwc, "0x2x3x1") if to == "nhwc"
                              else (nhwc, shape, "0x3x1x2"))
            order.append(Kernel(KernelKey(("Transpose",), (ins,), out,
                                          dtype=dtype_of.get(t, dtype),
                                          attrs=(("perm", perm),)), (), to))
        if to == "nchwc":
            reorder(t, "nchwc", shape)

    for layer, ins in kept:
        out = layer.outputs[0] if layer.outputs else layer.name
        shape_of[out] = layer.output_shape
        if quantized:  # the dtypes of a quantized region's Transposes (a float model has none)
            dtype_of[out] = _out_dtype(layer) or layer.dtype
        if layer.name in quantized:
            kind, covered = quantized[layer.name]
            here = "nhwc" if ((kind == "fuse" and layer.op in q.channels_last) or _follows_nhwc(
                layer, ins, layout, q)) else "nchw"
            for t, s in zip(ins, layer.input_shapes, strict=False):
                src = layout.get(t, "nchw")
                if src != here:  # a graph input is of the quantized kernel's type
                    convert(t, src, here, shape_of.get(t, s), layer.dtype)
            layout.update(dict.fromkeys(layer.outputs, here))  # every output of a Split
            order.append(_quantized_kernel(layer, kind, covered, here))
            continue
        dequantized = q is not None and q.dequantize_weights and dequantized_weights(layer)
        if dequantized:
            order.extend(_weight_dequantizers(layer))
        if (not open_by_out.keys().isdisjoint(ins)
                and _absorb(layer, ins, out, open_by_out, uses, layout)):
            continue
        # weights a DequantizeLinear makes at run time are not constant: no blocked layout
        here = "nchw" if dequantized else _layout_of(layer, ins, layout, lay)
        if q is not None and here == "nchw" and _follows_nhwc(layer, ins, layout, q):
            here = "nhwc"
        if lay is not None or q is not None:
            for t, s in zip(ins, layer.input_shapes, strict=False):
                src = layout.get(t, "nchw")
                if "nhwc" in (src, here):
                    if src != here:
                        convert(t, src, here, shape_of.get(t, s))
                    continue
                if lay is None:  # qdq rules without a blocked layout
                    continue
                if (lay.version >= 2 and here == "nchwc" and src == "nchwc"
                        and layer.op in lay.plain_input_ok and layer.groups == 1
                        and len(s) > 1 and s[1] < lay.block):
                    # a plain conv of fewer input channels than the block reads an NCHW
                    # buffer (ORT's stem case): a blocked input is reordered back first
                    reorder(t, "nchw", shape_of.get(t, s))
                    continue
                if src == here:
                    continue
                if here == "nchw":
                    reorder(t, "nchw", shape_of.get(t, s))
                elif not (layer.op in lay.plain_input_ok and len(s) > 1
                          and (s[1] % lay.block != 0 if lay.version < 2
                               else layer.groups == 1 and s[1] < lay.block)):
                    reorder(t, "nchwc", shape_of.get(t, s))
        layout.update(dict.fromkeys(layer.outputs or (out,), here))
        rule = rules.anchor_rule(layer.op, here)
        if rule is None or not rule.chain:
            order.append(_single(layer, here))
        else:
            k = _Open(layer, here, rule)
            open_by_out[out] = k
            order.append(k)
    for t in outputs:
        if layout.get(t) == "nchwc":
            reorder(t, "nchw", shape_of[t])
        elif layout.get(t) == "nhwc":
            convert(t, "nhwc", "nchw", shape_of[t])
    return [k.kernel() if isinstance(k, _Open) else k for k in order]


def _weight_dequantizers(layer: Layer) -> list[Kernel]:
    """The ``DequantizeLinear`` kernels a float layer of a QDQ model runs on its quantized
    weights at every inference (ONNX Runtime does not fold them): one per weight, int8 (a
    1-D one, a bias, int32)."""
    out = []
    for k, w in enumerate(layer.weight_shapes):
        dq = make_layer(f"{layer.name}/weight_dq{k}", "DequantizeLinear", [],
                        [f"{layer.name}/weight{k}"], [w], w, (),
                        dtype="int32" if len(w) == 1 else "int8", out_dtype=layer.dtype)
        out.append(_single(dq, "nchw"))
    return out


def _replaced(kept: list[tuple[Layer, tuple[str, ...]]], merged: Mapping[int, Layer],
              gone: set[int]) -> list[tuple[Layer, tuple[str, ...]]]:
    """``kept`` with the layers at ``merged``'s positions replaced and those in ``gone``
    left out (a rewrite of several layers into one)."""
    if not merged:
        return kept
    return [(merged.get(i, layer), ins) for i, (layer, ins) in enumerate(kept) if i not in gone]


def _slices_to_split(kept: list[tuple[Layer, tuple[str, ...]]]
                     ) -> list[tuple[Layer, tuple[str, ...]]]:
    """Slices that cut one tensor into parts along one axis, the parts' sizes adding up to
    the axis (ShuffleNet's channel split), as one ``Split`` layer where the first of them
    was (ORT's GatherSliceToSplitFusion). The IR keeps no Slice starts: parts whose sizes
    add up are taken to be the whole tensor, cut once."""
    groups: dict[tuple[str, int], list[int]] = {}
    for i, (layer, ins) in enumerate(kept):
        if layer.op != "Slice" or len(ins) != 1 or len(layer.outputs) != 1:
            continue
        src, out = tuple(layer.input_shapes[0]), tuple(layer.output_shape)
        axes = [a for a, (d, e) in enumerate(zip(src, out, strict=False)) if d != e]
        if len(src) == len(out) and len(axes) == 1:
            groups.setdefault((ins[0], axes[0]), []).append(i)
    merged: dict[int, Layer] = {}
    gone: set[int] = set()
    for (_, axis), idx in groups.items():
        layers = [kept[i][0] for i in idx]
        if len(idx) < 2 or sum(la.output_shape[axis] for la in layers) != \
                layers[0].input_shapes[0][axis]:
            continue
        merged[idx[0]] = layers[0]._replace(
            op="Split", outputs=tuple(la.outputs[0] for la in layers),
            bytes_out=sum(la.bytes_out for la in layers), weight_shapes=(), bytes_weights=0)
        gone.update(idx[1:])
    return _replaced(kept, merged, gone)


def _quick_gelus(kept: list[tuple[Layer, tuple[str, ...]]], outputs: Sequence[str]
                 ) -> list[tuple[Layer, tuple[str, ...]]]:
    """``Mul(x, Sigmoid(x))`` (SiLU, swish; the Sigmoid read by that Mul alone) as one
    ``QuickGelu`` layer where the Sigmoid was (ORT's QuickGeluFusion, alpha 1)."""
    made = {layer.outputs[0]: i for i, (layer, _) in enumerate(kept)
            if layer.op == "Sigmoid" and len(layer.outputs) == 1}
    if not made:
        return kept
    readers = Counter(t for _, ins in kept for t in ins)
    readers.update(outputs)
    merged: dict[int, Layer] = {}
    gone: set[int] = set()
    for j, (mul, ins) in enumerate(kept):
        if mul.op != "Mul" or len(ins) != 2 or mul.weight_shapes:
            continue
        for a, b in (ins, ins[::-1]):
            i = made.get(b)
            if i is None or i in merged or readers[b] != 1:
                continue
            sig, sig_ins = kept[i]
            if sig_ins != (a,) or sig.output_shape != mul.output_shape:
                continue
            merged[i] = sig._replace(op="QuickGelu", outputs=mul.outputs,
                                     elem_ops=sig.elem_ops + mul.elem_ops,
                                     bytes_out=mul.bytes_out)
            gone.add(j)
            break
    return _replaced(kept, merged, gone)


def _follows_nhwc(layer: Layer, ins: tuple[str, ...], layout: dict[str, str],
                  q: QDQRules) -> bool:
    """Whether ``layer`` stays channels-last: an op of ``channels_last_follow`` with a 4-D
    output whose activation inputs all are (a reduction to 2-D reads an NCHW tensor)."""
    return (layer.op in q.channels_last_follow and len(layer.output_shape) == 4 and bool(ins)
            and all(layout.get(t) == "nhwc" for t in ins))


def _quantized(kept: list[tuple[Layer, tuple[str, ...]]], outputs: list[str], q: QDQRules
               ) -> tuple[list[tuple[Layer, tuple[str, ...]]], list[str],
                          dict[str, tuple[str, tuple[Layer, ...]]]]:
    """The QDQ rewrite (:class:`QDQRules`): ``DequantizeLinear -> OP -> QuantizeLinear``
    groups become one layer on the quantized tensors (``OP`` on uint8/int8, reading the
    DQs' inputs, writing the Q's output) or, for ``remove_if_uint8`` ops, nothing.

    Returns the layers kept, the graph outputs and, for each rewritten layer's name, its
    kind (``fuse`` or ``drop``) and the IR layers it covers (the op first). A DQ whose every
    reader was rewritten goes with them; one that also feeds a float op stays for it.
    """
    if not any(layer.op == "DequantizeLinear" for layer, _ in kept):  # a float model
        return kept, outputs, {}
    prod = {t: i for i, (layer, _) in enumerate(kept) for t in layer.outputs}
    readers: dict[str, list[int]] = {}
    for i, (_, ins) in enumerate(kept):
        for t in ins:
            readers.setdefault(t, []).append(i)
    graph_out = set(outputs)

    def n_readers(t: str) -> int:
        return len(readers.get(t, [])) + (t in graph_out)

    def converted(t: str) -> bool:
        """Whether int8 tensor ``t`` runs as uint8 (``int8_to_uint8``): a Q's output read
        by one DQ alone, which has at most one reader itself."""
        p, rs = prod.get(t), readers.get(t, [])
        return (q.int8_to_uint8 and p is not None and kept[p][0].op == "QuantizeLinear"
                and t not in graph_out and len(rs) == 1
                and kept[rs[0]][0].op == "DequantizeLinear"
                and n_readers(kept[rs[0]][0].outputs[0]) <= 1)

    def dq_dtype(j: int | None) -> str:
        """The type a DQ's quantized input runs as ("" for no DQ of ``q.dtypes``)."""
        if j is None:
            return ""
        layer, ins = kept[j]
        ok = layer.op == "DequantizeLinear" and len(ins) == 1 and layer.dtype in q.dtypes
        if not ok:
            return ""
        return "uint8" if layer.dtype == "int8" and converted(ins[0]) else layer.dtype

    def q_dtype(i: int) -> str:
        """The type a QuantizeLinear's output runs as."""
        layer = kept[i][0]
        dt = layer.out_dtype or layer.dtype
        return "uint8" if dt == "int8" and converted(layer.outputs[0]) else dt

    def q_readers(layer: Layer) -> list[int] | None:
        """The QuantizeLinear that is the one reader of each output of ``layer``, or None."""
        qs = []
        for t in layer.outputs:
            rs = readers.get(t, [])
            if t in graph_out or len(rs) != 1 or kept[rs[0]][0].op != "QuantizeLinear":
                return None
            qs.append(rs[0])
        return qs

    match: dict[int, tuple[str, list[int], list[int], str]] = {}
    for i, (layer, ins) in enumerate(kept):
        kind = ("fuse" if layer.op in q.fuse else "drop" if layer.op in q.drop
                else "remove" if layer.op in q.remove_if_uint8 else "")
        if not kind or not ins or not layer.outputs or (len(layer.outputs) > 1
                                                         and kind != "drop"):
            continue
        srcs = [prod.get(t) for t in ins]
        dts = {dq_dtype(j) for j in srcs}
        qs = q_readers(layer)
        if len(dts) != 1 or "" in dts or qs is None:
            continue
        dt = dts.pop()
        if any(q_dtype(qi) != dt for qi in qs):
            continue  # mixed types: the runtime runs the op in float
        if (layer.weight_shapes and layer.op not in MAC_OPS
                and any(kept[j][0].dtype != dt for j in srcs if j is not None)):
            continue  # a quantized constant operand (an Add's bias) keeps the int8 of the
            # model's activations, while the converted ones run as uint8: mixed, float
        if kind == "fuse" and dt == "int8" and layer.op in q.uint8_only:
            continue
        if kind == "remove" and dt != "uint8":
            continue
        n_w = sum(numel(w) for w in layer.weight_shapes)
        if kind == "fuse" and n_w and layer.bytes_weights >= 2 * n_w:
            continue  # float weights: the runtime fuses only quantized (DQ'd) ones
        if layer.op in _INTERPOLATING and any(t > 1 for t in layer.kernel):
            continue  # an interpolating resize stays float between its DQ and Q
        match[i] = (kind, [j for j in srcs if j is not None], qs, dt)
    gone = {qi for _, _, qs, _ in match.values() for qi in qs}
    for _, srcs, _, _ in match.values():
        for j in srcs:
            t = kept[j][0].outputs[0]
            if t not in graph_out and all(r in match for r in readers.get(t, [])):
                gone.add(j)
    alias: dict[str, str] = {}
    out_kept: list[tuple[Layer, tuple[str, ...]]] = []
    groups: dict[str, tuple[str, tuple[Layer, ...]]] = {}
    for i, (layer, ins) in enumerate(kept):
        if i in gone:
            continue
        ins = tuple(alias.get(t, t) for t in ins)
        if i not in match:
            out_kept.append((layer, ins))
            if dq_dtype(i):
                # the runtime gives each float reader a DQ of its own (EnsureUniqueDQ...)
                rest = [r for r in readers.get(layer.outputs[0], []) if r not in match]
                out_kept.extend((layer._replace(name=f"{layer.name}/duplicated_{n}",
                                                outputs=(f"{layer.outputs[0]}/duplicated_{n}",)),
                                 ins) for n in range(1, len(rest)))
            continue
        kind, srcs, qs, dt = match[i]
        qlayers = [kept[qi][0] for qi in qs]
        new_ins = tuple(alias.get(kept[j][1][0], kept[j][1][0]) for j in srcs)
        if kind == "remove":
            alias[qlayers[0].outputs[0]] = new_ins[0]
            continue
        x = layer._replace(inputs=new_ins, outputs=tuple(ql.outputs[0] for ql in qlayers),
                           dtype=dt, bytes_in=sum(numel(s) for s in layer.input_shapes),
                           bytes_out=layer.bytes_out // max(DTYPE_BYTES.get(layer.dtype, 4), 1),
                           out_dtype="")
        groups[x.name] = (kind, (x, *(kept[j][0] for j in srcs), *qlayers))
        out_kept.append((x, new_ins))
    return out_kept, [alias.get(t, t) for t in outputs], groups


_INTERPOLATING = RESIZE_OPS
# quantized ops the runtime runs as another kernel in a channels-last region (ORT's
# NhwcMaxPool): their key says so (``a=layout:nhwc``)
_NHWC_KERNELS = frozenset({"MaxPool"})


def _quantized_kernel(x: Layer, kind: str, covered: tuple[Layer, ...], layout: str) -> Kernel:
    """The kernel of a rewritten QDQ group: ``DequantizeLinear+OP+QuantizeLinear`` on the
    quantized dtype (``fuse``), or the op alone on it (``drop``)."""
    if kind == "drop":
        k = _single(x, layout)._replace(layers=covered)
        if layout == "nhwc" and x.op in _NHWC_KERNELS:  # another kernel than in NCHW
            k = k._replace(key=k.key._replace(attrs=k.key.attrs + (("layout", "nhwc"),)))
        return k
    key = KernelKey(("DequantizeLinear", x.op, "QuantizeLinear"), x.input_shapes,
                    x.output_shape, x.weight_shapes, x.kernel, x.stride, x.pads, x.dilation,
                    x.groups, x.dtype, op_attrs(x))
    return Kernel(key, covered, layout)


def _aligned(shape: Shape, lay: LayoutRules) -> bool:
    """Whether a tensor of ``shape`` can be reordered (channels a multiple of the alignment)."""
    return len(shape) > 1 and shape[1] % lay.channel_alignment == 0


def dequantized_weights(layer: Layer) -> bool:
    """Whether a float layer reads quantized weights (a QDQ model's op left in float: the
    importer keeps its weights' int8 bytes), which the runtime dequantizes at every run."""
    n = sum(numel(w) for w in layer.weight_shapes)
    item = DTYPE_BYTES.get(layer.dtype, 4)
    return bool(n) and item >= 2 and layer.bytes_weights < item * n


def _layout_of(layer: Layer, ins: tuple[str, ...], layout: dict[str, str],
               lay: LayoutRules | None) -> str:
    if lay is None or len(layer.output_shape) != 4:
        return "nchw"
    if layer.dtype in ("uint8", "int8") and lay.version >= 2:
        return "nchw"  # ORT's blocked kernels are float ones (a uint8 max-pool is not)
    v2 = lay.version >= 2
    if v2 and layer.op in _POOLS and layer.input_shapes and len(layer.input_shapes[0]) == 4 \
            and layer.input_shapes[0][1] % lay.block:
        return "nchw"  # ORT blocks a pool only on whole blocks of channels
    if layer.op in lay.always:
        if v2 and layer.op == "Conv" and layer.groups > 1 \
                and not _blocked_groups(layer, lay.block):
            return "nchw"
        # a grouped or depthwise conv always reads a blocked input (ORT reorders it); only a
        # plain conv reads an NCHW input of fewer channels than the block directly (a stem)
        small_ok = layer.op in lay.plain_input_ok and (layer.groups == 1 or not v2)
        for s in layer.input_shapes:
            if len(s) == 4 and not _aligned(s, lay) and not (small_ok and s[1] < lay.block):
                return "nchw"  # an input the blocked kernel cannot take: the op stays in NCHW
        return "nchwc"
    if layer.op in lay.follow and ins and all(layout.get(t) == "nchwc" for t in ins):
        if not v2:
            return "nchwc"
        shapes = [tuple(s) for s in layer.input_shapes]
        if layer.op == "Concat":
            # ORT concatenates blocked tensors along the channels, each a whole number of
            # blocks; any other Concat runs in NCHW
            if not _channel_concat(shapes, layer.output_shape) or any(
                    s[1] % lay.block for s in shapes):
                return "nchw"
        elif layer.op in _INTERPOLATING and any(t > 2 for t in layer.kernel):
            return "nchw"  # ORT's blocked Upsample is nearest or linear: a cubic one not
        elif len(set(shapes)) > 1 or (layer.op in _BINARY and layer.weight_shapes):
            # ORT's blocked Add/Sum/Mul take blocked tensors of equal shapes only: one that
            # broadcasts, or has a constant operand (x * 0), runs in NCHW
            return "nchw"
        return "nchwc"
    return "nchw"


_BINARY = frozenset({"Add", "Sum", "Mul"})
_POOLS = frozenset({"MaxPool", "AveragePool", "GlobalAveragePool", "GlobalMaxPool"})


def _blocked_groups(conv: Layer, block: int) -> bool:
    """Whether ORT runs a grouped conv blocked: a depthwise one (one channel per group, in
    and out), or one whose channels per group are whole blocks, in and out."""
    cin, cout, g = conv.in_channels, conv.out_channels, conv.groups
    if cin == g and cout == g:
        return True
    return (cin // g) % block == 0 and (cout // g) % block == 0


def _channel_concat(shapes: list[tuple[int, ...]], out: Shape) -> bool:
    """Whether 4-D ``shapes`` are concatenated along axis 1 into ``out``."""
    return (len(out) == 4 and all(len(s) == 4 and s[0] == out[0] and s[2:] == tuple(out[2:])
                                  for s in shapes)
            and sum(s[1] for s in shapes) == out[1])


def _gemm_bias(anchor: Layer, add: Layer, j: int) -> bool:
    """Does ONNX Runtime's MatMulAddFusion make ``anchor`` (a MatMul) and ``add`` (reading
    it as input ``j``) one ``Gemm``? Checked on ORT 1.32: the product's second operand is
    2-D; on a 2-D product the other operand is ``(N,)`` or a 2-D one that broadcasts to
    it (a residual too); on any other rank only a bias ``(N,)`` (the product is reshaped
    to 2-D around the Gemm); a scalar or ``(1,)`` stays an Add."""
    out = anchor.output_shape
    if anchor.op != "MatMul" or add.output_shape != out or not out:
        return False
    acts, wts = anchor.input_shapes, anchor.weight_shapes
    if len(acts) == 2:
        b = acts[1]
    elif len(acts) == 1 and len(wts) == 1:  # x @ W, or W @ x (what gives the output)
        a, w = acts[0], wts[0]
        b = w if len(w) >= 2 and a and a[-1] == w[-2] and w[-1] == out[-1] else a
    else:
        return False
    if len(b) != 2:
        return False
    other = [s for i, s in enumerate(add.input_shapes) if i != j] + list(add.weight_shapes)
    if len(other) != 1:
        return False
    c, n = other[0], out[-1]
    if tuple(c) == (n,):
        return True
    return len(out) == 2 and len(c) == 2 and all(x in (1, y) for x, y in zip(c, out,
                                                                           strict=True))


def _absorb(layer: Layer, ins: tuple[str, ...], out: str, open_by_out: dict[str, _Open],
            uses: Counter, layout: dict[str, str]) -> bool:
    """Fuse ``layer`` into the open kernel producing one of its inputs, if the rules allow."""
    cands = []
    for j, t in enumerate(ins):
        k = open_by_out.get(t)
        if k is None or uses[t] != 1:
            continue
        step = k.step_for(layer)
        if step < 0:
            continue
        rule = k.chain[step]
        if rule.other_input_layout and any(layout.get(u) != rule.other_input_layout
                                           for i, u in enumerate(ins) if i != j):
            continue
        if rule.gemm_bias and not _gemm_bias(k.anchor, layer, j):
            continue
        cands.append((j, t, k, step, rule))
    if not cands:
        return False
    j, t, k, step, rule = cands[-1] if cands[0][4].pick == "last" else cands[0]
    k.layers.append(layer)
    k.ops.append(layer.op)
    extra = [s for i, s in enumerate(layer.input_shapes) if i != j]
    k.in_shapes.extend(extra)
    k.arity.append(len(extra))
    k.out_shape = layer.output_shape
    k.pos = step if rule.repeat else step + 1
    del open_by_out[t]
    if k.pos < len(k.chain):  # a kernel at the end of its chain absorbs nothing more
        open_by_out[out] = k
    layout[out] = k.layout
    return True
