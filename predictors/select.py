"""Few-shot model selection on the k measured cells only.

:class:`FewShotModel` fits candidate families on the k cells of the target
device, scores each by cross-validation on those same k cells (leave-one-out
up to 20 cells, else 5 folds; never any other cell of the target; cells that are one
network, such as NAS-Bench-201's twins, are left out together: :func:`cv_groups`), and then
``stack``\\ s them (non-negative least squares on the out-of-fold predictions,
weights shrunk half-way to shares proportional to 1 / CV error, summing to 1),
``select``\\ s the best (lowest out-of-fold mean squared log error) or
``average``\\ s them.

Families (:data:`FAMILIES`):

``mix``
    source-device transfer on smoothed sources (:class:`~predictors.transfer.TransferModel`,
    prior mix ``1 / LOO-error ** 2``, ridge residual on features and dead-op cost);
``mix-plain``
    the same without the residual (the source mix, intercept and connectivity only);
``mix-dce``
    ``mix-plain`` on each cell's dead-code-eliminated equivalent in the sources (a
    runtime that drops dead edges); not a default;
``mix-raw``
    ``mix`` on the sources as measured;
``additive``
    additive per-operation model with a prior from the sources (:mod:`predictors.additive`);
``counts``
    the target's latency as a non-negative sum of per-layer costs and an overhead,
    fitted on the k cells alone (five or seven numbers, no sources), in two bases
    (:data:`predictors.additive.COUNT_BASES`): every layer of the cell (the edges'
    operations, the node sums' ``Add`` layers and the zero-filled nodes), or only the
    edges that reach the output, weighed by their leave-one-out error on the k cells
    (:func:`predictors.additive.fit_counts`, the source mix's rule; the shares are
    ``counts_basis`` in :attr:`report_`). A device that costs each layer on its own (an
    accelerator, an analytical model) is exactly the first, and a runtime that drops
    dead edges is closer to the second than to any source that runs them; the sources'
    prior pulls the other families away from both. NAS-Bench-201 only;
``gbdt-residual``
    GBDT on features started from the transfer prior (``TransferModel(residual="gbdt")``);
``gbdt``
    GBDT on features alone (no sources);
``gnn``
    the layer-graph GNN (no sources; slow, only when asked for).

Default families (:func:`default_families`): below 8 cells ``mix-plain`` and
``additive`` in fixed shares (:data:`SMALL_K_SHARES`, 3 : 1; leave-one-out on so few
cells cannot weigh them); ``mix``, ``mix-plain``, ``mix-raw``, ``additive``, ``counts``
from 8 (``counts`` on
NAS-Bench-201 only); plus ``gbdt-residual`` and
``gbdt`` from 100 (:data:`MIN_K_GBDT`; with them from 20 cells, k=20 scored mean
Spearman 0.968 over the 13 reference devices, 20 seeds, without them 0.970, no device
worse: the stack gives every family a share and trees on 20 cells are noise).
The prior power 2 (:data:`MIX_PRIOR_POWER`) was chosen by nested
leave-one-device-out over the reference tables (for 11 of the 13 held-out devices the
other 12 pick 2 over 1 and 4; for the two batch-256 GPUs they pick 1). The chosen strategy, each family's CV
score and the weights are in :attr:`report_` (and in the saved manifest).

Built-in analytical priors (``priors="builtin"``, the default): FLOPs, parameters,
Eyeriss latency (cifar10, cifar100, ImageNet16-120) and FPGA latency (cifar10) of
every cell (:func:`predictors.transfer.builtin_priors`) join the sources of the mix
families when one of them alone predicts the k cells to :data:`PRIOR_RMS` (the
target behaves like that analytical model); the stack then weighs them like any
source. Leave-one-out over the 13 reference devices: the test never fires there
(their figures are identical with and without); on a target made of our Eyeriss or
FPGA latency with 2% noise, k=10 Spearman goes from 0.88-0.97 to 0.99
(``bench/bench_fewshot.py``). Whether they were used is in :attr:`report_`.

A saved model holds the stacked prediction of every network the sources cover, for
the dataset and batch it was trained at (``arrays.npz``): the sources cover those
networks, so the table is the model. On NAS-Bench-201 the rows are the standard index;
in FBNet or a ``models:DIR`` folder they are the ``arch_str`` of the source tables
(:mod:`predictors.rows`), the additive family uses :func:`predictors.additive.feature_basis`
and the priors are evaluated on those networks; the NB201-only pieces (smoothing,
``mix-dce``, the dead-op cost) are left out there.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from costmodels.network import Network
from predictors import additive as A
from predictors import features as F
from predictors import persistence as P
from predictors.base import Predictor, PredictorError, check_training_data
from predictors.linear import inverse_error_shares, nnls_fit
from predictors.rows import Rows
from predictors.transfer import PRIORS

CLASS = "predictors.select.FewShotModel"
FAMILIES = ("mix", "mix-plain", "mix-dce", "mix-raw", "additive", "counts", "gbdt-residual",
            "gbdt", "gnn")
# Families that read NAS-Bench-201's cell structure (refused by name on other spaces).
NB201_ONLY = ("mix-dce", "counts")
MIX_PRIOR_POWER = 2.0
# The stack's NNLS weights are shrunk half-way to shares proportional to
# 1 / CV-error ** STACK_PRIOR_POWER. Measured devices' families have CV errors within a
# few times of each other (near-equal shares); a family that fits the k cells exactly
# (a noise-free analytical target: HW-NAS-Bench's Eyeriss/FPGA figures, our own models)
# gets nearly all of it instead of 1/5.
STACK_PRIOR_POWER = 1.0
STRATEGIES = ("stack", "select", "average")
# Up to this many cells the CV is leave-one-out, above it 5 folds.
SMALL_K = 20
# Below this many cells the residual families are not fitted: leave-one-out on fewer
# cells cannot validate a ~20-feature residual, and on the 13 reference devices the
# plain source mix alone was better at k=5 (mean Spearman 0.949 vs 0.945 stacked).
MIN_K_RESIDUAL = 8
# Below MIN_K_RESIDUAL the default families are blended in these fixed shares, not by the
# stack (its weights from leave-one-out on 3-7 cells were worse than the mix alone): the
# additive posterior is a second estimate from the same sources, with other errors. k=5,
# random cells, mean Spearman on the 13 reference tables / their DCE twins / 10 layer-wise
# accelerators (section ablation, bench/ablation_fewshot.py): 3 : 1 0.9512 / 0.8892 /
# 0.8928, the mix alone 0.9493 / 0.8794 / 0.8712, 1 : 1 0.9498 / 0.8944 / 0.9025, 7 : 1
# 0.9508 / 0.8853 / 0.8850 (3 : 1 was picked on these seeds, 0-4; FBNet: section fbnet).
SMALL_K_SHARES = {"mix-plain": 0.75, "additive": 0.25}
# From this many cells the GBDT families join (see the module docstring for why not from 20).
MIN_K_GBDT = 100
DEFAULT_PRIORS = "builtin"
# The priors join the mix only when one of them alone predicts the k cells to this relative
# RMS (leave-one-out, linear in the prior): the device *is* that analytical model up to
# measurement noise (an Eyeriss/FPGA/FLOP-bound target). On the 13 reference devices the
# best prior's figure is 0.048-0.62 (k=5..20, 5 seeds each), so they never use them; a
# target made of a prior with 2% noise is at ~0.02. Deciding by the stack's CV instead
# (mix with vs without priors) let them in on pixel3, whose heavy-tailed noise fools a
# 10-cell CV, and cost 0.01 Spearman there.
PRIOR_RMS = 0.04


def default_families(k: int) -> tuple[str, ...]:
    """The candidate families for k measured cells (see the module docstring)."""
    if k < MIN_K_RESIDUAL:
        return tuple(SMALL_K_SHARES)
    if k < MIN_K_GBDT:
        return ("mix", "mix-plain", "mix-raw", "additive", "counts")
    return ("mix", "mix-plain", "mix-raw", "additive", "counts", "gbdt-residual", "gbdt")


class _Transfer:
    def __init__(self, lat: np.ndarray, names: Sequence[str], rows: Rows, **params) -> None:
        from predictors.transfer import TransferModel

        self.model = TransferModel(**params)
        self.model.use_matrix(lat, names, rows)

    def fit(self, idx, x, y):
        self.model.fit_arrays(idx, x, y)
        return self

    def predict(self, idx, x):
        return self.model.predict_arrays(idx, x)


class _Additive:
    def __init__(self, coefs: np.ndarray, basis: np.ndarray) -> None:
        self.coefs = coefs
        self.basis = basis

    def fit(self, idx, x, y):
        self.c = A.fit_posterior(self.basis[idx], y, self.coefs)
        self.floor = 0.5 * float(np.min(y))
        return self

    def predict(self, idx, x):
        return np.maximum(self.basis[idx] @ self.c, self.floor)


class _Counts:
    def fit(self, idx, x, y):
        self.fit_ = A.fit_counts(idx, y, MIX_PRIOR_POWER)
        self.floor = 0.5 * float(np.min(y))
        return self

    def predict(self, idx, x):
        return np.maximum(A.predict_counts(self.fit_, idx), self.floor)

    def shares(self) -> dict[str, float]:
        return {name: round(w, 4) for name, (w, _) in self.fit_.items()}


class _GBDT:
    def __init__(self, seed: int) -> None:
        from predictors.gbdt import GBDTModel

        self.model = GBDTModel(random_state=seed)

    def fit(self, idx, x, y):
        self.model.fit_features(x, y)
        return self

    def predict(self, idx, x):
        return self.model.predict_features(x)


class _GNN:
    def __init__(self, seed: int, nets_of) -> None:
        from predictors.gnn import GNNModel

        self.model = GNNModel(random_state=seed)
        self.nets_of = nets_of

    def fit(self, idx, x, y):
        self.model.fit(self.nets_of(idx), y)
        return self

    def predict(self, idx, x):
        return self.model.predict(self.nets_of(idx))


def _folds(groups: np.ndarray) -> np.ndarray:
    """CV fold of each training cell (``groups``: ids 0..n-1 from :func:`cv_groups`): leave
    one group out up to :data:`SMALL_K` groups, else 5 folds of whole groups."""
    return groups if groups.max(initial=-1) < SMALL_K else groups % 5


def cv_groups(rows: Rows, idx: np.ndarray, x: np.ndarray) -> np.ndarray:
    """A group id per training cell: cells that are one network for CV's purpose share one.

    NAS-Bench-201 cells that compute the same function (:func:`costmodels.spaces.nb201.canonical`:
    the twins that run the same kernels with nodes 1 and 2 swapped, cells that differ only
    in dead edges), elsewhere networks with the same feature row. Leaving one of a pair
    out while its twin stays in let a family that gives twins one prediction (``counts``)
    look exact under leave-one-out: 3 twin pairs among 10 cells gave it 0.56-0.70 of the
    stack and Spearman 0.16-0.28 on a device where other 10-cell sets give 0.98.
    """
    if rows.nb201:
        from costmodels.spaces import nb201

        keys = [nb201.canonical(nb201.parse_arch(nb201.SPACE[int(i)])) for i in idx]
    else:
        keys = [row.tobytes() for row in np.ascontiguousarray(x, dtype=np.float64)]
    return np.unique(keys, return_inverse=True)[1]


def _log_mse(pred: np.ndarray, y: np.ndarray) -> float:
    return float(np.mean((np.log(np.maximum(pred, 1e-9)) - np.log(y)) ** 2))


class FewShotModel(Predictor):
    """Few-shot latency predictor: candidate families chosen or stacked by CV on the k cells.

    Parameters
    ----------
    sources: latency-table paths (or tables) of other devices.
    families: candidate families (:data:`FAMILIES`); empty = the default for k.
    strategy: ``stack``, ``select`` or ``average`` (:data:`STRATEGIES`).
    device: target device name for the manifest.
    random_state: seed of the GBDT/GNN candidates.
    priors: ``"builtin"`` (the built-in analytical priors,
        :func:`predictors.transfer.builtin_priors`, join the sources of the mix
        families as extra columns; the CV weighs them like any source) or ``"none"``.
    """

    name = "fewshot"
    registry_name = "fewshot"

    def __init__(self, sources: Sequence = (), families: Sequence[str] = (),
                 strategy: str = "stack", device: str = "", random_state: int = 0,
                 priors: str = DEFAULT_PRIORS) -> None:
        self.sources = sources
        self.priors = priors
        self.families = families
        self.strategy = strategy
        self.device = device
        self.random_state = random_state

    # ------------------------------------------------------------------ candidates
    def _families(self, k: int) -> tuple[str, ...]:
        fams = tuple(self.families) or default_families(k)
        if not self.families and not self.rows_.nb201:
            # off NB201 the sources are not smoothed: mix and mix-raw would be one family
            fams = tuple(f for f in fams if f != "mix-raw" and f not in NB201_ONLY)
        bad = [f for f in fams if f not in FAMILIES]
        if bad:
            raise PredictorError(f"unknown family {bad[0]!r}; expected some of "
                                 f"{', '.join(FAMILIES)}")
        if self.priors not in PRIORS:
            raise PredictorError(f"priors must be one of {', '.join(PRIORS)}, not "
                                 f"{self.priors!r}")
        if self.strategy not in STRATEGIES:
            raise PredictorError(f"strategy must be one of {', '.join(STRATEGIES)}, not "
                                 f"{self.strategy!r}")
        return fams

    def _smooth(self) -> np.ndarray:
        """The measured sources, smoothed (:func:`~predictors.transfer.smooth_sources`), cached;
        as measured off NB201 (the smoother is NB201's additive cell fit)."""
        if self._smoothed is None:
            from predictors.transfer import smooth_sources

            self._smoothed = (smooth_sources(self.source_lat_) if self.rows_.nb201
                              else self.source_lat_)
        return self._smoothed

    def _mix_sources(self, smoothed: bool) -> tuple[np.ndarray, list[str]]:
        """Sources of a mix family: smoothed or raw, with the priors when they are used."""
        from predictors.transfer import with_priors

        key = (smoothed, self.priors_used_)
        if key not in self._mixes:
            lat = self._smooth() if smoothed else self.source_lat_
            self._mixes[key] = with_priors(lat, self.source_names_,
                                           "builtin" if self.priors_used_ else "none", self.rows_)
        return self._mixes[key]

    def _priors_win(self, y: np.ndarray, idx: np.ndarray) -> bool:
        """Whether the k cells behave like one of the built-in priors up to noise.

        The leave-one-out relative RMS error of ``y ~ a + b * prior`` on the k cells
        (``y`` scaled to mean 1), best over the priors, must be at most
        :data:`PRIOR_RMS`; recorded in :attr:`report_` as ``priors_loo_rms``.
        """
        from predictors.linear import loo_residuals

        if len(y) < 3:
            return False
        ys = y / float(np.mean(y))
        cols = self.rows_.priors()[idx]
        rms = min(float(np.sqrt(np.mean(loo_residuals(np.c_[np.ones(len(ys)), c], ys) ** 2)))
                  for c in cols.T if np.ptp(c) > 0)
        self.priors_rms_ = round(rms, 5)
        return rms <= PRIOR_RMS

    def _candidate(self, family: str):
        names = self.source_names_
        if family in ("mix", "mix-plain", "mix-dce", "mix-raw", "gbdt-residual"):
            lat, names = self._mix_sources(smoothed=family != "mix-raw")
        pw = MIX_PRIOR_POWER
        if family == "mix":
            return _Transfer(lat, names, self.rows_, smooth="none", prior_power=pw)
        if family == "mix-plain":
            return _Transfer(lat, names, self.rows_, smooth="none", residual="none", prior_power=pw)
        if family == "mix-dce":
            from predictors.transfer import dce_index

            dce = lat[dce_index(np.arange(len(lat)))]
            return _Transfer(dce, names, self.rows_, smooth="none", residual="none", prior_power=pw)
        if family == "mix-raw":
            return _Transfer(lat, names, self.rows_, smooth="none", prior_power=pw)
        if family == "gbdt-residual":
            return _Transfer(lat, names, self.rows_, smooth="none", residual="gbdt",
                             random_state=self.random_state)
        if family == "additive":
            if self._coefs is None:
                self._basis = (A.count_basis() if self.rows_.nb201
                               else A.feature_basis(self.rows_.features()))
                self._coefs = A.source_coefs(self.source_lat_, self._basis)
            return _Additive(self._coefs, self._basis)
        if family == "counts":
            return _Counts()
        if family == "gbdt":
            return _GBDT(self.random_state)
        return _GNN(self.random_state, self._nets_of)

    def _nets_of(self, idx: np.ndarray) -> list[Network]:
        return self.rows_.networks(idx)

    # ------------------------------------------------------------------ fit
    def use_matrix(self, lat: np.ndarray, names: Sequence[str], rows: Rows | None = None
                   ) -> FewShotModel:
        """Set the sources from a (rows, m) latency matrix (ms); ``rows`` default: NB201."""
        if rows is None:
            rows = Rows(dataset=getattr(self, "dataset_", None), batch=getattr(self, "batch_", 1))
        self.rows_ = rows
        if len(lat) != len(self.rows_):
            raise PredictorError(f"the source matrix has {len(lat)} rows, its row keys "
                                 f"{len(self.rows_)}")
        self.source_lat_ = lat
        self.source_names_ = list(names)
        self._coefs = None
        self._smoothed = None
        self._mixes: dict[tuple[bool, bool], tuple[np.ndarray, list[str]]] = {}
        return self

    def fit(self, nets: Sequence[Network], latencies_ms: Sequence[float]) -> FewShotModel:
        from predictors.transfer import _load_sources

        y = check_training_data(nets, latencies_ms)
        tables = _load_sources(self.sources, nets)
        if not tables:
            raise PredictorError("the fewshot model needs source tables: --source TABLE.csv")
        rows = Rows.for_networks(nets, tables)
        idx = rows.index(nets)
        self.use_matrix(rows.matrix(tables), [t.device for t in tables], rows)
        self.dataset_ = str(nets[0].meta.get("dataset"))
        self.batch_ = int(nets[0].meta.get("batch", 1))
        self.fit_arrays(idx, F.features(nets), y)
        self.training_data_sha256_ = P.data_hash(nets, y)
        self._note_training(nets, y)
        return self

    def fit_arrays(self, idx: np.ndarray, x: np.ndarray, y: np.ndarray) -> FewShotModel:
        """Fit from cell indices, feature rows and latencies (ms); sources already set."""
        groups = cv_groups(self.rows_, idx, x)
        # independent cells: what CV, the families and the small-k blend go by
        k = self.cv_groups_ = int(groups.max(initial=-1)) + 1
        fams = self._families(k)
        odd = [f for f in fams if f in NB201_ONLY]
        if not self.rows_.nb201 and odd:
            raise PredictorError(f"family {odd[0]} needs NAS-Bench-201 cells (it reads their "
                                 "edges)")
        self.priors_rms_ = None
        self.priors_used_ = self.priors == "builtin" and self._priors_win(y, idx)
        folds = _folds(groups)
        oof = np.zeros((len(y), len(fams)))
        if k >= 3 and (len(fams) == 1 or self.strategy != "average"):
            for f in np.unique(folds):
                test = folds == f
                for j, fam in enumerate(fams):
                    cand = self._candidate(fam).fit(idx[~test], x[~test], y[~test])
                    oof[test, j] = cand.predict(idx[test], x[test])
        cv = {fam: _log_mse(oof[:, j], y) for j, fam in enumerate(fams)} if oof.any() else {}
        weights = self._weights(fams, oof, y, cv)
        self.candidates_ = [(fam, self._candidate(fam).fit(idx, x, y))
                            for fam, w in zip(fams, weights, strict=True) if w > 0]
        self.weights_ = weights[weights > 0]
        unit = "cells" if k == len(y) else "distinct networks"
        strategy = (f"fixed shares below {MIN_K_RESIDUAL} {unit}"
                    if self._fixed_shares(fams, k) else self.strategy)
        if k < len(y):
            strategy += f" ({k} distinct networks among the {len(y)} cells)"
        self.report_ = {"strategy": strategy, "families": list(fams),
                        "priors": self.priors, "priors_used": self.priors_used_,
                        "priors_loo_rms": self.priors_rms_,
                        "cv": "none" if not cv else
                        ("loo" if k == len(y) else "leave-one-group-out")
                        if k <= SMALL_K else "5-fold",
                        "cv_groups": k,
                        "cv_log_mse": {f: round(v, 6) for f, v in cv.items()},
                        "chosen": {f: round(float(w), 4) for (f, _), w in
                                   zip(self.candidates_, self.weights_, strict=True)}}
        counts = [c for fam, c in self.candidates_ if fam == "counts"]
        if counts:
            self.report_["counts_basis"] = counts[0].shares()
        if cv:
            stacked = oof @ weights
            self.report_["cv_log_mse_final"] = round(_log_mse(stacked, y), 6)
        self._mark_fitted(len(y))
        return self

    def _fixed_shares(self, fams, k: int) -> bool:
        """Whether the default small-k families take :data:`SMALL_K_SHARES` (not the stack)."""
        return (self.strategy == "stack" and not self.families and k < MIN_K_RESIDUAL
                and tuple(fams) == tuple(SMALL_K_SHARES))

    def _weights(self, fams, oof, y, cv) -> np.ndarray:
        m = len(fams)
        equal = np.full(m, 1.0 / m)
        if self._fixed_shares(fams, self.cv_groups_):
            return np.array([SMALL_K_SHARES[f] for f in fams])
        if not cv or self.strategy == "average":
            return equal
        if self.strategy == "select":
            w = np.zeros(m)
            w[int(np.argmin([cv[f] for f in fams]))] = 1.0
            return w
        w = nnls_fit(oof, y)
        w = w / w.sum() if w.sum() > 0 else equal
        return 0.5 * w + 0.5 * inverse_error_shares(np.array([cv[f] for f in fams]),
                                                    STACK_PRIOR_POWER)

    # ------------------------------------------------------------------ predict
    def predict_arrays(self, idx: np.ndarray, x: np.ndarray) -> np.ndarray:
        self._check_fitted()
        if hasattr(self, "table_"):
            out = self.table_[idx]
            if np.isnan(out).any():
                bad = int(idx[np.isnan(out)][0])
                name = bad if self.rows_.nb201 else self.rows_.keys[bad]
                raise PredictorError(f"cell {name} is in none of the source tables this model "
                                     "was fitted with; fit it with sources that cover it")
            return out
        preds = np.stack([c.predict(idx, x) for _, c in self.candidates_], axis=1)
        return preds @ self.weights_

    def predict(self, nets: Sequence[Network]) -> np.ndarray:
        """Latency in ms on the target device, shape (len(nets),)."""
        self._check_fitted()
        if len(nets) == 0:
            return np.zeros(0)
        idx = self.rows_.index(nets)  # a network of another space is named first
        for net in nets:
            if (str(net.meta.get("dataset")), int(net.meta.get("batch", 1))) != (
                    self.dataset_, self.batch_):
                raise PredictorError(f"{net.name}: built for {net.meta.get('dataset')} batch "
                                     f"{net.meta.get('batch')}, this model was fitted on "
                                     f"{self.dataset_} batch {self.batch_}; build the networks "
                                     "with those")
        x = None if hasattr(self, "table_") else F.features(nets)
        return self.predict_arrays(idx, x)

    # ------------------------------------------------------------------ persistence
    def save(self, model_dir: str | Path) -> Path:
        """``manifest.json`` + ``arrays.npz`` (the prediction of every row, ms: every NB201
        cell, or every architecture of the source tables with their ``row_keys``)."""
        self._check_fitted()
        if not hasattr(self, "table_"):
            covered = np.flatnonzero(np.isfinite(self.source_lat_).any(axis=1))
            table = np.full(len(self.rows_), np.nan)
            table[covered] = self.predict_arrays(covered, F.features(self._nets_of(covered)))
            self.table_ = table
        d = Path(model_dir)
        d.mkdir(parents=True, exist_ok=True)
        arrays = {"pred_ms": self.table_}
        if not self.rows_.nb201:
            arrays["row_keys"] = np.array(self.rows_.keys, dtype=str)
        P.save_arrays(d / "arrays.npz", arrays)
        params = self.get_params()
        params["sources"] = [getattr(s, "source", None) or str(s) for s in self.sources]
        params["families"] = list(self.families)
        state = {"report": self.report_, "dataset": self.dataset_, "batch": self.batch_,
                 "source_names": self.source_names_, "rows": self.rows_.state()}
        P.write_manifest(d, CLASS, params, libraries=("numpy", "xgboost"),
                         training_data_sha256=self.training_data_sha256_, n_train=self.n_train_,
                         trained_on=getattr(self, "trained_on_", None),
                         device=self.device_, files=("arrays.npz",), state=state)
        return d

    @classmethod
    def load(cls, model_dir: str | Path) -> FewShotModel:
        from costmodels.errors import ModelFileError

        model, doc, d = P.restore(cls, model_dir, CLASS)
        a = P.load_arrays(P.model_file(d, doc, "arrays.npz"))
        state = doc.get("state", {})
        try:
            model.table_ = np.asarray(a["pred_ms"], dtype=np.float64)
            model.report_ = dict(state["report"])
            model.dataset_ = str(state["dataset"])
            model.batch_ = int(state["batch"])
            model.source_names_ = list(state["source_names"])
            model.rows_ = Rows.restore(state.get("rows") or {"dataset": model.dataset_,
                                                               "batch": model.batch_},
                                       a.get("row_keys"))
        except (KeyError, TypeError, ValueError, PredictorError):
            raise ModelFileError(f"{d / P.MANIFEST}: does not describe a FewShotModel; fit the "
                                 "model again") from None
        if model.table_.shape != (len(model.rows_),) or np.isinf(model.table_).any():
            raise ModelFileError(f"{d / 'arrays.npz'}: pred_ms is not one latency per row "
                                 f"({len(model.rows_)}); fit the model again")
        return P.finish_restore(model, doc)
