"""The harness: rank cost estimators against measured latency, and report.

Modules (each usable alone):

- :mod:`~costmodels.harness.metrics`: Kendall, Spearman, Pearson, RMSE, MAPE,
  RMSPE, ±p% accuracy, top-k overlap, :func:`~metrics.summary`;
- :mod:`~costmodels.harness.compare`: orchestration, :func:`~compare.compare` (a
  truth table of any search space) and :func:`~compare.compare_models` (a folder of
  ONNX models against a measuring backend);
- :mod:`~costmodels.harness.fitting`: which backends are fitted, and fitting them;
- :mod:`~costmodels.harness.scoring`: estimating without raising, query timing,
  energy scoring, the one :func:`~scoring.rank` used by report and bench;
- :mod:`~costmodels.harness.report`: terminal table, ``report.md``,
  ``metrics.csv``, ``predictions.csv``, PNG figures;
- :mod:`~costmodels.harness.models`: generated non-NAS-Bench-201 ONNX models;
- :mod:`~costmodels.harness.cli`: ``costmodels compare`` and ``gen-models``.

:func:`run` does what ``costmodels compare`` does, for scripts such as the demo.
Nothing heavy is imported until used.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from costmodels.harness.compare import ComparisonResult, ModelsResult

__all__ = ["run", "machine_line"]


def machine_line() -> str | None:
    """This machine in one line (CPU, cores, OS, runtime versions), via the measure package."""
    try:
        from measure.fingerprint import fingerprint

        fp = fingerprint()
    except Exception:  # noqa: BLE001 - a report without a machine line is still a report
        return None
    versions = ", ".join(f"{k} {fp[k]}" for k in ("python", "onnxruntime", "tvm", "numpy")
                         if fp.get(k))
    return (f"{fp.get('cpu_model') or 'unknown CPU'}, {fp.get('cores')} cores, "
            f"{fp.get('os')} {fp.get('os_kernel')} {fp.get('machine')}; {versions}")


def run(truth: str | Path, backends: Sequence[Any], out_dir: str | Path, *,
        dataset: str | None = None, train_samples: int | None = None, seed: int = 0,
        sources: Sequence[str] = (), priors: Sequence[str] = (), max_cells: int | None = None,
        reference_only: Sequence[str] = (), notes: Mapping[str, str] | None = None,
        curve_csvs: Sequence[str | Path] = (), models_dir: str | Path | None = None,
        models_truth: Any = "measure:ort", fingerprint: str | None = None,
        duplicates: str = "error", title: str | None = None, console: Any = None,
        space: Any = "nb201", batch: int = 1, input_shapes: Any = None,
        ) -> tuple[ComparisonResult, ModelsResult | None, dict[str, Path]]:
    """Read the truth table, compare the backends, print the ranked table, write the report.

    ``truth`` is a latency-table CSV (validated: a bad row raises ``TableError``
    naming file, line and field). ``backends`` are registry specs or CostModel
    objects; see :func:`costmodels.harness.compare.compare` for
    ``train_samples``/``seed``/``sources``/``max_cells``/``reference_only``/``notes``.
    With ``models_dir``, the ONNX models there are measured with ``models_truth``
    and every backend built here is scored on them too. ``fingerprint``: the
    machine line of the report (default: :func:`machine_line`). Progress goes
    to stderr, the table to ``console`` (stdout by default).
    Returns (comparison, models comparison or None, {what: file written}).
    """
    import time

    from costmodels.harness.compare import compare, compare_models
    from costmodels.harness.report import print_table, write_report
    from costmodels.progress import console as progress_console
    from costmodels.tables import read_table

    err = progress_console(stderr=True)
    t0 = time.perf_counter()

    def say(name: str) -> None:
        err.print(f"[dim]at {time.perf_counter() - t0:.1f} s:[/] {name}", highlight=False)

    from costmodels.spaces import SearchSpace, get_space

    sp = space if isinstance(space, SearchSpace) else get_space(space, input_shapes=input_shapes)
    # a truth row of a model no longer in the folder is named in a note and not scored
    table = read_table(truth, duplicates=duplicates, space=sp, absent="skip")
    result = compare(table, backends, dataset=dataset, train_samples=train_samples, seed=seed,
                     sources=sources, max_cells=max_cells, notes=notes,
                     reference_only=reference_only, priors=priors, on_progress=say,
                     space=sp, batch=batch)
    from costmodels.tables import sidecar_mismatch

    if note := sidecar_mismatch(truth, result.dataset or None, batch):
        result.warnings.append(note.removeprefix("warning: "))
    if table.absent:
        result.warnings.append(f"{len(table.absent)} truth row(s) name models that are not in "
                               f"{sp.spec} (first: {table.absent[0]}); they are not scored")
    models = None
    if models_dir:
        say(f"models in {models_dir}")
        models = compare_models(models_dir, result.results, truth=models_truth, notes=notes,
                                on_progress=say, input_shapes=input_shapes)
    # the report first: a closed or full stdout then loses the table only
    files = write_report(result, out_dir, fingerprint=fingerprint or machine_line(),
                         curve_csvs=curve_csvs, models=models, truth_table=table, title=title)
    print_table(result, console or progress_console())
    err.print(f"wrote {', '.join(str(p) for p in files.values())} "
              f"in {time.perf_counter() - t0:.1f} s", highlight=False)
    return result, models, files
