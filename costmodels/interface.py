"""The one interface every backend implements: ``CostModel`` returning ``Estimate``."""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, NamedTuple, Protocol, runtime_checkable

from costmodels.errors import CostModelError, UncostedCompute

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


class Each(NamedTuple):
    """What :func:`estimate_each` got, aligned with the networks given."""

    results: list  # an Estimate, or the exception that network raised
    batch_error: BaseException | None  # why estimate_many failed, when it did
    seconds: float  # time of the pass that produced ``results``


def estimate_each(model: CostModel, nets: Sequence[Network],
                  catch: type[BaseException] | tuple[type[BaseException], ...] = CostModelError
                  ) -> Each:
    """Estimate ``nets``: ``estimate_many`` first; if it raises one of ``catch``, network by
    network, each network's exception (of ``catch``) kept in its place. An estimate that
    leaves out layers with MACs becomes its :func:`uncosted_compute` error.

    The CLI catches :class:`CostModelError` only, so a bug still surfaces; the harness
    catches every exception, since nothing a backend does may stop a comparison."""
    nets = list(nets)
    if not nets:
        return Each([], None, 0.0)
    name = getattr(model, "name", type(model).__name__)
    batch_error = None
    t0 = time.perf_counter()
    try:
        out: list = list(model.estimate_many(nets))
        if len(out) != len(nets) or not all(isinstance(e, Estimate) for e in out):
            raise TypeError(f"{name}: estimate_many did not return one Estimate for "
                            f"each of the {len(nets)} networks")
    except catch as exc:
        batch_error = exc
        t0 = time.perf_counter()
        out = []
        for n in nets:
            try:
                est = model.estimate(n)
                if not isinstance(est, Estimate):
                    raise TypeError(f"{name}: estimate returned "
                                    f"{type(est).__name__}, not an Estimate")
                out.append(est)
            except catch as exc1:
                out.append(exc1)
    seconds = time.perf_counter() - t0
    out = [e if isinstance(e, BaseException) else (uncosted_compute(e, n) or e)
           for e, n in zip(out, nets, strict=True)]
    return Each(out, batch_error, seconds)
