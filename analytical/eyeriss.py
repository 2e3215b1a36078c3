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

from analytical.specs import EyerissSpec, load_spec
from costmodels.interface import BaseCostModel, Estimate, LayerCost
from costmodels.network import GLOBAL_POOL_OPS, POOL_OPS, Layer, Network, numel

VIEW_OPS = frozenset({"Identity", "Flatten", "Reshape", "Squeeze", "Unsqueeze", "Dropout"})
MAC_OPS = frozenset({"Conv", "ConvTranspose", "Gemm", "MatMul"})
LEVELS = ("mac", "spad", "noc", "glb", "dram")
# r and t candidates: every count up to 16, then the useful multiples of the array's sides.
_SET_COUNTS = np.array(sorted(set(range(1, 17)) | {20, 21, 24, 28, 32, 36, 42, 48, 56, 64, 72,
                                                     84, 96, 112, 128, 168}))


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


def conv_shape(layer: Layer) -> ConvShape:
    """The row-stationary problem of a Conv, ConvTranspose, Gemm or MatMul layer (per group).

    A ConvTranspose is costed as the conv that scatters each input pixel through the
    kernel: output grid = input grid, same MACs.
    """
    if layer.op in ("Conv", "ConvTranspose"):
        n, cin, h, w = layer.input_shapes[0]
        _, m, e, f = layer.output_shape
        r, s = layer.kernel or layer.weight_shapes[0][2:]
        pads = layer.pads or (0, 0, 0, 0)
        u = layer.stride[0] if layer.stride else 1
        g = layer.groups
        if layer.op == "ConvTranspose":
            return ConvShape(n, m // g, cin // g, g, h + r - 1, w + s - 1, r, s, h, w, 1)
        return ConvShape(n, m // g, cin // g, g, h + pads[0] + pads[2], w + pads[1] + pads[3],
                         r, s, e, f, u)
    out = layer.output_shape
    k = layer.macs // max(numel(out), 1)
    batch = numel(out[:-1])
    return ConvShape(batch, out[-1], k, 1, 1, 1, 1, 1, 1, 1, 1)


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
    rv = _SET_COUNTS[_SET_COUNTS <= min(C, max_sets)].astype(np.float64)[None, None, None, :, None]
    tv = _SET_COUNTS[_SET_COUNTS <= min(M, max_sets)].astype(np.float64)[None, None, None, None, :]
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
    if placement == "pe_array" and layer.op in POOL_OPS and layer.kernel:
        n, c, h, w = layer.input_shapes[0]
        pads = layer.pads or (0, 0, 0, 0)
        _, _, e, f = layer.output_shape
        shape = ConvShape(n, 1, 1, c, h + pads[0] + pads[2], w + pads[1] + pads[3],
                          layer.kernel[0], layer.kernel[1], e, f, layer.stride[0])
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
    and energy by level (pJ) for every layer."""

    def __init__(self, spec: EyerissSpec) -> None:
        self.spec = spec
        self._layers: dict[int, tuple[Layer, OnChip]] = {}
        self._costs: dict[tuple[int, float], LayerCost] = {}

    @property
    def name(self) -> str:  # type: ignore[override]
        return "eyeriss" if self.spec.name == "eyeriss" else f"eyeriss:{self.spec.name}"

    def placement(self, layer: Layer) -> str:
        s = self.spec
        if layer.op in VIEW_OPS:
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

    def on_chip(self, layer: Layer) -> OnChip:
        """The layer's cost before activation DRAM traffic (cached per layer)."""
        hit = self._layers.get(id(layer))
        if hit is not None and hit[0] is layer:
            return hit[1]
        where = self.placement(layer)
        if where == "view":
            res = OnChip("view", 0.0, 0.0, 0.0, MappingProxyType({}), MappingProxyType({}),
                         MappingProxyType({}), 0.0)
        elif where == "pe_array" and layer.op in MAC_OPS:
            res = search_mapping(conv_shape(layer), self.spec)
        else:
            res = vector_op(layer, where, self.spec)
        self._layers[id(layer)] = (layer, res)
        return res

    def layer_cost(self, layer: Layer, act_dram_bytes: float) -> LayerCost:
        key = (id(layer), act_dram_bytes)
        hit = self._costs.get(key)
        if hit is not None and self._layers[id(layer)][0] is layer:
            return hit
        s = self.spec
        oc = self.on_chip(layer)
        dram = oc.dram_bytes + act_dram_bytes
        glb_c = oc.glb_bytes / _glb_bytes_per_cycle(s)
        dram_c = dram / _dram_bytes_per_cycle(s)
        busy = max(oc.compute_cycles, glb_c, dram_c)
        setup = s.layer_setup_cycles if oc.placement == "pe_array" else 0
        energy = dict(oc.energy_pj)
        energy["dram"] = energy.get("dram", 0.0) + act_dram_bytes * s.energy.dram_byte_pj
        bound = ("compute" if busy == oc.compute_cycles else "memory") if busy else oc.placement
        cost = LayerCost(
            name=layer.name, op=layer.op, latency_ms=(busy + setup) / (s.clock_mhz * 1e3),
            energy_mj=sum(energy.values()) * 1e-9, bound=bound,
            meta=MappingProxyType({
                "placement": oc.placement, "mapping": oc.mapping,
                "utilisation": round(oc.utilisation, 4),
                "cycles": MappingProxyType({"compute": oc.compute_cycles, "glb": glb_c,
                                            "dram": dram_c, "setup": setup}),
                "accesses": oc.counts, "energy_pj": MappingProxyType(energy),
                "dram_activation_bytes": act_dram_bytes}))
        self._costs[key] = cost
        return cost

    def estimate(self, net: Network) -> Estimate:
        act = activation_dram_bytes(net.layers, net.outputs, self.spec)
        costs = tuple(self.layer_cost(x, a) for x, a in zip(net.layers, act, strict=True))
        return Estimate(
            latency_ms=sum(c.latency_ms for c in costs),
            energy_mj=sum(c.energy_mj for c in costs), per_layer=costs,
            meta={"backend": self.name, "device": self.spec.name,
                  "clock_mhz": self.spec.clock_mhz})


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
        if layer.op in VIEW_OPS:
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
        if layer.op in VIEW_OPS:
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
    return numel(reader.input_shapes[0]) * d


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


def from_spec(arg: str | None) -> EyerissModel:
    """Registry factory: ``eyeriss`` (shipped spec) or ``eyeriss:SPEC`` (name or TOML path)."""
    return EyerissModel(load_spec(arg or "eyeriss", EyerissSpec))
