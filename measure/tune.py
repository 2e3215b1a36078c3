"""Tune the space, not the network: one MetaSchedule database per search space and target.

NAS-Bench-201's 15,625 cells are built from a few hundred distinct fused kernels
(a 3x3 conv + BN at 16 channels on 32x32 is the same TIR function in every cell
that has one). This module extracts the tuning tasks of every network of a
space (or a sample, or a model folder), deduplicates them by MetaSchedule's
``module_equality="anchor-block"`` identity (two fused functions with the same
anchor block -- the conv, matmul or pool -- are one task whatever element-wise
epilogue is fused after it: NB201's ``fused_conv2d3_..._add_relu`` and
``..._add_add`` are tuned once), gives each task a share of a trial budget by its
estimated time (FLOP x calls over the space, :func:`allocate_trials`), tunes each
one once, and keeps the records in MetaSchedule's JSON database (opened with the
same anchor-block equality, so ``MetaScheduleApplyDatabase`` schedules a fused
variant that was never tuned itself with its anchor's trace). Networks are then
compiled from those records with no further tuning (:func:`apply_database`,
used by :func:`measure.tvm.build` when ``config.tvm_work_dir`` is set and
``config.tvm_trials == 0``).

Layout of a work directory ``DB``::

    DB/<target key>/database_workload.json        MetaSchedule's JSON database
    DB/<target key>/database_tuning_record.json   (records keyed by target: one dir each)
    DB/<target key>/costmodels-tasks.json         ledger: task -> trials done, tuning seconds
    DB/<target key>/logs/                         MetaSchedule's logs and captured stdout

Resumable: a task the ledger lists with at least the asked trials is skipped, one with
fewer gets the difference; a run killed in the middle of a task tunes that task again
(its partial records stay). A ledger of version 1 (structural task identity, before
anchor-block) is refused by ``tune`` with a message; its records still apply.

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
LEDGER_VERSION = 2
MODULE_EQUALITY = "anchor-block"
DEFAULT_TRIALS_FLOOR = 16
MS_LOGGER = "tvm.s_tir.meta_schedule"


class TuningError(CostModelError):
    """A tuning database that is missing, unreadable or for another target."""


@dataclass(frozen=True)
class SpaceTask:
    """One distinct tuning task of a space: a fused TIR function and who uses it.

    ``key``: :func:`task_key` (the anchor block's structural hash); ``weight``: calls
    summed over the networks that contain it (every fused variant counted);
    ``networks``: names of those networks; ``flop``: FLOP of one call of the first
    variant seen; ``flop_calls``: FLOP x calls summed over the networks (the estimated
    time share :func:`allocate_trials` uses); ``extracted``: MetaSchedule's ExtractedTask.
    """

    key: str
    name: str
    weight: int
    networks: tuple[str, ...]
    flop: float = 0.0
    flop_calls: float = 0.0
    extracted: Any = field(default=None, compare=False, repr=False)

    def summary(self) -> dict[str, Any]:
        return {"key": self.key, "name": self.name, "weight": self.weight,
                "networks": len(self.networks), "flop": self.flop,
                "flop_calls": self.flop_calls}


@dataclass(frozen=True)
class TuneSummary:
    """What :func:`tune_space` did; ``seconds`` is wall time, ``tune_s_total`` the ledger's
    tuning seconds over every task of this run (earlier runs included)."""

    tasks: int
    tuned: int
    skipped: int
    trials_per_task: int
    trials_total: int
    trials_run: int
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
        return ms.database.JSONDatabase(str(wl), str(rec), allow_missing=create,
                                        module_equality=MODULE_EQUALITY)
    except Exception as exc:  # noqa: BLE001 - TVM raises its own error types
        raise TuningError(f"{db_dir}: cannot read the MetaSchedule database ({exc}); "
                          "delete the directory and tune again") from None


def read_ledger(db_dir: Path, for_tuning: bool = False) -> dict[str, dict[str, Any]]:
    """Task key -> {name, trials, tune_s, ...} of the tasks tuned so far ({} when none).

    ``for_tuning``: refuse a version-1 ledger (keys were structural hashes of whole
    fused functions; this version keys tasks by anchor block, so resuming would tune
    every task again under new keys). Applying its records still works.
    """
    return _tasks_of(read_ledger_doc(db_dir), db_dir, for_tuning)


def _tasks_of(doc: dict[str, Any], db_dir: Path, for_tuning: bool) -> dict[str, dict[str, Any]]:
    """The tasks of a ledger document (:func:`read_ledger`, without reading the file)."""
    if for_tuning and doc and int(doc.get("version", 1)) < LEDGER_VERSION:
        raise TuningError(f"{db_dir / LEDGER_NAME}: a version-{doc.get('version', 1)} ledger "
                          "(tasks keyed by the whole fused function; now by anchor block); its "
                          "records still compile networks, but tune into a new --work-dir "
                          "(or delete this one) to add to it")
    return dict(doc.get("tasks", {}))


def read_ledger_doc(db_dir: Path) -> dict[str, Any]:
    """The whole ledger (schema, version, target, module_equality, tasks, runs); {} if none."""
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
    return doc


def _write_ledger(db_dir: Path, target: dict[str, Any], tasks: dict[str, dict[str, Any]],
                  runs: list[dict[str, Any]]) -> None:
    """Write the ledger atomically; ``runs``: one entry per ``tune_space`` call (wall s)."""
    p = db_dir / LEDGER_NAME
    tmp = p.with_suffix(".tmp")
    tmp.write_text(json.dumps({"schema": LEDGER_SCHEMA, "version": LEDGER_VERSION,
                               "module_equality": MODULE_EQUALITY, "target": target,
                               "tasks": tasks, "runs": runs}, indent=1, sort_keys=True) + "\n")
    os.replace(tmp, p)


def ledger_cost(db_dir: str | Path) -> dict[str, Any]:
    """Tuning cost a database holds: tasks, trials, tuning seconds of the tasks, and the
    wall seconds of the tuning runs (extraction included) as the ledger recorded them."""
    doc = read_ledger_doc(Path(db_dir))
    tasks = doc.get("tasks", {})
    runs = doc.get("runs", [])
    return {"tasks": len(tasks), "trials": sum(int(t.get("trials", 0)) for t in tasks.values()),
            "tune_s": round(sum(float(t.get("tune_s", 0.0)) for t in tasks.values()), 1),
            "wall_s": round(sum(float(r.get("wall_s", 0.0)) for r in runs), 1),
            "networks": max((int(r.get("networks", 0)) for r in runs), default=0),
            "runs": len(runs)}


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
    # MetaSchedule's create_loggers re-declares every handler already on its logger by name
    # and fails on one someone else added without a name ("'NoneType' object has no
    # attribute 'format'"): such handlers are set aside while tuning, then put back.
    foreign = [h for h in ms_logger.handlers if h.get_name() is None]
    for h in foreign:
        ms_logger.removeHandler(h)
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
        for h in foreign:
            ms_logger.addHandler(h)
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
    """MetaSchedule's anchor-block identity of a TIR module, as 16 hex digits.

    The structural hash of the anchor block (the block with an init statement and the
    most FLOP) when there is one, else of the whole module -- what
    ``module_equality="anchor-block"`` hashes.
    """
    from tvm.s_tir.analysis import find_anchor_sblock
    from tvm_ffi import structural_hash

    anchor = find_anchor_sblock(mod)
    return f"{structural_hash(mod if anchor is None else anchor) & (2**64 - 1):016x}"


def function_key(mod) -> str:
    """Structural hash of the whole fused function (one fused variant), 16 hex digits."""
    from tvm_ffi import structural_hash

    return f"{structural_hash(mod) & (2**64 - 1):016x}"


def network_tasks(model, target: dict[str, Any], lowered: bool = False) -> list[Any]:
    """MetaSchedule's anchor-block ExtractedTasks of one ONNX model (or a :func:`lower`
    module); each task's ``dispatched`` holds its fused variants."""
    import tvm
    from tvm.s_tir import meta_schedule as ms

    mod = model if lowered else lower(model, target)
    return list(ms.relax_integration.extract_tasks(mod, tvm.target.Target(target),
                                                   module_equality=MODULE_EQUALITY))


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

    Two networks whose fused functions share an anchor block (:func:`task_key`) share
    one task; its weight is the sum of their call counts and ``flop_calls`` the sum of
    FLOP x calls.
    """
    found: dict[str, dict[str, Any]] = {}
    flops: dict[str, float] = {}
    with _bar(show_progress, "extract tasks", total) as step:
        for name, model in models:
            for t in network_tasks(model, target, lowered):
                key = task_key(t.dispatched[0])
                entry = found.setdefault(key, {"name": t.task_name, "weight": 0, "nets": [],
                                               "task": t, "flop_calls": 0.0})
                fkey = function_key(t.dispatched[0])
                if fkey not in flops:
                    flops[fkey] = _flop(t.dispatched[0])
                entry["weight"] += int(t.weight)
                entry["flop_calls"] += flops[fkey] * int(t.weight)
                entry["nets"].append(name)
            step()
    tasks = [SpaceTask(k, e["name"], e["weight"], tuple(dict.fromkeys(e["nets"])),
                       flops[function_key(e["task"].dispatched[0])], e["flop_calls"],
                       e["task"]) for k, e in found.items()]
    return sorted(tasks, key=lambda t: (-len(t.networks), -t.weight, t.name))


def allocate_trials(tasks: Sequence[SpaceTask], trials_total: int,
                    floor: int = DEFAULT_TRIALS_FLOOR) -> dict[str, int]:
    """Task key -> trials: ``trials_total`` shared by estimated time (``flop_calls``),
    every task at least ``floor`` (lowered to ``trials_total // tasks`` when the budget
    cannot give every task the floor).

    Water-filling: the largest scale c with sum(max(floor, c * share)) <= total, then
    what rounding down left goes to the largest shares. The sum never exceeds the total.
    """
    if trials_total < 1:
        raise TuningError(f"--trials-total must be >= 1, not {trials_total}")
    if not tasks:
        return {}
    n = len(tasks)
    if trials_total < n:
        raise TuningError(f"--trials-total {trials_total} is less than one trial for each of "
                          f"the {n} tasks; give at least {n} (or --max-tasks {trials_total})")
    floor = max(1, min(floor, trials_total // n))
    weights = [max(t.flop_calls, 0.0) for t in tasks]
    total_w = sum(weights)
    shares = [w / total_w for w in weights] if total_w > 0 else [1.0 / n] * n
    lo, hi = 0.0, float(trials_total)
    for _ in range(60):
        c = (lo + hi) / 2
        if sum(max(floor, c * s) for s in shares) <= trials_total:
            lo = c
        else:
            hi = c
    alloc = [max(floor, int(lo * s)) for s in shares]
    left = trials_total - sum(alloc)
    for i in sorted(range(n), key=lambda i: -shares[i])[:max(0, left)]:
        alloc[i] += 1
    return {t.key: a for t, a in zip(tasks, alloc, strict=True)}


def covering_archs(space, limit: int = 20000, seed: int = 0) -> tuple[list[str], dict[str, Any]]:
    """A few architectures whose layers include every layer of the space (or of a sample).

    ``space.covering_archs()`` when the space defines one; otherwise a greedy set cover
    over the layer signatures (op, shapes, weights, kernel, stride, pads, groups:
    :func:`_network_signatures`) of the IR networks of every architecture (a sample of
    ``limit`` when the space is larger or unbounded). Building IR is microseconds per
    network; extracting TVM tasks is ~11 s, so tasks are extracted from the cover only. Returns (archs, {how, candidates,
    signatures}).
    """
    own = space.covering_archs()
    if own:
        return list(own), {"how": "the space's own covering set", "candidates": None,
                           "signatures": None}
    if space.size is not None and space.size <= limit:
        cands, how = list(space.archs()), "every architecture"
    else:
        cands, how = space.sample(limit, seed), f"a sample of {limit} (seed {seed})"
    sigs = [_network_signatures(space.build_network(a)) for a in cands]
    universe: set = set().union(*sigs) if sigs else set()
    left, chosen = set(universe), []
    while left:
        i = max(range(len(cands)), key=lambda j: len(sigs[j] & left))
        chosen.append(cands[i])
        left -= sigs[i]
    return chosen, {"how": f"greedy cover of the layer signatures of {how}",
                    "candidates": len(cands), "signatures": len(universe)}


def _network_signatures(net) -> set[tuple]:
    """The layer signatures of a network: op, shapes, weights, kernel, stride, pads,
    dilation, groups, dtype (a conv or pool with the same signature lowers to the same
    anchor block wherever it sits; element-wise epilogues do not make another task)."""
    return {(layer.op, layer.input_shapes, layer.output_shape, layer.weight_shapes, layer.kernel,
             layer.stride, layer.pads, layer.dilation, layer.groups, layer.dtype)
            for layer in net.layers}


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
               trials_per_task: int | None = None, seed: int = 0, rpc_tracker: str = "",
               rpc_key: str = "", timeout_s: float = 30.0, show_progress: bool = True,
               population: int | None = None, trials_total: int | None = None,
               trials_floor: int = DEFAULT_TRIALS_FLOOR, networks: int = 0,
               extract_s: float = 0.0) -> TuneSummary:
    """Tune every task to its trials (``trials_per_task`` each, or ``trials_total``
    shared by :func:`allocate_trials`); records in ``work_dir``.

    ``population``: the evolutionary search's population (None: MetaSchedule's 512 and
    4 generations; a small one, e.g. 32, makes a quick, poorer search for tests).
    One task at a time (so a kill loses at most the task in flight and the progress bar
    counts tasks), sharing one builder, runner and XGBoost cost model across tasks.
    A task the ledger holds with fewer trials than asked gets the difference.
    ``networks`` / ``extract_s``: how many networks the tasks came from and how long
    their extraction took (wall s), kept in the ledger's run list.
    """
    import tvm
    from tvm.s_tir import meta_schedule as ms

    asked = _asked_trials(tasks, trials_per_task, trials_total, trials_floor)
    t_start = time.perf_counter()
    db_dir = database_dir(work_dir, target)
    db_dir.mkdir(parents=True, exist_ok=True)
    doc = read_ledger_doc(db_dir)
    ledger = _tasks_of(doc, db_dir, for_tuning=True)
    runs = list(doc.get("runs", []))
    before = record_count(db_dir)
    done = {t.key: int(ledger.get(t.key, {}).get("trials", 0)) for t in tasks}
    todo = [t for t in tasks if done[t.key] < asked[t.key]]
    tgt = tvm.target.Target(target)
    per_task, trials_run = [], 0
    run = {"when": time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime()),
           "wall_s": round(extract_s, 2), "extract_s": round(extract_s, 2),
           "networks": networks, "tasks": len(tasks), "tuned": 0, "trials": 0}
    runs.append(run)  # updated after every task: a killed run keeps its cost
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
                n = asked[task.key] - done[task.key]
                error = ""
                for model in (cost_model, None):
                    try:
                        _tune_one(task, n, db_dir, seed + i, population, builder, runner,
                                  database, model or ms.cost_model.RandomModel())
                        error = ""
                        break
                    except Exception as exc:  # noqa: BLE001 - one task does not stop the run
                        # e.g. XGBoost's "Empty dataset" on a constant fill (no reads, no
                        # features): tune it again with a random cost model, then give up
                        error = f"{type(exc).__name__}: {exc}"[:300]
                        cost_model = ms.cost_model.XGBModel(num_tuning_cores=1)
                tune_s = time.perf_counter() - t0
                trials_run += n
                best = _best_run_ms(database, task, tgt)
                old = ledger.get(task.key, {})
                ledger[task.key] = {"name": task.name, "trials": asked[task.key],
                                    "tune_s": round(float(old.get("tune_s", 0.0)) + tune_s, 2),
                                    "best_ms": best, "flop": task.flop,
                                    "flop_calls": task.flop_calls, "calls": task.weight,
                                    **({"error": error} if error else {})}
                run.update(wall_s=round(time.perf_counter() - t_start + extract_s, 2),
                           tuned=run["tuned"] + 1, trials=trials_run)
                _write_ledger(db_dir, target, ledger, runs)
                per_task.append({"key": task.key, "name": task.name, "trials": n,
                                 "tune_s": round(tune_s, 2), "best_ms": best,
                                 **({"error": error} if error else {})})
                step()
    wall_s = round(time.perf_counter() - t_start, 2)
    run.update(wall_s=round(wall_s + extract_s, 2))
    _write_ledger(db_dir, target, ledger, runs)
    return TuneSummary(
        tasks=len(tasks), tuned=len(todo), skipped=len(tasks) - len(todo),
        trials_per_task=int(trials_per_task or 0), trials_total=sum(asked.values()),
        trials_run=trials_run, seconds=wall_s,
        tune_s_total=round(sum(float(ledger.get(t.key, {}).get("tune_s", 0.0)) for t in tasks), 2),
        records_before=before, records_after=record_count(db_dir), database_dir=str(db_dir),
        database_id=database_id(db_dir), target=dict(target), per_task=tuple(per_task))


def _tune_one(task: SpaceTask, trials: int, db_dir: Path, seed: int, population: int | None,
              builder, runner, database, cost_model) -> None:
    """``trials`` MetaSchedule trials of one task into ``database``."""
    from tvm.s_tir import meta_schedule as ms

    contexts, weights = ms.relax_integration.extracted_tasks_to_tune_contexts(
        [task.extracted], work_dir=str(db_dir), num_threads=1, seed=seed,
        strategy=_strategy(population))
    if contexts:
        ms.tune_tasks(tasks=contexts, task_weights=weights, work_dir=str(db_dir),
                      max_trials_global=trials, max_trials_per_task=trials,
                      num_trials_per_iter=min(64, trials), builder=builder, runner=runner,
                      database=database, cost_model=cost_model, task_scheduler="round-robin",
                      module_equality=MODULE_EQUALITY)


def _asked_trials(tasks: Sequence[SpaceTask], per_task: int | None, total: int | None,
                  floor: int) -> dict[str, int]:
    """Trials asked of each task: ``per_task`` each, or ``total`` shared by time."""
    if (per_task is None) == (total is None):
        raise TuningError("give one of --trials-per-task and --trials-total")
    if total is not None:
        return allocate_trials(tasks, total, floor)
    if per_task < 1:
        raise TuningError(f"--trials-per-task must be >= 1, not {per_task}")
    return {t.key: per_task for t in tasks}


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

    No trials are run. ``MetaScheduleApplyDatabase`` queries the database by its
    anchor-block equality, so a fused variant never tuned itself gets its anchor's
    trace (replayed on the variant's own function: its epilogue is kept and inlined).
    Returns (mod, meta) with ``tvm_tuned`` (True only when every task of the network
    has a record), ``tuning_tasks`` / ``tuning_tasks_found`` (anchor-block tasks),
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
    tasks = ms.relax_integration.extract_tasks(mod, tgt, module_equality=MODULE_EQUALITY)
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
