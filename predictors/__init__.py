"""Learned latency predictors: GBDT (XGBoost), GNN (torch) and few-shot transfer.

Public API::

    from predictors import make, load
    est = make("gbdt")                           # or "gnn", "transfer", "flops"
    est = make("transfer", sources=["nb201_titanx_1.csv", ...])
    est.fit(nets, latencies_ms).estimate_many(other_nets)
    est.save("models/x"); load("models/x")

    predictors.fewshot.curve(target, sources, "transfer", [10, 100], seeds=5)
    predictors.fewshot.benchmark("../shared/refdata")      # markdown table

Modules: :mod:`features` (versioned schema), :mod:`gbdt`, :mod:`gnn`,
:mod:`transfer`, :mod:`sampling`, :mod:`persistence`, :mod:`fewshot`, :mod:`cli`.
Nothing heavy is imported until used.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

MODELS = ("gbdt", "gnn", "transfer", "flops")


def make(name: str, sources: Sequence[Any] = (), **params: Any):
    """An unfitted estimator by name, with ``fit(nets, latencies_ms)`` and ``estimate_many``.

    ``gbdt`` and ``gnn`` learn from the target's measurements alone (``sources``
    are ignored); ``transfer`` needs ``sources`` (latency-table paths or
    :class:`costmodels.tables.LatencyTable`); ``hybrid`` is GBDT correcting a
    blend of analytical estimators given as ``prior=["roofline:SPEC", "lut:PATH"]``;
    ``flops`` is the MACs baseline (slope and intercept fitted).
    """
    from predictors.persistence import make as _make

    return _make(name, sources, **params)


def load(model_dir: str):
    """Load any saved predictor directory (its class is read from manifest.json)."""
    from predictors.persistence import load as _load

    return _load(model_dir)
