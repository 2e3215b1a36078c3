"""Kernel keys: the text that names one kernel a runtime executes.

A key holds everything that decides what a kernel costs: the op sequence fused
into it, the shapes of its activation inputs and of its output, the anchor op's
weight shapes, kernel, stride, pads, dilation, groups and dtype. Two kernels
with the same key cost the same. Keys are plain text (no commas, so they sit in
CSV cells unquoted) and parse back (:func:`parse_key`), which is how a
one-kernel model is built for a key that came from a CSV import.

Example::

    Conv+BatchNormalization+Relu|in=1x16x32x32|out=1x16x32x32|w=16x16x3x3|k=3x3|s=1x1|p=1x1x1x1|g=1|dt=float32
"""

from __future__ import annotations

from dataclasses import dataclass

Shape = tuple[int, ...]

_FIELDS = ("in", "out", "w", "k", "s", "p", "d", "g", "dt")
# The empty inference: a one-element Identity. Its time is what any run costs
# (session call, input binding, output copy). ``null_key(shape)`` is the same at
# a kernel's output shape (the output copy grows with it): what is taken off
# that kernel's entry.
NULL_KEY = "Null|in=1|out=1|dt=float32"


def null_key(shape: Shape, dtype: str = "float32") -> str:
    return f"Null|in={_dims(shape)}|out={_dims(shape)}|dt={dtype}"


def _dims(shape: Shape) -> str:
    return "x".join(str(int(d)) for d in shape) if shape else "scalar"


def _parse_dims(text: str) -> Shape:
    return () if text == "scalar" else tuple(int(d) for d in text.split("x"))


@dataclass(frozen=True)
class KernelKey:
    """The parsed form of a key (what :func:`parse_key` returns and :attr:`text` prints)."""

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

    @property
    def text(self) -> str:
        parts = ["+".join(self.ops),
                 "in=" + ";".join(_dims(s) for s in self.input_shapes),
                 "out=" + _dims(self.output_shape)]
        if self.weight_shapes:
            parts.append("w=" + ";".join(_dims(s) for s in self.weight_shapes))
        for name, val in (("k", self.kernel), ("s", self.stride), ("p", self.pads)):
            if val:
                parts.append(f"{name}={_dims(val)}")
        if self.dilation and any(d != 1 for d in self.dilation):
            parts.append(f"d={_dims(self.dilation)}")
        if self.groups != 1 or "Conv" in self.ops:
            parts.append(f"g={self.groups}")
        parts.append(f"dt={self.dtype}")
        return "|".join(parts)

    def __str__(self) -> str:
        return self.text


@dataclass(frozen=True)
class Kernel:
    """One kernel of a network as the runtime executes it.

    ``layers`` names the IR layers it covers (empty for a layout reorder the
    runtime inserts); ``layout`` is ``"nchwc"`` or ``"nchw"``.
    """

    key: KernelKey
    layers: tuple[str, ...] = ()
    layout: str = "nchw"

    @property
    def text(self) -> str:
        return self.key.text

    @property
    def ops(self) -> tuple[str, ...]:
        return self.key.ops


def parse_key(text: str) -> KernelKey:
    """Key text -> :class:`KernelKey`; raises ``ValueError`` naming the bad part."""
    parts = text.strip().split("|")
    if len(parts) < 3 or not parts[0]:
        raise ValueError(f"not a kernel key: {text!r} (expected 'Op[+Op...]|in=...|out=...|...')")
    fields: dict[str, str] = {}
    for part in parts[1:]:
        name, sep, val = part.partition("=")
        if not sep or name not in _FIELDS:
            raise ValueError(f"kernel key {text!r}: unknown field {part!r}; fields are "
                             f"{', '.join(_FIELDS)}")
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
        )
    except ValueError as exc:
        raise ValueError(f"kernel key {text!r}: bad number in a shape ({exc})") from None
