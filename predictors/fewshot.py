"""Sample-efficiency curves: how many measured networks a predictor needs on a device.

Protocol (the one the issue fixes, used by the CLI, the benchmark and the
tests): for a target table, choose k training cells with a seed (``random`` or
``diverse``, :mod:`predictors.sampling`), fit, predict *every other cell* of
the table, and score Spearman, Kendall tau, MAPE and ±10% accuracy; average
over seeds. A source table of the target's own device (same device name) is
never used.

``curve(...)`` returns rows (dicts); ``write_curve(rows, path)`` writes the CSV
and a PNG plot next to it; ``benchmark(refdata_dir)`` is the leave-one-out
study over a directory of tables, returned as markdown.
"""

from __future__ import annotations

import csv
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from costmodels.harness import metrics
from costmodels.network import Network
from costmodels.spaces import nb201
from costmodels.tables import LatencyTable, read_table
from predictors import features as F
from predictors import sampling
from predictors.learned import make
from predictors.rows import Rows

CURVE_COLUMNS = ("model", "target", "select", "k", "seeds", "spearman", "spearman_std",
                 "kendall", "mape", "acc10", "n_test", "fit_s")
# HELP (Lee et al., NeurIPS 2021), Spearman with 10 samples, by device type.
HELP_10 = {"titan_rtx_256": 0.987, "gold_6226": 0.989, "fpga": 0.985, "pixel2": 0.802,
           "raspi4": 0.890, "eyeriss": 0.940}


@dataclass
class Target:
    """A target table with its networks, features and the sources' latencies of its cells."""

    table: LatencyTable
    nets: list[Network]
    x: np.ndarray             # (n, len(FEATURE_NAMES))
    sources: list[LatencyTable]
    source_lat: np.ndarray | None  # (n, m) ms, NaN where a source lacks the cell
    reports: list = field(default_factory=list)  # FewShotModel.report_ of each fit
    rows: Rows | None = None  # rows of the source matrix (default: NB201's index)
    idx: np.ndarray | None = None  # row of each target cell (default: its NB201 index)
    _matrix: np.ndarray | None = None
    left_out: list[LatencyTable] = field(default_factory=list)  # sources that were the target

    @property
    def y(self) -> np.ndarray:
        return self.table.latency_ms

    def source_rows(self) -> tuple[Rows, np.ndarray, np.ndarray]:
        """(rows, the full source matrix, the target cells' rows), the matrix built once."""
        rows = self.rows if self.rows is not None else Rows()
        if self._matrix is None:
            self._matrix = rows.matrix(self.sources)
        idx = self.idx if self.idx is not None else self.table.arch_index
        return rows, self._matrix, idx


def other_sources(target: LatencyTable, sources: Sequence[LatencyTable], device: str = ""
                  ) -> tuple[list[LatencyTable], list[LatencyTable]]:
    """(sources kept, sources left out): a table of the target's device (by name: ``device``,
    default the target table's) or one holding the target's figures on every network of
    the target (:func:`costmodels.tables.holds_figures_of`: the target's table under another
    file name) is not a source of its own target: it would leak the target's values into
    its own prediction."""
    from costmodels.tables import holds_figures_of

    device = device or target.device
    kept, out = [], []
    for s in sources:
        (out if s.device == device or holds_figures_of(s, target) else kept).append(s)
    return kept, out


def _as_table(t: str | Path | LatencyTable) -> LatencyTable:
    return t if isinstance(t, LatencyTable) else read_table(t, duplicates="mean")


def prepare(target: str | Path | LatencyTable, sources: Sequence[str | Path | LatencyTable] = (),
            dataset: str | None = "cifar10", space="nb201", batch: int = 1,
            nets: Sequence[Network] | None = None, duplicates: str = "mean") -> Target:
    """Load the tables, build the target's networks (in ``space``, a spec or a
    :class:`~costmodels.spaces.SearchSpace`) and their features once.

    ``nets``: the target's networks already built (one per row of the target table, in
    its order), to skip building them again. ``duplicates``: what :func:`read_table` does
    with a network listed twice (the CLI's default is ``error``)."""
    from costmodels.spaces import SearchSpace, get_space

    sp = space if isinstance(space, SearchSpace) else get_space(space)
    dataset = sp.check_dataset(dataset)

    def load(t, absent: str = "error"):
        return t if isinstance(t, LatencyTable) else read_table(t, duplicates=duplicates,
                                                                 space=sp, absent=absent)

    table = load(target)
    srcs, dropped = other_sources(table, [load(s, "skip") for s in sources])
    if nets is None:
        nets = [sp.build_network(a, dataset, batch) for a in table.arch_str]
    elif len(nets) != len(table):
        raise ValueError(f"{len(nets)} networks for a target table of {len(table)} rows")
    nets = list(nets)
    tgt = Target(table, nets, F.features(nets), srcs, None, left_out=dropped)
    if srcs:
        tgt.rows = Rows.for_networks(nets, srcs)
        tgt.idx = tgt.rows.index(nets)
        tgt._matrix = tgt.rows.matrix(srcs)
        tgt.source_lat = tgt._matrix[tgt.idx]
    return tgt


def _fit_predict(model: str, tgt: Target, train: np.ndarray, test: np.ndarray, seed: int,
                 params: dict) -> np.ndarray:
    """Fit ``model`` on rows ``train`` of the target, predict rows ``test`` (ms)."""
    from predictors.gbdt import GBDTModel, HybridModel
    from predictors.select import FewShotModel
    from predictors.transfer import TransferModel

    needs_sources = model in ("transfer", "fewshot")
    est = make(model, sources=tgt.sources if needs_sources else (), **params)
    if "random_state" in getattr(est, "get_params", dict)():
        est.set_params(random_state=seed)
    y = tgt.y
    if isinstance(est, GBDTModel) and not isinstance(est, HybridModel) and not est.prior:
        return est.fit_features(tgt.x[train], y[train]).predict_features(tgt.x[test])
    if isinstance(est, (TransferModel, FewShotModel)):
        rows, lat, idx = tgt.source_rows()
        est.use_matrix(lat, [t.device for t in tgt.sources], rows)
        est.fit_arrays(idx[train], tgt.x[train], y[train])
        if isinstance(est, FewShotModel):
            tgt.reports.append(est.report_)
        return est.predict_arrays(idx[test], tgt.x[test])
    est.fit([tgt.nets[i] for i in train], y[train])
    return np.array([e.latency_ms for e in est.estimate_many([tgt.nets[i] for i in test])])


def score(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """Spearman, Kendall tau, MAPE (%) and ±10% accuracy (0..1)."""
    return {"spearman": metrics.spearman(y_true, y_pred),
            "kendall": metrics.kendall(y_true, y_pred),
            "mape": metrics.mape(y_true, y_pred),
            "acc10": metrics.acc_within(y_true, y_pred, 10)}


def point(tgt: Target, model: str, k: int, seeds: int = 5, select: str = "random",
          params: dict | None = None) -> dict:
    """One point of the curve: ``model`` with ``k`` training cells, averaged over ``seeds``."""
    n = len(tgt.y)
    if k >= n:
        from predictors.base import PredictorError

        raise PredictorError(f"k={k} leaves no test cell in a table of {n}; use smaller "
                             "--samples")
    runs = []
    fit_s = 0.0
    for seed in range(seeds):
        train = sampling.select(select, k, seed, tgt.x, tgt.source_lat)
        test = np.setdiff1d(np.arange(n), train)
        t0 = time.perf_counter()
        pred = _fit_predict(model, tgt, train, test, seed, dict(params or {}))
        fit_s += time.perf_counter() - t0
        runs.append(score(tgt.y[test], pred))
    sp = np.array([r["spearman"] for r in runs])
    row = {"model": model, "target": tgt.table.device, "select": select, "k": k,
           "seeds": seeds, "spearman_std": float(sp.std()), "n_test": n - k,
           "fit_s": fit_s / seeds}
    for key in ("spearman", "kendall", "mape", "acc10"):
        row[key] = float(np.mean([r[key] for r in runs]))
    return {c: row[c] for c in CURVE_COLUMNS}


def curve(target: str | Path | LatencyTable, sources: Sequence[str | Path | LatencyTable] = (),
          model: str = "transfer", samples: Sequence[int] = (10, 20, 50, 100, 1000),
          seeds: int = 5, select: str = "random", dataset: str | None = "cifar10",
          params: dict | None = None, space="nb201") -> list[dict]:
    """The sample-efficiency curve of ``model`` on ``target``: one row per k (see CURVE_COLUMNS)."""
    tgt = prepare(target, sources if model in ("transfer", "fewshot") else (), dataset,
                  space=space)
    return [point(tgt, model, int(k), seeds, select, params) for k in samples]


def write_curve(rows: Sequence[dict], path: str | Path) -> Path:
    """Write the rows as CSV at ``path`` and a plot at ``path`` with suffix ``.png``."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    from costmodels.tables import atomic_output

    with atomic_output(path, "w", newline="") as fh:
        w = csv.DictWriter(fh, fieldnames=list(CURVE_COLUMNS))
        w.writeheader()
        for r in rows:
            w.writerow({c: (f"{r[c]:.6g}" if isinstance(r[c], float) else r[c])
                        for c in CURVE_COLUMNS})
    return plot_curve(rows, path.with_suffix(".png"))


def plot_curve(rows: Sequence[dict], png: str | Path) -> Path:
    """Spearman and ±10% accuracy against k (log axis), one line per model/target/select."""
    from costmodels.harness.report import pyplot, save_png

    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["model"], r["target"], r["select"]), []).append(r)
    for (m, t, s), rs in groups.items():
        rs = sorted(rs, key=lambda r: r["k"])
        k = [r["k"] for r in rs]
        axes[0].errorbar(k, [r["spearman"] for r in rs], yerr=[r["spearman_std"] for r in rs],
                         marker="o", capsize=3, label=f"{m} on {t} ({s})")
        axes[1].plot(k, [100 * r["acc10"] for r in rs], marker="o", label=f"{m} on {t} ({s})")
    for ax, lab in zip(axes, ("Spearman (untrained cells)", "±10% accuracy (%)"), strict=True):
        ax.set_xscale("log")
        ax.set_xlabel("k measured networks")
        ax.set_ylabel(lab)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=7)
    fig.tight_layout()
    png = Path(png)
    save_png(fig, png, 120)
    plt.close(fig)
    return png


# ------------------------------------------------------------------ benchmark
def _help_type(device: str) -> str:
    d = device.lower()
    if any(s in d for s in ("titan", "1080", "gpu", "rtx", "v100", "a100")):
        return "titan_rtx_256"
    if any(s in d for s in ("gold", "silver", "xeon", "cpu", "i7", "epyc")):
        return "gold_6226"
    if "fpga" in d:
        return "fpga"
    if "rasp" in d:
        return "raspi4"
    if "eyeriss" in d:
        return "eyeriss"
    return "pixel2"  # phones and anything else: HELP's weakest published figure


def predict_all_timing(model: str, train_k: int = 1000, dataset: str = "cifar10",
                       table: LatencyTable | None = None) -> dict[str, float]:
    """Seconds to build all 15,625 networks, and to predict them all (features included)."""
    t0 = time.perf_counter()
    nets = [nb201.build_network(i, dataset) for i in range(nb201.NUM_ARCHS)]
    build_s = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    train = rng.choice(nb201.NUM_ARCHS, train_k, replace=False)
    if table is not None:
        y = table.latency_ms[np.searchsorted(table.arch_index, train)]
    else:
        y = np.array([nets[i].macs for i in train]) * 1e-7 + 1.0
    est = make(model)
    t0 = time.perf_counter()
    est.fit([nets[i] for i in train], y)
    fit_s = time.perf_counter() - t0
    F.clear_caches()
    t0 = time.perf_counter()
    est.estimate_many(nets)
    return {"build_s": build_s, "fit_s": fit_s, "predict_all_s": time.perf_counter() - t0}


def benchmark(refdata_dir: str | Path, seeds: int = 5, k_transfer: int = 10,
              k_scratch: int = 100, dataset: str = "cifar10", timings: bool = True,
              progress: bool = False) -> str:
    """Leave-one-out over every table in ``refdata_dir``: markdown with the numbers.

    Per target: ``transfer`` with k_transfer cells (random and diverse
    selection) from all other tables, GBDT from scratch with k_transfer and
    k_scratch cells; then predict-all-15,625 timings of GBDT and GNN.
    ``progress``: one line per device on stderr. Takes about 2 minutes on 2 cores.
    """
    paths = sorted(Path(refdata_dir).glob("*.csv"))
    tables = [read_table(p, duplicates="mean") for p in paths]
    lines = [f"### Few-shot latency prediction, leave-one-out over {len(tables)} devices "
             f"({seeds} seeds; Spearman on all untrained cells)", "",
             f"| target | transfer k={k_transfer} random | transfer k={k_transfer} diverse | "
             f"HELP k=10 (type) | GBDT k={k_transfer} | GBDT k={k_scratch} | "
             f"transfer k={k_scratch} | ±10% acc GBDT k={k_scratch} | "
             f"±10% acc transfer k={k_scratch} |",
             "|---|---|---|---|---|---|---|---|---|"]
    acc: dict[str, list[float]] = {"tr": [], "trd": [], "g10": [], "g100": [], "t100": []}
    for tab in tables:
        tgt = prepare(tab, tables, dataset)
        tr = point(tgt, "transfer", k_transfer, seeds, "random")
        trd = point(tgt, "transfer", k_transfer, seeds, "diverse")
        g10 = point(tgt, "gbdt", k_transfer, seeds, "random")
        g100 = point(tgt, "gbdt", k_scratch, seeds, "random")
        t100 = point(tgt, "transfer", k_scratch, seeds, "random")
        ht = _help_type(tab.device)
        if progress:
            print(f"{tab.device}: transfer k={k_transfer} {tr['spearman']:.3f}, GBDT k={k_scratch} "
                  f"{g100['spearman']:.3f}", file=sys.stderr, flush=True)
        for key, r in zip(acc, (tr, trd, g10, g100, t100), strict=True):
            acc[key].append(r["spearman"])
        lines.append(f"| {tab.device} | {tr['spearman']:.3f} ± {tr['spearman_std']:.3f} | "
                     f"{trd['spearman']:.3f} | {HELP_10[ht]:.3f} ({ht}) | {g10['spearman']:.3f} | "
                     f"{g100['spearman']:.3f} | {t100['spearman']:.3f} | "
                     f"{100 * g100['acc10']:.1f}% | {100 * t100['acc10']:.1f}% |")
    lines.append(f"| **mean** | {np.mean(acc['tr']):.3f} | {np.mean(acc['trd']):.3f} | "
                 f"{np.mean(list(HELP_10.values())):.3f} (HELP mean) | {np.mean(acc['g10']):.3f} | "
                 f"{np.mean(acc['g100']):.3f} | {np.mean(acc['t100']):.3f} | | |")
    if timings:
        lines += ["", "### Predicting all 15,625 NAS-Bench-201 cells (this machine, fresh "
                  "feature caches; fitted on 1,000 cells)", "",
                  "| model | build networks (s) | fit 1,000 (s) | features + predict all (s) |",
                  "|---|---|---|---|"]
        for m in ("gbdt", "gnn"):
            t = predict_all_timing(m, table=tables[0] if tables else None, dataset=dataset)
            lines.append(f"| {m} | {t['build_s']:.2f} | {t['fit_s']:.1f} | "
                         f"{t['predict_all_s']:.2f} |")
    return "\n".join(lines) + "\n"


# ------------------------------------------------------------------ noise ceiling
CEILING_DRAWS = 5


def swap_pairs(arch_strs: Sequence[str]) -> np.ndarray | None:
    """Row pairs (n, 2) of NB201 cells that run exactly the same kernels; None off NB201.

    A cell whose edge 2<-1 is ``none`` and the cell with nodes 1 and 2 swapped
    (edges 1<-0 and 2<-0 exchanged, and 3<-1 and 3<-2) compute the same function
    with the same operations on the same shapes: their true latencies are equal,
    so the difference of their measurements is measurement noise alone. Only pairs
    with both cells in the table and different arch strings count.
    """
    from costmodels.errors import UnknownArchitecture

    e = {edge: i for i, edge in enumerate(nb201.EDGES)}
    row = {s: i for i, s in enumerate(arch_strs)}
    out = []
    for s, i in row.items():
        try:
            ops = list(nb201.parse_arch(s))
        except UnknownArchitecture:
            return None
        if ops[e[(2, 1)]] != 0:
            continue
        sw = list(ops)
        sw[e[(1, 0)]], sw[e[(2, 0)]] = ops[e[(2, 0)]], ops[e[(1, 0)]]
        sw[e[(3, 1)]], sw[e[(3, 2)]] = ops[e[(3, 2)]], ops[e[(3, 1)]]
        j = row.get(nb201.arch_str(sw))
        if j is not None and i < j:
            out.append((i, j))
    return np.asarray(out, dtype=np.int64).reshape(-1, 2)


def noise_ceiling(table: LatencyTable | str | Path, draws: int = CEILING_DRAWS,
                  seed: int = 0) -> dict | None:
    """What a perfect predictor would score on ``table``, from its measurement noise.

    Method (``"swap-pairs, empirical"``): the log-latency differences ``d`` of the
    :func:`swap_pairs` (equal true latency) give the noise; one measurement's noise
    is resampled from ``±d / sqrt(2)`` (random sign) and added to the table's log
    latencies, and the Spearman and ±10% accuracy of the table against that noisy
    copy are averaged over ``draws`` draws. Assumptions: the noise is independent
    between cells, of the same distribution for every cell (multiplicative, i.e.
    additive in log latency) and for the two cells of a pair; the table's values
    are themselves noisy, so ranking them against a noisy copy slightly overstates
    their spread (the estimate is, if anything, optimistic). Empirical differences,
    not a Gaussian, because some devices' noise is heavy-tailed.

    Returns None for a table without such pairs (another space, or too few cells)
    and for one that gives both cells of every pair the same figure (a table measured
    once per class of equivalent cells: its noise is not observable this way); else
    ``pairs``, ``noise_sd`` (log-latency sd of one measurement, ~relative),
    ``pair_rho`` (Spearman between the two cells of each pair), ``rho`` (ceiling
    Spearman), ``acc10`` (ceiling ±10% accuracy, 0..1), ``pair_within10`` (fraction
    of pairs whose two measurements are both within ±10% of their mean), ``method``.
    """
    table = _as_table(table)
    pairs = swap_pairs(table.arch_str)
    if pairs is None or len(pairs) < 10:
        return None
    ly = np.log(table.latency_ms)
    a, b = table.latency_ms[pairs[:, 0]], table.latency_ms[pairs[:, 1]]
    noise = (ly[pairs[:, 0]] - ly[pairs[:, 1]]) / np.sqrt(2.0)
    if not noise.any():
        return None
    rng = np.random.default_rng(seed)
    rho, acc = [], []
    for _ in range(draws):
        e = rng.choice(noise, len(ly)) * rng.choice((-1.0, 1.0), len(ly))
        rho.append(metrics.spearman(ly, ly + e))
        acc.append(metrics.acc_within(table.latency_ms, table.latency_ms * np.exp(e), 10))
    return {"pairs": len(pairs), "noise_sd": float(np.std(noise)),
            "pair_rho": float(metrics.spearman(a, b)), "rho": float(np.mean(rho)),
            "acc10": float(np.mean(acc)),
            "pair_within10": float(np.mean(np.abs(a - b) / (a + b) <= 0.1)),
            "method": "swap-pairs, empirical"}
