"""Learned latency predictors: GBDT (XGBoost), GNN (torch), few-shot transfer and selection.

Public API::

    from predictors import make, load, fit_from_spec, is_fitted, LEARNED
    est = make("gbdt")                     # or "gnn", "hybrid", "transfer", "fewshot", "flops"
    est = make("transfer", sources=["nb201_titanx_1.csv", ...])
    est = fit_from_spec("hybrid", nets, latencies_ms, prior=["roofline:xeon_2c"])
    est.save("models/x"); load("models/x")          # or the backend spec hybrid:models/x

    predictors.fewshot.curve(target, sources, "fewshot", [5, 10], seeds=5)

Modules: :mod:`base` (estimator base, fitted-ness protocol, errors),
:mod:`learned` (the registry of learned classes and the one fit path),
:mod:`features` (versioned schema), :mod:`linear`, :mod:`gbdt`, :mod:`gnn`,
:mod:`transfer`, :mod:`additive`, :mod:`select` (few-shot model selection),
:mod:`sampling`, :mod:`persistence`, :mod:`fewshot` (curves), :mod:`cli`.
Nothing heavy is imported until used.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from predictors.base import NotFittedError, PredictorError, is_fitted
from predictors.learned import LEARNED, fit_from_spec

__all__ = ["LEARNED", "NotFittedError", "PredictorError", "fit_from_spec", "is_fitted", "load",
           "make"]


def make(name: str, sources: Sequence[Any] = (), **params: Any):
    """An unfitted estimator by name (see :func:`predictors.learned.make`)."""
    from predictors.learned import make as _make

    return _make(name, sources, **params)


def load(model_dir: str | Path):
    """Load any saved predictor directory (its class is read from manifest.json)."""
    from predictors.learned import load as _load

    return _load(model_dir)
