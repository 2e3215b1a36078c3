"""Tune the space, not the network: one MetaSchedule database per search space and target.

NAS-Bench-201's 15,625 cells are built from a few hundred distinct fused kernels
(a 3x3 conv + BN at 16 channels on 32x32 is the same TIR function in every cell
that has one). This module extracts the tuning tasks of every network of a
space (or a sample, or a model folder), deduplicates them by MetaSchedule's own
workload identity (the structural hash of the TIR function), tunes each one
once, and keeps the records in MetaSchedule's JSON database. Networks are then
compiled from those records with no further tuning (:func:`apply_database`,
used by :func:`measure.tvm.build` when ``config.tvm_work_dir`` is set and
``config.tvm_trials == 0``).

Layout of a work directory ``DB``::

    DB/<target key>/database_workload.json        MetaSchedule's JSON database
    DB/<target key>/database_tuning_record.json   (records keyed by target: one dir each)
    DB/<target key>/costmodels-tasks.json         ledger: task -> trials done, tuning seconds
    DB/<target key>/logs/                         MetaSchedule's logs and captured stdout

Resumable: a task the ledger lists with at least the asked trials is skipped; a
run killed in the middle of a task tunes that task again (its partial records stay).

Output hygiene: MetaSchedule logs to ``sys.stdout`` and its builder/runner
workers inherit file descriptor 1; :func:`captured_output` points fd 1 at a log
file for the duration, so ``--json`` output stays JSON.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager, redirect_stdout
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from costmodels.errors import CostModelError

LEDGER_SCHEMA = "costmodels.tvm.tasks"
LEDGER_NAME = "costmodels-tasks.json"
MS_LOGGER = "tvm.s_tir.meta_schedule"


class TuningError(CostModelError):
    """A tuning database that is missing, unreadable or for another target."""


@dataclass(frozen=True)
class SpaceTask:
    """One distinct tuning task of a space: a fused TIR function and who uses it.

    ``key``: hex of the structural hash of the TIR module (MetaSchedule's
    workload identity); ``weight``: calls summed over the networks that contain it;
    ``networks``: names of those networks; ``extracted``: MetaSchedule's ExtractedTask.
    """

    key: str
    name: str
    weight: int
    networks: tuple[str, ...]
    flop: float = 0.0
    extracted: Any = field(default=None, compare=False, repr=False)

    def summary(self) -> dict[str, Any]:
        return {"key": self.key, "name": self.name, "weight": self.weight,
                "networks": len(self.networks), "flop": self.flop}


@dataclass(frozen=True)
class TuneSummary:
    """What :func:`tune_space` did; ``seconds`` is wall time, ``tune_s_total`` the ledger's
    tuning seconds over every task of this run (earlier runs included)."""

    tasks: int
    tuned: int
    skipped: int
    trials_per_task: int
    seconds: float
    tune_s_total: float
    records_before: int
    records_after: int
    database_dir: str
    database_id: str
    target: dict[str, Any]
    per_task: tuple[dict[str, Any], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in self.__dict__.items()}


# ---------------------------------------------------------------------------- targets, files
def target_key(target: dict[str, Any]) -> str:
    """Directory name of a target's records: ``llvm-znver4-1c-<hash8>``."""
    words = [str(target.get("kind", "llvm"))]
    for k in ("mtriple", "mcpu"):
        if target.get(k):
            words.append(str(target[k]))
    if target.get("num-cores"):
        words.append(f"{target['num-cores']}c")
    digest = hashlib.sha256(json.dumps(target, sort_keys=True).encode()).hexdigest()[:8]
    slug = "-".join(w.replace("/", "_").replace(" ", "_") for w in words)
    return f"{slug}-{digest}"


def database_dir(work_dir: str | Path, target: dict[str, Any]) -> Path:
    """Where the records of ``target`` live inside ``work_dir``."""
    return Path(work_dir) / target_key(target)


def _db_files(db_dir: Path) -> tuple[Path, Path]:
    return db_dir / "database_workload.json", db_dir / "database_tuning_record.json"


def database_id(db_dir: str | Path) -> str:
    """16-hex hash of the database's two files ('' when there is no database)."""
    h = hashlib.sha256()
    found = False
    for p in _db_files(Path(db_dir)):
        if p.is_file():
            found = True
            h.update(p.name.encode())
            h.update(p.read_bytes())
    return h.hexdigest()[:16] if found else ""


def record_count(db_dir: str | Path) -> int:
    """Number of tuning records (lines of the record file; 0 when missing)."""
    p = _db_files(Path(db_dir))[1]
    if not p.is_file():
        return 0
    with open(p, "rb") as fh:
        return sum(1 for line in fh if line.strip())


def open_database(db_dir: Path, create: bool = False):
    """MetaSchedule's JSONDatabase in ``db_dir``; refuses a missing one unless ``create``."""
    from tvm.s_tir import meta_schedule as ms

    wl, rec = _db_files(db_dir)
    if not create and not (wl.is_file() and rec.is_file()):
        raise TuningError(f"no tuning database for this target in {db_dir.parent} (looked for "
                          f"{db_dir.name}/{wl.name}); run `costmodels tvm tune --work-dir "
                          f"{db_dir.parent} ...` with the same --target first")
    db_dir.mkdir(parents=True, exist_ok=True)
    try:
        return ms.database.JSONDatabase(str(wl), str(rec), allow_missing=create)
    except Exception as exc:  # noqa: BLE001 - TVM raises its own error types
        raise TuningError(f"{db_dir}: cannot read the MetaSchedule database ({exc}); "
                          "delete the directory and tune again") from None


def read_ledger(db_dir: Path) -> dict[str, dict[str, Any]]:
    """Task key -> {name, trials, tune_s} of the tasks tuned so far ({} when none)."""
    p = db_dir / LEDGER_NAME
    if not p.is_file():
        return {}
    try:
        doc = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise TuningError(f"{p}: unreadable ledger ({exc}); delete it to tune every task "
                          "again (the records are kept)") from None
    if doc.get("schema") != LEDGER_SCHEMA:
        raise TuningError(f"{p}: not a costmodels task ledger (schema {doc.get('schema')!r}); "
                          "move it away")
    return dict(doc.get("tasks", {}))


def _write_ledger(db_dir: Path, target: dict[str, Any], tasks: dict[str, dict[str, Any]]) -> None:
    p = db_dir / LEDGER_NAME
    tmp = p.with_suffix(".tmp")
    tmp.write_text(json.dumps({"schema": LEDGER_SCHEMA, "version": 1, "target": target,
                               "tasks": tasks}, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, p)


# ---------------------------------------------------------------------------- output hygiene
@contextmanager
def captured_output(log_path: str | Path) -> Iterator[None]:
    """Send file descriptor 1 (Python prints, C++ logs, child workers) to ``log_path``.

    MetaSchedule's console logger is limited to warnings (they reach stderr through
    fd 2 once its stdout handler is removed on exit); its files get everything.
    """
    log_path = Path(log_path)
    log_path.parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    saved = os.dup(1)
    ms_logger = logging.getLogger(MS_LOGGER)
    old_level = ms_logger.level
    ms_logger.setLevel(logging.WARNING)  # create_loggers sizes its console handler from this
    with open(log_path, "ab") as fh:
        os.dup2(fh.fileno(), 1)
    text = open(log_path, "a", buffering=1)  # noqa: SIM115 - closed below
    try:
        with redirect_stdout(text):
            yield
    finally:
        text.flush()
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)
        for h in list(ms_logger.handlers):
            if h.get_name() == f"{MS_LOGGER}.console":
                ms_logger.removeHandler(h)
        ms_logger.setLevel(old_level or logging.WARNING)
        text.close()


# ---------------------------------------------------------------------------- lowering, tasks
def lower(model, target: dict[str, Any]):
    """ONNX (proto, bytes or path) -> the fused Relax module MetaSchedule tunes and applies.

    The same passes as ``relax.pipeline.static_shape_tuning_pipeline`` before its tuning
    step: import, DecomposeOpsForInference, CanonicalizeBindings, the zero pipeline
    (legalize, fold constants, fuse).
    """
    import tvm
    from tvm import relax
    from tvm.relax.frontend.onnx import from_onnx

    from measure.inputs import as_proto, input_specs

    proto = as_proto(model)
    shapes = {name: list(shape) for name, shape, _ in input_specs(proto)}
    mod = from_onnx(proto, shape_dict=shapes)
    with tvm.target.Target(target):
        return tvm.transform.Sequential([
            relax.transform.DecomposeOpsForInference(),
            relax.transform.CanonicalizeBindings(),
            relax.pipeline.zero_pipeline(),
        ])(mod)


def task_key(mod) -> str:
    """MetaSchedule's workload identity of a TIR module, as 16 hex digits."""
    from tvm_ffi import structural_hash

    return f"{structural_hash(mod) & (2**64 - 1):016x}"


def network_tasks(model, target: dict[str, Any], lowered: bool = False) -> list[Any]:
    """MetaSchedule's ExtractedTasks of one ONNX model (or a module from :func:`lower`)."""
    import tvm
    from tvm.s_tir import meta_schedule as ms

    mod = model if lowered else lower(model, target)
    return list(ms.relax_integration.extract_tasks(mod, tvm.target.Target(target)))


def _flop(mod) -> float:
    """Floating-point operations of one call of a task (0 when TVM cannot count them)."""
    from tvm.s_tir.analysis import estimate_tir_flops

    try:
        return float(estimate_tir_flops(mod))
    except Exception:  # noqa: BLE001 - a FLOP count is informative only
        return 0.0


def extract_space_tasks(models: Iterable[tuple[str, Any]], target: dict[str, Any],
                        total: int | None = None, show_progress: bool = True,
                        lowered: bool = False) -> list[SpaceTask]:
    """Distinct tuning tasks over ``(name, onnx model)`` pairs, most-used first.

    ``lowered``: the models are Relax modules from :func:`lower` already.

    Two networks that contain the same fused function (same structural hash) share
    one task; its weight is the sum of their call counts.
    """
    found: dict[str, dict[str, Any]] = {}
    with _bar(show_progress, "extract tasks", total) as step:
        for name, model in models:
            for t in network_tasks(model, target, lowered):
                key = task_key(t.dispatched[0])
                entry = found.setdefault(key, {"name": t.task_name, "weight": 0, "nets": [],
                                               "task": t})
                entry["weight"] += int(t.weight)
                entry["nets"].append(name)
            step()
    tasks = [SpaceTask(k, e["name"], e["weight"], tuple(dict.fromkeys(e["nets"])),
                       _flop(e["task"].dispatched[0]), e["task"]) for k, e in found.items()]
    return sorted(tasks, key=lambda t: (-len(t.networks), -t.weight, t.name))


# ---------------------------------------------------------------------------- tuning
def fast_build(mod, target, _params):
    """MetaSchedule's ``default_build`` without ``import tvm.s_tir.tensor_intrin``.

    That import registers every tensor intrinsic of every target (CUDA, ARM, Hexagon...)
    and took 70 s of each fresh builder worker here (LocalBuilder starts one per batch);
    a float32 CPU schedule uses none of them (a trial that would is a build error).
    """
    from tvm.driver import build as tvm_build
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock

    mod = RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod)
    return tvm_build(mod, target=target)


def _pooled_builder(timeout_s: float):
    """A LocalBuilder that keeps its worker process between batches (LocalBuilder starts a
    fresh one per batch, and a fresh TVM process takes ~12 s to import here)."""
    from tvm.ir.utils import derived_object
    from tvm.s_tir.meta_schedule.builder import BuilderResult, PyBuilder
    from tvm.s_tir.meta_schedule.builder.local_builder import _serialize_params, _worker_func
    from tvm.support.popen_pool import PopenPoolExecutor, StatusKind

    @derived_object
    class PooledBuilder(PyBuilder):
        def __init__(self) -> None:
            super().__init__()
            self.pool = PopenPoolExecutor(max_workers=1, timeout=timeout_s)

        def build(self, build_inputs):
            out = []
            args = [(fast_build, None, b.mod, b.target, _serialize_params(b.params))
                    for b in build_inputs]
            for r in self.pool.map_with_error_catching(lambda x: _worker_func(*x), args):
                if r.status == StatusKind.COMPLETE:
                    out.append(BuilderResult(r.value, None))
                elif r.status == StatusKind.TIMEOUT:
                    out.append(BuilderResult(None, f"build timeout after {timeout_s} s"))
                else:
                    out.append(BuilderResult(None, f"build failed: {r.value}"))
            return out

    return PooledBuilder()


def _runner(rpc_tracker: str, rpc_key: str, timeout_s: float):
    """MetaSchedule's runner: local, or through the RPC tracker (the same database)."""
    from tvm.s_tir import meta_schedule as ms

    if not rpc_tracker:
        return ms.runner.LocalRunner(timeout_sec=timeout_s)
    from measure.rpc import parse_tracker

    host, port = parse_tracker(rpc_tracker)
    return ms.runner.RPCRunner(ms.runner.RPCConfig(
        tracker_host=host, tracker_port=port, tracker_key=rpc_key,
        session_timeout_sec=int(timeout_s)), max_workers=1)


def tune_space(tasks: Sequence[SpaceTask], work_dir: str | Path, target: dict[str, Any],
               trials_per_task: int, seed: int = 0, rpc_tracker: str = "", rpc_key: str = "",
               timeout_s: float = 30.0, show_progress: bool = True,
               population: int | None = None) -> TuneSummary:
    """Tune every task not yet tuned with ``trials_per_task`` trials; records in ``work_dir``.

    ``population``: the evolutionary search's population (None: MetaSchedule's 512 and
    4 generations; a small one, e.g. 32, makes a quick, poorer search for tests).
    One task at a time (so a kill loses at most the task in flight and the progress bar
    counts tasks), sharing one builder, runner and XGBoost cost model across tasks.
    """
    import tvm
    from tvm.s_tir import meta_schedule as ms

    if trials_per_task < 1:
        raise TuningError(f"--trials-per-task must be >= 1, not {trials_per_task}")
    t_start = time.perf_counter()
    db_dir = database_dir(work_dir, target)
    db_dir.mkdir(parents=True, exist_ok=True)
    ledger = read_ledger(db_dir)
    before = record_count(db_dir)
    todo = [t for t in tasks if int(ledger.get(t.key, {}).get("trials", 0)) < trials_per_task]
    tgt = tvm.target.Target(target)
    per_task = []
    with captured_output(db_dir / "logs" / "stdout.log"):
        database = open_database(db_dir, create=True)
        if todo:
            builder = _pooled_builder(timeout_s)
            runner = _runner(rpc_tracker, rpc_key, timeout_s)
            cost_model = ms.cost_model.XGBModel(num_tuning_cores=1)
        with _bar(show_progress, f"tune {len(todo)} tasks", len(tasks),
                  done=len(tasks) - len(todo)) as step:
            for i, task in enumerate(todo):
                t0 = time.perf_counter()
                contexts, weights = ms.relax_integration.extracted_tasks_to_tune_contexts(
                    [task.extracted], work_dir=str(db_dir), num_threads=1, seed=seed + i,
                    strategy=_strategy(population))
                if contexts:
                    ms.tune_tasks(tasks=contexts, task_weights=weights, work_dir=str(db_dir),
                                  max_trials_global=trials_per_task,
                                  max_trials_per_task=trials_per_task,
                                  num_trials_per_iter=min(64, trials_per_task),
                                  builder=builder, runner=runner, database=database,
                                  cost_model=cost_model, task_scheduler="round-robin")
                tune_s = time.perf_counter() - t0
                best = _best_run_ms(database, task, tgt)
                ledger[task.key] = {"name": task.name, "trials": trials_per_task,
                                    "tune_s": round(tune_s, 2), "best_ms": best}
                _write_ledger(db_dir, target, ledger)
                per_task.append({"key": task.key, "name": task.name, "tune_s": round(tune_s, 2),
                                 "best_ms": best})
                step()
    return TuneSummary(
        tasks=len(tasks), tuned=len(todo), skipped=len(tasks) - len(todo),
        trials_per_task=trials_per_task, seconds=round(time.perf_counter() - t_start, 2),
        tune_s_total=round(sum(float(ledger.get(t.key, {}).get("tune_s", 0.0)) for t in tasks), 2),
        records_before=before, records_after=record_count(db_dir), database_dir=str(db_dir),
        database_id=database_id(db_dir), target=dict(target), per_task=tuple(per_task))


def _strategy(population: int | None):
    from tvm.s_tir import meta_schedule as ms

    if population is None:
        return "evolutionary"
    return ms.search_strategy.EvolutionarySearch(
        population_size=population, init_min_unmeasured=min(50, population),
        genetic_num_iters=1 if population < 128 else 4)


def _best_run_ms(database, task: SpaceTask, target) -> float | None:
    """Mean run time (ms) of the task's best valid record, None without one."""
    mod = task.extracted.dispatched[0]
    if not database.has_workload(mod):
        return None
    rec = database.query_tuning_record(mod, target, task.name)
    if rec is None or not rec.run_secs:
        return None
    secs = [float(s) for s in rec.run_secs]
    return round(1e3 * sum(secs) / len(secs), 6)


# ---------------------------------------------------------------------------- applying
_DB_CACHE: dict[tuple[str, str], Any] = {}


def apply_database(mod, target: dict[str, Any], work_dir: str | Path) -> tuple[Any, dict[str, Any]]:
    """Schedule every fused function of ``mod`` (from :func:`lower`) from the records.

    No trials are run. Returns (mod, meta) with ``tvm_tuned`` (True only when every
    task of the network has a record), ``tuning_tasks`` / ``tuning_tasks_found``,
    ``tuning_db`` (:func:`database_id`) and ``tvm_work_dir``.
    """
    import tvm
    from tvm import relax
    from tvm.s_tir import meta_schedule as ms

    db_dir = database_dir(work_dir, target)
    db_id = database_id(db_dir)
    database = _DB_CACHE.get((str(db_dir), db_id))
    if database is None:
        database = open_database(db_dir)
        _DB_CACHE.clear()
        _DB_CACHE[(str(db_dir), db_id)] = database
    tgt = tvm.target.Target(target)
    tasks = ms.relax_integration.extract_tasks(mod, tgt)
    found = sum(1 for t in tasks if database.has_workload(t.dispatched[0])
                and database.query_tuning_record(t.dispatched[0], tgt, t.task_name) is not None)
    with tgt, database:
        mod = relax.transform.MetaScheduleApplyDatabase()(mod)
    return mod, {"tvm_tuned": bool(tasks) and found == len(tasks), "tuning_tasks": len(tasks),
                 "tuning_tasks_found": found, "tuning_db": db_id, "tvm_work_dir": str(work_dir),
                 "tuning_trials": 0}


# ---------------------------------------------------------------------------- progress
@contextmanager
def _bar(show: bool, label: str, total: int | None, done: int = 0) -> Iterator[Any]:
    """A progress bar over items (costmodels.progress) or a no-op; yields ``step()``."""
    if not show:
        yield lambda: None
        return
    from costmodels.progress import progress

    with progress(label) as bar:
        task = bar.add_task(label, total=total, completed=done)
        yield lambda: bar.update(task, advance=1)
