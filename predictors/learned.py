"""The registry of learned classes: names, classes, one fit path, and backend factories.

One table (:data:`LEARNED`) maps each learned backend name to its class; the
backend registry (:mod:`costmodels.registry`) points ``gbdt:DIR``, ``gnn:DIR``,
``transfer:DIR``, ``hybrid:DIR`` and ``fewshot:DIR`` at :func:`from_spec` here,
and ``fit``, ``fewshot`` and the harness's ``compare`` all fit through
:func:`fit_from_spec`. A saved directory is loaded only by the backend of the
class it holds (``gbdt:DIR`` on a GNN directory is refused, naming ``gnn:DIR``).
Classes are imported lazily by module path; nothing a manifest says is imported.
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from costmodels.errors import ModelFileError
from costmodels.network import Network
from predictors.base import PredictorError

#: backend name -> (module, class, one-line help)
LEARNED: dict[str, tuple[str, str, str]] = {
    "gbdt": ("predictors.gbdt", "GBDTModel", "XGBoost on IR features: gbdt:MODEL_DIR"),
    "hybrid": ("predictors.gbdt", "HybridModel",
               "GBDT correcting analytical estimators (--prior SPEC): hybrid:MODEL_DIR"),
    "gnn": ("predictors.gnn", "GNNModel", "graph network over the layer graph: gnn:MODEL_DIR"),
    "transfer": ("predictors.transfer", "TransferModel",
                 "few-shot mix of source devices' tables (--source): transfer:MODEL_DIR"),
    "fewshot": ("predictors.select", "FewShotModel",
                "few-shot model selection/stacking over candidate families: fewshot:MODEL_DIR"),
}
#: what each needs besides the target's measurements
NEEDS = {"hybrid": "prior", "transfer": "sources", "fewshot": "sources"}


def class_name(name: str) -> str:
    module, cls, _ = LEARNED[name]
    return f"{module}.{cls}"


def backend_for_class(cls: str) -> str | None:
    """The backend name that loads a saved class (``None`` for an unknown class)."""
    for name in LEARNED:
        if class_name(name) == cls:
            return name
    return None


def learned_class(name: str) -> type:
    """The class behind a learned backend name."""
    if name not in LEARNED:
        raise PredictorError(f"unknown learned predictor {name!r}; expected one of "
                             f"{', '.join(LEARNED)}")
    module, cls, _ = LEARNED[name]
    return getattr(importlib.import_module(module), cls)


def make(name: str, sources: Sequence[Any] = (), prior: Sequence[str] = (), **params: Any):
    """An unfitted estimator by name; ``sources`` for transfer/fewshot, ``prior`` for hybrid.

    ``flops`` is the MACs baseline (slope and intercept fitted). Missing needs
    (a hybrid without priors, a transfer without sources) raise
    :class:`PredictorError` saying what to give.
    """
    if name == "flops":
        from costmodels.baselines import ProxyModel

        return ProxyModel("macs", **params)
    cls = learned_class(name)
    need = NEEDS.get(name)
    if need == "prior":
        if not prior:
            raise PredictorError("the hybrid model needs prior estimators: --prior SPEC "
                                 "(e.g. roofline:xeon_2c, lut:PATH)")
        return cls(prior=tuple(prior), **params)
    if prior:
        raise PredictorError(f"{name} takes no --prior (only hybrid corrects prior estimators)")
    if need == "sources":
        if not sources:
            raise PredictorError(f"the {name} model needs source tables: --source TABLE.csv "
                                 "(other devices' latency tables)")
        return cls(sources=tuple(sources), **params)
    if sources:
        raise PredictorError(f"{name} learns from the target's measurements alone; --source is "
                             "for transfer or fewshot")
    return cls(**params)


def fit_from_spec(name: str, nets: Sequence[Network], latencies_ms: Sequence[float], *,
                  sources: Sequence[Any] = (), prior: Sequence[str] = (), device: str = "",
                  random_state: int = 0, **params: Any):
    """The one fit path: ``make(name, ...)`` then ``fit(nets, latencies_ms)``; returns it.

    ``fit``, ``fewshot`` and ``compare`` call this, so a hybrid keeps its priors and a
    transfer its sources everywhere.
    """
    est = make(name, sources=sources, prior=prior, **params)
    keys = est.get_params()
    if "device" in keys:
        est.set_params(device=device)
    if "random_state" in keys:
        est.set_params(random_state=random_state)
    return est.fit(list(nets), latencies_ms)


def load(model_dir: str | Path, expect: str | None = None):
    """Load a saved model directory: of backend ``expect``, or any learned class."""
    from predictors.persistence import MANIFEST, _check_keys, _parse

    d = Path(model_dir)
    if expect is None:
        doc = _parse(d / MANIFEST)
        _check_keys(d / MANIFEST, doc)
        expect = backend_for_class(doc["class"])
        if expect is None:
            raise ModelFileError(f"{d / MANIFEST}: holds a model of an unknown class; fit the "
                                 "model again")
    model = learned_class(expect).load(d)
    model.loaded_from_ = str(d)
    return model


def from_spec(name: str, arg: str | None):
    """Registry factory body for ``NAME:MODEL_DIR``."""
    if not arg:
        raise ModelFileError(f"the {name} backend needs a model directory: {name}:MODEL_DIR "
                             f"(make one with `costmodels fit {name} ... -o MODEL_DIR`)")
    return load(arg, expect=name)


def gbdt_from_spec(arg: str | None):
    return from_spec("gbdt", arg)


def hybrid_from_spec(arg: str | None):
    return from_spec("hybrid", arg)


def gnn_from_spec(arg: str | None):
    return from_spec("gnn", arg)


def transfer_from_spec(arg: str | None):
    return from_spec("transfer", arg)


def fewshot_from_spec(arg: str | None):
    return from_spec("fewshot", arg)
