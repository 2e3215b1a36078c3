"""Layer-wise FPGA CNN accelerator (ZC706 class): DSP-limited compute, BRAM tiles, DDR.

The accelerator (Zhang et al., FPGA 2015) is a ``Tm x Tn`` array of DSP
multiply-accumulators: each cycle it multiplies ``Tn`` input channels into ``Tm``
output channels at one output pixel and kernel tap. Per conv/FC layer (per group;
``M`` filters, ``N`` channels, ``K_h x K_w`` kernel, ``E x F`` output, stride
``U``) it picks the output tile ``Tr x Tc`` that minimises latency among those whose
double-buffered tiles fit the usable BRAM::

    2 * b * (Tn*((Tr-1)U+K_h)*((Tc-1)U+K_w) + Tm*Tn*K_h*K_w + Tm*Tr*Tc) <= BRAM

    compute_cycles = ceil(M/Tm) * ceil(N/Tn) * ceil(E/Tr)*Tr * ceil(F/Tc)*Tc * K_h*K_w
    DDR bytes      = tiles * ceil(M/Tm) * ceil(N/Tn) * input tile      (inputs, per m tile)
                   + tiles * M*N*K_h*K_w * b                          (weights, per tile)
                   + M*E*F * b                                        (outputs once)
    cycles         = max(compute_cycles, DDR bytes / DDR bytes per cycle) + overhead

(``tiles = ceil(E/Tr) * ceil(F/Tc)``; double buffering overlaps transfer and compute).
Feature maps live in DDR between layers. Ops in ``fused_post_ops`` (ReLU, folded BN), and
an ``Add`` of a constant (a bias an old converter wrote apart from its conv or MatMul),
ride on the array's load/store path: no cycles, vector-op energy. Pooling and
element-wise ops run on a ``vector_lanes`` unit: ``max(ops / lanes, DDR bytes / rate)``.

Energy = MACs x ``mac_pj`` + BRAM bytes x ``bram_byte_pj`` (per cycle the array reads
``Tn`` inputs, ``Tm*Tn`` weights and reads+writes ``Tm`` partial sums; DDR data is
written into BRAM) + DDR bytes x ``ddr_byte_pj`` + vector ops x ``vector_op_pj`` +
``static_power_w`` x latency. Results are cached per layer shape.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import replace
from functools import lru_cache
from types import MappingProxyType
from typing import NamedTuple

import numpy as np

from analytical.eyeriss import FREE_OPS, ConvShape, NotMappable, conv_shape
from analytical.specs import FpgaSpec, load_spec
from costmodels.interface import BaseCostModel, Estimate, LayerCost
from costmodels.network import Layer, Network, numel
from costmodels.ops import MAC_OPS


def _bias_add(layer: Layer) -> bool:
    """An ``Add`` of one activation and a constant: a bias, applied on the array's store
    path like a folded BN (a conv with its bias apart cost +46% as a vector pass, a MatMul
    and its Add twice its Gemm)."""
    return (layer.op in ("Add", "Sub") and len(layer.input_shapes) == 1
            and len(layer.weight_shapes) == 1)

DEFAULT_SPEC = "zc706_hwnas"


class LayerTime(NamedTuple):
    """Cycles, DDR and BRAM bytes, ops and tiling of one layer on the accelerator."""

    unit: str
    compute_cycles: float
    ddr_bytes: float
    bram_bytes: float
    macs: float
    vector_ops: float
    tiling: tuple[tuple[str, int], ...]
    utilisation: float


@lru_cache(maxsize=4096)
def conv_time(shape: ConvShape, spec: FpgaSpec) -> LayerTime:
    """Best ``Tr x Tc`` tiling of one conv/FC layer (all groups and batch) on the array."""
    n, M, N, g, H, W, R, S, E, F, U = shape
    tm, tn = spec.unroll_out_channels, spec.unroll_in_channels
    b = spec.data_bits / 8
    # A tile fits only if its outputs do: tr * tc <= limit. Larger candidates are never
    # chosen, and listing them took O(E) time and O(E * F) memory (a 2^31-row map hung).
    limit = max(1, int(spec.bram_bytes * spec.bram_usable_fraction / (2 * b) // min(tm, M)))
    tr, tc = _tile_pairs(_tile_sizes(E, limit), _tile_sizes(F, limit), limit)
    in_tile = min(tn, N) * ((tr - 1) * U + R) * ((tc - 1) * U + S)
    w_tile = min(tm, M) * min(tn, N) * R * S
    out_tile = min(tm, M) * tr * tc
    fits = 2 * b * (in_tile + w_tile + out_tile) <= spec.bram_bytes * spec.bram_usable_fraction
    if not fits.any():
        fits = tr * tc == (tr * tc).min()
    tr, tc, in_tile = tr[fits], tc[fits], in_tile[fits]
    mt, nt = math.ceil(M / tm), math.ceil(N / tn)
    tiles = np.ceil(E / tr) * np.ceil(F / tc)
    compute = n * g * mt * nt * tiles * tr * tc * R * S
    ddr = n * g * (tiles * mt * nt * in_tile * b + M * E * F * b) + g * tiles * M * N * R * S * b
    cycles = np.maximum(compute, ddr / _ddr_bytes_per_cycle(spec))
    i = int(np.lexsort((ddr, cycles))[0])
    macs = float(n * g * M * N * R * S * E * F)
    bram = float(compute[i]) * (tn + tm * tn + 2 * tm) * b + float(ddr[i])
    util = macs / (float(compute[i]) * tm * tn)
    return LayerTime("array", float(compute[i]), float(ddr[i]), bram, macs, 0.0,
                     (("Tm", tm), ("Tn", tn), ("Tr", int(tr[i])), ("Tc", int(tc[i]))), util)


def _tile_sizes(extent: int, limit: int) -> np.ndarray:
    """The distinct ``ceil(extent / k)``, k = 1..extent (the tile sizes that split the
    extent evenly into k tiles), up to ``limit``; 1 is always one."""
    v = np.arange(1, max(1, min(extent, limit)) + 1, dtype=np.int64)
    return v[-(-extent // (-(-extent // v))) == v]


def _tile_pairs(trs: np.ndarray, tcs: np.ndarray, limit: int) -> tuple[np.ndarray, np.ndarray]:
    """Every (tr, tc) of the two sorted candidate lists with tr * tc <= limit, as floats."""
    counts = np.searchsorted(tcs, limit // trs, side="right")
    tr = np.repeat(trs, counts)
    tc = tcs[np.arange(counts.sum()) - np.repeat(np.cumsum(counts) - counts, counts)]
    return tr.astype(np.float64), tc.astype(np.float64)


def vector_time(layer: Layer, spec: FpgaSpec) -> LayerTime:
    """Pooling / element-wise op on the vector unit, operands from and result to DDR."""
    b = spec.data_bits / 8
    ops = float(max(layer.elem_ops, numel(layer.output_shape)))
    ddr = (sum(numel(s) for s in layer.input_shapes) + numel(layer.output_shape)) * b
    return LayerTime("vector", ops / spec.vector_lanes, float(ddr), float(ddr), 0.0, ops, (), 0.0)


def _ddr_bytes_per_cycle(spec: FpgaSpec) -> float:
    return spec.ddr_bandwidth_gbps * spec.ddr_efficiency * 1e3 / spec.clock_mhz


class FpgaModel(BaseCostModel):
    """ZC706-class layer-wise accelerator; ``per_layer`` carries tiling, cycles and energy.

    Energy follows the spec's ``energy_model``: ``per_action`` (counts x the energy
    table + static power x latency) or ``board_power`` (``board_power_w`` x latency,
    the convention of HW-NAS-Bench's FPGA figures). Layers the array cannot map are
    listed in ``meta['uncosted_layers']``.
    """

    def __init__(self, spec: FpgaSpec) -> None:
        self.spec = spec
        self._by_key: dict[tuple, LayerCost | str] = {}
        self._by_id: dict[int, LayerCost | str] = {}
        self._alive: list[Layer] = []

    @property
    def name(self) -> str:  # type: ignore[override]
        return f"fpga:{self.spec.name}"

    def layer_time(self, layer: Layer) -> LayerTime:
        if layer.op in FREE_OPS:
            return LayerTime("view", 0.0, 0.0, 0.0, 0.0, 0.0, (), 0.0)
        if layer.op in MAC_OPS:
            return conv_time(conv_shape(layer), self.spec)
        if layer.op in self.spec.fused_post_ops or _bias_add(layer):
            ops = float(max(layer.elem_ops, numel(layer.output_shape)))
            return LayerTime("fused", 0.0, 0.0, 0.0, 0.0, ops, (), 0.0)
        return vector_time(layer, self.spec)

    def layer_cost(self, layer: Layer) -> LayerCost | str:
        """The layer's cost, or why it cannot be mapped. Cached per structural layer key
        (op, shapes, attributes; names excluded); the ``id`` memo in front keeps the layer
        alive (``_alive``), so no other object can have that id while it is there."""
        cost = self._by_id.get(id(layer))
        if cost is not None:
            return cost
        key = (layer.op, *layer[4:13])
        cost = self._by_key.get(key)
        if cost is None:
            try:
                cost = self._layer_cost(layer)
            except NotMappable as exc:
                cost = str(exc)
            self._by_key[key] = cost
        if len(self._alive) >= 200_000:
            self._by_id.clear()
            self._alive.clear()
        self._alive.append(layer)
        self._by_id[id(layer)] = cost
        return cost

    def _layer_cost(self, layer: Layer) -> LayerCost:
        s, en = self.spec, self.spec.energy
        lt = self.layer_time(layer)
        ddr_c = lt.ddr_bytes / _ddr_bytes_per_cycle(s)
        busy = max(lt.compute_cycles, ddr_c)
        overhead = s.layer_overhead_cycles if lt.unit in ("array", "vector") else 0
        latency_s = (busy + overhead) / (s.clock_mhz * 1e6)
        if s.energy_model == "board_power":
            energy_pj = {"board": s.board_power_w * latency_s * 1e12}
        else:
            energy_pj = {"mac": lt.macs * en.mac_pj, "bram": lt.bram_bytes * en.bram_byte_pj,
                         "ddr": lt.ddr_bytes * en.ddr_byte_pj,
                         "vector": lt.vector_ops * en.vector_op_pj,
                         "static": en.static_power_w * latency_s * 1e12}
        bound = ("compute" if lt.compute_cycles >= ddr_c else "memory") if busy else lt.unit
        # the layer's own name is filled in by estimate(); the cached entry is shared
        return LayerCost(
            name="", op=layer.op, latency_ms=latency_s * 1e3,
            energy_mj=sum(energy_pj.values()) * 1e-9, bound=bound,
            meta=MappingProxyType({
                "unit": lt.unit, "tiling": MappingProxyType(dict(lt.tiling)),
                "utilisation": round(lt.utilisation, 4),
                "cycles": MappingProxyType({"compute": lt.compute_cycles, "ddr": ddr_c,
                                            "overhead": overhead}),
                "ddr_bytes": lt.ddr_bytes, "energy_pj": MappingProxyType(energy_pj)}))

    def _estimate(self, net: Network, breakdown: bool) -> Estimate:
        costs = [self.layer_cost(x) for x in net.layers]
        uncosted = tuple(MappingProxyType({"name": x.name, "op": x.op, "reason": c})
                         for x, c in zip(net.layers, costs, strict=True) if isinstance(c, str))
        mapped = [c for c in costs if not isinstance(c, str)] if uncosted else costs
        per_layer = ()
        if breakdown:
            per_layer = tuple(replace(c, name=x.name) for x, c in zip(net.layers, costs,
                                                                     strict=True)
                              if not isinstance(c, str))
        return Estimate(
            latency_ms=sum(c.latency_ms for c in mapped),
            energy_mj=sum(c.energy_mj for c in mapped), per_layer=per_layer,
            meta={"backend": self.name, "device": self.spec.name,
                  "energy_model": self.spec.energy_model, "uncosted_layers": uncosted})

    def estimate(self, net: Network) -> Estimate:
        return self._estimate(net, breakdown=True)

    def estimate_many(self, nets: Sequence[Network]) -> list[Estimate]:
        """Totals only (``per_layer`` empty, for speed); :meth:`estimate` gives the breakdown."""
        return [self._estimate(n, breakdown=False) for n in nets]


def from_spec(arg: str | None) -> FpgaModel:
    """Registry factory: ``fpga`` (the shipped default spec) or ``fpga:SPEC`` (name or path)."""
    return FpgaModel(load_spec(arg or DEFAULT_SPEC, FpgaSpec))
