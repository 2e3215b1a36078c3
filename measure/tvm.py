"""TVM (Relax, apache-tvm 0.27): Builder (ONNX -> compiled module) and Runner (time_evaluator).

Builder: ``relax.frontend.onnx.from_onnx`` -> ``DecomposeOpsForInference`` ->
``tvm.compile`` for an ``llvm`` target built as a dict (``mcpu`` = the host CPU
when LLVM knows it, ``num-cores`` = ``config.threads``). With
``config.tvm_trials > 0`` the module is tuned first with MetaSchedule
(``relax.pipeline.static_shape_tuning_pipeline``); its records live in
``config.tvm_work_dir`` and a rerun of the same model and budget applies them
without tuning again. The result's ``meta`` says ``tuned``, ``tune_s`` (the
tuning wall time, from the record when reused) and ``tuning_reused``.

Runner: locally a ``relax.VirtualMachine`` on ``tvm.cpu()``; with
``config.rpc_tracker`` the exported library is uploaded to a device obtained
from the tracker (:mod:`measure.rpc`). Timing: ``time_evaluator`` with
``number=1``, ``repeat=config.repeat`` after ``config.warmup`` untimed runs, so a
TVM sample is one inference, like an ONNX Runtime sample.
"""

from __future__ import annotations

import hashlib
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
from measure.inputs import as_bytes, as_proto, input_specs, random_inputs
from measure.timing import Sample, error_text, pinned, with_retries

RUNTIME = "tvm"
DEFAULT_TVM_CONFIG = MeasureConfig(runtime=RUNTIME)
DEFAULT_WORK_DIR = Path(tempfile.gettempdir()) / "costmodels-tvm-tuning"


def target_dict(config: MeasureConfig) -> dict[str, Any]:
    """The llvm target as a dict.

    ``config.tvm_target``: '' (host ``mcpu`` when known; plain llvm for RPC), a JSON
    dict, or ``"llvm -mtriple=aarch64-linux-gnu -mcpu=cortex-a72"`` (parsed into a dict,
    since TVM 0.27 rejects the old string form).
    """
    spec = config.tvm_target.strip()
    if spec.startswith("{"):
        d = json.loads(spec)
    elif spec:
        kind, *opts = spec.split()
        d = {"kind": kind}
        for opt in opts:
            key, _, value = opt.lstrip("-").partition("=")
            d[key] = value or True
    else:
        d = {"kind": "llvm"}
        mcpu = "" if config.rpc_tracker else host_mcpu()
        if mcpu:
            d["mcpu"] = mcpu
    d.setdefault("num-cores", config.threads)
    return d


def _set_threads(threads: int) -> None:
    """Size TVM's runtime thread pool (it otherwise picks its own count)."""
    import tvm

    tvm.get_global_func("runtime.config_threadpool")(0, int(threads))


def _tuning_marker(work_dir: Path, data: bytes, target: dict, trials: int) -> Path:
    key = hashlib.sha256(data + json.dumps(target, sort_keys=True).encode()
                         + str(trials).encode()).hexdigest()[:16]
    return work_dir / f"costmodels-tuned-{key}.json"


def _tune(mod, target: dict, config: MeasureConfig, data: bytes) -> tuple[Any, dict[str, Any]]:
    """MetaSchedule-tune ``mod`` (or apply existing records); returns (mod, meta)."""
    from tvm import relax

    work_dir = Path(config.tvm_work_dir or DEFAULT_WORK_DIR)
    work_dir.mkdir(parents=True, exist_ok=True)
    marker = _tuning_marker(work_dir, data, target, config.tvm_trials)
    reused = marker.is_file()
    trials = 0 if reused else config.tvm_trials
    t0 = time.perf_counter()
    mod = relax.pipeline.static_shape_tuning_pipeline(
        total_trials=trials, target=target, work_dir=str(work_dir),
        max_trials_per_task=max(1, config.tvm_trials // 4) if trials else None)(mod)
    elapsed = time.perf_counter() - t0
    if reused:
        tune_s = json.loads(marker.read_text()).get("tune_s", float("nan"))
    else:
        tune_s = elapsed
        marker.write_text(json.dumps({"tune_s": tune_s, "trials": config.tvm_trials,
                                      "target": target}))
    return mod, {"tuned": True, "tune_trials": config.tvm_trials, "tune_s": tune_s,
                 "tuning_reused": reused, "tvm_work_dir": str(work_dir)}


def build(model, config: MeasureConfig = DEFAULT_CONFIG, export: bool = False) -> BuildResult:
    """Builder: ONNX -> compiled Relax executable (and an exported ``.so`` when ``export``).

    Never raises: an import or compile error comes back as ``BuildResult.error``.
    """
    t0 = time.perf_counter()
    meta: dict[str, Any] = {"tuned": False, "tune_s": 0.0}
    try:
        import tvm
        from tvm import relax
        from tvm.relax.frontend.onnx import from_onnx

        data = as_bytes(model)
        proto = as_proto(data)
        shapes = {name: list(shape) for name, shape, _ in input_specs(proto)}
        target = target_dict(config)
        meta["target"] = target
        mod = from_onnx(proto, shape_dict=shapes)
        mod = relax.transform.DecomposeOpsForInference()(mod)
        if config.tvm_trials > 0:
            mod, tune_meta = _tune(mod, target, config, data)
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
            inputs = random_inputs(input_specs(as_proto(model)), config.seed)
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
    built = build(data, config, export=bool(config.rpc_tracker))
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
