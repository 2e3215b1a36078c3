"""What every learned predictor shares: the estimator base class and its errors.

The fitted-ness protocol is declared, not guessed: an estimator is fitted when
its :meth:`Predictor.is_fitted` says so (also exposed as scikit-learn's
``__sklearn_is_fitted__``); :func:`is_fitted` asks any object that way.
"""

from __future__ import annotations

import inspect
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

from costmodels.errors import CostModelError, ModelFileError
from costmodels.interface import BaseCostModel, Estimate
from costmodels.network import Network


class PredictorError(CostModelError, ValueError):
    """A learned predictor asked for something it cannot do (bad parameter, bad data)."""


class NotFittedError(PredictorError):
    """``predict``/``save`` on an estimator that was never fitted nor loaded."""


def is_fitted(model: Any) -> bool:
    """Whether ``model`` is ready to estimate: its declared protocol, else True.

    Objects with ``is_fitted()`` or ``__sklearn_is_fitted__()`` answer themselves;
    any other backend (analytical, LUT, table) needs no fitting and counts as fitted.
    """
    for attr in ("is_fitted", "__sklearn_is_fitted__"):
        fn = getattr(model, attr, None)
        if callable(fn):
            return bool(fn())
    return True


def check_training_data(nets: Sequence[Network], latencies_ms: Sequence[float]) -> np.ndarray:
    """Latencies as a float64 array (ms), checked against the networks."""
    try:
        y = np.asarray(latencies_ms, dtype=np.float64)
    except (TypeError, ValueError):
        raise PredictorError("latencies must be numbers (ms), one per network") from None
    if y.ndim != 1 or len(y) != len(nets):
        raise PredictorError(f"got {len(nets)} networks but {y.shape} latencies; give one "
                             "latency (ms) per network")
    if len(y) == 0:
        raise PredictorError("no training data: fit needs at least one measured network")
    if not np.all(np.isfinite(y)) or np.any(y <= 0):
        raise PredictorError("latencies must be finite and > 0 ms; drop the failed rows from "
                             "the table")
    return y


def _meta(net: Network, key: str, default: Any) -> Any:
    return net.meta.get(key, default) if net.meta else default


def _domain(nets: Sequence[Network]) -> dict[str, list]:
    """The networks' spaces, datasets and batch sizes (sorted, distinct)."""
    return {"spaces": sorted({str(_meta(n, "space", None) or "onnx") for n in nets}),
            "datasets": sorted({str(_meta(n, "dataset", None)) for n in nets}),
            "batches": sorted({int(_meta(n, "batch", 1) or 1) for n in nets})}


def training_domain(nets: Sequence[Network], latencies_ms: Sequence[float] | None = None
                    ) -> dict[str, list]:
    """What a model was fitted on, for the manifest: :func:`_domain` of the networks, each
    network's name (``arch_str``) in order and, given, its measured latency (ms): with them
    ``compare`` tells a table the model was fitted on by its values, whatever its name."""
    out = {**_domain(nets), "archs": [str(_meta(n, "arch_str", None) or n.name) for n in nets]}
    if latencies_ms is not None:
        out["latency_ms"] = [float(v) for v in latencies_ms]
    return out


class Predictor(BaseCostModel):
    """Base of the fitted predictors: scikit-learn habits plus the CostModel interface.

    Subclasses store their keyword parameters in ``__init__`` (nothing else),
    implement ``fit(nets, latencies_ms) -> self`` (which must end with
    :meth:`_mark_fitted`), ``predict(nets) -> ndarray`` (ms), ``save(dir)`` and
    the classmethod ``load(dir)``. ``registry_name`` is the backend name that
    loads a saved model (``gbdt:DIR``).
    """

    name = "predictor"
    registry_name = "predictor"

    # -- scikit-learn protocol ----------------------------------------------------------
    def get_params(self, deep: bool = True) -> dict[str, Any]:
        sig = inspect.signature(type(self).__init__)
        return {p: getattr(self, p) for p in sig.parameters if p != "self"}

    def set_params(self, **params: Any) -> Predictor:
        valid = self.get_params()
        for k, v in params.items():
            if k not in valid:
                raise PredictorError(f"{type(self).__name__} has no parameter {k!r}; "
                                     f"expected one of {', '.join(valid)}")
            setattr(self, k, v)
        return self

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    def is_fitted(self) -> bool:
        """True after ``fit`` or ``load`` (the declared protocol, not attribute names)."""
        return bool(self.__dict__.get("_fitted", False))

    def __sklearn_is_fitted__(self) -> bool:
        return self.is_fitted()

    def _mark_fitted(self, n_train: int, data_sha256: str = "") -> None:
        self.n_train_ = int(n_train)
        self.device_ = getattr(self, "device", "")
        self.training_data_sha256_ = data_sha256
        self._fitted = True

    def _note_training(self, nets: Sequence[Network], latencies_ms: Sequence[float] | None = None
                       ) -> None:
        """Record :func:`training_domain` of the training networks (saved in the manifest)."""
        self.trained_on_ = training_domain(nets, latencies_ms)
        self._domain_warned = False

    def _check_domain(self, nets: Sequence[Network]) -> None:
        """One ``warning:`` line (per loaded model) when ``nets`` come from a space, dataset
        or batch size the model was not fitted on: the estimate is an extrapolation that
        would otherwise pass without a word. Asked after a successful estimate, so a model
        that refuses such networks (few-shot, transfer) gives only its error."""
        seen = getattr(self, "trained_on_", None)
        if not seen or getattr(self, "_domain_warned", False) or not nets:
            return
        now = _domain(nets)  # not the names: only the manifest needs them
        odd = []
        for key, what in (("spaces", "space"), ("datasets", "dataset"), ("batches", "batch")):
            new = sorted(set(now[key]) - set(seen.get(key, [])), key=str)
            if new:  # a folder's models have no dataset: say so, not "None"
                odd.append(f"{what} {', '.join('(none)' if v is None else str(v) for v in new)}")
        if odd:
            self._domain_warned = True
            trained = "; ".join(f"{k} {', '.join(map(str, seen.get(k, [])))}"
                                for k in ("spaces", "datasets", "batches")
                                if [v for v in seen.get(k, []) if v is not None])
            print(f"warning: this {self.name} model was fitted on {self.n_train_} networks "
                  f"({trained}); estimating networks of {'; '.join(odd)} is an "
                  "extrapolation: expect larger errors, or fit a model on such networks",
                  file=sys.stderr)

    def _check_fitted(self) -> None:
        if not self.is_fitted():
            raise NotFittedError(f"this {type(self).__name__} is not fitted; call fit(nets, "
                                 "latencies_ms) or load a saved model")

    # -- CostModel -------------------------------------------------------------------------
    def predict(self, nets: Sequence[Network]) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def estimate(self, net: Network) -> Estimate:
        return self.estimate_many([net])[0]

    def estimate_many(self, nets: Sequence[Network]) -> list[Estimate]:
        try:
            pred = self.predict(list(nets))
        except (ValueError, IndexError) as exc:
            where = getattr(self, "loaded_from_", None)
            if where is None or isinstance(exc, CostModelError):
                raise
            # a saved model whose arrays do not fit its class (edited and sealed again)
            raise ModelFileError(f"{where}: its arrays do not fit a {type(self).__name__} "
                                 f"({type(exc).__name__}: {str(exc).splitlines()[0][:150]}); "
                                 "fit the model again") from None
        self._check_domain(list(nets))  # after: a model that refuses such networks says so
        meta = {"backend": self.name, "device": getattr(self, "device_", "")}
        return [Estimate(float(p), meta=meta) for p in pred]
