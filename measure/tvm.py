"""TVM (Relax, apache-tvm 0.27): Builder (ONNX -> compiled module) and Runner (time_evaluator).

Builder: ONNX -> :func:`measure.tune.lower` (import, DecomposeOpsForInference,
legalize, fuse) -> ``tvm.compile`` for an ``llvm`` target built as a dict
(``mcpu`` = the host CPU when LLVM knows it, ``num-cores`` = ``config.threads``).
Three ways to schedule the fused kernels:

- untuned (``tvm_trials == 0``, no ``tvm_work_dir``): TVM's default schedules.
  Flagged ``tvm_tuned: false`` in the record's meta and fingerprint.
- from a tuning database (``tvm_work_dir`` set, ``tvm_trials == 0``): the records
  ``costmodels tvm tune`` wrote for this target are applied with no trial run
  (:func:`measure.tune.apply_database`); ``tvm_tuned`` is true only when every task
  of the network has a record, and ``tuning_db`` hashes the database used.
- tuned for this network (``tvm_trials > 0``): ``tvm_trials`` shared over the
  network's anchor-block tasks by estimated time (:func:`measure.tune.allocate_trials`;
  tasks the database holds with enough trials are skipped, the same database, so later
  networks reuse them), then the database is applied.

Runner: locally a ``relax.VirtualMachine`` on ``tvm.cpu()``; with
``config.rpc_tracker`` the exported library is uploaded to a device obtained
from the tracker (:mod:`measure.rpc`). Timing: ``time_evaluator`` with
``number=1``, ``repeat=config.repeat`` after ``config.warmup`` untimed runs, so a
TVM sample is one inference, like an ONNX Runtime sample.
"""

from __future__ import annotations

import copy
import functools
import json
import os
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from measure.config import DEFAULT_CONFIG, BuildResult, MeasureConfig, MeasureResult
from measure.fingerprint import fingerprint, host_mcpu
from measure.inputs import as_bytes, as_proto, index_bounds, input_specs, random_inputs
from measure.timing import Sample, error_text, pinned, with_retries

RUNTIME = "tvm"
DEFAULT_TVM_CONFIG = MeasureConfig(runtime=RUNTIME)
DEFAULT_WORK_DIR = Path(tempfile.gettempdir()) / "costmodels-tvm-tuning"


def target_dict(config: MeasureConfig) -> dict[str, Any]:
    """The llvm target as a dict.

    ``config.tvm_target``: '' (host ``mcpu`` when known; plain llvm for RPC), a JSON
    dict, or ``"llvm -mtriple=aarch64-linux-gnu -mcpu=cortex-a72"`` (parsed into a dict,
    since TVM 0.27 rejects the old string form). Parsed and checked by TVM once per
    (target, RPC or not, threads); each call gets its own copy.
    """
    return copy.deepcopy(_target_dict(config.tvm_target.strip(), bool(config.rpc_tracker),
                                      config.threads))


@functools.lru_cache(maxsize=32)
def _target_dict(spec: str, rpc: bool, threads: int) -> dict[str, Any]:
    from costmodels.errors import InputError, first_line

    if spec.startswith("{"):
        try:
            d = json.loads(spec)
        except ValueError as exc:
            raise InputError(f"--target {spec!r}: not a JSON object ({exc.msg} at character "
                             f"{exc.pos}); e.g. '{{\"kind\": \"llvm\", \"mcpu\": \"znver4\"}}'"
                             ) from None
        if not isinstance(d, dict) or not isinstance(d.get("kind"), str):
            raise InputError(f"--target {spec!r}: a JSON target needs a \"kind\" string, e.g. "
                             "{\"kind\": \"llvm\"}")
    elif spec:
        kind, *opts = spec.split()
        d = {"kind": kind}
        for opt in opts:
            key, _, value = opt.lstrip("-").partition("=")
            if key in LIST_OPTIONS:  # -mattr=+neon,+v8.2a -> ["+neon", "+v8.2a"]
                d[key] = [v for v in value.split(",") if v]
            else:
                d[key] = (int(value) if value.lstrip("-").isdigit() else value) if value else True
    else:
        d = {"kind": "llvm"}
        mcpu = "" if rpc else host_mcpu()
        if mcpu:
            d["mcpu"] = mcpu
    if d["kind"] not in TARGET_KINDS:
        raise InputError(f"--target {spec!r}: unknown target kind {d['kind']!r}; costmodels "
                         f"compiles for one of {', '.join(sorted(TARGET_KINDS))} (CPUs: llvm, "
                         "e.g. 'llvm -mtriple=aarch64-linux-gnu -mcpu=cortex-a72')")
    if d["kind"] == "llvm":  # the CPU kind's thread count (other kinds have no such option)
        d.setdefault("num-cores", threads)
        cores = d["num-cores"]
        if not isinstance(cores, int) or isinstance(cores, bool) or cores < 1:
            raise InputError(f"--target {spec!r}: num-cores must be a positive integer, not "
                             f"{cores!r}")
    import tvm

    try:  # what TVM itself refuses (an unknown option, a wrong type), before any work
        tvm.target.Target(d)
    except Exception as exc:  # noqa: BLE001 - TVM raises ValueError/TVMError variants
        first = first_line(str(exc)) or type(exc).__name__  # TVM's end says what it expected
        raise InputError(f"--target {spec!r}: TVM refuses it ({first})") from None
    return d


def _foreign_arch(config: MeasureConfig) -> str:
    """Why a target cannot run here (an -mtriple of another architecture without
    --rpc-tracker), or ''."""
    import tvm

    triple = str(target_dict(config).get("mtriple") or "")
    get = tvm.get_global_func("target.llvm_get_system_triple", allow_missing=True)
    host = str(get()) if triple and get else ""
    if not host or triple.split("-")[0] == host.split("-")[0]:
        return ""
    return (f"--target compiles for {triple}, not this machine ({host}); measure it on such "
            "a device with --rpc-tracker HOST:PORT --rpc-key KEY")


#: options of the string form that TVM takes as lists (comma-separated in the string)
LIST_OPTIONS = frozenset({"mattr", "keys", "libs", "cl-opt"})

#: TVM target kinds a network can be compiled for (TVM 0.27's registered kinds)
TARGET_KINDS = frozenset({"llvm", "c", "cuda", "nvptx", "rocm", "opencl", "vulkan", "metal",
                          "webgpu", "hexagon"})


def _set_threads(threads: int) -> None:
    """Size TVM's runtime thread pool (it otherwise picks its own count)."""
    import tvm

    tvm.get_global_func("runtime.config_threadpool")(0, int(threads))


def _schedule(mod, target: dict, config: MeasureConfig) -> tuple[Any, dict[str, Any]]:
    """Tune (``tvm_trials > 0``) and/or apply the database of ``config.tvm_work_dir``."""
    from measure import tune

    work_dir = Path(config.tvm_work_dir or DEFAULT_WORK_DIR)
    meta: dict[str, Any] = {}
    if config.tvm_trials > 0:
        tasks = tune.extract_space_tasks([("model", mod)], target, show_progress=False,
                                         lowered=True)
        summary = tune.tune_space(tasks, work_dir, target, seed=config.seed,
                                  show_progress=False,
                                  trials_total=max(config.tvm_trials, len(tasks)))
        meta.update(tune_s=summary.seconds, tune_trials=config.tvm_trials,
                    tuning_reused=summary.tuned == 0, tuning_tasks_tuned=summary.tuned)
    mod, applied = tune.apply_database(mod, target, work_dir)
    applied["tuning_trials"] = config.tvm_trials
    return mod, {**meta, **applied, "tuned": applied["tvm_tuned"]}


def build(model, config: MeasureConfig = DEFAULT_CONFIG, export: bool = False) -> BuildResult:
    """Builder: ONNX -> compiled Relax executable (and an exported ``.so`` when ``export``).

    Never raises: an import or compile error comes back as ``BuildResult.error``.
    """
    t0 = time.perf_counter()
    meta: dict[str, Any] = {"tuned": False, "tvm_tuned": False, "tuning_db": "", "tune_s": 0.0}
    try:
        import tvm

        from measure.tune import lower

        target = target_dict(config)
        meta["target"] = target
        mod = lower(as_bytes(model), target)
        if config.tvm_trials > 0 or config.tvm_work_dir:
            mod, tune_meta = _schedule(mod, target, config)
            meta.update(tune_meta)
        ex = tvm.compile(mod, target=tvm.target.Target(target))
        path = ""
        if export:
            path = str(Path(tempfile.mkdtemp(prefix="costmodels-tvm-")) / "model.so")
            cross = os.environ.get("COSTMODELS_CROSS_CC", "")
            if cross:
                from tvm.contrib import cc

                ex.export_library(path, fcompile=cc.cross_compiler(cross))
            else:
                ex.export_library(path)
    except Exception as exc:  # noqa: BLE001 - errors are data
        return BuildResult(error=f"build failed: {error_text(exc)}",
                           build_s=time.perf_counter() - t0, meta=meta)
    return BuildResult(artifact=ex, artifact_path=path, build_s=time.perf_counter() - t0,
                       meta=meta)


def tuning_flags(built: BuildResult) -> dict[str, Any]:
    """What the fingerprint says about tuning: ``tvm_tuned`` and the ``tuning_db`` hash."""
    return {"tvm_tuned": bool(built.meta.get("tvm_tuned")),
            "tuning_db": str(built.meta.get("tuning_db", ""))}


def time_vm(vm, dev, args: list, config: MeasureConfig, local: bool = True) -> MeasureResult:
    """Warm-up, then ``config.repeat`` single-inference samples with ``time_evaluator``."""
    vm["main"](*args)  # fail here, untimed, if it cannot run
    if config.warmup > 0:
        vm.time_evaluator("main", dev, number=config.warmup, repeat=1)(*args)
    timer = vm.time_evaluator("main", dev, number=1, repeat=config.repeat)
    # Locally with one thread the module runs in this thread: the share of the batch's
    # wall time it spent off the CPU says whether another process took the core.
    watch = local and config.threads == 1

    def once(attempt: int) -> Sample:
        c0, t0 = time.thread_time_ns(), time.perf_counter_ns()
        times = np.asarray(timer(*args).results, dtype=np.float64) * 1e3
        wall, cpu = time.perf_counter_ns() - t0, time.thread_time_ns() - c0
        off = max(0.0, (wall - cpu) / wall) if watch and wall > 0 else 0.0
        return Sample(times, off_cpu_frac=off)

    return with_retries(once, config, RUNTIME)


def run(built: BuildResult, config: MeasureConfig = DEFAULT_CONFIG,
        inputs: dict[str, np.ndarray] | None = None, model=None) -> MeasureResult:
    """Runner (local or RPC): time a built module. Never raises.

    ``inputs`` default to fixed random arrays from ``config.seed`` (needs ``model``
    to know the input shapes).
    """
    base_meta = {"build_s": built.build_s, **built.meta}
    if not built.ok:
        return MeasureResult.failure(built.error, RUNTIME, meta=base_meta)
    try:
        if inputs is None:
            proto = as_proto(model)
            inputs = random_inputs(input_specs(proto), config.seed, index_bounds(proto))
        if config.rpc_tracker:
            from measure.rpc import run_remote

            res = run_remote(built.artifact_path, list(inputs.values()), config)
        else:
            import tvm
            from tvm import relax

            _set_threads(config.threads)
            dev = tvm.cpu()
            vm = relax.VirtualMachine(built.artifact, dev)
            args = [tvm.runtime.tensor(np.ascontiguousarray(a), dev) for a in inputs.values()]
            res = time_vm(vm, dev, args, config)
    except Exception as exc:  # noqa: BLE001
        return MeasureResult.failure(f"run failed: {error_text(exc)}", RUNTIME, meta=base_meta)
    return replace(res, meta={**res.meta, **base_meta})


def measure_model_tvm(model, config: MeasureConfig = DEFAULT_TVM_CONFIG,
                      inputs: dict[str, Any] | None = None) -> MeasureResult:
    """Measure an ONNX model (ModelProto, bytes or path) with TVM, locally or over RPC.

    Built (and tuned: MetaSchedule runs its own builder and runner processes) unpinned;
    timed pinned to ``config.pin_cpu`` locally (not for RPC: the remote device times it).
    Returns a :class:`MeasureResult`; ``meta`` has ``target``, ``tuned``, ``tune_s``.
    """
    if config.runtime != RUNTIME:
        config = replace(config, runtime=RUNTIME)
    fp = fingerprint(config)
    try:
        data = as_bytes(model)
    except Exception as exc:  # noqa: BLE001
        return MeasureResult.failure(f"build failed: {error_text(exc)}", RUNTIME,
                                     fingerprint=fp)
    foreign = "" if config.rpc_tracker else _foreign_arch(config)
    if foreign:
        return MeasureResult.failure(foreign, RUNTIME, fingerprint=fp)
    built = build(data, config, export=bool(config.rpc_tracker))
    fp = {**fp, **tuning_flags(built)}
    pin = -1 if config.rpc_tracker else config.pin_cpu
    try:
        with pinned(pin, config.threads) as cpus:
            res = run(built, config, inputs, model=data)
    finally:
        if built.artifact_path:
            _remove_artifact(built.artifact_path)
    return replace(res, fingerprint=fp, meta={**res.meta, "pinned_cpus": sorted(cpus or [])})


def _remove_artifact(path: str) -> None:
    p = Path(path)
    p.unlink(missing_ok=True)
    try:
        p.parent.rmdir()
    except OSError:
        pass
