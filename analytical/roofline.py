"""Roofline latency model of a CPU or GPU, from a device spec (calibrated or datasheet).

The network is first turned into the kernels the runtime would launch
(:func:`plan_kernels`): ops the graph optimiser removes are dropped, identical
weightless ops on the same input run once, and fusion patterns from the spec
(e.g. ``Conv`` absorbing ``BatchNormalization``, ``Add``, ``Relu``) merge layers
into one kernel. Each kernel ``k`` of op class ``c`` then costs::

    compute_s = flops_k / (peak_gflops * 1e9 * compute_efficiency_c)
    memory_s  = bytes_k * traffic_factor_c / (bandwidth_gbps * 1e9 * memory_efficiency_c)
    time_s    = max(compute_s, memory_s) + launch_us_c * 1e-6

with ``flops = 2 * MACs + element ops`` and ``bytes`` = the kernel's activation
inputs + weights + output (bandwidth is the cache's when they fit in
``cache_bytes``, DRAM's otherwise). The network's latency is the sum over kernels
(one stream, no overlap between kernels).
"""

from __future__ import annotations

import operator
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType

from analytical.specs import Fusion, RooflineSpec, load_spec
from costmodels.interface import BaseCostModel, Estimate, LayerCost
from costmodels.network import DTYPE_BYTES, Layer, Network, numel

OP_CLASSES = ("conv", "conv1x1", "depthwise", "gemm", "pool", "global_pool", "elementwise",
              "view")
_CLASS_OF_OP = {
    "Gemm": "gemm", "MatMul": "gemm",
    "MaxPool": "pool", "AveragePool": "pool",
    "GlobalAveragePool": "global_pool", "GlobalMaxPool": "global_pool",
    "ReduceMean": "global_pool", "ReduceMax": "global_pool", "ReduceSum": "global_pool",
    "Flatten": "view", "Reshape": "view", "Squeeze": "view", "Unsqueeze": "view",
    "Identity": "view",
}
DEFAULT_SPEC = "x86_generic"
LOCAL_SPEC_ENV = "COSTMODELS_ROOFLINE_SPEC"


def local_spec_path() -> Path:
    """Where ``costmodels roofline calibrate`` writes this machine's spec by default.

    ``$COSTMODELS_ROOFLINE_SPEC`` if set, else
    ``$XDG_CONFIG_HOME/costmodels/roofline-local.toml`` (``~/.config/...``).
    """
    env = os.environ.get(LOCAL_SPEC_ENV)
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")
    return Path(base) / "costmodels" / "roofline-local.toml"


def op_class(layer: Layer) -> str:
    """The spec's op class of a layer: conv kinds by shape, other ops by table."""
    if layer.op in ("Conv", "ConvTranspose"):
        if layer.is_depthwise:
            return "depthwise"
        return "conv1x1" if layer.kernel and numel(layer.kernel) == 1 else "conv"
    return _CLASS_OF_OP.get(layer.op, "elementwise")


@dataclass
class Kernel:
    """Layers the runtime runs as one kernel: an anchor plus the consumers it absorbed."""

    layers: list[Layer]
    output: str
    extra_bytes: int = 0
    next_absorb: int = 0
    members: list[str] = field(default_factory=list)

    @property
    def anchor(self) -> Layer:
        return self.layers[0]

    @property
    def flops(self) -> int:
        return sum(2 * x.macs + x.elem_ops for x in self.layers)

    @property
    def bytes(self) -> int:
        a = self.anchor
        out = self.layers[-1].bytes_out
        return a.bytes_in + sum(x.bytes_weights for x in self.layers) + self.extra_bytes + out


def plan_kernels(layers: Sequence[Layer], fusion: Fusion) -> list[Kernel]:
    """The kernels a runtime with this graph optimiser launches, in order.

    1. ``fusion.drop`` ops vanish (their output aliases their input);
    2. with ``fusion.dedupe``, a weightless op identical to an earlier one (same op,
       attributes and inputs) is that op;
    3. a layer joins the kernel producing one of its inputs when that kernel's
       anchor has a rule listing the layer's op at or after the kernel's current
       position, and the input has no other reader.
    """
    alias: dict[str, str] = {}
    seen: dict[tuple, str] = {}
    kept: list[tuple[Layer, tuple[str, ...]]] = []
    for layer in layers:
        ins = tuple(_resolve(alias, t) for t in layer.inputs)
        if layer.op in fusion.drop and ins and len(layer.outputs) == 1:
            alias[layer.outputs[0]] = ins[0]
            continue
        if fusion.dedupe and not layer.weight_shapes and len(layer.outputs) == 1:
            key = (layer.op, ins, layer.kernel, layer.stride, layer.pads, layer.dilation,
                   layer.groups, layer.output_shape)
            if key in seen:
                alias[layer.outputs[0]] = seen[key]
                continue
            seen[key] = layer.outputs[0]
        kept.append((layer, ins))
    readers: dict[str, int] = {}
    for _, ins in kept:
        for t in set(ins):
            readers[t] = readers.get(t, 0) + 1
    rules = {r.anchor: r.absorb for r in fusion.rules}
    producer: dict[str, Kernel] = {}
    kernels: list[Kernel] = []
    for layer, ins in kept:
        k = _absorber(layer, ins, producer, readers, rules)
        if k is None:
            k = Kernel([layer], layer.outputs[0])
            kernels.append(k)
        else:
            absorb = rules[k.anchor.op]
            k.next_absorb = absorb.index(layer.op, k.next_absorb) + 1
            itemsize = DTYPE_BYTES.get(layer.dtype, 4)
            own = numel(k.layers[-1].output_shape) * itemsize
            k.extra_bytes += max(layer.bytes_in - own, 0)
            k.layers.append(layer)
            k.output = layer.outputs[0]
        producer[k.output] = k
    return kernels


def _resolve(alias: dict[str, str], t: str) -> str:
    while t in alias:
        t = alias[t]
    return t


def _absorber(layer: Layer, ins: tuple[str, ...], producer: dict[str, Kernel],
              readers: dict[str, int], rules: dict[str, tuple[str, ...]]) -> Kernel | None:
    for t in reversed(ins):
        k = producer.get(t)
        if k is None or k.output != t or readers.get(t, 0) != 1:
            continue
        absorb = rules.get(k.anchor.op)
        if absorb and layer.op in absorb[k.next_absorb:]:
            return k
    return None


class RooflineModel(BaseCostModel):
    """Roofline over fused kernels; ``per_layer`` has one entry per kernel with its bound."""

    def __init__(self, spec: RooflineSpec) -> None:
        self.spec = spec
        self._costs: dict[tuple, tuple[list[Layer], LayerCost]] = {}
        missing = [c for c in OP_CLASSES if c not in spec.ops]
        if missing:
            from analytical.specs import SpecError
            raise SpecError(f"{spec.name}: field 'ops' lacks op class(es) {', '.join(missing)}")

    @property
    def name(self) -> str:  # type: ignore[override]
        return f"roofline:{self.spec.name}"

    def kernel_cost(self, k: Kernel) -> LayerCost:
        """The cost of one kernel (cached: the same layers fused the same way cost the same)."""
        key = (tuple(map(id, k.layers)), k.extra_bytes)
        hit = self._costs.get(key)
        if hit is not None and all(map(operator.is_, hit[0], k.layers)):
            return hit[1]
        cost = self._kernel_cost(k)
        self._costs[key] = (k.layers, cost)
        return cost

    def _kernel_cost(self, k: Kernel) -> LayerCost:
        s = self.spec
        cls = op_class(k.anchor)
        c = s.ops[cls]
        nbytes = k.bytes * c.traffic_factor
        bw = s.cache_bandwidth_gbps if k.bytes <= s.cache_bytes else s.dram_bandwidth_gbps
        compute_ms = k.flops / (s.peak_gflops * 1e6 * c.compute_efficiency)
        memory_ms = nbytes / (bw * 1e6 * c.memory_efficiency)
        launch_ms = c.launch_us * 1e-3
        return LayerCost(
            name=k.anchor.name, op="+".join(x.op for x in k.layers),
            latency_ms=max(compute_ms, memory_ms) + launch_ms,
            bound="compute" if compute_ms >= memory_ms else "memory",
            meta=MappingProxyType({
                "op_class": cls, "compute_ms": compute_ms, "memory_ms": memory_ms,
                "launch_ms": launch_ms, "flops": k.flops, "bytes": k.bytes,
                "fused": tuple(x.name for x in k.layers)}))

    def estimate(self, net: Network) -> Estimate:
        costs = tuple(self.kernel_cost(k) for k in plan_kernels(net.layers, self.spec.fusion))
        return Estimate(
            latency_ms=sum(c.latency_ms for c in costs), energy_mj=None, per_layer=costs,
            meta={"backend": self.name, "device": self.spec.name, "kernels": len(costs),
                  "layers": len(net.layers),
                  "compute_bound": sum(c.bound == "compute" for c in costs),
                  "memory_bound": sum(c.bound == "memory" for c in costs)})


def from_spec(arg: str | None) -> RooflineModel:
    """Registry factory: ``roofline`` (local calibrated spec, else x86_generic) or ``roofline:SPEC``."""
    if not arg:
        local = local_spec_path()
        arg = str(local) if local.is_file() else DEFAULT_SPEC
    return RooflineModel(load_spec(arg, RooflineSpec))
