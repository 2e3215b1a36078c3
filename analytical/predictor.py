"""Eyeriss as HW-NAS-Bench costs it: the DNN-Chip Predictor's row-stationary tiling model.

HW-NAS-Bench (Li et al., ICLR 2021) took its Eyeriss latency and energy from the
DNN-Chip Predictor (Zhao et al., ICASSP 2020; GATECH-EIC/DNN-Chip-Predictor,
``predictor_eyeriss_only/predictor.py``). This module re-implements that model's
conventions from their description (the code here is ours); every number comes from
the spec (``analytical/specs/eyeriss.toml``), each with its source.

**One problem per layer** (per group for grouped convs): ``M`` filters, ``C``
channels, ``R x S`` kernel, stride ``U``, ``H x W`` input, ``E x F`` output. The
mapper tiles ``M = M0*M1*M2*M3`` (``M0`` filters per PE, ``M1`` across the array,
``M2`` in the global buffer, ``M3`` from DRAM), ``C = C0*C1*C2`` (``C3 = 1``: all
channels of a filter stay on chip) and ``E = E1*E3`` (``E1`` output rows across the
array). A tiling is legal when, with the spec's bounds,

* ``M0 <= psum_entries``; ``M1*C1*E1*R < pe_count``; ``C0*S < spad_ifmap_words``;
  ``M0*C0*S < spad_weight_words``;
* ``C1*C0*((E1-1)*U+R)*((F-1)*U+S) + M2*M1*M0*E1*F < glb_words`` (one ifmap strip and
  the psums of a pass fit the global buffer);
* ``E1 > 1`` except for FC layers (``E = F = 1``) and one-row outputs (1-D convs, ours).

``cycles = M3*M2*M0 * C2*C0 * E3 * F * S`` and, per 16-bit value moved (``I, Wt, O``:
ifmap ``H*W*C``, weights ``R*S*C*M``, ofmap ``E*F*M``):

* DRAM: ``M3*I + E3*Wt + O``; DRAM->GLB: ``M3*I + O``; GLB: ``M3*M2*I + max(2(C2-1),1)*O``;
* array network: ``M3*M2*M1*R*(E/H)*I + E3*E1*Wt + max(C2*(C1*R-1),1)*O``;
* register files: ``M3*M2*M1*R*(E/H)*M0*S*(F/W)*I + E3*E1*F*Wt + max(2*C2*C1*R*(C0*S-1),1)*O``;
* compute: ``E*F*M*R*S*C`` MACs (zero MAC energy for pooling).

``energy = sum(count x unit energy)``; the mapper keeps the tiling minimising
``(e - e_min)/e_max + (c - c_min)/c_max`` over all legal tilings (first on ties).

**What is costed** (spec ``[mapping]``): convolutions (grouped and depthwise as
``groups`` problems of ``C/g -> M/g`` channels), pooling as a dense ``C -> C``
convolution with no MAC energy (the predictor's ``AvgP``/``MaxP``), FC/Gemm/MatMul as
a 1x1 convolution over the output rows (an FC when there is one row), global pools as
a pool whose kernel is the whole map. Ops of the classes in ``free_op_classes``
(element-wise, normalisation, views...) cost nothing: the predictor has no entry for
them, and HW-NAS-Bench's published differences between cells are those of their conv
and pool operations alone (skips are free). Any
other layer is reported in ``meta["uncosted_layers"]``. A layer with no legal tiling
(ours, beyond the reference's NAS-Bench-201 shapes) is retried with its kernel split
into column chunks that fit the ifmap spad, on output strips (``F`` halved) and with
its sizes padded to the next 2^a*3^b*5^c (noted in its ``meta``). Batch ``N`` multiplies a layer's cost.

**Arithmetic intensity** (``meta["arithmetic_intensity"]``): MACs per DRAM access
(16-bit words), per layer and for the network.

Results are cached per unique problem (a structural key), so all NAS-Bench-201 cells
cost in about the time of summing their MACs.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from functools import lru_cache
from types import MappingProxyType
from typing import NamedTuple

import numpy as np

from analytical.specs import PredictorSpec
from costmodels.interface import BaseCostModel, Estimate, LayerCost
from costmodels.network import Layer, Network, numel
from costmodels.ops import CONV_OPS, GLOBAL_POOL_OPS, MAC_OPS, POOL_OPS, op_class

LEVELS = ("mac", "dram", "dram_glb", "glb", "noc", "rf")


class Problem(NamedTuple):
    """One row-stationary problem: kind ('conv', 'pool', 'fc', 'gpool' = global pool),
    kernel ``r x s``, stride ``u``, input ``h x w``, channels ``c``, filters ``m``,
    output ``e x f``."""

    kind: str
    r: int
    s: int
    u: int
    h: int
    w: int
    c: int
    m: int
    e: int
    f: int


class Mapped(NamedTuple):
    """The chosen tiling of a problem: cycles, energy (pJ), accesses per level, tiling."""

    cycles: float
    energy_pj: float
    counts: tuple[float, ...]     # LEVELS order; 'mac' is the MAC count
    tiling: tuple[tuple[str, int], ...]
    macs: float
    dram_words: float


class Uncostable(Exception):
    """Internal: a layer the reference mapping space has no place for."""


@lru_cache(maxsize=4096)
def _factorizations(n: int, parts: int) -> np.ndarray:
    """Every ordered tuple of ``parts`` positive integers whose product is ``n`` (rows)."""
    if parts == 1:
        return np.array([[n]], dtype=np.int64)
    rows = []
    for d in range(1, n + 1):
        if n % d == 0:
            rest = _factorizations(n // d, parts - 1)
            rows.append(np.column_stack([np.full(len(rest), d, dtype=np.int64), rest]))
    return np.vstack(rows)


def _candidates(p: Problem, spec: PredictorSpec) -> tuple[np.ndarray, ...]:
    """All legal tilings of ``p`` as flat arrays M0, M1, M2, M3, C0, C1, C2, E1, E3.

    Filtered in stages (each factor's own bounds, then filter x channel pairs, then the
    output rows) so that the grid stays small for transformer-sized layers.
    """
    mf = _factorizations(p.m, 4)
    mf = mf[mf[:, 0] <= spec.psum_entries]
    cf = _factorizations(p.c, 3)
    cf = cf[cf[:, 0] * p.s < spec.spad_ifmap_words]
    ef = _factorizations(p.e, 2)
    if p.kind not in ("fc", "gpool") and p.e > 1:
        ef = ef[ef[:, 0] != 1]
    ef = ef[ef[:, 0] * p.r < spec.pe_count]
    im, ic = (a.ravel() for a in np.meshgrid(np.arange(len(mf)), np.arange(len(cf)),
                                             indexing="ij"))
    pair = ((mf[im, 1] * cf[ic, 1] * p.r < spec.pe_count)
            & (mf[im, 0] * cf[ic, 0] * p.s < spec.spad_weight_words))
    im, ic = im[pair], ic[pair]
    ip, ie = (a.ravel() for a in np.meshgrid(np.arange(len(im)), np.arange(len(ef)),
                                             indexing="ij"))
    im, ic = im[ip], ic[ip]
    m0, m1, m2, m3 = (mf[im, i] for i in range(4))
    c0, c1, c2 = (cf[ic, i] for i in range(3))
    e1, e3 = ef[ie, 0], ef[ie, 1]
    strip = c1 * c0 * ((e1 - 1) * p.u + p.r) * ((p.f - 1) * p.u + p.s)
    ok = ((m1 * c1 * e1 * p.r < spec.pe_count)
          & (strip + m2 * m1 * m0 * e1 * p.f < spec.glb_words))
    return tuple(a[ok].astype(np.float64) for a in (m0, m1, m2, m3, c0, c1, c2, e1, e3))


def map_problem(p: Problem, spec: PredictorSpec) -> Mapped | None:
    """The reference mapper's choice for ``p``; ``None`` when no tiling is legal."""
    return _map(p, spec)


@lru_cache(maxsize=65536)
def _map(p: Problem, spec: PredictorSpec) -> Mapped | None:
    m0, m1, m2, m3, c0, c1, c2, e1, e3 = _candidates(p, spec)
    if not len(m0):
        return None
    n_i, n_w, n_o = p.h * p.w * p.c, p.r * p.s * p.c * p.m, p.e * p.f * p.m
    macs = float(p.e * p.f * p.m * p.r * p.s * p.c)
    dram = m3 * n_i + e3 * n_w + n_o
    dram_glb = m3 * n_i + n_o
    glb = m3 * m2 * n_i + np.maximum(2 * (c2 - 1), 1) * n_o
    rows = m3 * m2 * m1 * p.r * p.e / p.h * n_i
    noc = rows + e3 * e1 * n_w + np.maximum(c2 * (c1 * p.r - 1), 1) * n_o
    rf = (rows * m0 * p.s * p.f / p.w + e3 * e1 * p.f * n_w
          + np.maximum(2 * c2 * c1 * p.r * (c0 * p.s - 1), 1) * n_o)
    en = spec.energy
    mac_pj = 0.0 if p.kind in ("pool", "gpool") else en.mac_pj
    energy = (macs * mac_pj + dram * en.dram_pj + dram_glb * en.dram_to_glb_pj
              + glb * en.glb_pj + noc * en.noc_pj + rf * en.rf_pj)
    cycles = m3 * m2 * m0 * c2 * c0 * e3 * p.f * p.s
    score = ((energy - energy.min()) / energy.max() + (cycles - cycles.min()) / cycles.max())
    i = int(np.argmin(score))
    counts = (macs, float(dram[i]), float(dram_glb[i]), float(glb[i]), float(noc[i]),
              float(rf[i]))
    names = ("M0", "M1", "M2", "M3", "C0", "C1", "C2", "E1", "E3")
    vals = (m0, m1, m2, m3, c0, c1, c2, e1, e3)
    return Mapped(float(cycles[i]), float(energy[i]), counts,
                  tuple((k, int(v[i])) for k, v in zip(names, vals, strict=True)), macs,
                  float(dram[i]))


def _smooth_above(n: int) -> int:
    """The smallest 2^a * 3^b * 5^c >= n (a size that factorizes into many tilings)."""
    k = max(n, 1)
    while True:
        r = k
        for q in (2, 3, 5):
            while r % q == 0:
                r //= q
        if r == 1:
            return k
        k += 1


def map_with_fallback(p: Problem, spec: PredictorSpec) -> tuple[Mapped, str]:
    """``map_problem``, else the sum over output strips, else on padded sizes.

    Returns the mapping and a note ('' when the reference maps it as is).
    """
    got = map_problem(p, spec)
    if got is not None:
        return got, ""
    if p.s >= spec.spad_ifmap_words:  # kernel wider than the ifmap spad: column chunks
        width = spec.spad_ifmap_words - 1
        parts = [map_with_fallback(p._replace(s=min(width, p.s - j),
                                              w=min(width, p.s - j) + (p.f - 1) * p.u), spec)
                 for j in range(0, p.s, width)]
        total = parts[0][0]
        for part, _ in parts[1:]:
            total = _sum(total, part)
        return total, f"kernel split into {len(parts)} column chunks of <= {width}"
    if p.f > 1:  # the GLB strip bound: cost two half-width strips
        half = math.ceil(p.f / 2)
        w_half = min(p.w, (half - 1) * p.u + p.s)
        a, note_a = map_with_fallback(p._replace(f=half, w=w_half), spec)
        b, _ = map_with_fallback(p._replace(f=p.f - half, w=w_half), spec)
        return _sum(a, b), note_a or f"split into output strips of width {half}"
    padded = p._replace(m=_smooth_above(p.m), c=_smooth_above(p.c), e=_smooth_above(p.e))
    if padded != p:
        got = map_problem(padded, spec)
        if got is not None:
            return got, f"padded to M={padded.m} C={padded.c} E={padded.e}"
    if p.r >= spec.pe_count:
        raise Uncostable(f"kernel {p.r}x{p.s} has more rows than the {spec.pe_count} PEs")
    raise Uncostable("no legal row-stationary tiling")


def _sum(a: Mapped, b: Mapped) -> Mapped:
    counts = tuple(x + y for x, y in zip(a.counts, b.counts, strict=True))
    return Mapped(a.cycles + b.cycles, a.energy_pj + b.energy_pj, counts, a.tiling,
                  a.macs + b.macs, a.dram_words + b.dram_words)


def _spatial(shape: Sequence[int]) -> tuple[int, int]:
    """(H, W) of an N, C, *spatial shape: 1-D maps are 1 x L; none is 1 x 1."""
    sp = tuple(shape[2:])
    if len(sp) == 0:
        return 1, 1
    if len(sp) == 1:
        return 1, sp[0]
    if len(sp) == 2:
        return sp[0], sp[1]
    raise Uncostable(f"{len(sp)}-D spatial maps are outside the 2-D row-stationary model")


def problems(layer: Layer, spec: PredictorSpec) -> tuple[Problem, int]:
    """The problem a layer maps to and how many times it runs (groups x batch).

    Raises :class:`Uncostable` for what the reference has no mapping for.
    """
    if not layer.input_shapes and layer.op not in MAC_OPS:
        raise Uncostable("no activation input")
    if layer.op in CONV_OPS:
        return _conv_problem(layer)
    if layer.op in MAC_OPS:
        return _fc_problem(layer)
    if layer.op in POOL_OPS:
        return _pool_problem(layer, spec)
    if layer.op in GLOBAL_POOL_OPS:
        return _global_pool_problem(layer)
    raise Uncostable(f"op {layer.op} has no place in the row-stationary mapping")


def _kernel(k: tuple[int, ...]) -> tuple[int, int]:
    """(R, S) of a kernel shape: none is 1 x 1, a 1-D kernel 1 x k."""
    if not k:
        return 1, 1
    if len(k) == 1:
        return 1, int(k[0])
    if len(k) > 2:
        raise Uncostable(f"{len(k)}-D kernels are outside the 2-D row-stationary model")
    return int(k[0]), int(k[1])


def _conv_problem(layer: Layer) -> tuple[Problem, int]:
    x, y = layer.input_shapes[0], layer.output_shape
    if len(x) < 3 or len(y) < 3:
        raise Uncostable(f"conv input {x} / output {y} is not N, C, spatial")
    h, w = _spatial(x)
    e, f = _spatial(y)
    g = max(int(layer.groups or 1), 1)
    r, s = _kernel(tuple(layer.kernel) or (
        tuple(layer.weight_shapes[0][2:]) if layer.weight_shapes else ()))
    u = int(layer.stride[-1]) if layer.stride else 1
    cin, cout = x[1], y[1]
    if layer.op == "ConvTranspose":  # each input pixel scattered through the kernel
        e, f, u = h, w, 1
    return Problem("conv", r, s, u, h, w, max(cin // g, 1), max(cout // g, 1), e, f), g * x[0]


def _fc_problem(layer: Layer) -> tuple[Problem, int]:
    y = layer.output_shape
    n_out = y[-1] if y else 1
    rows = numel(y[:-1]) if len(y) > 1 else 1
    k = layer.macs // max(numel(y), 1)
    if k <= 0:
        raise Uncostable("no multiply-accumulates")
    if rows == 1:
        return Problem("fc", 1, 1, 1, 1, 1, int(k), int(n_out), 1, 1), 1
    # rows x K times K x N: a 1x1 conv over a column of `rows` output pixels
    return Problem("conv", 1, 1, 1, int(rows), 1, int(k), int(n_out), int(rows), 1), 1


def _pool_problem(layer: Layer, spec: PredictorSpec) -> tuple[Problem, int]:
    x, y = layer.input_shapes[0], layer.output_shape
    if len(x) < 3:
        raise Uncostable(f"pool input {x} is not N, C, spatial")
    h, w = _spatial(x)
    e, f = _spatial(y)
    r, s = _kernel(tuple(layer.kernel))
    u = int(layer.stride[-1]) if layer.stride else 1
    c = x[1]
    if spec.pool_mapping == "depthwise":
        return Problem("pool", r, s, u, h, w, 1, 1, e, f), c * x[0]
    return Problem("pool", r, s, u, h, w, c, c, e, f), x[0]


def _global_pool_problem(layer: Layer) -> tuple[Problem, int]:
    x = layer.input_shapes[0]
    if len(x) < 3:
        raise Uncostable(f"reduction over {x} is not a spatial pool")
    h, w = _spatial(x)
    c = x[1]
    # a pool whose kernel is the whole map; one output pixel, so FC rules (E1 = 1)
    return Problem("gpool", h, w, 1, h, w, c, c, 1, 1), x[0]


class PredictorModel(BaseCostModel):
    """HW-NAS-Bench's Eyeriss: per-layer tiling search, network = sum of its layers.

    ``per_layer`` has one entry per costed layer with its tiling, accesses per level,
    cycles and arithmetic intensity; ``meta['uncosted_layers']`` names any layer the
    model has no mapping for (with the reason), ``meta['free_layers']`` counts the
    layers that cost nothing by the reference's convention.
    """

    def __init__(self, spec: PredictorSpec) -> None:
        self.spec = spec
        self._free = frozenset(spec.free_op_classes)
        self._by_key: dict[tuple, tuple] = {}
        self._by_id: dict[int, tuple] = {}
        self._alive: list[Layer] = []

    @property
    def name(self) -> str:  # type: ignore[override]
        return f"eyeriss:{self.spec.name}"

    # -- one layer -------------------------------------------------------------
    def layer_work(self, layer: Layer) -> tuple:
        """(kind, cycles, energy_pj, macs, dram_words, detail, is_free, is_uncosted) of one
        layer; cached.

        ``kind`` is 'array', 'free' or 'uncosted' (``detail`` is then the reason). The
        cache is keyed structurally (op, shapes, attributes; names excluded). The ``id``
        memo in front only skips re-hashing a layer object already seen: it keeps the
        layer alive (``_alive``), so no other object can have that id while it is there.
        """
        work = self._by_id.get(id(layer))
        if work is not None:
            return work
        key = (layer.op, *layer[4:13])
        work = self._by_key.get(key)
        if work is None:
            work = self._by_key[key] = self._work(layer)
        if len(self._alive) >= 200_000:
            self._by_id.clear()
            self._alive.clear()
        self._alive.append(layer)
        self._by_id[id(layer)] = work
        return work

    def _work(self, layer: Layer) -> tuple:
        cls = op_class(layer)
        if cls in self._free or (layer.op in GLOBAL_POOL_OPS and not self._is_spatial(layer)):
            return ("free", 0.0, 0.0, 0.0, 0.0, None, 1, 0)
        try:
            prob, times = problems(layer, self.spec)
            mapped, note = map_with_fallback(prob, self.spec)
        except Uncostable as exc:
            return ("uncosted", 0.0, 0.0, 0.0, 0.0, str(exc), 0, 1)
        return ("array", mapped.cycles * times, mapped.energy_pj * times, mapped.macs * times,
                mapped.dram_words * times, (prob, times, mapped, note), 0, 0)

    @staticmethod
    def _is_spatial(layer: Layer) -> bool:
        """A reduction that pools the spatial axes of an N, C, H, W map (not a LayerNorm-like
        reduction over features)."""
        x = layer.input_shapes[0] if layer.input_shapes else ()
        y = layer.output_shape
        return (layer.op.startswith("Global") or (
            len(x) == 4 and len(y) in (2, 4) and y[:2] == x[:2] and numel(y) == numel(x[:2])))

    def layer_cost(self, layer: Layer) -> LayerCost | None:
        """The per-layer breakdown entry (None for free and uncosted layers)."""
        kind, cycles, energy_pj, macs, dram, detail, _, _ = self.layer_work(layer)
        if kind != "array":
            return None
        prob, times, mapped, note = detail
        counts = MappingProxyType({k: v * times for k, v in zip(LEVELS, mapped.counts,
                                                               strict=True)})
        return LayerCost(
            name=layer.name, op=layer.op, latency_ms=cycles / (self.spec.clock_mhz * 1e3),
            energy_mj=energy_pj * 1e-9, bound="compute",
            meta=MappingProxyType({
                "problem": prob._asdict(), "repeats": times,
                "tiling": MappingProxyType(dict(mapped.tiling)), "cycles": cycles,
                "accesses": counts,
                "arithmetic_intensity": macs / dram if dram else 0.0,
                "utilisation": round(macs / (cycles * self.spec.pe_count), 4) if cycles else 0.0,
                "note": note}))

    # -- networks --------------------------------------------------------------
    def _totals(self, net: Network) -> tuple[float, float, float, float, list, int]:
        """Sums over the network's layers (C-level loops over the memo's entries)."""
        works = list(map(self._by_id.get, map(id, net.layers)))
        if not all(works):
            works = [self.layer_work(x) for x in net.layers]
        cols = tuple(zip(*works, strict=True)) if works else ((),) * 8
        cycles, energy, macs, dram = (sum(cols[i]) for i in (1, 2, 3, 4))
        free = sum(cols[6])
        uncosted = []
        if sum(cols[7]):
            uncosted = [(x.name, x.op, w[5]) for x, w in zip(net.layers, works, strict=True)
                        if w[0] == "uncosted"]
        return cycles, energy, macs, dram, uncosted, free

    def _offset(self, net: Network):
        """The spec's reference offset for this network's space and dataset, or None."""
        if not self.spec.reference_offset:
            return None
        key = f"{net.meta.get('space') or ''}/{net.meta.get('dataset')}"
        return next((o for o in self.spec.reference_offset if o.key == key), None)

    def _estimate(self, net: Network, per_layer: tuple[LayerCost, ...]) -> Estimate:
        cycles, energy, macs, dram, uncosted, free = self._totals(net)
        off = self._offset(net)
        return Estimate(
            latency_ms=cycles / (self.spec.clock_mhz * 1e3) + (off.latency_ms if off else 0.0),
            energy_mj=energy * 1e-9 + (off.energy_mj if off else 0.0),
            per_layer=per_layer,
            meta={"backend": self.name, "device": self.spec.name,
                  "reference_offset_ms": off.latency_ms if off else 0.0,
                  "reference_offset_mj": off.energy_mj if off else 0.0,
                  "clock_mhz": self.spec.clock_mhz,
                  "arithmetic_intensity": macs / dram if dram else 0.0,
                  "costed_macs": macs, "dram_accesses": dram, "free_layers": free,
                  "uncosted_layers": tuple(
                      MappingProxyType({"name": n, "op": o, "reason": r})
                      for n, o, r in uncosted)})

    def estimate(self, net: Network) -> Estimate:
        costs = tuple(c for c in map(self.layer_cost, net.layers) if c is not None)
        return self._estimate(net, costs)

    def estimate_many(self, nets: Sequence[Network]) -> list[Estimate]:
        """Totals only (``per_layer`` empty, for speed); :meth:`estimate` gives the breakdown."""
        return [self._estimate(n, ()) for n in nets]
