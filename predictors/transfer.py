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

Also here: the small linear fits shared by the predictors (:func:`ridge_loo`,
:class:`Ridge`, :func:`nnls_fit`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

import numpy as np
from scipy.optimize import nnls

from costmodels.errors import ModelFileError
from costmodels.network import Network
from costmodels.spaces import nb201
from costmodels.tables import LatencyTable, read_table
from predictors import features as F
from predictors import persistence as P

CLASS = "predictors.transfer.TransferModel"
ALPHAS = tuple(10.0 ** p for p in range(-3, 5))
RESIDUAL_ALPHAS = tuple(10.0 ** p for p in range(0, 5))
SHRINK = (0.0, 0.01, 0.1, 1.0, 10.0, 100.0)
GBDT_RESIDUAL_MIN_N = 100


# ------------------------------------------------------------------ linear helpers
@dataclass(frozen=True)
class Ridge:
    """``y = ((x - mean) / scale) @ coef + intercept``."""

    mean: np.ndarray
    scale: np.ndarray
    coef: np.ndarray
    intercept: float
    alpha: float

    def predict(self, x: np.ndarray) -> np.ndarray:
        return ((x - self.mean) / self.scale) @ self.coef + self.intercept

    def arrays(self, prefix: str) -> dict[str, np.ndarray]:
        return {f"{prefix}mean": self.mean, f"{prefix}scale": self.scale,
                f"{prefix}coef": self.coef,
                f"{prefix}intercept_alpha": np.array([self.intercept, self.alpha])}

    @classmethod
    def from_arrays(cls, a: dict[str, np.ndarray], prefix: str) -> Ridge:
        try:
            ia = a[f"{prefix}intercept_alpha"]
            return cls(a[f"{prefix}mean"], a[f"{prefix}scale"], a[f"{prefix}coef"],
                       float(ia[0]), float(ia[1]))
        except KeyError as exc:
            raise ModelFileError(f"arrays.npz lacks {exc}; fit the model again") from None


def ridge_loo(x: np.ndarray, y: np.ndarray, alphas: Sequence[float] = ALPHAS) -> Ridge:
    """Ridge on standardised columns, alpha chosen by exact leave-one-out error.

    ``x``: (n, d), ``y``: (n,). Constant columns get zero weight; works for n >= 1.
    """
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    mean = x.mean(axis=0)
    sd = x.std(axis=0)
    scale = np.where(sd > 1e-12, sd, np.inf)
    z = (x - mean) / scale
    ym = float(y.mean())
    yc = y - ym
    n, d = z.shape
    best: tuple[float, float, np.ndarray] | None = None
    for a in alphas:
        g = z.T @ z + a * np.eye(d)
        coef = np.linalg.solve(g, z.T @ yc)
        if n > 2:
            hat = np.einsum("ij,ji->i", z, np.linalg.solve(g, z.T)) + 1.0 / n
            err = float(np.mean(((yc - z @ coef) / np.maximum(1.0 - hat, 1e-6)) ** 2))
        else:
            err = -a  # too few points to validate: the strongest penalty
        if best is None or err < best[0] - 1e-12:
            best = (err, a, coef)
    assert best is not None
    return Ridge(mean, np.where(np.isfinite(scale), scale, 1.0), np.where(
        np.isfinite(scale), best[2], 0.0), ym, best[1])


def nnls_fit(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Non-negative least-squares weights ``w`` (d,) with ``x @ w ~ y``."""
    w, _ = nnls(np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64),
                maxiter=max(50 * x.shape[1], 100))
    return w


def _loo_residuals(z: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Exact leave-one-out residuals of the least-squares fit ``y ~ z``."""
    h = z @ np.linalg.pinv(z)
    return (y - h @ y) / np.maximum(1.0 - np.diag(h), 1e-6)


def source_prior(x: np.ndarray, y: np.ndarray, m: int) -> np.ndarray:
    """Prior mix of the m source columns of the design ``x``: shares summing to 1.

    Each source's share is proportional to 1 / (leave-one-out mean squared error
    of ``y ~ 1 + source [+ connected]`` on these rows), i.e. inverse-variance
    weighting estimated from the target's own measured networks only. Equal
    shares when there are too few rows to validate a one-source fit.
    """
    n = len(y)
    conn = x[:, m + 2] if x.shape[1] > m + 2 else np.ones(n)
    extra = [conn] if np.ptp(conn) > 0 else []
    if n < 3 + len(extra):
        return np.full(m, 1.0 / m)
    err = np.empty(m)
    for j in range(m):
        z = np.stack([np.ones(n), x[:, j], *extra], axis=1)
        err[j] = float(np.mean(_loo_residuals(z, y) ** 2))
    if not np.all(np.isfinite(err)):
        return np.full(m, 1.0 / m)
    inv = 1.0 / np.maximum(err, 1e-12 * max(float(np.max(err)), 1e-300))
    return inv / inv.sum()


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
    a = float(np.polyfit(mixed, y, 1)[0]) if n > 1 and np.ptp(mixed) > 0 else 1.0
    w0 = np.zeros(x.shape[1])
    w0[:m] = max(a, 0.0) * prior
    reg = np.zeros((m, x.shape[1]))
    reg[:, :m] = np.sqrt(lam * n) * np.eye(m)
    return nnls_fit(np.vstack([x, reg]), np.concatenate([y, reg @ w0]))


def shrunk_nnls_cv(x: np.ndarray, y: np.ndarray, m: int,
                   lams: Sequence[float] = SHRINK) -> tuple[np.ndarray, float]:
    """:func:`_shrunk_nnls` with the penalty chosen by cross-validation (leave-one-out up
    to 20 points, else 10 folds), toward the :func:`source_prior` mix estimated from
    all rows. Returns weights (for ``y`` in its own units) and lam."""
    scale = float(np.mean(y))
    ys = y / scale
    n = len(y)
    prior = source_prior(x, ys, m)
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
    """Latencies (ms) of every NB201 cell (rows: standard index) x source (NaN where absent)."""
    out = np.full((nb201.NUM_ARCHS, len(tables)), np.nan)
    for j, t in enumerate(tables):
        out[t.arch_index, j] = t.latency_ms
    return out


@cache
def _dce_table() -> np.ndarray:
    """Index of every cell's dead-code-eliminated equivalent (all 15,625 cells)."""
    out = np.empty(nb201.NUM_ARCHS, dtype=np.int64)
    for i in range(nb201.NUM_ARCHS):
        ops = nb201.parse_arch(nb201.SPACE[i])
        reach = {3}  # nodes whose value reaches the output
        for (dst, src), o in reversed(list(zip(nb201.EDGES, ops, strict=True))):
            if o and dst in reach:
                reach.add(src)
        out[i] = nb201.SPACE.index(tuple(o if dst in reach else 0
                                         for (dst, _), o in zip(nb201.EDGES, ops, strict=True)))
    return out


def dce_index(idx: np.ndarray) -> np.ndarray:
    """Standard index of each cell with its dead edges set to ``none``.

    An edge is dead when its destination node never reaches the cell output
    (what a dead-code-eliminating runtime drops). Cells without dead edges map
    to themselves.
    """
    return _dce_table()[np.asarray(idx, dtype=np.int64)]


def cell_indices(nets: Sequence[Network]) -> np.ndarray:
    """Standard NB201 index of each network (a ValueError for networks from elsewhere)."""
    idx = np.empty(len(nets), dtype=np.int64)
    for i, net in enumerate(nets):
        if net.meta.get("space") != "nb201" or "arch_index" not in net.meta:
            raise ValueError(f"{net.name} is not a NAS-Bench-201 cell: few-shot transfer looks "
                             "networks up in the source tables; use gbdt (no --source) for "
                             "other networks")
        idx[i] = int(net.meta["arch_index"])
    return idx


def _load_sources(sources: Sequence[str | LatencyTable]) -> list[LatencyTable]:
    return [s if isinstance(s, LatencyTable) else read_table(s, duplicates="mean")
            for s in sources]


class TransferModel(P.Predictor):
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
    """

    name = "transfer"

    def __init__(self, sources: Sequence[str | LatencyTable] = (), residual: str = "auto",
                 device: str = "", random_state: int = 0) -> None:
        self.sources = sources
        self.residual = residual
        self.device = device
        self.random_state = random_state

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
                raise ValueError(f"cell {bad} is in none of the source tables; transfer needs "
                                 "each network's latency on at least one source device")
            s = np.where(missing, fill[:, None], s)
        one = np.ones((len(idx), 1))
        c = connected[:, None].astype(np.float64)
        return np.hstack([s, one, -one, c, -c])

    def _dead_cost(self, idx: np.ndarray) -> np.ndarray:
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
        y = P.check_training_data(nets, latencies_ms)
        self.use_tables(_load_sources(self.sources))
        x = F.features(nets)
        self.fit_arrays(cell_indices(nets), x, y)
        self.training_data_sha256_ = P.data_hash(nets, y)
        return self

    def use_tables(self, tables: Sequence[LatencyTable]) -> TransferModel:
        """Set the source latencies from loaded tables (``fit`` calls it with ``sources``)."""
        if not tables:
            raise ValueError("TransferModel needs at least one source table (sources=[...])")
        self.source_names_ = [t.device for t in tables]
        self.source_lat_ = source_matrix(tables)
        self.source_scale_ = np.nanmean(self.source_lat_, axis=0)
        return self

    def fit_arrays(self, idx: np.ndarray, x: np.ndarray, y: np.ndarray) -> TransferModel:
        """Fit from cell indices, their feature rows and latencies (sources already set)."""
        if self.residual not in ("auto", "ridge", "gbdt", "none"):
            raise ValueError(f"residual must be auto, ridge, gbdt or none, not {self.residual!r}")
        connected = x[:, F.FEATURE_NAMES.index("connected")]
        design = self._design(idx, connected)
        self.weights_, self.shrink_ = shrunk_nnls_cv(design, y, self.source_lat_.shape[1])
        prior = design @ self.weights_
        kind = self.residual
        if kind == "auto":
            kind = "gbdt" if len(y) >= GBDT_RESIDUAL_MIN_N else "ridge"
        self.residual_kind_ = kind
        self.ridge_ = None
        self.gbdt_ = None
        self.gbase_ = None
        self.residual_features_ = "compact+dead"
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
        self.n_train_ = len(y)
        self.device_ = self.device
        self.training_data_sha256_ = ""
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
        if len(nets) == 0:
            return np.zeros(0)
        return self.predict_arrays(cell_indices(nets), F.features(nets))

    # ------------------------------------------------------------------ persistence
    def _params_json(self) -> dict:
        srcs = [s.source if isinstance(s, LatencyTable) else str(s) for s in self.sources]
        return {"sources": srcs, "residual": self.residual, "device": self.device,
                "random_state": self.random_state}

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
        P.save_arrays(d / "arrays.npz", arrays)
        if self.gbdt_ is not None:
            self.gbdt_.booster_.get_booster().save_model(str(d / "model.json"))
        state = {"source_names": self.source_names_, "residual_kind": self.residual_kind_,
                 "residual_features": self.residual_features_}
        P.write_manifest(d, CLASS, self._params_json(), libraries=("xgboost", "numpy"),
                         training_data_sha256=self.training_data_sha256_, n_train=self.n_train_,
                         device=self.device_, state=state)
        return d

    @classmethod
    def load(cls, model_dir: str | Path) -> TransferModel:
        d = Path(model_dir)
        doc = P.read_manifest(d, CLASS)
        try:
            model = cls(**doc["params"])
            state = doc["state"]
            model.source_names_ = list(state["source_names"])
            model.residual_kind_ = state["residual_kind"]
            # Models saved before the dead-op cost feature have no entry: compact only.
            model.residual_features_ = state.get("residual_features", "compact")
            if model.residual_features_ not in ("compact", "compact+dead"):
                raise KeyError(f"residual_features {model.residual_features_!r}")
        except (TypeError, KeyError) as exc:
            raise ModelFileError(f"{d / P.MANIFEST}: does not describe a TransferModel ({exc}); "
                                 "fit the model again") from None
        a = P.load_arrays(d / "arrays.npz")
        try:
            model.source_lat_ = a["source_lat"]
            model.source_scale_ = a["source_scale"]
            model.weights_ = a["weights"]
            model.floor_ = float(a["floor"][0])
        except KeyError as exc:
            raise ModelFileError(f"{d / 'arrays.npz'}: lacks {exc}; fit the model again") from None
        model.ridge_ = Ridge.from_arrays(a, "ridge_") if model.residual_kind_ == "ridge" else None
        model.gbdt_ = None
        if model.residual_kind_ == "gbdt":
            import xgboost as xgb

            from predictors.gbdt import GBDTModel

            g = GBDTModel(random_state=model.random_state, linear_base=False)
            g.booster_ = xgb.XGBRegressor(**g._booster_params())
            g.booster_.load_model(str(d / "model.json"))
            g.base_ = None
            g.n_train_ = int(doc.get("n_train", 0))
            model.gbdt_ = g
            model.gbase_ = Ridge.from_arrays(a, "gbase_")
        model.n_train_ = int(doc.get("n_train", 0))
        model.device_ = doc.get("device", "")
        model.training_data_sha256_ = doc.get("training_data_sha256", "")
        return model
