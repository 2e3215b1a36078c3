"""Eyeriss-like row-stationary accelerator: mapping search, access counts, latency and energy.

Each conv / FC layer (per group) is a problem ``M x C x R x S`` over an ``E x F``
output from an ``H x W`` (padded) input with stride ``U`` and batch ``N``.

**Mapping** (row stationary, Chen et al. ISCA 2016). A *PE set* of ``R`` rows x
``e`` columns computes ``e`` output rows: PE (i, j) keeps filter row i, reads
ifmap row ``i + j*U`` and passes its partial-sum row up the column. Each PE
processes ``p`` filters x ``q`` channels (scratchpads: ifmap ``q*S <= 12``,
weights ``p*q*S <= 192``, psums ``p <= 16``); ``r`` sets take different channel
groups and ``t`` sets different filter groups, ``r*t`` sets fitting the array
(``floor(rows/R) * floor(cols/e)``). A *pass* runs ``p*q*S*F`` cycles; there are
``ceil(M/(p*t)) * ceil(C/(q*r)) * ceil(E/e)`` passes, the output-row strips
innermost so weights stay in the scratchpads (read from DRAM once). The mapper
enumerates every legal ``(e, p, q, r, t)`` and keeps the best by the spec's
objective (energy, latency or their product).

**Counts** (values; MACs exclude padding):

* MAC: ``N*M*C*R*S*E*F``; scratchpad: 4 per MAC (ifmap, weight, psum read,
  psum write) plus every value the network writes into a scratchpad;
* array network: each weight multicast to the ``e`` PEs of its row; each pass
  sends every PE its ifmap row (``q`` channels x ``W``); every psum of a pass
  hops ``R*r`` times (up the set, across channel sets, out);
* global buffer: ifmap rows read once per filter tile and strip
  (``mt * C * strips*((e-1)*U+R) * W``), psums written once per channel tile and
  read back for all but the first;
* DRAM: weights once (8-bit), plus activations the GLB cannot hold (network level).

**Time**: ``cycles = max(passes * p*q*S*F, GLB bytes / GLB bytes per cycle,
DRAM bytes / DRAM bytes per cycle) + layer_setup_cycles``; utilisation =
MACs / (compute cycles x PEs). **Energy** = sum of counts x per-action energy
from the spec. Pooling, element-wise, BN and ReLU run where the spec says
(PE array as a conv-shaped pass, post-processing unit, or host over DRAM).
Results are cached per layer shape.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from types import MappingProxyType
from typing import Any, NamedTuple

import numpy as np

from analytical.specs import EyerissSpec, PredictorSpec, load_spec, spec_kind
from costmodels.interface import BaseCostModel, Estimate, LayerCost
from costmodels.network import Layer, Network, numel
from costmodels.ops import CONV_OPS, GLOBAL_POOL_OPS, MAC_OPS, POOL_OPS, QUANT_OPS, VIEW_OPS

# Ops the accelerators (this one and analytical.fpga) do not run: views alias their input,
# and a QDQ model's Quantize/DequantizeLinear only name the fixed-point precision the
# accelerator computes at anyway (its spec's word size), so they alias theirs too (each was
# a pass over DRAM: a model quantized for such a chip read 2-4x slower than its float one)
FREE_OPS = VIEW_OPS | QUANT_OPS

LEVELS = ("mac", "spad", "noc", "glb", "dram")
DEFAULT_SPEC = "eyeriss"


class NotMappable(Exception):
    """Internal: a layer whose shapes the row-stationary problem cannot describe."""


@lru_cache(maxsize=64)
def set_counts(rows: int, cols: int) -> np.ndarray:
    """Candidate numbers of PE sets (``r``, ``t``): every count up to ``rows + cols``, then
    the multiples of the array's sides and the divisors of its size (from the spec's
    array, not tuned to one)."""
    pes = rows * cols
    out = set(range(1, rows + cols + 1))
    out |= {k * rows for k in range(1, cols + 1)} | {k * cols for k in range(1, rows + 1)}
    out |= {d for d in range(1, pes + 1) if pes % d == 0}
    return np.array(sorted(out))


class ConvShape(NamedTuple):
    """One group of a conv/FC layer: batch, filters, channels, groups, padded input, kernel,
    output, stride."""

    n: int
    m: int
    c: int
    g: int
    h: int
    w: int
    r: int
    s: int
    e: int
    f: int
    u: int


@dataclass(frozen=True)
class OnChip:
    """A layer's cost before activation DRAM traffic: cycles, counts per level, mapping."""

    placement: str
    compute_cycles: float
    glb_bytes: float
    dram_bytes: float          # weights and spills; activations are added per network
    counts: Any                # level -> accesses (values; bytes for dram)
    energy_pj: Any             # level -> pJ excluding activation DRAM traffic
    mapping: Any
    utilisation: float


def _grid(shape: tuple[int, ...]) -> tuple[int, int]:
    """(H, W) of an N, C, *spatial shape: 1-D maps are 1 x L."""
    sp = tuple(shape[2:])
    if len(sp) > 2:
        raise NotMappable(f"{len(sp)}-D spatial map {shape}")
    return (1, sp[0]) if len(sp) == 1 else (sp[0], sp[1]) if sp else (1, 1)


def _pads2(pads: tuple[int, ...]) -> tuple[int, int]:
    """Total padding of the last two spatial axes (ONNX begins..., ends...)."""
    if not pads:
        return 0, 0
    half = len(pads) // 2
    begins, ends = pads[:half], pads[half:]
    if half == 1:
        return 0, begins[0] + ends[0]
    return begins[-2] + ends[-2], begins[-1] + ends[-1]


def conv_shape(layer: Layer) -> ConvShape:
    """The row-stationary problem of a conv-like or matrix-product layer (per group).

    A ConvTranspose is costed as the conv that scatters each input pixel through the
    kernel: output grid = input grid, same MACs. A matrix product ``[..., M, K] x [K, N]``
    is ``batch`` = the product of the output's leading axes, ``N`` filters over ``K``
    channels. Raises :class:`NotMappable` for shapes outside the 2-D problem.
    """
    if layer.op in CONV_OPS:
        x, y = layer.input_shapes[0] if layer.input_shapes else (), layer.output_shape
        if len(x) < 3 or len(y) < 3:
            raise NotMappable(f"conv input {x} / output {y} is not N, C, spatial")
        (h, w), (e, f) = _grid(x), _grid(y)
        k = tuple(layer.kernel) or (tuple(layer.weight_shapes[0][2:])
                                    if layer.weight_shapes else (1, 1))
        r, s = (1, k[0]) if len(k) == 1 else (k[-2], k[-1])
        ph, pw = _pads2(tuple(layer.pads))
        u = int(layer.stride[-1]) if layer.stride else 1
        g = max(int(layer.groups or 1), 1)
        n, cin, m = x[0], x[1], y[1]
        if layer.op == "ConvTranspose":
            return ConvShape(n, max(m // g, 1), max(cin // g, 1), g, h + r - 1, w + s - 1,
                             r, s, h, w, 1)
        return ConvShape(n, max(m // g, 1), max(cin // g, 1), g, h + ph, w + pw, r, s, e, f, u)
    out = layer.output_shape
    k = layer.macs // max(numel(out), 1)
    if not out or k <= 0:
        raise NotMappable(f"matrix product with output {out} and {layer.macs} MACs")
    return ConvShape(numel(out[:-1]), out[-1], k, 1, 1, 1, 1, 1, 1, 1, 1)


def search_mapping(shape: ConvShape, spec: EyerissSpec) -> OnChip:
    """Best legal row-stationary mapping of ``shape`` (all groups), by ``spec.objective``."""
    return _search(shape, spec)


@lru_cache(maxsize=4096)
def _search(shape: ConvShape, spec: EyerissSpec) -> OnChip:
    n, M, C, g, H, W, R, S, E, F, U = shape
    rows, cols = spec.pe_rows, spec.pe_cols
    s_eff = min(S, spec.spad_ifmap_entries)
    fold = math.ceil(S / s_eff) * math.ceil(R / min(R, rows))  # kernel larger than the array
    r_set = min(R, rows)
    max_sets = (rows // r_set) * cols
    ev = np.arange(1, min(E, cols) + 1, dtype=np.float64)[:, None, None, None, None]
    pv = np.arange(1, min(M, spec.spad_psum_entries) + 1, dtype=np.float64)[None, :, None, None,
                                                                             None]
    qv = np.arange(1, min(C, spec.spad_ifmap_entries // s_eff) + 1,
                   dtype=np.float64)[None, None, :, None, None]
    counts = set_counts(rows, cols)
    rv = counts[counts <= min(C, max_sets)].astype(np.float64)[None, None, None, :, None]
    tv = counts[counts <= min(M, max_sets)].astype(np.float64)[None, None, None, None, :]
    sets = (rows // r_set) * np.floor(cols / ev)
    ok = ((pv * qv * s_eff <= spec.spad_weight_entries) & (rv * tv <= sets)
          & (rv <= np.ceil(C / qv)) & (tv <= np.ceil(M / pv)))
    ie, ip, iq, ir, it = np.nonzero(ok)
    e, p, q, r, t = ev.ravel()[ie], pv.ravel()[ip], qv.ravel()[iq], rv.ravel()[ir], tv.ravel()[it]
    mt, ct, et = np.ceil(M / (p * t)), np.ceil(C / (q * r)), np.ceil(E / e)
    passes = mt * ct * et * fold * n * g
    compute = passes * p * q * s_eff * F
    macs = float(n * g * M * C * R * S * E * F)
    weights = float(g * M * C * R * S)
    outputs = float(n * g * M * E * F)
    ifmap = float(n * g * C * H * W)
    d, ps = spec.data_bits / 8, spec.psum_bits / 8
    noc_w = weights * e
    noc_i = passes * r * t * q * r_set * e * W
    noc_p = passes * p * t * e * F * r_set * r
    strips_rows = np.minimum(et * ((e - 1) * U + R), et * H)
    glb_i = mt * n * g * C * strips_rows * W * fold
    glb_pw = outputs * ct * fold
    glb_pr = outputs * (ct * fold - 1)
    glb_w = 2 * weights if spec.weights_in_glb else 0.0
    spad = 4 * macs + noc_w + noc_i
    glb = glb_i + glb_pw + glb_pr + glb_w
    glb_bytes = glb_i * d + (glb_pw + glb_pr) * ps + glb_w * d
    # Does the layer's working set (ifmap + psums of the output) fit the GLB?
    spill = ifmap * d + outputs * ps > spec.glb_bytes
    dram = weights * d + (np.where(mt > 1, (mt - 1) * ifmap * d, 0) +
                          2 * np.maximum(ct * fold - 1, 0) * outputs * ps if spill else 0.0)
    dram = np.broadcast_to(np.asarray(dram, dtype=np.float64), e.shape)
    en = spec.energy
    energy = (macs * en.mac_pj + spad * en.spad_access_pj
              + (noc_w + noc_i + noc_p) * en.noc_transfer_pj + glb * en.glb_access_pj
              + dram * en.dram_byte_pj)
    cycles = np.maximum.reduce([compute, glb_bytes / _glb_bytes_per_cycle(spec),
                                dram / _dram_bytes_per_cycle(spec)])
    score = {"energy": energy, "latency": cycles, "edp": energy * cycles}[spec.objective]
    i = int(np.lexsort((cycles, score))[0])
    counts = {"mac": macs, "spad": float(spad[i]), "noc": float(noc_w[i] + noc_i[i] + noc_p[i]),
              "glb": float(glb[i]), "dram": float(dram[i])}
    return OnChip(
        placement="pe_array", compute_cycles=float(compute[i]), glb_bytes=float(glb_bytes[i]),
        dram_bytes=float(dram[i]), counts=MappingProxyType(counts),
        energy_pj=MappingProxyType(_energy(counts, spec)),
        mapping=MappingProxyType({"e": int(e[i]), "p": int(p[i]), "q": int(q[i]),
                                  "r": int(r[i]), "t": int(t[i]), "passes": int(passes[i]),
                                  "cycles_per_pass": int(p[i] * q[i] * s_eff * F)}),
        utilisation=macs / (float(compute[i]) * rows * cols))


def _energy(counts: dict[str, float], spec: EyerissSpec) -> dict[str, float]:
    en = spec.energy
    per = {"mac": en.mac_pj, "spad": en.spad_access_pj, "noc": en.noc_transfer_pj,
           "glb": en.glb_access_pj, "dram": en.dram_byte_pj, "post": en.post_op_pj,
           "host": en.host_op_pj}
    return {k: v * per[k] for k, v in counts.items()}


def _glb_bytes_per_cycle(spec: EyerissSpec) -> float:
    return spec.glb_word_bits / 8 * spec.glb_words_per_cycle


def _dram_bytes_per_cycle(spec: EyerissSpec) -> float:
    return spec.dram_bandwidth_gbps * 1e3 / spec.clock_mhz


def vector_op(layer: Layer, placement: str, spec: EyerissSpec) -> OnChip:
    """Pooling, element-wise, BN or ReLU run on ``placement`` (never free)."""
    d = spec.data_bits / 8
    out = numel(layer.output_shape)
    ins = sum(numel(s) for s in layer.input_shapes)
    ops = max(layer.elem_ops, out)
    if placement == "fused":  # applied by the post-processing unit on the producer's output
        counts = {"post": float(ops)}
        return OnChip("fused", 0.0, 0.0, 0.0, MappingProxyType(counts),
                      MappingProxyType(_energy(counts, spec)), MappingProxyType({}), 0.0)
    if (placement == "pe_array" and layer.op in POOL_OPS and len(layer.kernel) == 2
            and layer.input_shapes and len(layer.input_shapes[0]) == 4
            and len(layer.output_shape) == 4):
        n, c, h, w = layer.input_shapes[0]
        ph, pw = _pads2(tuple(layer.pads))
        _, _, e, f = layer.output_shape
        shape = ConvShape(n, 1, 1, c, h + ph, w + pw, layer.kernel[0], layer.kernel[1], e, f,
                          int(layer.stride[-1]) if layer.stride else 1)
        return search_mapping(shape, spec)
    if placement == "pe_array":  # one op per PE per cycle, operands from the GLB
        pes = spec.pe_rows * spec.pe_cols
        counts = {"mac": float(ops), "spad": 2.0 * ops, "noc": float(ins + out),
                  "glb": float(ins + out)}
        compute = math.ceil(ops / pes)
        util = ops / (compute * pes) if compute else 0.0
    elif placement == "post_processing":
        counts = {"post": float(ops), "glb": float(ins + out)}
        compute = ops / spec.post_processing_ops_per_cycle
        util = 0.0
    else:  # host: out over DRAM, computed on the host, back over DRAM
        counts = {"host": float(ops), "dram": float((ins + out) * d)}
        compute = ops / (spec.host_gops * 1e3 / spec.clock_mhz)
        util = 0.0
    glb_bytes = counts.get("glb", 0.0) * d
    return OnChip(placement, float(compute), glb_bytes, counts.get("dram", 0.0),
                  MappingProxyType(counts), MappingProxyType(_energy(counts, spec)),
                  MappingProxyType({}), util)


class EyerissModel(BaseCostModel):
    """Row-stationary accelerator model; ``per_layer`` carries mapping, utilisation, cycles
    and energy by level (pJ) for every layer. Layers it cannot map are listed in
    ``meta['uncosted_layers']`` with the reason (they add nothing to the totals)."""

    def __init__(self, spec: EyerissSpec) -> None:
        self.spec = spec
        self._by_key: dict[tuple, OnChip | str] = {}
        self._by_id: dict[int, tuple[Layer, OnChip | str]] = {}

    @property
    def name(self) -> str:  # type: ignore[override]
        return f"eyeriss:{self.spec.name}"

    def placement(self, layer: Layer) -> str:
        s = self.spec
        if layer.op in FREE_OPS:
            return "view"
        if layer.op in MAC_OPS:
            return "pe_array"
        if layer.op in POOL_OPS or layer.op in GLOBAL_POOL_OPS:
            return s.pooling_on
        if layer.op == "BatchNormalization":
            return "fused" if s.batchnorm == "fold" else s.batchnorm
        if layer.op == "Relu" and s.activation_fused:
            return "fused"
        return s.elementwise_on

    def on_chip(self, layer: Layer) -> OnChip | str:
        """The layer's cost before activation DRAM traffic, or why it cannot be mapped.

        Cached per structural layer key (op, shapes, attributes; names excluded); the
        ``id`` memo in front only skips re-hashing a layer object already seen (it keeps
        the layer alive, so the id cannot be reused while it is there).
        """
        hit = self._by_id.get(id(layer))
        if hit is not None and hit[0] is layer:
            return hit[1]
        key = (layer.op, *layer[4:13])
        res = self._by_key.get(key)
        if res is None:
            res = self._by_key[key] = self._on_chip(layer)
        if len(self._by_id) > 200_000:
            self._by_id.clear()
        self._by_id[id(layer)] = (layer, res)
        return res

    def _on_chip(self, layer: Layer) -> OnChip | str:
        where = self.placement(layer)
        if where == "view":
            return OnChip("view", 0.0, 0.0, 0.0, MappingProxyType({}), MappingProxyType({}),
                          MappingProxyType({}), 0.0)
        try:
            if where == "pe_array" and layer.op in MAC_OPS:
                return search_mapping(conv_shape(layer), self.spec)
            return vector_op(layer, where, self.spec)
        except NotMappable as exc:
            return str(exc)

    def _time(self, oc: OnChip, act_dram_bytes: float) -> tuple[float, float, float, int]:
        """(busy cycles, GLB cycles, DRAM cycles, setup cycles) of a mapped layer."""
        s = self.spec
        glb_c = oc.glb_bytes / _glb_bytes_per_cycle(s)
        dram_c = (oc.dram_bytes + act_dram_bytes) / _dram_bytes_per_cycle(s)
        setup = s.layer_setup_cycles if oc.placement == "pe_array" else 0
        return max(oc.compute_cycles, glb_c, dram_c), glb_c, dram_c, setup

    def layer_cost(self, layer: Layer, act_dram_bytes: float) -> LayerCost | None:
        """The breakdown entry of a mapped layer (None when it cannot be mapped)."""
        s = self.spec
        oc = self.on_chip(layer)
        if isinstance(oc, str):
            return None
        busy, glb_c, dram_c, setup = self._time(oc, act_dram_bytes)
        energy = dict(oc.energy_pj)
        energy["dram"] = energy.get("dram", 0.0) + act_dram_bytes * s.energy.dram_byte_pj
        bound = ("compute" if busy == oc.compute_cycles else "memory") if busy else oc.placement
        return LayerCost(
            name=layer.name, op=layer.op, latency_ms=(busy + setup) / (s.clock_mhz * 1e3),
            energy_mj=sum(energy.values()) * 1e-9, bound=bound,
            meta=MappingProxyType({
                "placement": oc.placement, "mapping": oc.mapping,
                "utilisation": round(oc.utilisation, 4),
                "cycles": MappingProxyType({"compute": oc.compute_cycles, "glb": glb_c,
                                            "dram": dram_c, "setup": setup}),
                "accesses": oc.counts, "energy_pj": MappingProxyType(energy),
                "dram_activation_bytes": act_dram_bytes}))

    def _estimate(self, net: Network, breakdown: bool) -> Estimate:
        s = self.spec
        act = activation_dram_bytes(net.layers, net.outputs, s)
        cycles = energy_pj = 0.0
        costs: list[LayerCost] = []
        uncosted = []
        for layer, a in zip(net.layers, act, strict=True):
            oc = self.on_chip(layer)
            if isinstance(oc, str):
                uncosted.append(MappingProxyType({"name": layer.name, "op": layer.op,
                                                  "reason": oc}))
                continue
            busy, _, _, setup = self._time(oc, a)
            cycles += busy + setup
            energy_pj += sum(oc.energy_pj.values()) + a * s.energy.dram_byte_pj
            if breakdown:
                costs.append(self.layer_cost(layer, a))
        return Estimate(
            latency_ms=cycles / (s.clock_mhz * 1e3), energy_mj=energy_pj * 1e-9,
            per_layer=tuple(costs),
            meta={"backend": self.name, "device": s.name, "clock_mhz": s.clock_mhz,
                  "uncosted_layers": tuple(uncosted)})

    def estimate(self, net: Network) -> Estimate:
        return self._estimate(net, breakdown=True)

    def estimate_many(self, nets: Sequence[Network]) -> list[Estimate]:
        """Totals only (``per_layer`` empty, for speed); :meth:`estimate` gives the breakdown."""
        return [self._estimate(n, breakdown=False) for n in nets]


def activation_dram_bytes(layers: Sequence[Layer], outputs: Sequence[str],
                          spec: EyerissSpec) -> list[float]:
    """Per layer, activation bytes moved to/from DRAM because the GLB cannot hold them.

    Tensors live in the GLB from production to last use. The network input comes
    from DRAM; when a new output does not fit, the live tensor used furthest in the
    future is written out (once) and read back by each later reader; the network's
    outputs are written to DRAM. View ops alias their input.
    """
    d = spec.data_bits / 8
    cap = spec.glb_bytes
    alias: dict[str, str] = {}
    last: dict[str, int] = {}
    for j, layer in enumerate(layers):
        if layer.op in FREE_OPS and layer.inputs and layer.outputs:
            t = layer.inputs[0]
            alias[layer.outputs[0]] = alias.get(t, t)
            continue
        for t in layer.inputs:
            last[alias.get(t, t)] = j
    final = {alias.get(t, t) for t in outputs}
    glb: dict[str, float] = {}
    in_dram: set[str] = set()
    used = 0.0
    act = [0.0] * len(layers)
    for j, layer in enumerate(layers):
        if (layer.op in FREE_OPS and layer.inputs) or not layer.outputs:
            continue
        ins = [alias.get(t, t) for t in layer.inputs]
        for t in ins:
            if t not in glb:
                act[j] += _bytes_of(t, layer, d)
        out = layer.outputs[0]
        size = numel(layer.output_shape) * d
        if used + size > cap:
            used = _evict(glb, in_dram, layers, alias, last, ins, j, used, size, cap, act)
        if used + size <= cap:
            glb[out] = size
            used += size
        else:
            act[j] += size
            in_dram.add(out)
        if out in final:
            act[j] += size
        for t in ins:
            if t in glb and last.get(t, -1) <= j:
                used -= glb.pop(t)
    return act


def _bytes_of(tensor: str, reader: Layer, d: float) -> float:
    for t, shape in zip(reader.inputs, reader.input_shapes, strict=False):
        if t == tensor:
            return numel(shape) * d
    return numel(reader.input_shapes[0]) * d if reader.input_shapes else 0.0


def _evict(glb: dict[str, float], in_dram: set[str], layers: Sequence[Layer],
           alias: dict[str, str], last: dict[str, int], ins: list[str], j: int, used: float,
           size: float, cap: float, act: list[float]) -> float:
    """Belady eviction: drop the GLB tensors read furthest in the future until ``size`` fits;
    one still needed later is written to DRAM (once)."""
    never = len(layers)

    def next_use(t: str) -> int:
        if last.get(t, -1) <= j:
            return never
        return next(k for k in range(j + 1, never)
                    if any(alias.get(x, x) == t for x in layers[k].inputs))

    for victim in sorted((t for t in glb if t not in ins), key=next_use, reverse=True):
        if used + size <= cap:
            break
        if last.get(victim, -1) > j and victim not in in_dram:
            act[j] += glb[victim]
            in_dram.add(victim)
        used -= glb.pop(victim)
    return used


def from_spec(arg: str | None) -> BaseCostModel:
    """Registry factory: ``eyeriss`` (the HW-NAS-Bench reference spec) or ``eyeriss:SPEC``
    (a shipped name such as ``eyeriss_rs``, or a TOML path). The spec's ``kind`` picks
    the model: ``eyeriss_predictor`` -> :class:`analytical.predictor.PredictorModel`,
    ``eyeriss`` -> :class:`EyerissModel`."""
    name = arg or DEFAULT_SPEC
    if spec_kind(name) == "eyeriss_predictor":
        from analytical.predictor import PredictorModel

        return PredictorModel(load_spec(name, PredictorSpec))
    return EyerissModel(load_spec(name, EyerissSpec))
