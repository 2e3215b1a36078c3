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
from costmodels.registry import LEARNED_BACKENDS as LEARNED  # noqa: E402 - names only
from costmodels.tables import LatencyTable

#: (``LEARNED``) specs that, given without ``:PATH``, mean "fit this estimator on the
#: training rows": gbdt, hybrid, gnn, transfer, fewshot
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
    """Does this backend get fitted on the training rows?

    An object is fitted here when it can ``fit`` and says (by the fitted-ness
    protocol, ``is_fitted()`` / ``__sklearn_is_fitted__``) that it is not fitted yet.
    """
    if not isinstance(spec, str):
        return train and hasattr(spec, "fit") and not _fitted(spec)
    if ":" in spec or spec.lower().endswith(".csv"):
        return False
    return spec in LEARNED or (train and spec in PROXIES)


def _fitted(model: Any) -> bool:
    for attr in ("is_fitted", "__sklearn_is_fitted__"):
        fn = getattr(model, attr, None)
        if callable(fn):
            return bool(fn())
    return True


def fit_estimator(name: str, nets: Sequence[Network], y: np.ndarray, *,
                  sources: Sequence[str] = (), priors: Sequence[str] = (), seed: int = 0) -> Any:
    """Fit a learned backend by name on ``nets``/``y`` (ms) through the one fit path.

    ``flops``/``params`` are least-squares proxies (:class:`ProxyModel`); every
    other name goes through :func:`predictors.fit_from_spec`, so a hybrid keeps
    its ``priors`` and transfer/fewshot their ``sources`` exactly as ``fit`` and
    ``fewshot`` give them.
    """
    if name in PROXIES:
        from costmodels.baselines import ProxyModel
        return ProxyModel(PROXIES[name]).fit(list(nets), y)
    try:
        from predictors import fit_from_spec
    except ImportError as exc:
        from costmodels.errors import UnknownBackend
        raise UnknownBackend(
            f"backend {name!r} is a learned predictor, but the predictors package cannot "
            f"provide it ({exc}); install it (pip install -e '.[gnn]') or give a fitted "
            f"model directory as {name}:DIR") from exc
    return fit_from_spec(name, list(nets), y,
                         sources=tuple(sources) if name in ("transfer", "fewshot") else (),
                         prior=tuple(priors) if name == "hybrid" else (), random_state=seed)


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
    n_train = getattr(model, "n_train_", None)  # a saved learned model: its manifest's count
    if isinstance(n_train, (int, np.integer)) and not isinstance(n_train, bool) and n_train > 0:
        return _build_measurements(spec, model, int(n_train))
    table = getattr(model, "table_", None)
    if isinstance(table, LatencyTable):
        return len(table)
    return 0 if _spec_name(spec) in NO_MEASUREMENTS else None


def build_backend(spec: str | CostModel, *, learned: bool, train_nets: Sequence[Network],
                  train_y: np.ndarray, sources: Sequence[str],
                  priors: Sequence[str] = (), seed: int = 0) -> tuple[Any, float]:
    """Create (or fit) one backend; returns (model, seconds)."""
    t0 = time.perf_counter()
    if learned:
        if not len(train_nets):
            from costmodels.errors import InputError
            raise InputError(f"{_spec_name(spec)} must be fitted: give --train-samples K, or "
                             "a fitted model as NAME:DIR")
        if isinstance(spec, str):
            model = fit_estimator(spec, train_nets, train_y, sources=sources, priors=priors,
                                  seed=seed)
        else:
            model = spec.fit(list(train_nets), train_y) or spec
    elif isinstance(spec, str):
        from costmodels.registry import create
        model = create(spec)
    else:
        model = spec
    return model, time.perf_counter() - t0
