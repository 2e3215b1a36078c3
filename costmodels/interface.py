"""The one interface every backend implements: ``CostModel`` returning ``Estimate``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from costmodels.errors import UncostedCompute

if TYPE_CHECKING:
    from costmodels.network import Network


@dataclass(frozen=True)
class LayerCost:
    """Cost of one layer (or one fused kernel) of a network.

    ``bound`` says what limits it where the backend knows ("compute", "memory",
    "overhead"); ``energy_mj`` is None where the backend has no energy model.
    """

    name: str
    op: str
    latency_ms: float
    energy_mj: float | None = None
    bound: str = ""
    meta: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Estimate:
    """What a backend says a network costs. Milliseconds and millijoules."""

    latency_ms: float
    energy_mj: float | None = None
    per_layer: tuple[LayerCost, ...] = ()
    meta: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.meta, MappingProxyType):
            object.__setattr__(self, "meta", MappingProxyType(dict(self.meta)))


@runtime_checkable
class CostModel(Protocol):
    """Anything that estimates what a :class:`Network` costs on some device."""

    name: str

    def estimate(self, net: Network) -> Estimate: ...

    def estimate_many(self, nets: Sequence[Network]) -> list[Estimate]: ...


class BaseCostModel:
    """Convenience base: ``estimate_many`` loops over ``estimate``.

    Backends that can vectorise override ``estimate_many``.
    """

    name: str = "base"

    def estimate(self, net: Network) -> Estimate:  # pragma: no cover - abstract
        raise NotImplementedError

    def estimate_many(self, nets: Sequence[Network]) -> list[Estimate]:
        return [self.estimate(n) for n in nets]


def uncosted_compute(est: Estimate, net: Network) -> UncostedCompute | None:
    """The error to report instead of ``est`` when layers its backend could not map
    (``est.meta['uncosted_layers']``) hold MACs: the total would leave out that compute.
    None when every layer with MACs was costed (uncosted layers without MACs stay listed
    in the meta, as the analytical models report them)."""
    uncosted = est.meta.get("uncosted_layers") or ()
    if not uncosted:
        return None
    macs = {layer.name: layer.macs for layer in net.layers}
    heavy = [u for u in uncosted if macs.get(u.get("name"), 0) > 0]
    if not heavy:
        return None
    u = heavy[0]
    share = sum(macs[h["name"]] for h in heavy) / max(net.macs, 1)
    return UncostedCompute(
        f"{net.name}: {est.meta.get('backend', 'the backend')} cannot map layer "
        f"{u['name']!r} ({u.get('op', '?')}: {u.get('reason', 'no reason given')}); "
        f"{len(heavy)} such layer(s) hold {share:.0%} of the MACs; use roofline or flops")
