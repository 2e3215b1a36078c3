"""Present a comparison: a ranked terminal table, ``report.md``, ``metrics.csv``, PNG figures.

Everything here reads a :class:`~costmodels.harness.compare.ComparisonResult`
(and optionally a :class:`ModelsResult` and a few-shot curve CSV); nothing
re-runs a backend. Figures use matplotlib's Agg backend (no display needed).
"""

from __future__ import annotations

import csv
import datetime as _dt
import math
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from costmodels.harness import metrics
from costmodels.harness.compare import PROXIES, BackendResult, ComparisonResult, ModelsResult
from costmodels.harness.scoring import rank
from costmodels.tables import atomic_output

__all__ = ["print_table", "write_report", "write_metrics_csv", "write_predictions_csv",
           "plot_scatter", "plot_rank_bars", "plot_curves", "recommend", "table_rows",
           "log_scale_factor"]

#: short headers for the terminal, same order as COLUMNS
SHORT = ("backend", "coverage", "τ", "ρ", "r", "MAPE%", "±10%", "top-k", "build", "µs/net")
COLUMNS = ("backend", "coverage", "Kendall τ", "Spearman ρ", "Pearson r", "MAPE %", "±10 %",
           "top-k overlap", "build cost", "query µs/net")
UNCAL = "†"
OTHER = "‡"


# ----------------------------------------------------------------------------- formatting
def _f(v: float, fmt: str = ".3f") -> str:
    return "—" if v is None or (isinstance(v, float) and math.isnan(v)) else format(v, fmt)


def build_cost(r: BackendResult) -> str:
    """``"0 meas. + 0.00 s"``, ``"100 meas. + 3.2 s fit"``, ``"? meas. + 0.4 s"``."""
    meas = "?" if r.build_measurements is None else f"{r.build_measurements:,}"
    verb = " fit" if r.fitted else ""
    return f"{meas} meas. + {r.build_s:.2f} s{verb}"


def coverage(r: BackendResult) -> str:
    return f"{r.n_covered:,}/{r.n_total:,}" + ("" if r.n_covered == r.n_total else " ⚠")


def _mark(r: BackendResult) -> str:
    """† uncalibrated (scale arbitrary), ‡ reference only (another device): no absolute errors."""
    return UNCAL if not r.calibrated else OTHER if r.reference_only else ""


def absolute(r: BackendResult) -> bool:
    """Do absolute errors (MAPE, ±10%) of this backend mean something on this device?"""
    return not _mark(r)


def table_rows(result: ComparisonResult | ModelsResult) -> list[list[str]]:
    """The ranked table as strings, one row per backend, columns as :data:`COLUMNS`.

    Absolute-error columns of uncalibrated backends show ``—†`` (their scale is
    arbitrary; only rank metrics mean something).
    """
    key = "kendall" if isinstance(result, ComparisonResult) else "spearman"
    rows = []
    for r in result.ranked(key):
        m = r.metric
        mark = _mark(r)
        k = m("topk_k")
        rows.append([
            r.name + (f" {mark}" if mark else ""), coverage(r), _f(m("kendall")),
            _f(m("spearman")), _f(m("pearson")),
            f"—{mark}" if mark else _f(m("mape"), ".1f"),
            f"—{mark}" if mark else _f(100 * m("acc10"), ".1f"),
            (f"{_f(m('topk'), '.2f')} (k={int(k)})" if not math.isnan(k) else "—"),
            build_cost(r), _f(r.query_us, ",.0f" if r.query_us >= 1000 else ".1f")])
    return rows


def _title(result: ComparisonResult) -> str:
    mode = (f"fit on {result.train_samples} rows (seed {result.seed}), scored on the other "
            f"{len(result.test_rows):,}" if result.train_samples
            else f"{len(result.test_rows):,} cells scored")
    return (f"Cost estimators vs measured latency on {result.device} "
            f"({_space_words(result)}; {mode})")


def _space_words(result: ComparisonResult) -> str:
    names = {"nb201": "NAS-Bench-201", "fbnet": "FBNet"}
    label = names.get(result.space, result.space)
    return f"{label} {result.dataset}".strip()


def print_table(result: ComparisonResult, console=None) -> None:
    """The ranked table (by Kendall tau) in the terminal, with errors and notes below."""
    from rich.table import Table

    from costmodels.progress import console as progress_console

    console = console or progress_console()
    if not console.is_terminal:  # piped or captured: do not squeeze to 80 columns
        console = progress_console(file=console.file, width=max(console.width, 140))
    t = Table(title=_title(result), title_justify="left")
    for i, col in enumerate(SHORT):
        t.add_column(col, justify="left" if i == 0 else "right", no_wrap=i in (0, 7, 8))
    for row in table_rows(result):
        t.add_row(*row)
    console.print(t)
    console.print("  τ Kendall, ρ Spearman, r Pearson; ±10%: share of cells within 10%; top-k: "
                  "share of the k fastest measured among the k fastest estimated; build: "
                  "measurements + seconds to build here", markup=False, highlight=False)
    for line in _footnotes(result.results):
        console.print(f"  {line}", markup=False, highlight=False)
    if result.build_errors:
        name, why = next(iter(result.build_errors.items()))
        console.print(f"  ⚠ {len(result.build_errors)} truth row(s) could not be built as "
                      f"networks and are not scored (first: {name}: {why})", markup=False,
                      highlight=False)


def _footnotes(results: Sequence[BackendResult]) -> list[str]:
    lines = []
    if any(not r.calibrated for r in results):
        lines.append(f"{UNCAL} uncalibrated proxy: its scale is arbitrary, so only the rank "
                     "metrics (Kendall, Spearman, top-k) mean something.")
    for r in results:
        if r.first_error:
            lines.append(f"⚠ {r.name}: {r.n_covered:,}/{r.n_total:,} covered; first error: "
                         f"{r.first_error}")
        if r.note and r.calibrated:
            lines.append(f"note {r.name}: {r.note}")
    other = [r.name for r in results if r.reference_only]
    if other:
        lines.append(f"{OTHER} {', '.join(other)}: a model of other hardware, ranked against "
                     "this device for illustration only: absolute errors are not meaningful and "
                     "it is never recommended.")
    return lines


# ----------------------------------------------------------------------------- recommendation
def _cost(r: BackendResult) -> tuple[float, float]:
    return (math.inf if r.build_measurements is None else r.build_measurements, r.build_s)


def _clearly_cheaper(a: BackendResult, b: BackendResult) -> bool:
    """Fewer measurements, or the same and at least 5 s and 2x less time to build."""
    (ma, sa), (mb, sb) = _cost(a), _cost(b)
    return ma < mb or (ma == mb and sb - sa > 5 and sb > 2 * sa)


# Below this many scored cells the advice says it is only a first look.
FEW_CELLS = 30


def recommend(result: ComparisonResult, tau_margin: float = 0.02) -> str:
    """One paragraph: which estimator to use on this device, derived from the numbers."""
    # every scored cell covered, as rank() puts first: a backend that failed on some is
    # scored on fewer (possibly easier) cells and is named below instead
    full = [r for r in result.results if r.n_total and r.n_covered == r.n_total
            and not math.isnan(r.metric("kendall")) and not r.reference_only
            and not r.in_sample]
    partial = [r.name for r in result.results if r.n_total and 0 < r.n_covered < r.n_total
               and not r.reference_only and not r.in_sample]
    if not full:
        scored = [r for r in result.results if r.n_covered]
        if scored and all(r.n_covered < 2 for r in result.results):
            return (f"Only {max(r.n_covered for r in result.results)} cell was scored: a "
                    "ranking needs at least two, and a choice tens; measure more networks.")
        truth = np.concatenate([r.y_true for r in scored]) if scored else np.zeros(0)
        if len(truth) > 1 and np.ptp(truth) == 0:
            return (f"Every scored cell has the same measured latency ({truth[0]:g} ms): there "
                    "is nothing to rank, so no estimator can be recommended from this run; "
                    "check the truth table.")
        if partial:
            return (f"No estimator covered every scored cell ({', '.join(partial)} covered "
                    "only part of them, see the errors above), so none can be recommended "
                    "from this run.")
        return ("No estimator covered the truth cells (see the errors above), so none can be "
                "recommended from this run.")
    ranked = rank(full, "kendall")
    best = ranked[0]
    n = int(best.metric("n"))  # >= 2: a Kendall tau was computed
    parts = []
    if n < FEW_CELLS:
        # the spread of Kendall's tau between unrelated rankings of n items
        se = math.sqrt(2 * (2 * n + 5) / (9 * n * (n - 1)))
        parts.append(f"**Only {n} cells were scored**: a Kendall τ over {n} cells moves by "
                     f"about ±{se:.2f} by chance alone, so what follows is a first look, not "
                     "a choice: measure more networks.")
    parts += [f"On {result.device}, **{best.name}** ranks networks best (Kendall τ = "
             f"{best.metric('kendall'):.3f}, Spearman ρ = {best.metric('spearman'):.3f}, "
             f"{100 * best.metric('topk'):.0f}% of the {int(best.metric('topk_k'))} fastest "
             f"cells found)" + (", with no measurement at all." if best.build_measurements == 0
                                else ".")]
    near = [r for r in ranked if r.metric("kendall") >= best.metric("kendall") - tau_margin]
    cheap = min(near, key=_cost)
    if _clearly_cheaper(cheap, best):
        parts.append(f"**{cheap.name}** comes within {tau_margin} of that τ "
                     f"({cheap.metric('kendall'):.3f}) for less build cost ({build_cost(cheap)} "
                     f"against {build_cost(best)}), so it is the economical choice for ranking.")
    cal = [r for r in full if absolute(r) and not math.isnan(r.metric("mape"))]
    useful = None  # the estimator recommended for absolute latency, if any
    if cal:
        acc = min(cal, key=lambda r: r.metric("mape"))
        if acc.metric("acc10") >= 0.9 or acc.metric("mape") <= 20:
            useful = acc
        numbers = (f"MAPE {acc.metric('mape'):.1f}%, {100 * acc.metric('acc10'):.0f}% of cells "
                   "within ±10%")
        if acc.metric("acc10") >= 0.9:
            parts.append(f"For absolute latency, **{acc.name}** is the most accurate ({numbers}); "
                         "use it when a latency budget must be met.")
        elif acc.metric("mape") <= 20:
            parts.append(f"For absolute latency, **{acc.name}** is the most accurate ({numbers}): "
                         "good enough to screen against a budget, but measure the finalists.")
        else:
            parts.append(f"No estimator here predicts absolute latency usefully (best: {acc.name}, "
                         f"{numbers}); use them to rank, and measure the networks whose latency "
                         "must meet a budget.")
        conn = acc.metric("mape_connected")
        if not math.isnan(conn) and conn < acc.metric("mape") / 2 and acc.metric("mape") >= 1:
            parts.append(f"Over connected cells only its MAPE is {conn:.1f}% "
                         f"({100 * acc.metric('acc10_connected'):.0f}% within ±10%): the "
                         f"{int(acc.metric('n') - acc.metric('n_connected'))} cells with no path "
                         "from input to output, whose measured latency is near zero, dominate "
                         "the relative error.")
    else:
        parts.append("No calibrated estimator is left in this advice, so absolute latencies "
                     "are not predicted here; use these to rank only.")
    proxies = [r for r in full if r.spec in PROXIES]
    if proxies:
        floor = max(proxies, key=lambda r: r.metric("kendall"))
        # fitted to ms on measured rows (--train-samples), a proxy is no longer free
        proxy = "the free proxy" if not floor.build_measurements else "the proxy"
        named = [r for r in (best, cheap, useful) if r is not None]  # recommended above
        worse = [r for r in full if r not in proxies and r not in named
                 and r.metric("kendall") <= floor.metric("kendall")]
        costly = [r.name for r in worse if _clearly_cheaper(floor, r)]
        free = [r.name for r in worse if not _clearly_cheaper(floor, r)]
        one = len(costly) == 1
        if costly:
            parts.append(f"{proxy.capitalize()} {floor.name} (τ = {floor.metric('kendall'):.3f}) is "
                         f"not beaten by {', '.join(costly)}, which {'is' if one else 'are'} "
                         f"not worth {'its' if one else 'their'} build cost on this device.")
        if free:
            parts.append(f"{', '.join(free)} {'ranks' if len(free) == 1 else 'rank'} no better "
                         f"than {proxy} {floor.name}.")
        if floor is not best and all(r.metric("kendall") > floor.metric("kendall")
                                     for r in full if r not in proxies):
            parts.append(f"Every other estimator beats {proxy} {floor.name} "
                         f"(τ = {floor.metric('kendall'):.3f}).")
    inside = [r.name for r in result.results if r.in_sample]
    if inside:
        parts.append(f"{', '.join(inside)} {'was' if len(inside) == 1 else 'were'} scored on "
                     f"cells {'it was' if len(inside) == 1 else 'they were'} fitted on "
                     f"(in-sample) and {'is' if len(inside) == 1 else 'are'} left out of this "
                     "advice; score a saved model on a table it was not fitted on.")
    if partial:
        parts.append(f"{', '.join(partial)} covered only part of the cells and "
                     f"{'is' if len(partial) == 1 else 'are'} left out of this advice.")
    return " ".join(parts)


# ----------------------------------------------------------------------------- files
def _has_disconnected(result) -> bool:
    """Whether a scored network of ``result`` has no path from input to output (NB201
    cells): only then do metrics over the connected ones say something more."""
    return any(r.connected.size and not r.connected.all()
               for r in getattr(result, "results", ()) if hasattr(r, "connected"))


# the leading columns of metrics.csv and predictions.csv (check_report_dir knows them by these)
METRICS_HEAD = ("backend", "spec", "n_total", "n_covered", "coverage", "build_measurements",
                "build_s", "query_us", "fitted", "calibrated", "first_error", "note")
PREDICTIONS_HEAD = ("arch_index", "arch_str", "latency_ms")


def write_metrics_csv(result: ComparisonResult | ModelsResult, path: str | Path) -> Path:
    """One row per backend: coverage, costs, flags and every metric of :func:`metrics.summary`."""
    path = Path(path)
    keys = list(metrics.METRIC_KEYS)
    if _has_disconnected(result):  # NB201 cells with no path: the metrics without them too
        keys += [f"{k}_connected" for k in metrics.METRIC_KEYS]
    keys += sorted({k for r in result.results for k in r.metrics if k.startswith("energy_")})
    key = "kendall" if isinstance(result, ComparisonResult) else "spearman"
    with atomic_output(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow([*METRICS_HEAD, *keys])
        for r in result.ranked(key):
            w.writerow([r.name, r.spec, r.n_total, r.n_covered, f"{r.coverage:.4f}",
                        "" if r.build_measurements is None else r.build_measurements,
                        f"{r.build_s:.4f}", f"{r.query_us:.3f}", int(r.fitted), int(r.calibrated),
                        r.first_error or "", r.note]
                       + ["" if math.isnan(r.metric(k)) else repr(r.metric(k)) for k in keys])
    return path


def write_predictions_csv(result: ComparisonResult, truth_latency: np.ndarray,
                          arch_index: np.ndarray, arch_str: Sequence[str], path: str | Path
                          ) -> Path:
    """Scored cells with the measured latency and each backend's estimate (empty = failed)."""
    path = Path(path)
    cols = {r.name: r.by_row() for r in result.results}
    with atomic_output(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow([*PREDICTIONS_HEAD, *(f"{n}_ms" for n in cols)])
        for row in result.test_rows.tolist():
            idx = int(arch_index[row])
            w.writerow(["" if idx < 0 else idx, arch_str[row], repr(float(truth_latency[row]))]
                       + [repr(c[row]) if row in c else "" for c in cols.values()])
    return path


# ----------------------------------------------------------------------------- figures
PNG_SOFTWARE = "costmodels"  # in the Software text of every figure costmodels writes


def save_png(fig, path: str | Path, dpi: int) -> None:
    """Save ``fig`` as a PNG whose Software text says costmodels wrote it: a later run
    replaces only such a file where it writes a figure of its own naming."""
    import matplotlib

    fig.savefig(path, dpi=dpi, metadata={
        "Software": f"{PNG_SOFTWARE} (Matplotlib {matplotlib.__version__})"})


def pyplot():
    """matplotlib's pyplot on the file-only Agg backend, its font lookup quiet: a stale font
    cache (one written by a since-deleted environment) makes it log a ``findfont`` line per
    missing font on stderr, and it falls back to a font it has either way."""
    import logging

    import matplotlib

    matplotlib.use("Agg")
    logging.getLogger("matplotlib.font_manager").setLevel(logging.ERROR)
    import matplotlib.pyplot as plt

    return plt


def _log_ticks(axis, lo: float, hi: float) -> None:
    """Plain-number ticks on a log axis (1, 2, 5 per decade when it spans few decades)."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    subs = (1.0,) if hi / lo > 1e3 else (1.0, 2.0, 5.0)
    axis.set_major_locator(LogLocator(base=10, subs=subs))
    axis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    axis.set_minor_formatter(NullFormatter())


def log_scale_factor(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """The c minimising sum (log y_true - log(c * y_pred))^2: exp(mean(log t - log p)).

    Used to draw uncalibrated proxies (raw MACs) on the latency axis: their scale
    is arbitrary, so they are scaled by one constant fitted on log values; the
    ranking, and every rank metric, is unchanged. Positive pairs only.
    """
    ok = (y_true > 0) & (y_pred > 0)
    if not ok.any():
        return 1.0
    return float(np.exp(np.mean(np.log(y_true[ok]) - np.log(y_pred[ok]))))


def plot_scatter(results: Sequence[BackendResult], path: str | Path, *, device: str,
                 unit: str = "ms") -> Path | None:
    """Predicted vs measured latency, one panel per backend (log axes, y = x, ±10% band)."""
    shown = [r for r in results if r.n_covered >= 2]
    if not shown:
        return None
    plt = pyplot()
    cols = min(3, len(shown))
    rows = math.ceil(len(shown) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.6 * cols, 4.4 * rows), squeeze=False)
    for ax, r in zip(axes.flat, shown, strict=False):
        t, p = r.y_true, r.y_pred.copy()
        title = r.name
        if not absolute(r):
            c = log_scale_factor(t, p)
            p = p * c
            why = "other hardware" if r.calibrated else "uncalibrated"
            title += f"\n{why}: scaled ×{c:.3g} (least squares on log values)"
        ok = (t > 0) & (p > 0)
        conn = r.connected if r.connected.size == t.size else np.ones(t.size, bool)
        alpha = 0.5 if t.size < 2000 else 0.15
        split = not conn.all()
        for mask, colour, label in ((ok & conn, "tab:blue",
                                     "connected cell" if split else "network"),
                                    (ok & ~conn, "tab:orange", "disconnected cell (no path)")):
            if mask.any():
                ax.scatter(t[mask], p[mask], s=5, alpha=alpha, color=colour, label=label,
                           rasterized=True, linewidths=0)
        lo = min(t[ok].min(), p[ok].min()) * 0.8 if ok.any() else 0.1
        hi = max(t[ok].max(), p[ok].max()) * 1.25 if ok.any() else 10
        line = np.geomspace(lo, hi, 50)
        ax.plot(line, line, color="black", lw=1, label="y = x")
        ax.fill_between(line, line * 0.9, line * 1.1, color="green", alpha=0.2, label="±10% band")
        ax.set(xscale="log", yscale="log", xlim=(lo, hi), ylim=(lo, hi),
               xlabel=f"measured latency ({unit})", ylabel=f"estimated latency ({unit})")
        _log_ticks(ax.xaxis, lo, hi)
        _log_ticks(ax.yaxis, lo, hi)
        dropped = int((~ok).sum())
        stats_line = (f"τ={r.metric('kendall'):.3f}  ρ={r.metric('spearman'):.3f}"
                      + (f"  MAPE={r.metric('mape'):.1f}%" if absolute(r) else "")
                      + (f"\n{dropped} non-positive estimate(s) not shown" if dropped else ""))
        ax.text(0.03, 0.97, stats_line, transform=ax.transAxes, va="top", fontsize=8,
                bbox={"facecolor": "white", "alpha": 0.8, "edgecolor": "none"})
        ax.set_title(title, fontsize=9)
        ax.grid(True, which="major", alpha=0.3)
    for ax in list(axes.flat)[len(shown):]:
        ax.axis("off")
    handles, labels = axes.flat[0].get_legend_handles_labels()
    legend = fig.legend(handles, labels, loc="lower center", ncol=len(labels), markerscale=3,
                        frameon=False)
    for handle in legend.legend_handles:
        handle.set_alpha(1)
    fig.suptitle(f"Estimated vs measured latency on {device} (each dot a network)", fontsize=11)
    fig.tight_layout(rect=(0, 0.05, 1, 0.96))
    save_png(fig, path, 110)
    plt.close(fig)
    return Path(path)


def plot_rank_bars(results: Sequence[BackendResult], path: str | Path, *, device: str
                   ) -> Path | None:
    """Kendall tau and Spearman rho per backend, best first, as grouped bars."""
    shown = [r for r in results if not math.isnan(r.metric("kendall"))]
    if not shown:
        return None
    plt = pyplot()
    names = [r.name + ("" if r.coverage >= 0.99 else f"\n({100 * r.coverage:.0f}% covered)")
             + ("\n(other hardware)" if r.reference_only else "") for r in shown]
    x = np.arange(len(shown))
    fig, ax = plt.subplots(figsize=(max(6.5, 1.5 * len(shown) + 2), 4.4))
    for off, key, label, colour in ((-0.2, "kendall", "Kendall τ", "tab:blue"),
                                    (0.2, "spearman", "Spearman ρ", "tab:orange")):
        vals = [r.metric(key) for r in shown]
        bars = ax.bar(x + off, vals, 0.4, label=label, color=colour)
        ax.bar_label(bars, fmt="%.2f", fontsize=8, padding=2)
    ax.set_xticks(x, names, rotation=25 if len(shown) > 3 else 0,
                  ha="right" if len(shown) > 3 else "center", fontsize=8)
    low = min(0.0, min(min(r.metric("kendall"), r.metric("spearman")) for r in shown))
    ax.set(ylim=(low, 1.08), ylabel="rank correlation with measurement\n(1 = same order)",
           title=f"How well each estimator orders networks by latency on {device}")
    ax.axhline(0, color="black", lw=0.8)
    ax.legend(loc="upper right", fontsize=8)
    ax.grid(True, axis="y", alpha=0.3)
    fig.tight_layout()
    save_png(fig, path, 110)
    plt.close(fig)
    return Path(path)


CURVE_METRICS = ("spearman", "kendall", "mape", "acc10")
# What write_report writes into its folder (checked against the command's inputs first).
WRITES = ("report.md", "metrics.csv", "predictions.csv", "rank_correlation.png", "scatter.png",
          "sample_efficiency.png", "models.png")
REPORT_MARK = "<!-- written by costmodels compare -->"  # report.md's last line


def check_report_dir(path: str | Path, what: str) -> Path:
    """Fail before any work unless folder ``path`` can take a report: a new folder, or one
    whose files of the report's names (:data:`WRITES`) an earlier report wrote. A file of
    someone else's under one of those names would be replaced (or, not written this time,
    removed): it is named, and nothing is written."""
    from costmodels.cli import check_output, check_output_dir, png_software
    from costmodels.errors import InputError

    out = check_output_dir(path, what, writes=WRITES)
    if not out.is_dir():
        return out
    present = [n for n in WRITES if (out / n).exists() or (out / n).is_symlink()]
    for name in present:
        if (out / name).is_symlink():  # written through, it could land on another disk
            raise InputError(f"{what} {path}: {name} there is a symbolic link; a report "
                             "writes its files in its folder: remove the link or give "
                             "another folder (nothing was written)")
        check_output(out / name, what, text=not name.endswith(".png"))

    def read(name: str, tail: bool = False) -> str:
        try:
            with (out / name).open("rb") as fh:
                if tail:
                    fh.seek(max(fh.seek(0, 2) - 4096, 0))
                return fh.read(4096).decode("utf-8", "replace")
        except OSError:
            return ""

    def csv_head(name: str) -> list[str]:
        return read(name).lstrip("\ufeff").split("\n", 1)[0].strip().split(",")

    marked = "report.md" in present and \
        read("report.md", tail=True).rstrip().rsplit("\n", 1)[-1].strip() == REPORT_MARK
    text = read("report.md") if "report.md" in present and not marked else ""
    # a report of an earlier version (no mark): its title, machine and ranking lines
    legacy = text.startswith("# ") and all(
        h in text for h in ("\n- ground truth: `", "\n## Ranking (by Kendall"))
    for name in present:
        if name == "report.md":
            ours = marked or legacy
        elif name.endswith(".png"):  # a plain Matplotlib figure only beside an old report
            soft = png_software(out / name) or ""
            ours = PNG_SOFTWARE in soft or (legacy and soft.startswith("Matplotlib"))
        elif name == "metrics.csv":  # its first columns (an older report had fewer after)
            ours = tuple(csv_head(name)[:3]) == METRICS_HEAD[:3]
        else:  # a latency table starts so too, but holds no backend's _ms columns
            head = csv_head(name)
            ours = tuple(head[:3]) == PREDICTIONS_HEAD and len(head) > 3 and all(
                c.endswith("_ms") for c in head[3:])
        if not ours:
            raise InputError(f"{what} {path}: holds {name}, which a report writes (or, "
                             "not written this time, removes), and an earlier costmodels "
                             "report did not write it; give another folder, or move that "
                             "file (nothing was written)")
    return out


MAX_CURVE_K = 10**9  # networks measured for training: a count, not any integer
# the range of each curve metric, and how an error says it
_CURVE_RANGES = {"spearman": (-1.0, 1.0, "a correlation, from -1 to 1"),
                 "kendall": (-1.0, 1.0, "a correlation, from -1 to 1"),
                 "mape": (0.0, math.inf, "a percentage >= 0"),
                 "acc10": (0.0, 1.0, "a share, from 0 to 1")}


def _curve_value_problem(column: str, v: float) -> str | None:
    """What is wrong with ``v`` as column ``column`` of a curve row (outside its metric's
    range; a spread below 0; a seed count that is no whole number >= 1), None if nothing."""
    if column == "seeds":
        return None if v >= 1 and v == int(v) else "a count of seeds, a whole number >= 1"
    if column.endswith("_std"):
        return None if v >= 0 else "a spread, >= 0"
    low, high, what = _CURVE_RANGES[column]
    return None if low <= v <= high else what


def read_curve(path: str | Path) -> dict[str, dict[int, dict[str, tuple[float, float, int]]]]:
    """A few-shot curve CSV -> {line label: {k: {metric: (mean, std, seeds)}}}.

    Accepts one row per (k, seed) (columns ``k, seed, spearman[, kendall, ...]``)
    or one row per k already averaged, as ``costmodels fewshot`` writes it
    (``k, seeds, spearman, spearman_std, ...``). Lines are told apart by the
    ``model`` (or ``method``/``predictor``) column, and by ``select`` and
    ``target`` where those hold more than one value.
    """
    with open(path, newline="") as fh:
        reader = csv.DictReader(fh)
        cols = reader.fieldnames or []
        rows = list(reader)
    from costmodels.errors import InputError

    if "k" not in cols or "spearman" not in cols:
        raise InputError(f"{path}: a few-shot curve needs columns k and spearman "
                         f"(found {','.join(cols)[:200] or 'nothing'}); `costmodels fewshot` "
                         "writes one")
    group = next((c for c in ("model", "method", "predictor", "backend") if c in cols), None)
    extra = [c for c in ("select", "target") if c in cols and len({r[c] for r in rows}) > 1]
    raw: dict[str, dict[int, list[dict[str, float]]]] = {}
    for line, row in enumerate(rows, start=2):
        label = " / ".join([row[group] if group else Path(path).stem] + [row[c] for c in extra])
        try:
            vals = {c: float(row[c]) for c in cols
                    if row.get(c) not in ("", None) and (c in CURVE_METRICS or c.endswith("_std")
                                                          or c == "seeds")}
            # nan: undefined (a rank correlation of constant predictions); left out
            vals = {c: v for c, v in vals.items() if not math.isnan(v)}
            k = float(row["k"])
            if not (np.isfinite(k) and 1 <= k <= MAX_CURVE_K and k == int(k)) \
                    or not all(np.isfinite(v) for v in vals.values()):
                raise ValueError(f"k must be a whole number from 1 to {MAX_CURVE_K:,} and "
                                 "every metric finite, or nan where undefined")
            for c, v in vals.items():
                if why := _curve_value_problem(c, v):
                    raise ValueError(f"{c} is {v:g}, where it is {why}")
            raw.setdefault(label, {}).setdefault(int(k), []).append(vals)
        except (ValueError, TypeError) as exc:
            raise InputError(f"{path}:{line}: not a few-shot curve row ({exc})"[:300]) from None
    out: dict[str, dict[int, dict[str, tuple[float, float, int]]]] = {}
    for label, by_k in raw.items():
        for k, vals in by_k.items():
            stats = {}
            for m in CURVE_METRICS:
                xs = [v[m] for v in vals if m in v]
                if not xs:
                    continue
                if len(xs) == 1 and "seeds" in vals[0]:  # already averaged over seeds
                    stats[m] = (xs[0], vals[0].get(f"{m}_std", math.nan), int(vals[0]["seeds"]))
                else:
                    stats[m] = (float(np.mean(xs)), float(np.std(xs)), len(xs))
            out.setdefault(label, {})[k] = stats
    return out


def plot_curves(curve_csvs: Sequence[str | Path], path: str | Path, *, device: str = ""
                ) -> Path | None:
    """Sample-efficiency curves: Spearman (and Kendall) vs k, mean ± std over seeds."""
    curves: dict[str, dict[int, dict[str, tuple[float, float, int]]]] = {}
    for c in curve_csvs:
        for label, by_k in read_curve(c).items():
            curves[f"{label} ({Path(c).stem})" if label in curves else label] = by_k
    if not curves:
        return None
    plt = pyplot()
    from matplotlib.ticker import NullFormatter, ScalarFormatter

    keys = [m for m in ("spearman", "kendall")
            if any(m in st for by_k in curves.values() for st in by_k.values())]
    if not keys:  # every rank metric undefined (nan): nothing to plot
        return None
    fig, axes = plt.subplots(1, len(keys), figsize=(5.8 * len(keys), 4.4), squeeze=False)
    for ax, key in zip(axes.flat, keys, strict=True):
        for label, by_k in curves.items():
            ks = sorted(k for k, st in by_k.items() if key in st)
            if not ks:
                continue
            mean = np.array([by_k[k][key][0] for k in ks])
            std = np.array([by_k[k][key][1] for k in ks])
            seeds = max(by_k[k][key][2] for k in ks)
            ax.plot(ks, mean, marker="o", label=f"{label} ({seeds} seed{'s' * (seeds > 1)})")
            ax.fill_between(ks, mean - std, mean + std, alpha=0.2)
        name = {"spearman": "Spearman ρ", "kendall": "Kendall τ"}[key]
        ax.set_xscale("log")
        ax.set_xticks(sorted({k for by_k in curves.values() for k in by_k}))
        ax.xaxis.set_major_formatter(ScalarFormatter())
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set(xlabel="networks measured on the target device for training (k)",
               ylabel=f"{name} on held-out cells", ylim=(None, 1.0),
               title=f"{name} vs number of measured networks")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
    fig.suptitle("Sample efficiency of learned predictors" + (f" on {device}" if device else "")
                 + " (line: mean over seeds; band: ±1 std)", fontsize=11)
    fig.tight_layout()
    save_png(fig, path, 110)
    plt.close(fig)
    return Path(path)


def plot_models(models: ModelsResult, path: str | Path) -> Path | None:
    """Off-NAS-Bench-201 models: measured latency beside each backend's (scaled) estimate."""
    shown = [r for r in models.results if r.n_covered]
    ok = np.isfinite(models.truth_ms)
    if not shown or not ok.any():
        return None
    plt = pyplot()
    order = [i for i in np.argsort(models.truth_ms) if ok[i]]
    fig, ax = plt.subplots(figsize=(max(6, 0.9 * len(order) + 3), 4.4))
    x = np.arange(len(order))
    ax.plot(x, models.truth_ms[order], "k-o", lw=2, label=f"measured ({models.truth_spec})")
    for r in shown:
        pred = r.by_row()
        ys = np.array([pred.get(i, math.nan) for i in order])
        label = r.name
        if not absolute(r):
            c = log_scale_factor(r.y_true, r.y_pred)
            why = "other hardware" if r.calibrated else "uncalibrated"
            ys, label = ys * c, f"{r.name} ({why}, scaled ×{c:.3g})"
        ax.plot(x, ys, marker=".", ls="--", label=label)
    ax.set_xticks(x, [models.names[i] for i in order], rotation=30, ha="right", fontsize=8)
    ax.set(yscale="log", ylabel="latency (ms, log scale)", xlabel="ONNX model",
           title="ONNX models of the folder: "
           "measured vs estimated latency (sorted by measured)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    save_png(fig, path, 110)
    plt.close(fig)
    return Path(path)


# ----------------------------------------------------------------------------- report.md
def _md_table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    out = ["| " + " | ".join(header) + " |",
           "|" + "|".join("---" if i == 0 else "---:" for i in range(len(header))) + "|"]
    out += ["| " + " | ".join(c.replace("|", "\\|") for c in row) + " |" for row in rows]
    return "\n".join(out)


def models_paragraph(result: ComparisonResult | None, models: ModelsResult) -> str:
    """What changes off NAS-Bench-201, derived from the numbers of both comparisons."""
    usable = [r for r in models.results if absolute(r) and r.n_covered >= 2
              and not math.isnan(r.metric("mape"))]
    if not usable:
        return "No backend with absolute estimates covered these models."
    best = min(usable, key=lambda r: r.metric("mape"))
    parts = [f"Off the space, **{best.name}** is the most accurate (MAPE "
             f"{best.metric('mape'):.1f}%, Spearman ρ {best.metric('spearman'):.2f} over "
             f"{best.n_covered} models)."]
    on_space = {r.name: r for r in result.results} if result else {}
    for r in sorted(usable, key=lambda r: -r.metric("mape")):
        before = on_space.get(r.name)
        if before is None or math.isnan(before.metric("mape")):
            continue
        if r.metric("mape") > 2 * before.metric("mape") and r.metric("mape") > 20:
            rel = np.abs(r.y_pred - r.y_true) / r.y_true
            w = int(np.argmax(rel))
            parts.append(f"{r.name} goes from MAPE {before.metric('mape'):.1f}% on NAS-Bench-201 "
                         f"to {r.metric('mape'):.1f}% here (worst: {models.names[r.rows[w]]}, "
                         f"{r.y_pred[w]:.3g} ms estimated for {r.y_true[w]:.3g} ms measured).")
    return " ".join(parts)


def _models_section(models: ModelsResult, figure: Path | None,
                    result: ComparisonResult | None = None) -> list[str]:
    lines = ["## A folder of ONNX models", "",
             f"{len(models.names)} ONNX models from `{models.folder}`, truth measured with "
             f"`{models.truth_spec}`; backends built or fitted above, unchanged. With so few "
             "models the correlations are coarse; the per-model numbers show where an "
             "estimator built on NAS-Bench-201 goes wrong.", "",
             models_paragraph(result, models), "",
             "Estimated latency per model, in ms (uncalibrated proxies and models of other "
             "hardware unscaled):", ""]
    head = ["model", "MMACs", "measured ms"] + [r.name for r in models.results]
    rows = []
    for i, name in enumerate(models.names):
        preds = []
        for r in models.results:
            d = r.by_row()
            preds.append(_f(d[i], ".3g") if i in d else "—")
        rows.append([name, f"{models.macs[i] / 1e6:.1f}", _f(models.truth_ms[i], ".3f")] + preds)
    lines += [_md_table(head, rows), ""]
    lines += [_md_table(COLUMNS, table_rows(models)), "",
              "Top-k here: k = a quarter of the models (5% of a dozen models would be one, and "
              "a top-1 overlap is all or nothing).", ""]
    for name, err in models.truth_errors.items():
        lines.append(f"- truth failed on {name}: {err}")
    if figure:
        lines += ["", f"![measured vs estimated on generated models]({figure.name})", ""]
    return lines


def _energy_lines(ranked: Sequence[BackendResult]) -> list[str]:
    """A table of the energy metrics, for backends that estimated energy where the truth
    has ``energy_mj`` (nothing otherwise)."""
    have = [r for r in ranked if not math.isnan(r.metric("energy_kendall"))]
    if not have:
        return []
    rows = [[r.name, f"{r.metric('energy_kendall'):.3f}", f"{r.metric('energy_spearman'):.3f}",
             f"{r.metric('energy_mape'):.1f}"] for r in have]
    return ["", "Energy (the truth table has `energy_mj`; backends that estimate energy):", "",
            _md_table(["backend", "Kendall τ", "Spearman", "MAPE %"], rows)]


def write_report(result: ComparisonResult, out_dir: str | Path, *,
                 fingerprint: str | None = None, curve_csvs: Sequence[str | Path] = (),
                 models: ModelsResult | None = None, truth_table=None,
                 title: str | None = None) -> dict[str, Path]:
    """Write report.md, metrics.csv, predictions.csv (with ``truth_table``) and the figures.

    ``fingerprint``: one line describing the machine (CPU, cores, runtime
    versions), printed under the date. Returns {what: path} of the files written.

    The files are written into a staging folder beside ``out_dir`` and moved in only when
    all of them are whole (:func:`_publish`): an interrupted or failed run (a full disk,
    Ctrl-C) leaves the folder as it was, not new files beside an older run's.
    """
    import os
    import secrets
    import shutil

    final = shown = Path(out_dir)
    if final.is_symlink():  # staged beside the folder the link names: one disk, renames
        final = final.resolve()
    final.parent.mkdir(parents=True, exist_ok=True)
    out = final.parent / f".{final.name}.costmodels-{os.getpid()}-{secrets.token_hex(4)}.tmp"
    out.mkdir()
    try:
        files = _write_report_files(result, out, fingerprint=fingerprint,
                                    curve_csvs=curve_csvs, models=models,
                                    truth_table=truth_table, title=title)
        _publish(out, final)
    finally:
        shutil.rmtree(out, ignore_errors=True)
    return {k: shown / v.name for k, v in files.items()}


def _publish(stage: Path, final: Path) -> None:
    """Move a finished report from ``stage`` into ``final``: as one rename when ``final``
    does not exist yet, else file by file (each rename atomic), report.md last, and an
    older run's files that this run does not write removed first."""
    import os

    if not final.exists():
        os.replace(stage, final)
        stage.mkdir()  # the caller removes it
        return
    written = {p.name for p in stage.iterdir()}
    for name in WRITES:  # a report folder's files: one run's, not two runs' mixed
        if name not in written:
            (final / name).unlink(missing_ok=True)
    for name in sorted(written, key=lambda n: n == "report.md"):
        target = final / name
        os.replace(stage / name, target.resolve() if target.is_symlink() else target)


def _write_report_files(result: ComparisonResult, out: Path, *, fingerprint, curve_csvs,
                        models, truth_table, title) -> dict[str, Path]:
    """The report's files, written into ``out`` (the staging folder of :func:`write_report`)."""
    ranked = result.ranked()
    files: dict[str, Path] = {"metrics": write_metrics_csv(result, out / "metrics.csv")}
    if truth_table is not None:
        files["predictions"] = write_predictions_csv(
            result, truth_table.latency_ms, truth_table.arch_index, truth_table.arch_str,
            out / "predictions.csv")
    figs = {"rank_correlation": plot_rank_bars(ranked, out / "rank_correlation.png",
                                               device=result.device),
            "scatter": plot_scatter(ranked, out / "scatter.png", device=result.device),
            "sample_efficiency": (plot_curves(curve_csvs, out / "sample_efficiency.png",
                                              device=result.device) if curve_csvs else None),
            "models": plot_models(models, out / "models.png") if models else None}
    files.update({k: v for k, v in figs.items() if v})
    if curve_csvs and not figs["sample_efficiency"]:
        print(f"note: no rank metric is defined at any k of {', '.join(map(str, curve_csvs))} "
              "(nan: constant predictions): no sample-efficiency plot", file=sys.stderr)
    when = _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    mode = (f"{result.train_samples} truth rows drawn with seed {result.seed} were used to fit "
            f"the learned backends (marked *fit on N*); **every** backend is scored on the other "
            f"{len(result.test_rows):,} rows only." if result.train_samples
            else f"{len(result.test_rows):,} of {result.n_truth:,} cells scored.")
    lines = [f"# {title or 'Which cost estimator to trust on ' + result.device}", "",
             f"- date: {when}"]
    if fingerprint:
        lines.append(f"- machine: {fingerprint}")
    lines += [f"- ground truth: `{result.truth_source}` ({result.n_truth:,} architectures of "
              f"{_space_words(result)}, device `{result.device}`)",
              f"- protocol: {mode}", ""]
    lines += [f"**Caveat:** {w}" for w in result.warnings] + ([""] if result.warnings else [])
    lines += ["## Ranking (by Kendall τ; backends with full coverage first)", "", _md_table(COLUMNS, table_rows(result)), ""]
    lines += [f"- {line}" for line in _footnotes(result.results)]
    lines += _energy_lines(ranked)
    if result.build_errors:
        first = next(iter(result.build_errors.items()))
        lines.append(f"- {len(result.build_errors)} truth row(s) could not be built as networks "
                     f"and were not scored; first: `{first[0]}`: {first[1]}")
    lines += ["", "Columns: *coverage* = cells the backend answered / cells scored; *MAPE* = "
              "mean |estimate − measured| / measured; *±10 %* = share of cells within 10% "
              "(nn-Meter's accuracy); *top-k overlap* = share of the k fastest measured cells "
              "that are among the k fastest estimated (k = 5% of cells); *build cost* = "
              "measurements behind the backend + seconds to create or fit it here; *query* = "
              "microseconds per network to estimate."
              + (" Metrics over connected cells only are in `metrics.csv` (suffix "
                 "`_connected`)." if _has_disconnected(result) else ""), "",
              "## Which estimator to use", "", recommend(result), "", "## Figures", ""]
    captions = {"rank_correlation": "Rank correlation per estimator",
                "scatter": "Estimated vs measured latency per estimator",
                "sample_efficiency": "Sample efficiency of the learned predictors"}
    for key, caption in captions.items():
        if figs.get(key):
            lines += [f"![{caption}]({figs[key].name})", ""]
    if models:
        lines += _models_section(models, figs.get("models"), result)
    lines += ["", REPORT_MARK]
    with atomic_output(out / "report.md") as fh:
        fh.write("\n".join(lines) + "\n")
    files["report"] = out / "report.md"
    return files
