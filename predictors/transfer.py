"""Few-shot transfer to a new device from other devices' latency tables.

The method (:class:`TransferModel`): latency on the target device is modelled
as a non-negative combination of the source devices' latencies of the same
network, plus an intercept and a connectivity term (either sign), fitted by
non-negative least squares on the k measured target networks, with a penalty
pulling the source weights toward a *prior mix* whose strength is chosen by
leave-one-out on those k networks. The prior mix weights each source by the
inverse of its own leave-one-out error on the k networks (a one-source linear
fit), so sources that already track the target well get a larger share of the
prior; with equal errors it is the equal "mean source". Non-negative weights
are what physics suggests (each target kernel costs some positive mix of what
it costs elsewhere) and, with the shrinkage, regularise the fit: a few
well-matching sources are picked out of many without a tuned constant. A residual model on
network features then corrects what the sources cannot explain (ridge with
leave-one-out alpha for small k, GBDT for k >= 100). The ridge residual also
sees the *dead-op cost* of each cell: the sources' (scaled, averaged) latency
of the cell minus that of the same cell with its dead edges removed (edges
whose result never reaches the output, :func:`dce_index`). A runtime that
eliminates dead code (e.g. a mobile graph compiler) is then fitted from the k
cells by a negative weight; one that executes everything by a weight near 0.
Nothing is tuned per device.

``priors="builtin"`` appends the built-in analytical priors (:func:`builtin_priors`:
registry backends on every NB201 cell, computed once per process) to the sources
as noise-free columns; :class:`~predictors.select.FewShotModel` decides from the
k cells whether to.

Source tables are *smoothed* first (``smooth="additive"``, the default): each
source's latencies are replaced by its least-squares additive fit on the
NAS-Bench-201 cell encoding (per-edge operation one-hot, live edges, op
counts) over all its cells. The fit uses the source tables only; it removes
each source's own measurement noise, which is independent of the target's, so
the target's few cells fit a mix of what the sources have in common. Measured
leave-one-out over the 13 reference devices at k=10 (5 seeds): mean Spearman
0.963 raw, 0.966 smoothed (``bench/bench_fewshot.py`` reports the figures).

Any space: the rows of the source matrix come from :class:`~predictors.rows.Rows`
(NB201's standard index, else the source tables' ``arch_str``). Off NB201 the sources
are used as measured (the smoother is NB201's cell fit), the residual has no dead-op
cost, and the built-in priors are FLOPs, params, Eyeriss and FPGA of the rows' networks.
"""

from __future__ import annotations

from collections.abc import Sequence
from functools import cache
from pathlib import Path

import numpy as np

from costmodels.errors import ModelFileError
from costmodels.network import Network
from costmodels.spaces import nb201
from costmodels.tables import LatencyTable, read_table
from predictors import features as F
from predictors import persistence as P
from predictors.base import Predictor, PredictorError, check_training_data
from predictors.linear import Ridge, inverse_error_shares, loo_residuals, nnls_fit, ridge_loo
from predictors.rows import Rows

CLASS = "predictors.transfer.TransferModel"
RESIDUAL_ALPHAS = tuple(10.0 ** p for p in range(0, 5))
SHRINK = (0.0, 0.01, 0.1, 1.0, 10.0, 100.0)
GBDT_RESIDUAL_MIN_N = 100
SMOOTH = ("additive", "none")
PRIOR_POWER = 1.0
PRIORS = ("builtin", "none")
# Built-in analytical priors (:func:`builtin_priors`): registry backends evaluated on
# every NB201 cell, appended to the sources as extra (noise-free) columns: (backend, dataset).
PRIOR_COLUMNS = (("flops", "cifar10"), ("params", "cifar10"), ("eyeriss", "cifar10"),
                 ("fpga", "cifar10"), ("eyeriss", "cifar100"), ("eyeriss", "ImageNet16-120"))
# Backends whose NB201 figure is exactly additive in the cell basis (every layer costed on
# its own): fitted from ADDITIVE_FIT_CELLS networks and extended to the whole space.
ADDITIVE_PRIORS = ("flops", "params", "eyeriss")
ADDITIVE_FIT_CELLS = 400


def source_prior(x: np.ndarray, y: np.ndarray, m: int, power: float = PRIOR_POWER) -> np.ndarray:
    """Prior mix of the m source columns of the design ``x``: shares summing to 1.

    Each source's share is proportional to 1 / (leave-one-out mean squared error
    of ``y ~ 1 + source [+ connected]`` on these rows) ** ``power``, estimated from
    the target's own measured networks only (``power=1``: inverse-variance weighting;
    larger powers concentrate the prior on the sources that track the target best).
    Equal shares when there are too few rows to validate a one-source fit.
    """
    n = len(y)
    conn = x[:, m + 2] if x.shape[1] > m + 2 else np.ones(n)
    extra = [conn] if np.ptp(conn) > 0 else []
    if n < 3 + len(extra):
        return np.full(m, 1.0 / m)
    err = np.empty(m)
    for j in range(m):
        z = np.stack([np.ones(n), x[:, j], *extra], axis=1)
        err[j] = float(np.mean(loo_residuals(z, y) ** 2))
    if not np.all(np.isfinite(err)):
        return np.full(m, 1.0 / m)
    return inverse_error_shares(err, power)


def _shrunk_nnls(x: np.ndarray, y: np.ndarray, m: int, lam: float,
                 prior: np.ndarray | None = None) -> np.ndarray:
    """NNLS with a penalty ``lam * n * |w[:m] - w0|^2`` pulling the first m weights to w0.

    ``w0`` spreads the slope of y on the prior-mixed source (``prior``: shares of
    the m source columns summing to 1; equal shares, the "mean source", when
    None) over the sources in those shares; ``y`` is expected scaled to mean 1.
    """
    n = len(y)
    if lam <= 0:
        return nnls_fit(x, y)
    if prior is None:
        prior = np.full(m, 1.0 / m)
    mixed = x[:, :m] @ prior
    a = float(np.polyfit(mixed, y, 1)[0]) if n > 1 and np.ptp(mixed) > 0 else 0.0
    if a <= 0:
        # One cell, or cells that rank against the mixed source (two noisy cells can):
        # its proportional fit, so the shrunk weights keep its ranking instead of none.
        a = float(mixed @ y) / max(float(mixed @ mixed), 1e-300)
    w0 = np.zeros(x.shape[1])
    w0[:m] = max(a, 0.0) * prior
    reg = np.zeros((m, x.shape[1]))
    reg[:, :m] = np.sqrt(lam * n) * np.eye(m)
    return nnls_fit(np.vstack([x, reg]), np.concatenate([y, reg @ w0]))


def shrunk_nnls_cv(x: np.ndarray, y: np.ndarray, m: int, lams: Sequence[float] = SHRINK,
                   power: float = PRIOR_POWER) -> tuple[np.ndarray, float]:
    """:func:`_shrunk_nnls` with the penalty chosen by cross-validation (leave-one-out up
    to 20 points, else 10 folds), toward the :func:`source_prior` mix estimated from
    all rows. Returns weights (for ``y`` in its own units) and lam."""
    scale = float(np.mean(y))
    ys = y / scale
    n = len(y)
    prior = source_prior(x, ys, m, power)
    folds = np.arange(n) % 10 if n > 20 else np.arange(n)
    best: tuple[float, float] | None = None
    if n >= 3:
        for lam in lams:
            err = 0.0
            for f in np.unique(folds):
                test = folds == f
                w = _shrunk_nnls(x[~test], ys[~test], m, lam, prior)
                err += float(np.sum((x[test] @ w - ys[test]) ** 2))
            if best is None or err < best[0] - 1e-12:
                best = (err, lam)
    lam = best[1] if best else max(lams)
    return _shrunk_nnls(x, ys, m, lam, prior) * scale, lam


# ------------------------------------------------------------------ sources
def source_matrix(tables: Sequence[LatencyTable]) -> np.ndarray:
    """Latencies (ms) of every NB201 cell (rows: standard index) x source (NaN where absent);
    :meth:`Rows.matrix <predictors.rows.Rows.matrix>` for any space."""
    return Rows().matrix(tables)


@cache
def cell_basis() -> np.ndarray:
    """(15,625, len(CELL_NAMES) + 1): every cell's NB201 encoding and a ones column."""
    rows = [F.cell_encoding(nb201.parse_arch(nb201.SPACE[i])) for i in range(nb201.NUM_ARCHS)]
    return np.c_[np.vstack(rows), np.ones(nb201.NUM_ARCHS)]


def smooth_sources(lat: np.ndarray) -> np.ndarray:
    """Each source column replaced by its additive fit on :func:`cell_basis` (ms).

    Fitted on the cells the source has; floored at 5% of its fastest cell.
    """
    basis = cell_basis()
    out = np.empty_like(lat)
    for j in range(lat.shape[1]):
        have = np.isfinite(lat[:, j])
        if have.sum() < basis.shape[1]:
            out[:, j] = lat[:, j]  # too few cells to fit the smoother: keep as measured
            continue
        coef = (_cell_pinv() @ lat[:, j] if have.all() else
                np.linalg.lstsq(basis[have], lat[have, j], rcond=None)[0])
        out[:, j] = np.maximum(basis @ coef, 0.05 * np.nanmin(lat[:, j]))
    return out


@cache
def _cell_pinv() -> np.ndarray:
    return np.linalg.pinv(cell_basis())


@cache
def _dce_table() -> np.ndarray:
    """Index of every cell's dead-code-eliminated equivalent (all 15,625 cells)."""
    out = np.empty(nb201.NUM_ARCHS, dtype=np.int64)
    for i in range(nb201.NUM_ARCHS):
        ops = nb201.parse_arch(nb201.SPACE[i])
        out[i] = nb201.SPACE.index(tuple(o if reach else 0 for o, reach in
                                         zip(ops, nb201.reaches_output(ops), strict=True)))
    return out


def dce_index(idx: np.ndarray) -> np.ndarray:
    """Standard index of each cell with its dead edges set to ``none``.

    An edge is dead when its destination node never reaches the cell output
    (what a dead-code-eliminating runtime drops). Cells without dead edges map
    to themselves.
    """
    return _dce_table()[np.asarray(idx, dtype=np.int64)]


def builtin_prior_names() -> tuple[str, ...]:
    """Column names of :func:`builtin_priors` (``prior:<backend>/<dataset>``)."""
    return tuple(f"prior:{b}/{d}" for b, d in PRIOR_COLUMNS)


def prior_columns(idx: np.ndarray, columns: Sequence[tuple[str, str]] = PRIOR_COLUMNS
                  ) -> np.ndarray:
    """Built-in prior latencies (len(idx), len(columns)) of NB201 cells, computed directly.

    Each column is a registry backend's ``latency_ms`` on the cell's network at
    batch 1 (``flops``/``params``: the proxies; ``eyeriss``/``fpga``: the
    HW-NAS-Bench reference accelerators), for the column's dataset.
    """
    from costmodels import registry

    idx = np.asarray(idx, dtype=np.int64)
    nets = {d: [nb201.build_network(int(i), d) for i in idx] for d in {d for _, d in columns}}
    out = np.empty((len(idx), len(columns)))
    for j, (b, d) in enumerate(columns):
        out[:, j] = [e.latency_ms for e in registry.create(b).estimate_many(nets[d])]
    return out


def _additive_column(backend: str, dataset: str) -> np.ndarray | None:
    """The backend on all cells from an exact additive fit on a few, or None if not exact."""
    from predictors.additive import all_cells_basis

    b = all_cells_basis()
    cells = np.sort(np.random.default_rng(0).choice(nb201.NUM_ARCHS, ADDITIVE_FIT_CELLS,
                                                    replace=False))
    y = prior_columns(cells, [(backend, dataset)])[:, 0]
    coef, _, rank, _ = np.linalg.lstsq(b[cells], y, rcond=None)
    if rank < np.linalg.matrix_rank(b) or np.max(np.abs(b[cells] @ coef - y) / y) > 1e-9:
        return None
    return b @ coef


@cache
def builtin_priors() -> np.ndarray:
    """The :func:`prior_columns` of all 15,625 cells, computed once per process (~10 s).

    Read-only; rows are the standard index. The additive backends
    (:data:`ADDITIVE_PRIORS`) come from an exact additive fit on
    :data:`ADDITIVE_FIT_CELLS` cells (checked exact to 1e-9 on them, else computed
    cell by cell); the others from every cell's network. Nothing is read from or
    written to disk.
    """
    out = np.empty((nb201.NUM_ARCHS, len(PRIOR_COLUMNS)))
    direct = []
    for j, (b, d) in enumerate(PRIOR_COLUMNS):
        col = _additive_column(b, d) if b in ADDITIVE_PRIORS else None
        if col is None:
            direct.append(j)
        else:
            out[:, j] = col
    if direct:
        out[:, direct] = prior_columns(np.arange(nb201.NUM_ARCHS),
                                       [PRIOR_COLUMNS[j] for j in direct])
    out.setflags(write=False)
    return out


def with_priors(lat: np.ndarray, names: Sequence[str], priors: str, rows: Rows | None = None
                ) -> tuple[np.ndarray, list[str]]:
    """Sources ``lat`` (rows, m) with the built-in prior columns of ``rows`` (default: NB201,
    :func:`builtin_priors`) appended when ``priors == "builtin"`` (:data:`PRIORS`);
    unchanged for ``"none"``."""
    if priors not in PRIORS:
        raise PredictorError(f"priors must be one of {', '.join(PRIORS)}, not {priors!r}")
    if priors == "none":
        return lat, list(names)
    rows = rows if rows is not None else Rows()
    return np.hstack([lat, rows.priors()]), [*names, *rows.prior_names()]


def _load_sources(sources: Sequence[str | LatencyTable], nets: Sequence[Network] = ()
                  ) -> list[LatencyTable]:
    """Source tables as given, or read (repeated rows averaged) in the space of ``nets``."""
    space = None
    if any(not isinstance(s, LatencyTable) for s in sources) and nets:
        from costmodels.spaces import space_of

        space = space_of(nets[0])
    return [s if isinstance(s, LatencyTable) else
            read_table(s, duplicates="mean", space=space or "nb201", absent="skip")
            for s in sources]


class TransferModel(Predictor):
    """Few-shot predictor for a target device from source devices' latency tables.

    Parameters
    ----------
    sources:
        latency-table paths (or :class:`LatencyTable` objects) of other devices.
    residual:
        ``"auto"`` (ridge below 100 training networks, GBDT from 100), ``"ridge"``,
        ``"gbdt"`` or ``"none"``.
    device:
        name of the target device, recorded in the saved manifest.
    random_state:
        seed of the GBDT residual.
    smooth:
        ``"additive"`` (sources replaced by their additive fit, :func:`smooth_sources`)
        or ``"none"`` (sources as measured).
    prior_power:
        exponent of the inverse leave-one-out errors that set the prior mix
        (:func:`source_prior`); 1 = inverse-variance weighting.
    priors:
        ``"builtin"``: the built-in analytical priors (:func:`builtin_priors`: FLOPs,
        parameters, Eyeriss and FPGA latency) join the sources as extra columns (not
        smoothed); ``"none"``: the source tables alone.
    """

    name = "transfer"
    registry_name = "transfer"

    def __init__(self, sources: Sequence[str | LatencyTable] = (), residual: str = "auto",
                 device: str = "", random_state: int = 0, smooth: str = "additive",
                 prior_power: float = PRIOR_POWER, priors: str = "none") -> None:
        self.sources = sources
        self.priors = priors
        self.prior_power = prior_power
        self.residual = residual
        self.device = device
        self.random_state = random_state
        self.smooth = smooth

    def _design(self, idx: np.ndarray, connected: np.ndarray) -> np.ndarray:
        """NNLS columns: scaled sources, +-1, +-connected (n, m + 4)."""
        s = self.source_lat_[idx] / self.source_scale_
        missing = np.isnan(s)
        if missing.any():
            # A cell some source lacks: that source's value from the others (scaled consensus).
            avail = np.where(missing, np.nan, s)
            fill = np.nanmean(avail, axis=1)
            if np.isnan(fill).any():
                bad = int(idx[np.isnan(fill)][0])
                raise PredictorError(f"cell {bad} is in none of the source tables; transfer needs "
                                 "each network's latency on at least one source device")
            s = np.where(missing, fill[:, None], s)
        one = np.ones((len(idx), 1))
        c = connected[:, None].astype(np.float64)
        return np.hstack([s, one, -one, c, -c])

    def _dead_cost(self, idx: np.ndarray) -> np.ndarray:  # NB201 rows only
        """Sources' mean scaled latency of each cell minus that of its :func:`dce_index` cell.

        0 for cells without dead edges (and where no source has both cells).
        """
        dead = dce_index(idx)
        diff = (self.source_lat_[idx] - self.source_lat_[dead]) / self.source_scale_
        ok = np.isfinite(diff)
        total = np.where(ok, diff, 0.0).sum(axis=1)
        count = ok.sum(axis=1)
        return np.where(count > 0, total / np.maximum(count, 1), 0.0)

    def _residual_x(self, idx: np.ndarray, x: np.ndarray) -> np.ndarray:
        """Features of the ridge residual: the compact ones [+ the dead-op cost]."""
        if getattr(self, "residual_features_", "compact") == "compact":
            return F.compact(x)
        return np.hstack([F.compact(x), self._dead_cost(idx)[:, None]])

    def fit(self, nets: Sequence[Network], latencies_ms: Sequence[float]) -> TransferModel:
        y = check_training_data(nets, latencies_ms)
        tables = _load_sources(self.sources, nets)
        self.use_tables(tables, Rows.for_networks(nets, tables))
        self.fit_arrays(self.rows_.index(nets), F.features(nets), y)
        self.training_data_sha256_ = P.data_hash(nets, y)
        self._note_training(nets, y)
        return self

    def use_tables(self, tables: Sequence[LatencyTable], rows: Rows | None = None
                   ) -> TransferModel:
        """Set the source latencies from loaded tables (``fit`` calls it with ``sources``)."""
        if not tables:
            raise PredictorError("the transfer model needs at least one source table: "
                                 "--source TABLE.csv")
        rows = rows if rows is not None else Rows()
        return self.use_matrix(rows.matrix(tables), [t.device for t in tables], rows)

    def use_matrix(self, lat: np.ndarray, names: Sequence[str], rows: Rows | None = None
                   ) -> TransferModel:
        """Set the sources from a (rows, m) latency matrix (ms, NaN where absent); ``rows``
        default: NB201's 15,625 cells. The additive smoothing needs NB201's cell basis:
        in other spaces the sources are used as measured."""
        if self.smooth not in SMOOTH:
            raise PredictorError(f"smooth must be one of {', '.join(SMOOTH)}, not "
                                 f"{self.smooth!r}")
        self.rows_ = rows if rows is not None else Rows()
        if len(lat) != len(self.rows_):
            raise PredictorError(f"the source matrix has {len(lat)} rows, its row keys "
                                 f"{len(self.rows_)}")
        lat = smooth_sources(lat) if self.smooth == "additive" and self.rows_.nb201 else lat
        self.source_lat_, self.source_names_ = with_priors(lat, names, self.priors, self.rows_)
        self.source_scale_ = np.nanmean(self.source_lat_, axis=0)
        return self

    def fit_arrays(self, idx: np.ndarray, x: np.ndarray, y: np.ndarray) -> TransferModel:
        """Fit from cell indices, their feature rows and latencies (sources already set)."""
        if self.residual not in ("auto", "ridge", "gbdt", "none"):
            raise PredictorError(f"residual must be auto, ridge, gbdt or none, not {self.residual!r}")
        connected = x[:, F.FEATURE_NAMES.index("connected")]
        design = self._design(idx, connected)
        self.weights_, self.shrink_ = shrunk_nnls_cv(design, y, self.source_lat_.shape[1],
                                                     power=float(self.prior_power))
        prior = design @ self.weights_
        kind = self.residual
        if kind == "auto":
            kind = "gbdt" if len(y) >= GBDT_RESIDUAL_MIN_N else "ridge"
        self.residual_kind_ = kind
        self.ridge_ = None
        self.gbdt_ = None
        self.gbase_ = None
        self.residual_features_ = "compact+dead" if self.rows_.nb201 else "compact"
        if kind == "ridge":
            self.ridge_ = ridge_loo(self._residual_x(idx, x), y - prior, RESIDUAL_ALPHAS)
        self.floor_ = float(np.min(y)) * 0.5
        if kind == "gbdt":
            from predictors.gbdt import GBDTModel

            # Trees on log latency, started from a ridge fit on the log prior and the
            # compact features (so a poor prior, e.g. a device that prunes dead graph
            # parts when the sources do not, is outweighed by the features).
            xg = self._gbdt_x(x, prior)
            self.gbase_ = ridge_loo(xg[:, -(len(F.COMPACT_NAMES) + 1):], np.log(y))
            self.gbdt_ = GBDTModel(random_state=self.random_state, linear_base=False)
            self.gbdt_.fit_features(xg, y, margin=self._gbdt_margin(xg))
        self._mark_fitted(len(y))
        return self

    def _gbdt_x(self, x: np.ndarray, prior: np.ndarray) -> np.ndarray:
        """Features of the GBDT residual: the schema's, compact ones, log prior (last)."""
        logp = np.log(np.maximum(prior, self.floor_))
        return np.hstack([x, F.compact(x), logp[:, None]])

    def _gbdt_margin(self, xg: np.ndarray) -> np.ndarray:
        return self.gbase_.predict(xg[:, -(len(F.COMPACT_NAMES) + 1):])

    def predict_arrays(self, idx: np.ndarray, x: np.ndarray) -> np.ndarray:
        self._check_fitted()
        connected = x[:, F.FEATURE_NAMES.index("connected")]
        pred = self._design(idx, connected) @ self.weights_
        if self.ridge_ is not None:
            pred = pred + self.ridge_.predict(self._residual_x(idx, x))
        elif self.gbdt_ is not None:
            xg = self._gbdt_x(x, pred)
            pred = self.gbdt_.predict_features(xg, margin=self._gbdt_margin(xg))
        return np.maximum(pred, self.floor_)

    def predict(self, nets: Sequence[Network]) -> np.ndarray:
        """Latency in ms on the target device, shape (len(nets),)."""
        self._check_fitted()
        if len(nets) == 0:
            return np.zeros(0)
        return self.predict_arrays(self.rows_.index(nets), F.features(nets))

    # ------------------------------------------------------------------ persistence
    def _params_json(self) -> dict:
        srcs = [s.source if isinstance(s, LatencyTable) else str(s) for s in self.sources]
        return {"sources": srcs, "residual": self.residual, "device": self.device,
                "random_state": self.random_state, "smooth": self.smooth,
                "prior_power": float(self.prior_power), "priors": self.priors}

    def save(self, model_dir: str | Path) -> Path:
        """``manifest.json`` + ``arrays.npz`` (source latencies, weights, ridge) [+ ``model.json``]."""
        self._check_fitted()
        d = Path(model_dir)
        d.mkdir(parents=True, exist_ok=True)
        arrays = {"source_lat": self.source_lat_, "source_scale": self.source_scale_,
                  "weights": self.weights_, "floor": np.array([self.floor_])}
        if self.ridge_ is not None:
            arrays.update(self.ridge_.arrays("ridge_"))
        if self.gbdt_ is not None:
            arrays.update(self.gbase_.arrays("gbase_"))
        if not self.rows_.nb201:
            arrays["row_keys"] = np.array(self.rows_.keys, dtype=str)
        P.save_arrays(d / "arrays.npz", arrays)
        if self.gbdt_ is not None:
            self.gbdt_.booster_.get_booster().save_model(str(d / "model.json"))
        state = {"source_names": self.source_names_, "residual_kind": self.residual_kind_,
                 "residual_features": self.residual_features_, "rows": self.rows_.state()}
        files = ("arrays.npz", "model.json") if self.gbdt_ is not None else ("arrays.npz",)
        P.write_manifest(d, CLASS, self._params_json(), libraries=("xgboost", "numpy"),
                         training_data_sha256=self.training_data_sha256_, n_train=self.n_train_,
                         trained_on=getattr(self, "trained_on_", None),
                         device=self.device_, files=files, state=state)
        return d

    @classmethod
    def load(cls, model_dir: str | Path) -> TransferModel:
        model, doc, d = P.restore(cls, model_dir, CLASS)
        try:
            state = doc["state"]
            model.source_names_ = [str(n) for n in state["source_names"]]
            model.residual_kind_ = state["residual_kind"]
            model.residual_features_ = state["residual_features"]
        except (TypeError, KeyError):
            raise ModelFileError(f"{d / P.MANIFEST}: does not describe a TransferModel; fit "
                                 "the model again") from None
        if (model.residual_kind_ not in ("ridge", "gbdt", "none")
                or model.residual_features_ not in ("compact", "compact+dead")):
            raise ModelFileError(f"{d / P.MANIFEST}: field 'state' holds values this version "
                                 "does not know; fit the model again")
        a = P.load_arrays(P.model_file(d, doc, "arrays.npz"))
        try:
            model.source_lat_ = a["source_lat"]
            model.source_scale_ = a["source_scale"]
            model.weights_ = a["weights"]
            model.floor_ = float(a["floor"][0])
            model.rows_ = Rows.restore(state.get("rows"), a.get("row_keys"))
            if model.floor_ != model.floor_ or model.weights_.ndim != 1 \
                    or model.source_lat_.ndim != 2:
                raise ValueError("weights, source_lat or floor of another shape")
        except (KeyError, IndexError, TypeError, ValueError, AttributeError,
                PredictorError) as exc:
            why = f"lacks {exc}" if isinstance(exc, KeyError) else \
                f"{type(exc).__name__}: {str(exc)[:120]}"
            raise ModelFileError(f"{d / 'arrays.npz'} (or the manifest's state.rows) does not "
                                 f"fit a TransferModel ({why}); fit the model again") from None
        if len(model.source_lat_) != len(model.rows_):
            raise ModelFileError(f"{d / 'arrays.npz'}: {len(model.source_lat_)} source rows for "
                                 f"{len(model.rows_)} row keys; fit the model again")
        model.ridge_ = (Ridge.from_arrays(a, "ridge_", d / "arrays.npz")
                        if model.residual_kind_ == "ridge" else None)
        model.gbdt_ = None
        model.gbase_ = None
        if model.residual_kind_ == "gbdt":
            from predictors.gbdt import GBDTModel, load_booster

            g = GBDTModel(random_state=model.random_state, linear_base=False)
            g.booster_ = load_booster(P.model_file(d, doc, "model.json"), g._booster_params())
            g.base_ = None
            g._mark_fitted(int(doc.get("n_train", 0)))
            model.gbdt_ = g
            model.gbase_ = Ridge.from_arrays(a, "gbase_", d / "arrays.npz")
        return P.finish_restore(model, doc)
