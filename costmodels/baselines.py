"""Proxy baselines: latency proportional to MACs or to parameters.

Every comparison includes them: an estimator that does not beat them is not
worth its cost. Unfitted, ``latency_ms`` is the proxy itself scaled to
milliseconds at a nominal 1 GMAC/s, i.e. 1 ms per million MACs (the ranking is what
matters); fitted with
:meth:`ProxyModel.fit`, it is ``slope * proxy + intercept`` by least squares.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from costmodels.interface import BaseCostModel, Estimate
from costmodels.network import Network


class ProxyModel(BaseCostModel):
    """``latency_ms = slope_ * proxy(net) + intercept_``."""

    proxies = {"macs": lambda n: n.macs, "params": lambda n: n.params}

    def __init__(self, proxy: str = "macs", scale: float = 1e-6) -> None:
        self.proxy = proxy
        self.scale = scale

    @property
    def name(self) -> str:  # type: ignore[override]
        return "flops" if self.proxy == "macs" else self.proxy

    def _x(self, nets: Sequence[Network]) -> np.ndarray:
        f = self.proxies[self.proxy]
        return np.array([f(n) for n in nets], dtype=np.float64) * self.scale

    def is_fitted(self) -> bool:
        """Fitted-ness protocol: True once :meth:`fit` ran (unfitted it still estimates, at
        an arbitrary scale)."""
        return hasattr(self, "slope_")

    def fit(self, nets: Sequence[Network], latencies_ms: Sequence[float]) -> ProxyModel:
        x, y = self._x(nets), np.asarray(latencies_ms, dtype=np.float64)
        if len(x) < 2 or np.ptp(x) == 0:
            self.slope_, self.intercept_ = float(np.mean(y) / max(np.mean(x), 1e-12)), 0.0
        else:
            self.slope_, self.intercept_ = (float(v) for v in np.polyfit(x, y, 1))
        return self

    def estimate(self, net: Network) -> Estimate:
        return self.estimate_many([net])[0]

    def estimate_many(self, nets: Sequence[Network]) -> list[Estimate]:
        x = self._x(nets)
        slope, icpt = getattr(self, "slope_", 1.0), getattr(self, "intercept_", 0.0)
        fitted = hasattr(self, "slope_")
        return [Estimate(float(slope * v + icpt),
                         meta={"backend": self.name, "proxy": float(v / self.scale),
                               "fitted": fitted}) for v in x]


def _no_arg(name: str, arg: str | None) -> None:
    if arg is not None:
        from costmodels.errors import UnknownBackend
        raise UnknownBackend(f"backend {name!r} takes no argument (got '{name}:{arg}'); "
                             f"write just {name}")


def flops_from_spec(arg: str | None) -> ProxyModel:
    _no_arg("flops", arg)
    return ProxyModel("macs")


def params_from_spec(arg: str | None) -> ProxyModel:
    _no_arg("params", arg)
    return ProxyModel("params")
