"""Fitting in the harness: which backends are fitted on the training rows, and how.

:func:`build_backend` creates a backend from its spec, or fits it on the training
networks when it is learned (``gbdt``, ``gnn``, ``transfer``, ``hybrid`` given
without a model directory, and the ``flops``/``params`` proxies in train/test mode).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from costmodels.interface import CostModel
from costmodels.network import Network
from costmodels.tables import LatencyTable

#: specs that, given without ``:PATH``, mean "fit this estimator on the training rows"
LEARNED = ("gbdt", "gnn", "transfer", "hybrid")
#: proxies that are fitted (slope, intercept) in train/test mode
PROXIES = {"flops": "macs", "params": "params"}
#: backends that need no measurement at all to build
NO_MEASUREMENTS = ("flops", "params", "roofline", "eyeriss", "fpga", "measure")


def _spec_name(spec: str | CostModel) -> str:
    if isinstance(spec, str):
        from costmodels.registry import split_spec
        return split_spec(spec)[0]
    return str(getattr(spec, "name", type(spec).__name__))


def _is_learned(spec: str | CostModel, train: bool) -> bool:
    """Does this backend get fitted on the training rows?"""
    if not isinstance(spec, str):
        # an estimator object with fit() and no learned state (scikit-learn's rule: no attr_)
        return train and hasattr(spec, "fit") and not any(
            k.endswith("_") and not k.startswith("_") for k in vars(spec))
    if ":" in spec or spec.lower().endswith(".csv"):
        return False
    return spec in LEARNED or (train and spec in PROXIES)


def make_estimator(name: str, sources: Sequence[str] = (), priors: Sequence[str] = ()) -> Any:
    """An unfitted estimator for a learned backend name (``fit(nets, lat)`` -> self).

    ``flops``/``params`` are least-squares proxies (:class:`ProxyModel`); every
    other name comes from the predictors package's ``make(name, sources=...)``;
    ``hybrid`` gets ``priors`` (registry specs of the analytical models it corrects).
    """
    if name in PROXIES:
        from costmodels.baselines import ProxyModel
        return ProxyModel(PROXIES[name])
    try:
        from predictors import make
    except ImportError as exc:
        raise RuntimeError(
            f"backend {name!r} is a learned predictor, but the predictors package cannot "
            f"provide it ({exc}); install it (pip install -e '.[gnn]') or give a fitted "
            f"model directory as {name}:DIR") from exc
    if name == "hybrid":
        return make(name, sources=tuple(sources), prior=tuple(priors))
    return make(name, sources=tuple(sources))


def _build_measurements(spec: str | CostModel, model: Any, fitted_on: int | None
                        ) -> int | None:
    """How many measurements stand behind a backend, where it can be known.

    A model fitted on top of other estimators (the hybrid's priors) counts theirs too.
    """
    if fitted_on is not None:
        priors = getattr(model, "priors_", None) or []
        inner = [_build_measurements(p.name, p, None) for p in priors]
        return None if None in inner else fitted_on + sum(inner)
    for attr in ("n_measurements_", "n_measurements"):
        v = getattr(model, attr, None)
        if isinstance(v, (int, np.integer)):
            return int(v)
    table = getattr(model, "table_", None)
    if isinstance(table, LatencyTable):
        return len(table)
    return 0 if _spec_name(spec) in NO_MEASUREMENTS else None


def build_backend(spec: str | CostModel, *, learned: bool, train_nets: Sequence[Network],
                  train_y: np.ndarray, sources: Sequence[str],
                  priors: Sequence[str] = ()) -> tuple[Any, float]:
    """Create (or fit) one backend; returns (model, seconds)."""
    t0 = time.perf_counter()
    if learned:
        est = spec if not isinstance(spec, str) else make_estimator(spec, sources, priors)
        if not len(train_nets):
            raise ValueError(f"{_spec_name(spec)} must be fitted: give --train-samples K, or "
                             "a fitted model as NAME:DIR")
        model = est.fit(list(train_nets), train_y) or est
    elif isinstance(spec, str):
        from costmodels.registry import create
        model = create(spec)
    else:
        model = spec
    return model, time.perf_counter() - t0
