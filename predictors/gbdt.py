"""GBDT latency predictor: XGBoost on the :mod:`predictors.features` schema.

:class:`GBDTModel` is a scikit-learn-style estimator and a ``CostModel``::

    model = GBDTModel().fit(nets, latencies_ms)
    model.predict(other_nets)            # ndarray of ms
    model.save("models/gbdt-pixel3")     # manifest.json + model.json (XGBoost JSON)
    GBDTModel.load("models/gbdt-pixel3")

Defaults suit small training sets (tens to a few thousand networks): shallow
trees, shrinkage, a log-latency target, and a linear base (ridge with
leave-one-out alpha on a few well-conditioned features, :func:`features.compact`)
that the trees correct; with 5 training networks the model is mostly that
linear base, with 1,000 mostly trees.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from costmodels.errors import ModelFileError
from costmodels.network import Network
from predictors import features as F
from predictors import persistence as P
from predictors.base import Predictor, PredictorError, check_training_data
from predictors.linear import Ridge, ridge_loo

CLASS = "predictors.gbdt.GBDTModel"
#: the backends a prior may name: estimators that compute a latency (analytical models) or
#: look it up (latency tables, LUTs, saved models, whose own priors are checked likewise).
#: Not ``measure`` (it runs the networks and writes its store): a model's priors are
#: created again whenever it is loaded, so a manifest naming it would measure on ``estimate``
PRIOR_BACKENDS = ("flops", "params", "roofline", "eyeriss", "fpga", "table", "lut", "blocklut",
                  "gbdt", "hybrid", "gnn", "transfer", "fewshot")
MAX_PRIORS = 64


class GBDTModel(Predictor):
    """Gradient-boosted trees (XGBoost) on network features; latency in ms.

    Parameters
    ----------
    n_estimators, max_depth, learning_rate, subsample, colsample_bytree,
    min_child_weight, reg_lambda:
        XGBoost's, with defaults for small training sets.
    log_target:
        fit log(latency) (relative errors count alike on fast and slow networks).
    linear_base:
        start the trees from a ridge fit on :func:`features.compact` columns.
    random_state, n_jobs:
        XGBoost seed and threads (results are deterministic for a seed).
    device:
        name of the target device, recorded in the saved manifest.
    prior:
        registry specs of estimators that need no training data on this device
        (``"roofline:SPEC"``, ``"lut:PATH"``). When given, the trees start from a
        blend of their estimates (in ms, plus an intercept; least relative squared
        error on the training networks) instead
        of the linear base: a learned correction of an analytical model (the
        ``hybrid`` predictor). The specs are saved in the manifest and the
        estimators are created again when the model is loaded.
    """

    name = "gbdt"
    registry_name = "gbdt"

    def __init__(self, n_estimators: int = 150, max_depth: int = 4, learning_rate: float = 0.05,
                 subsample: float = 0.8, colsample_bytree: float = 0.8,
                 min_child_weight: float = 1.0, reg_lambda: float = 1.0, log_target: bool = True,
                 linear_base: bool = True, random_state: int = 0, n_jobs: int = 1,
                 device: str = "", prior: Sequence[str] = ()) -> None:
        self.n_estimators = n_estimators
        self.max_depth = max_depth
        self.learning_rate = learning_rate
        self.subsample = subsample
        self.colsample_bytree = colsample_bytree
        self.min_child_weight = min_child_weight
        self.reg_lambda = reg_lambda
        self.log_target = log_target
        self.linear_base = linear_base
        self.random_state = random_state
        self.n_jobs = n_jobs
        self.device = device
        self.prior = prior

    # ------------------------------------------------------------------ fit / predict
    def _target(self, y: np.ndarray) -> np.ndarray:
        return np.log(y) if self.log_target else y

    def _untarget(self, t: np.ndarray) -> np.ndarray:
        return np.exp(t) if self.log_target else t

    def _booster_params(self) -> dict:
        return {"n_estimators": self.n_estimators, "max_depth": self.max_depth,
                "learning_rate": self.learning_rate, "subsample": self.subsample,
                "colsample_bytree": self.colsample_bytree,
                "min_child_weight": self.min_child_weight, "reg_lambda": self.reg_lambda,
                "random_state": self.random_state, "n_jobs": self.n_jobs,
                "tree_method": "hist", "objective": "reg:squarederror"}

    def fit_features(self, x: np.ndarray, y: np.ndarray, data_sha256: str = "",
                     margin: np.ndarray | None = None) -> GBDTModel:
        """Fit on a precomputed feature matrix (rows of :data:`features.FEATURE_NAMES`).

        ``margin``: a starting prediction in target units (log ms with ``log_target``)
        for each row, used instead of the linear base (few-shot transfer passes its prior).
        """
        import xgboost as xgb

        t = self._target(y)
        # Latency is a sum of kernel costs: the linear base is fitted in milliseconds
        # (additive in the counts), then taken to the target's units; fitted on
        # log(latency) it would extrapolate exponentially past the training range.
        self.base_ = (ridge_loo(F.compact(x), y) if self.linear_base and margin is None
                      else None)
        self.base_floor_ms_ = float(np.min(y)) / 2
        if margin is None:
            margin = self._margin(x)
        self.booster_ = xgb.XGBRegressor(**self._booster_params())
        self.booster_.fit(x, t, base_margin=margin)
        self._mark_fitted(len(y), data_sha256)
        return self

    def fit(self, nets: Sequence[Network], latencies_ms: Sequence[float]) -> GBDTModel:
        y = check_training_data(nets, latencies_ms)
        margin = None
        why = prior_problem(self.prior)
        if why:
            raise PredictorError(f"prior: {why}")
        if self.prior:
            self.priors_ = None
            # What each prior spec names now (a path made absolute, a bare `roofline` the
            # spec it loads here) and the bytes of its files: a saved hybrid reads these,
            # not whatever the spec would name in another folder or after a recalibration.
            self.prior_pinned_ = [pin_prior(spec) for spec in self.prior]
            self.prior_sha256_ = prior_files_sha256(self.prior_pinned_)
            est = np.c_[self._prior_estimates(nets), np.ones(len(y))]
            # The blend minimises the *relative* error (rows divided by the latency): the
            # trees then fit log latency, where a fast network's 10% counts like a slow
            # one's. Least squares in ms let the slow networks set the blend; on this
            # CPU's whole-space table (k=100, 3 seeds) the relative blend put 97.4-97.7%
            # of cells within ±10% instead of 97.1-97.3%.
            self.prior_coef_ = np.linalg.lstsq(est / y[:, None], np.ones(len(y)),
                                               rcond=None)[0]
            self.base_floor_ms_ = float(np.min(y)) / 2
            margin = self._blend(est)
        self.fit_features(F.features(nets), y, P.data_hash(nets, y), margin=margin)
        self._note_training(nets, y)
        return self

    # ------------------------------------------------------------------ analytical prior
    def _prior_models(self) -> list:
        if getattr(self, "priors_", None) is None:
            from costmodels.registry import create

            self.priors_ = [create(spec) for spec in getattr(self, "prior_pinned_", self.prior)]
        return self.priors_

    def _prior_estimates(self, nets: Sequence[Network]) -> np.ndarray:
        """(n, len(prior)) latencies in ms from the prior estimators."""
        cols = [[e.latency_ms for e in m.estimate_many(nets)] for m in self._prior_models()]
        out = np.asarray(cols, dtype=np.float64).T
        if not np.isfinite(out).all():
            raise PredictorError(f"a prior estimator ({', '.join(self.prior)}) gave a non-finite "
                             "latency; check that it covers these networks")
        return out

    def _prior_margin(self, nets: Sequence[Network]) -> np.ndarray:
        return self._blend(np.c_[self._prior_estimates(nets), np.ones(len(nets))])

    def _blend(self, est: np.ndarray) -> np.ndarray:
        """Starting margin from prior estimates (columns + a ones column), in target units."""
        return self._target(np.maximum(est @ self.prior_coef_, self.base_floor_ms_))

    def _margin(self, x: np.ndarray) -> np.ndarray:
        if self.base_ is None:
            return np.zeros(len(x))
        ms = np.maximum(self.base_.predict(F.compact(x)), self.base_floor_ms_)
        return self._target(ms)

    def predict_features(self, x: np.ndarray, margin: np.ndarray | None = None) -> np.ndarray:
        """Latency in ms for precomputed feature rows (``margin`` as given to ``fit_features``)."""
        self._check_fitted()
        if len(x) == 0:
            return np.zeros(0)
        t = self.booster_.predict(x, base_margin=self._margin(x) if margin is None else margin)
        return self._untarget(np.asarray(t, dtype=np.float64))

    def predict(self, nets: Sequence[Network]) -> np.ndarray:
        """Latency in ms of each network, shape (len(nets),)."""
        self._check_fitted()
        margin = self._prior_margin(nets) if self.prior and len(nets) else None
        return self.predict_features(F.features(nets), margin)

    # ------------------------------------------------------------------ persistence
    def save(self, model_dir: str | Path) -> Path:
        """Write ``manifest.json``, ``model.json`` (XGBoost) and ``arrays.npz`` (linear base)."""
        self._check_fitted()
        d = Path(model_dir)
        d.mkdir(parents=True, exist_ok=True)
        self.booster_.get_booster().save_model(str(d / "model.json"))
        arrays = self.base_.arrays("base_") if self.base_ is not None else {}
        arrays["base_floor_ms"] = np.array([self.base_floor_ms_])
        if self.prior:
            arrays["prior_coef"] = self.prior_coef_
        P.save_arrays(d / "arrays.npz", arrays)
        params = self.get_params()
        params["prior"] = list(getattr(self, "prior_pinned_", self.prior))
        state = ({"prior_content_sha256": getattr(self, "prior_sha256_", {})} if self.prior
                 else None)
        P.write_manifest(d, self.class_name(), params, libraries=("xgboost", "numpy"),
                         training_data_sha256=self.training_data_sha256_, n_train=self.n_train_,
                         trained_on=getattr(self, "trained_on_", None),
                         device=self.device_, files=("model.json", "arrays.npz"), state=state)
        return d

    @classmethod
    def class_name(cls) -> str:
        return f"{cls.__module__}.{cls.__qualname__}"

    @classmethod
    def load(cls, model_dir: str | Path) -> GBDTModel:

        model, doc, d = P.restore(cls, model_dir, cls.class_name())
        # the priors are created below (and at every estimate): checked before anything runs
        why = prior_problem(model.prior, saved=True)
        if why is None and cls is HybridModel and not model.prior:
            why = "is empty; a hybrid corrects at least one prior estimator"
        if why:
            raise ModelFileError(f"{d / P.MANIFEST}: field 'params.prior' {why}; the file was "
                                 "edited: fit the model again")
        model.booster_ = load_booster(P.model_file(d, doc, "model.json"), model._booster_params())
        arrays = P.load_arrays(P.model_file(d, doc, "arrays.npz"))
        where = d / "arrays.npz"
        model.base_ = (Ridge.from_arrays(arrays, "base_", where) if "base_coef" in arrays
                       else None)
        if "base_floor_ms" not in arrays:
            raise ModelFileError(f"{where} lacks base_floor_ms (saved by an older "
                                 "costmodels); fit the model again")
        if arrays["base_floor_ms"].shape != (1,):
            raise ModelFileError(f"{where}: array 'base_floor_ms' has shape "
                                 f"{arrays['base_floor_ms'].shape}, not one number; the file "
                                 "was edited: fit the model again")
        model.base_floor_ms_ = float(arrays["base_floor_ms"][0])
        if model.prior:
            if "prior_coef" not in arrays or arrays["prior_coef"].ndim != 1:
                raise ModelFileError(f"{where} lacks prior_coef as a list of numbers; fit the "
                                     "model again")
            coef = arrays["prior_coef"]
            if len(coef) != len(model.prior) + 1:
                raise ModelFileError(
                    f"{where}: array 'prior_coef' holds {len(coef)} numbers, not "
                    f"{len(model.prior) + 1} (one per prior of 'params.prior' in "
                    f"{d / P.MANIFEST}, {len(model.prior)}, and an intercept); the files were "
                    "edited: fit the model again")
            if not np.isfinite(coef).all():
                raise ModelFileError(f"{where}: array 'prior_coef' holds a non-finite number; "
                                     "the file was edited: fit the model again")
            model.prior_coef_ = coef.astype(np.float64)
            model.priors_ = None
            here = str(d.resolve())
            if here in _LOADING:  # a prior that is (or leads back to) this model
                raise ModelFileError(f"{d / P.MANIFEST}: a prior of this model is the model "
                                     "itself (a loop of saved models); fit it again on "
                                     "analytical priors or LUTs")
            _LOADING.add(here)
            try:
                model._prior_models()
            except Exception as exc:  # noqa: BLE001 - say which prior and what to do
                from costmodels.errors import first_line

                raise ModelFileError(
                    f"{d / P.MANIFEST}: its prior estimators {list(model.prior)} cannot be "
                    f"created here ({first_line(str(exc), 300) or type(exc).__name__}"
                    "); put those files back or fit the model again") from None
            finally:
                _LOADING.discard(here)
            state = doc.get("state") or {}
            # models saved before the content digest recorded the files' bytes
            content = isinstance(state.get("prior_content_sha256"), dict)
            stored = state.get("prior_content_sha256" if content else "prior_sha256")
            if isinstance(stored, dict):
                from costmodels.registry import split_spec

                digest = content_sha256 if content else P.file_sha256
                # only the files the priors read: not any file the manifest names
                named = {str(Path(arg.partition("?")[0])) for arg in
                         (split_spec(spec)[1] for spec in model.prior) if arg}
                changed = [f for f, h in stored.items() if f in named
                           and (not Path(f).exists() or digest(Path(f)) != h)]
                if changed:
                    print(f"warning: {d}: the prior file {changed[0]} changed since this model "
                          f"was fitted (its {'content' if content else 'bytes'} differ"
                          f"{'s' if content else ''}); its estimates move with it. Fit the "
                          "model again to learn the correction to it as it is now",
                          file=sys.stderr)
        return P.finish_restore(model, doc)


def prior_problem(prior: object, saved: bool = False) -> str | None:
    """What is wrong with ``prior`` (a model's prior specs), None if nothing: a list (a
    tuple too unless ``saved``) of at most :data:`MAX_PRIORS` non-empty strings, each a spec
    of a backend of :data:`PRIOR_BACKENDS`. The text follows the field's name in an error."""
    from costmodels.errors import short_repr
    from costmodels.registry import split_spec

    kinds = (list,) if saved else (list, tuple)
    if not isinstance(prior, kinds):
        return (f"is {short_repr(prior)}, not a list of backend specs "
                f"{'(a JSON list of strings)' if saved else '(one --prior SPEC each)'}")
    if len(prior) > MAX_PRIORS:
        return f"lists {len(prior)} specs, more than {MAX_PRIORS}"
    for i, spec in enumerate(prior):
        if not isinstance(spec, str) or not spec.strip():
            return f"entry {i} is {short_repr(spec)}, not a backend spec (a non-empty string)"
        name = split_spec(spec)[0]
        if name not in PRIOR_BACKENDS:
            hint = ("; to correct measurements, measure once (`costmodels measure-space`) and "
                    "give the table it writes as a prior" if name == "measure" else "")
            return (f"entry {i} is {short_repr(spec)}: a prior must be an estimator that "
                    "computes or looks up a latency without running networks or writing "
                    f"files, a spec of one of the backends {', '.join(PRIOR_BACKENDS)}{hint}")
    return None


def pin_prior(spec: str) -> str:
    """``spec`` as it resolves here and now: a file argument made absolute (a query such
    as ``?best-effort`` kept), a bare ``roofline`` the spec it loads (the local calibrated
    spec, else the generic one). Shipped spec names and other arguments stay as given."""
    from costmodels.registry import split_spec

    name, arg = split_spec(spec)
    if name == "roofline" and not arg:
        from analytical.roofline import default_spec

        arg = default_spec()
    if not arg:
        return spec.strip()
    base, q, query = arg.partition("?")
    path = Path(base).expanduser()
    if path.is_file() or path.is_dir():  # a LUT, a spec, a table; a saved model's folder
        arg = os.path.abspath(path) + q + query
    if name == "table" and arg.lower().endswith(".csv"):
        return arg  # a .csv path names a table by itself
    return f"{name}:{arg}"


def prior_files_sha256(specs: Sequence[str]) -> dict[str, str]:
    """{file: :func:`content_sha256`} of the files that the pinned ``specs`` read."""
    from costmodels.registry import split_spec

    out = {}
    for spec in specs:
        path = Path((split_spec(spec)[1] or "").partition("?")[0])
        if path.is_absolute() and (path.is_file() or path.is_dir()):
            out[str(path)] = content_sha256(path)
    return out


def content_sha256(path: Path) -> str:
    """SHA-256 of what a prior file holds: an SQLite file's rows (its SQL dump, lines
    sorted: the order rows were written in and the free pages, journal mode and change
    counter of the header are not content), any other file's bytes. A LUT that a
    ``lut build`` found complete (nothing measured) keeps its digest though SQLite
    rewrote some of its bytes."""
    import hashlib
    import sqlite3

    if path.is_dir():  # a saved model's folder: the files a model is loaded from
        h = hashlib.sha256()
        for name in P.MODEL_FILES:
            if (path / name).is_file():
                h.update(f"{name}\0{P.file_sha256(path / name)}\n".encode())
        return h.hexdigest()
    with open(path, "rb") as f:
        if f.read(16) != b"SQLite format 3\x00":
            return P.file_sha256(path)
    try:
        con = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro&immutable=1", uri=True)
        try:
            lines = sorted(con.iterdump())
        finally:
            con.close()
    except sqlite3.Error:  # unreadable now: its bytes (it differs from any readable LUT)
        return P.file_sha256(path)
    h = hashlib.sha256()
    for line in lines:
        h.update(line.encode("utf-8", "surrogatepass") + b"\n")
    return h.hexdigest()


_LOADING: set[str] = set()  # saved hybrids being loaded (a prior that loops back to one)


def check_booster_json(path: Path) -> None:
    """Refuse a booster file whose trees XGBoost would walk out of bounds (it reads them
    unchecked: a child index that loops back crashed the process with SIGSEGV): every
    tree's arrays hold ``num_nodes`` entries, a node's children are both leaves (-1) or
    later nodes of the tree, and a split's feature is one of the model's."""
    def bad(why: str) -> ModelFileError:
        return ModelFileError(f"{path}: {why}; the file was edited or is not this program's: "
                              "fit the model again")

    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        learner = doc["learner"]
        n_feat = int(learner["learner_model_param"]["num_feature"])
        trees = learner["gradient_booster"]["model"]["trees"]
    except (OSError, ValueError, KeyError, TypeError, RecursionError):
        raise bad("not an XGBoost model JSON with learner, num_feature and trees") from None
    if not isinstance(trees, list):
        raise bad("its trees are not a list")
    for ti, t in enumerate(trees):
        try:
            n = int(t["tree_param"]["num_nodes"])
            left, right = t["left_children"], t["right_children"]
            feat, cond = t["split_indices"], t["split_conditions"]
            arrays = (left, right, feat, cond, t["base_weights"], t["default_left"])
        except (KeyError, TypeError, ValueError):
            raise bad(f"tree {ti} lacks num_nodes or its node arrays") from None
        if n < 1 or any(not isinstance(a, list) or len(a) != n for a in arrays):
            raise bad(f"tree {ti}: its node arrays do not all hold num_nodes = {n} entries")
        for i in range(n):
            lc, rc, f = left[i], right[i], feat[i]
            if not all(isinstance(v, int) and not isinstance(v, bool) for v in (lc, rc, f)):
                raise bad(f"tree {ti} node {i}: a child or split index is not an integer")
            if lc == rc == -1:
                continue
            if not (i < lc < n and i < rc < n) or not 0 <= f < n_feat:
                raise bad(f"tree {ti} node {i}: children {lc}, {rc} or split feature {f} out "
                          f"of range ({n} nodes, {n_feat} features)")


def load_booster(path: Path, params: dict):
    """An ``XGBRegressor`` read from XGBoost's own JSON (checked first:
    :func:`check_booster_json`); :class:`ModelFileError` if unreadable."""
    import xgboost as xgb

    check_booster_json(path)
    booster = xgb.XGBRegressor(**params)
    try:
        booster.load_model(str(path))
    except (xgb.core.XGBoostError, ValueError, OSError):
        raise ModelFileError(f"{path}: XGBoost cannot read it; fit the model again") from None
    return booster


class HybridModel(GBDTModel):
    """GBDT correcting a blend of analytical estimators (``prior`` specs, required).

    The same estimator as :class:`GBDTModel` with ``prior`` given; its own class
    so that a saved hybrid is loaded as ``hybrid:DIR`` and its priors travel with it.
    """

    name = "hybrid"
    registry_name = "hybrid"

    def fit(self, nets: Sequence[Network], latencies_ms: Sequence[float]) -> HybridModel:
        if not self.prior:
            raise PredictorError("the hybrid model needs prior estimators: --prior SPEC "
                                 "(e.g. roofline:xeon_2c, lut:PATH)")
        return super().fit(nets, latencies_ms)


