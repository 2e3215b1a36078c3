"""ONNX Runtime: Builder (an InferenceSession) and Runner (the timing protocol).

>>> from measure.ort import measure_model
>>> res = measure_model("model.onnx")            # doctest: +SKIP
>>> res.median_ms, res.cv                         # doctest: +SKIP

Sessions use ``config.threads`` intra-op threads, one inter-op thread and
sequential execution; the process is pinned to ``config.pin_cpu`` (affinity
restored afterwards). A bad model never raises: the result is a failure record
carrying the error text.
"""

from __future__ import annotations

import time
from dataclasses import replace
from typing import Any

import numpy as np

from measure.config import DEFAULT_CONFIG, BuildResult, MeasureConfig, MeasureResult
from measure.fingerprint import fingerprint
from measure.inputs import as_bytes, random_inputs
from measure.timing import Sample, error_text, pinned, timed_runs, with_retries

RUNTIME = "ort"
_OPT_LEVELS = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC",
               "extended": "ORT_ENABLE_EXTENDED", "all": "ORT_ENABLE_ALL"}


def session_options(config: MeasureConfig):
    """SessionOptions for the protocol: pinned thread counts, sequential, chosen opt level."""
    import onnxruntime as ort

    if config.graph_opt not in _OPT_LEVELS:
        raise ValueError(f"graph_opt must be one of {', '.join(_OPT_LEVELS)}, "
                         f"not {config.graph_opt!r}")
    so = ort.SessionOptions()
    so.intra_op_num_threads = config.threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = getattr(ort.GraphOptimizationLevel,
                                          _OPT_LEVELS[config.graph_opt])
    so.log_severity_level = 3
    return so


def build(model, config: MeasureConfig = DEFAULT_CONFIG) -> BuildResult:
    """Builder: model -> BuildResult holding an InferenceSession (or the error)."""
    import onnxruntime as ort

    t0 = time.perf_counter()
    try:
        data = as_bytes(model)
        sess = ort.InferenceSession(data, session_options(config), providers=[config.provider])
    except Exception as exc:  # noqa: BLE001 - a bad model is data, not a crash
        return BuildResult(error=f"build failed: {error_text(exc)}",
                           build_s=time.perf_counter() - t0)
    return BuildResult(artifact=sess, build_s=time.perf_counter() - t0,
                       meta={"providers": sess.get_providers()})


def session_inputs(sess, seed: int) -> dict[str, np.ndarray]:
    """Fixed random inputs matching the session's declared inputs."""
    specs = []
    for arg in sess.get_inputs():
        shape = tuple(d if isinstance(d, int) and d > 0 else 1 for d in arg.shape)
        specs.append((arg.name, shape, _ort_dtype(arg.type)))
    return random_inputs(specs, seed)


def _ort_dtype(type_str: str) -> np.dtype:
    name = type_str.removeprefix("tensor(").removesuffix(")")
    return np.dtype({"float": "float32", "double": "float64", "float16": "float16",
                     "bool": "bool"}.get(name, name if name.startswith(("int", "uint"))
                                         else "float32"))


def run(built: BuildResult, config: MeasureConfig = DEFAULT_CONFIG,
        inputs: dict[str, np.ndarray] | None = None) -> MeasureResult:
    """Runner: warm-up, timed runs, re-measure while noisy. Never raises."""
    if not built.ok:
        return MeasureResult.failure(built.error, RUNTIME, meta={"build_s": built.build_s})
    sess = built.artifact
    try:
        feed = inputs if inputs is not None else session_inputs(sess, config.seed)
        outputs = [o.name for o in sess.get_outputs()]
        sess.run(outputs, feed)  # fail here, untimed, if the model cannot run

        # One intra-op thread: ORT runs the graph in this thread, so preemption is visible.
        drop = config.drop_preempted and config.threads == 1

        def once(attempt: int) -> Sample:
            return timed_runs(lambda: sess.run(outputs, feed), config.warmup, config.repeat,
                              drop=drop)

        res = with_retries(once, config, RUNTIME)
    except Exception as exc:  # noqa: BLE001
        return MeasureResult.failure(f"run failed: {error_text(exc)}", RUNTIME,
                                     meta={"build_s": built.build_s})
    return replace(res, meta={**res.meta, "build_s": built.build_s, **built.meta})


def measure_model(model, config: MeasureConfig = DEFAULT_CONFIG,
                  inputs: dict[str, Any] | None = None) -> MeasureResult:
    """Measure an ONNX model (ModelProto, bytes or path) with ONNX Runtime.

    Fixed random inputs from ``config.seed`` unless ``inputs`` is given; the
    process is pinned to ``config.pin_cpu`` (>= 0) during build and timing.
    Returns a :class:`MeasureResult` (``ok=False`` with the error for a bad model).
    """
    if config.runtime != RUNTIME:
        config = replace(config, runtime=RUNTIME)
    fp = fingerprint(config)
    with pinned(config.pin_cpu, config.threads) as cpus:
        res = run(build(model, config), config, inputs)
    return replace(res, fingerprint=fp, meta={**res.meta, "pinned_cpus": sorted(cpus or [])})


__all__ = ["build", "run", "measure_model", "session_options"]
