"""Split a network (the IR) into the kernels a runtime executes, following data rules.

The rules for a runtime live in ``measure/fusion/<runtime>.json`` (see
``ort.json`` for what each field means); this module only interprets them:

1. ``eliminate``: ops the runtime removes (their consumers read their input).
2. ``cse``: identical weight-free nodes on the same inputs are merged
   (``scalar_constant_ops``: ops whose only constant is a scalar, e.g. NB201's
   ``Mul(x, 0)`` zero nodes, are merged too; the IR keeps no constant values).
3. ``prune_dead``: drop nodes no graph output depends on.
4. ``layout``: which ops run in the blocked NCHWc layout (``always``; ``follow``
   = only when every input already is); a ``ReorderInput``/``ReorderOutput``
   kernel is added once per tensor that crosses between layouts.
5. ``fusion``: an ``anchor`` op absorbs the ops of its ``chain`` that follow it
   along single-use edges, in order (``repeat``: may occur several times;
   ``constant_operand``: the absorbed op's other operands must be constants;
   ``other_input_layout``: the absorbed op's other input must be in that layout;
   ``pick``: which producer absorbs an op both inputs could absorb).
"""

from __future__ import annotations

import hashlib
import json
from collections import Counter
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from costmodels.errors import ModelFileError
from costmodels.network import Layer, Network
from measure.lut.keys import Kernel, KernelKey

RULES_FORMAT = "costmodels-fusion-rules"
RULES_SCHEMA = 1


@dataclass(frozen=True)
class ChainStep:
    ops: frozenset[str]
    repeat: bool = False
    constant_operand: bool = False
    other_input_layout: str = ""
    pick: str = "first"


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

    @property
    def hash(self) -> str:
        """16-hex SHA-256 of the canonical JSON: equal rules, equal hash."""
        canon = json.dumps(json.loads(self.doc), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canon.encode()).hexdigest()[:16]

    def anchor_rule(self, op: str, layout: str) -> FusionRule | None:
        for rule in self.fusion:
            if rule.anchor == op and rule.layout in ("any", layout):
                return rule
        return None


def rules_from_json(text: str, source: str = "<rules>") -> FusionRules:
    """Parse and validate a rules document; ``ModelFileError`` says what is wrong."""
    try:
        d: dict[str, Any] = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ModelFileError(f"{source}: fusion rules are not valid JSON ({exc})") from None
    if d.get("format") != RULES_FORMAT or d.get("schema") != RULES_SCHEMA:
        raise ModelFileError(f"{source}: not a costmodels fusion-rules file of schema "
                             f"{RULES_SCHEMA} (format={d.get('format')!r}, "
                             f"schema={d.get('schema')!r})")
    try:
        lay = d.get("layout")
        layout = None if not lay else LayoutRules(
            block=int(lay["block"]), always=frozenset(lay["always"]),
            follow=frozenset(lay["follow"]),
            plain_input_ok=frozenset(lay.get("plain_input_ok_if_channels_not_multiple_of_block",
                                             ())),
            reorder_input=lay["reorder_input"], reorder_output=lay["reorder_output"])
        fusion = tuple(
            FusionRule(r["anchor"], r.get("layout", "any"),
                       tuple(ChainStep(_op_set(s["op"]), bool(s.get("repeat", False)),
                                       bool(s.get("constant_operand", False)),
                                       s.get("other_input_layout", ""), s.get("pick", "first"))
                             for s in r.get("chain", ())))
            for r in d.get("fusion", ()))
        cse = d.get("cse") or {}
        return FusionRules(
            runtime=str(d["runtime"]), eliminate=frozenset(d.get("eliminate", ())),
            cse_ops=frozenset(cse.get("ops", ())),
            cse_scalar_ops=frozenset(cse.get("scalar_constant_ops", ())),
            prune_dead=bool(d.get("prune_dead", False)), layout=layout, fusion=fusion,
            doc=text, name=str(d.get("name", d["runtime"])))
    except (KeyError, TypeError, ValueError) as exc:
        raise ModelFileError(f"{source}: malformed fusion rules ({type(exc).__name__}: {exc})"
                             ) from None


def _op_set(op: str | list[str]) -> frozenset[str]:
    return frozenset([op] if isinstance(op, str) else op)


def load_rules(runtime_or_path: str | Path) -> FusionRules:
    """Rules shipped for a runtime (``"ort"``, ``"tvm"``) or read from a JSON path."""
    p = Path(runtime_or_path)
    if p.suffix == ".json" or p.exists():
        return rules_from_json(p.read_text(), str(p))
    res = resources.files("measure").joinpath(f"fusion/{runtime_or_path}.json")
    if not res.is_file():
        raise ModelFileError(f"no fusion rules for runtime {runtime_or_path!r}; expected "
                             f"measure/fusion/{runtime_or_path}.json (ort, tvm) or a JSON path")
    return rules_from_json(res.read_text(), f"measure/fusion/{runtime_or_path}.json")


# ----------------------------------------------------------------------------- graph passes
def _simplify(net: Network, rules: FusionRules) -> tuple[list[tuple[Layer, tuple[str, ...]]],
                                                       list[str]]:
    """Eliminate, CSE and (if asked) prune: layers kept with their rewired inputs, outputs."""
    alias: dict[str, str] = {}

    def canon(t: str) -> str:
        while t in alias:
            t = alias[t]
        return t

    kept: list[tuple[Layer, tuple[str, ...]]] = []
    seen: dict[tuple, str] = {}
    for layer in net.layers:
        ins = tuple(canon(t) for t in layer.inputs)
        out = layer.outputs[0] if layer.outputs else layer.name
        if layer.op in rules.eliminate and len(ins) == 1:
            alias[out] = ins[0]
            continue
        scalar_const = (layer.op in rules.cse_scalar_ops and len(layer.weight_shapes) == 1
                        and not layer.weight_shapes[0])
        if (layer.op in rules.cse_ops and not layer.weight_shapes) or scalar_const:
            sig = (layer.op, ins, layer.input_shapes, layer.output_shape, layer.weight_shapes,
                   layer.kernel, layer.stride, layer.pads, layer.dilation, layer.groups,
                   layer.dtype)
            if sig in seen:
                alias[out] = seen[sig]
                continue
            seen[sig] = out
        kept.append((layer, ins))
    outputs = [canon(t) for t in net.outputs]
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
    """A kernel being grown by fusion."""

    __slots__ = ("anchor", "ops", "layers", "in_shapes", "out", "out_shape", "layout", "rule",
                 "pos")

    def __init__(self, anchor: Layer, layout: str, rule: FusionRule | None) -> None:
        self.anchor = anchor
        self.ops = [anchor.op]
        self.layers = [anchor.name]
        self.in_shapes = list(anchor.input_shapes)
        self.out = anchor.outputs[0] if anchor.outputs else anchor.name
        self.out_shape = anchor.output_shape
        self.layout = layout
        self.rule = rule
        self.pos = 0

    def step_for(self, layer: Layer) -> int:
        """Index of the chain step that can absorb ``layer`` now, or -1."""
        if self.rule is None:
            return -1
        for i in range(self.pos, len(self.rule.chain)):
            step = self.rule.chain[i]
            if layer.op in step.ops and not (step.constant_operand and len(layer.inputs) != 1):
                return i
        return -1

    def kernel(self) -> Kernel:
        a = self.anchor
        key = KernelKey(tuple(self.ops), tuple(self.in_shapes), self.out_shape, a.weight_shapes,
                        a.kernel, a.stride, a.pads, a.dilation, a.groups, a.dtype)
        return Kernel(key, tuple(self.layers), self.layout)


def _blocked(shape: tuple[int, ...], block: int) -> tuple[int, ...]:
    c = -(-shape[1] // block) * block
    return (shape[0], c, *shape[2:])


def kernels(net: Network, rules: FusionRules) -> list[Kernel]:
    """The kernels ``rules.runtime`` executes for ``net``, in execution order."""
    kept, outputs = _simplify(net, rules)
    uses = Counter(t for _, ins in kept for t in ins)
    uses.update(outputs)
    lay = rules.layout
    layout: dict[str, str] = {name: "nchw" for name, _ in net.inputs}
    shape_of: dict[str, tuple[int, ...]] = dict(net.inputs)
    open_by_out: dict[str, _Open] = {}
    order: list[_Open | Kernel] = []
    reordered: dict[tuple[str, str], Kernel] = {}

    def reorder(t: str, to: str) -> None:
        if (t, to) in reordered or lay is None:
            return
        shp = shape_of[t]
        blocked = _blocked(shp, lay.block)
        op, ins, out = ((lay.reorder_input, shp, blocked) if to == "nchwc"
                        else (lay.reorder_output, blocked, shp))
        k = Kernel(KernelKey((op,), (ins,), out), (), to)
        reordered[(t, to)] = k
        order.append(k)

    for layer, ins in kept:
        out = layer.outputs[0] if layer.outputs else layer.name
        for t, s in zip(ins, layer.input_shapes, strict=False):
            shape_of.setdefault(t, s)
        shape_of[out] = layer.output_shape
        if _absorb(layer, ins, out, open_by_out, uses, layout):
            continue
        lay_here = _layout_of(layer, ins, layout, lay)
        if lay is not None:
            for t, s in zip(ins, layer.input_shapes, strict=False):
                src = layout.get(t, "nchw")
                if lay_here == "nchwc" and src == "nchw":
                    plain_ok = (layer.op in lay.plain_input_ok and len(s) > 1
                                and s[1] % lay.block != 0)
                    if not plain_ok:
                        reorder(t, "nchwc")
                elif lay_here == "nchw" and src == "nchwc":
                    reorder(t, "nchw")
        k = _Open(layer, lay_here, rules.anchor_rule(layer.op, lay_here))
        layout[out] = lay_here
        open_by_out[out] = k
        order.append(k)
    for t in outputs:
        if layout.get(t) == "nchwc":
            reorder(t, "nchw")
    return [k.kernel() if isinstance(k, _Open) else k for k in order]


def _layout_of(layer: Layer, ins: tuple[str, ...], layout: dict[str, str],
               lay: LayoutRules | None) -> str:
    if lay is None or len(layer.output_shape) != 4:
        return "nchw"
    if layer.op in lay.always:
        return "nchwc"
    if layer.op in lay.follow and ins and all(layout.get(t) == "nchwc" for t in ins):
        return "nchwc"
    return "nchw"


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
        rule = k.rule.chain[step]
        others = [u for i, u in enumerate(ins) if i != j]
        if rule.other_input_layout and any(layout.get(u) != rule.other_input_layout
                                           for u in others):
            continue
        cands.append((j, t, k, step, rule))
    if not cands:
        return False
    j, t, k, step, rule = cands[-1] if cands[0][4].pick == "last" else cands[0]
    k.ops.append(layer.op)
    k.layers.append(layer.name)
    k.in_shapes.extend(s for i, s in enumerate(layer.input_shapes) if i != j)
    k.out_shape = layer.output_shape
    k.pos = step if rule.repeat else step + 1
    del open_by_out[t]
    k.out = out
    open_by_out[out] = k
    layout[out] = k.layout
    return True
