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

import functools
import time
from dataclasses import replace
from typing import Any

import numpy as np

from measure.config import DEFAULT_CONFIG, BuildResult, MeasureConfig, MeasureResult
from measure.fingerprint import fingerprint
from measure.inputs import as_bytes, as_proto, index_bounds, random_inputs
from measure.timing import Sample, error_text, pinned, timed_runs

RUNTIME = "ort"
_OPT_LEVELS = {"disable": "ORT_DISABLE_ALL", "basic": "ORT_ENABLE_BASIC",
               "extended": "ORT_ENABLE_EXTENDED", "all": "ORT_ENABLE_ALL"}


_QUIETED = False


def _quiet_ort():
    """onnxruntime, with its process-wide logger at errors only. Its environment warns when
    it is created (under a read-only HOME: "Failed to persist telemetry device ID"), before
    any setting applies, so that one creation runs with stderr on /dev/null."""
    global _QUIETED
    import os
    import sys

    import onnxruntime as ort

    if _QUIETED:
        return ort
    _QUIETED = True
    try:
        sys.stderr.flush()
        saved = os.dup(2)
    except (OSError, ValueError, AttributeError):  # stderr closed: nothing to keep quiet
        ort.set_default_logger_severity(3)
        return ort
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        ort.set_default_logger_severity(3)
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)
    return ort


@functools.cache  # once per process
def ort_nchwc_block() -> int | None:
    """The channel block of ONNX Runtime's NCHWc layout on this machine (MLAS: 16 with
    AVX-512F, 8 with AVX2), None where it does not block (no NCHWc kernels). Read from the
    graph ORT optimises for one 3x3 convolution of 8 channels (the padded output channels
    of its NCHWc weight); a few milliseconds, once per process."""
    import os
    import tempfile

    import onnx
    from onnx import TensorProto, helper

    ort = _quiet_ort()
    w = helper.make_tensor("W", TensorProto.FLOAT, [8, 8, 3, 3], np.zeros(576, np.float32))
    graph = helper.make_graph(
        [helper.make_node("Conv", ["X", "W"], ["Y"], pads=[1, 1, 1, 1])], "block",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, [1, 8, 8, 8])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, [1, 8, 8, 8])], [w])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    block, done = None, None
    try:
        with tempfile.TemporaryDirectory() as d:
            so = session_options(DEFAULT_CONFIG)
            so.optimized_model_filepath = os.path.join(d, "optimized.onnx")
            ort.InferenceSession(model.SerializeToString(), so,
                                 providers=["CPUExecutionProvider"])
            done = onnx.load(so.optimized_model_filepath)
    except Exception:  # noqa: BLE001 - no answer (no writable temp folder): rules keep theirs
        done = None
    inits = {t.name: list(t.dims) for t in done.graph.initializer} if done else {}
    for node in done.graph.node if done else []:
        if node.domain == "com.microsoft.nchwc" and node.op_type == "Conv":
            dims = inits.get(node.input[1]) if len(node.input) > 1 else None
            block = dims[0] if dims and dims[0] in (4, 8, 16, 32) else None
    return block


def session_options(config: MeasureConfig):
    """SessionOptions for the protocol: pinned thread counts, sequential, chosen opt level."""
    ort = _quiet_ort()
    so = ort.SessionOptions()
    so.intra_op_num_threads = config.threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = getattr(ort.GraphOptimizationLevel,
                                          _OPT_LEVELS[config.graph_opt])
    so.log_severity_level = 4  # fatal only: a failed run is reported once, by us
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
    bounds: dict[str, int] = {}
    if any("int" in arg.type for arg in sess.get_inputs()):  # only integer inputs index
        try:
            bounds = index_bounds(as_proto(data))
        except Exception:  # noqa: BLE001 - no bounds: the default integer range
            pass
    return BuildResult(artifact=sess, build_s=time.perf_counter() - t0,
                       meta={"providers": sess.get_providers(), "index_bounds": bounds})


def session_inputs(sess, seed: int, bounds: dict[str, int] | None = None
                   ) -> dict[str, np.ndarray]:
    """Fixed random inputs matching the session's declared inputs (integer inputs used as
    indices below their ``bounds``, :func:`measure.inputs.index_bounds`)."""
    specs = []
    for arg in sess.get_inputs():
        # a declared 0 stays (an empty tensor); an open dimension (None, a name) takes 1
        shape = tuple(d if isinstance(d, int) and d >= 0 else 1 for d in arg.shape)
        specs.append((arg.name, shape, _ort_dtype(arg.type)))
    return random_inputs(specs, seed, bounds)


def _ort_dtype(type_str: str) -> np.dtype:
    name = type_str.removeprefix("tensor(").removesuffix(")")
    return np.dtype({"float": "float32", "double": "float64", "float16": "float16",
                     "bool": "bool"}.get(name, name if name.startswith(("int", "uint"))
                                         else "float32"))


def burst_timer(built: BuildResult, config: MeasureConfig = DEFAULT_CONFIG,
                inputs: dict[str, np.ndarray] | None = None, bind_outputs: bool = False):
    """A built session -> ``burst(warmup, runs) -> Sample`` (one untimed check run first).

    With one intra-op thread ORT runs the graph in the calling thread, so preempted runs
    are seen and replaced (``config.drop_preempted``). Raises if the model cannot run.

    ``bind_outputs``: every run writes into the same output buffers, allocated once
    (:func:`bound_run`), instead of new arrays handed back to Python: what a kernel's output
    costs inside a network, where the runtime's arena reuses its buffers. A one-kernel
    model for a lookup table is timed so (:mod:`measure.lut.build`); a whole network is
    timed as a user runs it (``sess.run``).
    """
    sess = built.artifact
    feed = inputs if inputs is not None else session_inputs(
        sess, config.seed, (built.meta or {}).get("index_bounds"))
    outputs = [o.name for o in sess.get_outputs()]
    first = sess.run(outputs, feed)  # fail here, untimed, if the model cannot run
    drop = config.drop_preempted and config.threads == 1
    call = bound_run(sess, feed, outputs, first) if bind_outputs else (
        lambda: sess.run(outputs, feed))

    def burst(warmup: int, runs: int) -> Sample:
        return timed_runs(call, warmup, runs, drop=drop)

    return burst


def bound_run(sess, feed: dict[str, np.ndarray], outputs: list[str], first: list):
    """A call that runs ``sess`` on ``feed`` with its outputs bound to buffers allocated
    once, shaped as the check run's ``first`` outputs (ORT's I/O binding): no output
    array is allocated, or first written (page faults), or handed to Python per run."""
    ort = _quiet_ort()
    binding = sess.io_binding()
    keep = []  # the arrays behind the bound values live as long as the call
    for name, value in feed.items():
        arr = np.ascontiguousarray(value)
        keep.append(arr)
        binding.bind_cpu_input(name, arr)
    for name, value in zip(outputs, first, strict=True):
        arr = np.empty_like(np.asarray(value))
        keep.append(arr)
        binding.bind_ortvalue_output(name, ort.OrtValue.ortvalue_from_numpy(arr))

    def call():
        sess.run_with_iobinding(binding)
        return keep

    return call


def prepare(model, config: MeasureConfig = DEFAULT_CONFIG, name: str = "",
            inputs: dict[str, np.ndarray] | None = None, built: BuildResult | None = None,
            bind_outputs: bool = False):
    """Build (unless ``built`` is given) and check one model for the interleaved scheduler:
    a :class:`measure.rounds.Prepared`. Never raises: a model that cannot be built or run is
    a prepared failure. ``bind_outputs``: see :func:`burst_timer`."""
    from measure.rounds import Prepared

    built = built if built is not None else build(model, config)
    meta = {"build_s": built.build_s, **built.meta}
    if not built.ok:
        return Prepared(name, failure=MeasureResult.failure(built.error, RUNTIME, meta=meta))
    try:
        burst = burst_timer(built, config, inputs, bind_outputs)
    except Exception as exc:  # noqa: BLE001 - a model that cannot run is data
        return Prepared(name, failure=MeasureResult.failure(f"run failed: {error_text(exc)}",
                                                            RUNTIME, meta=meta))
    return Prepared(name, burst=burst, meta=meta)


def run(built: BuildResult, config: MeasureConfig = DEFAULT_CONFIG,
        inputs: dict[str, np.ndarray] | None = None, bind_outputs: bool = False
        ) -> MeasureResult:
    """Runner: the interleaved-rounds protocol on one built session (the caller pins).
    Never raises. ``bind_outputs``: see :func:`burst_timer`."""
    from measure.rounds import adopt_anchor, machine_anchor, measure_window, reference_panel

    item = prepare(None, config, inputs=inputs, built=built, bind_outputs=bind_outputs)
    panel = reference_panel(config) if item.burst is not None else []
    anchor = machine_anchor(config) if panel else None
    try:
        [res], report = measure_window([item], config, panel, anchor)
    finally:
        for p in panel:
            p.close()
    if panel and anchor is None:
        [res], _ = adopt_anchor(config, [res], report)
    if res.ok:
        res = replace(res, meta={**res.meta, "window": report.as_dict()})
    return res


def measure_model(model, config: MeasureConfig = DEFAULT_CONFIG,
                  inputs: dict[str, Any] | None = None, bind_outputs: bool = False
                  ) -> MeasureResult:
    """Measure an ONNX model (ModelProto, bytes or path) with ONNX Runtime.

    Fixed random inputs from ``config.seed`` unless ``inputs`` is given; timed in
    ``config.rounds`` rounds spread over at least ``rounds * min_round_s`` seconds
    (:mod:`measure.rounds`); the process is pinned to ``config.pin_cpu`` (>= 0) during
    build and timing. Returns a :class:`MeasureResult` (``ok=False`` with the error for a
    bad model).
    """
    if config.runtime != RUNTIME:
        config = replace(config, runtime=RUNTIME)
    fp = fingerprint(config)
    with pinned(config.pin_cpu, config.threads) as cpus:
        res = run(build(model, config), config, inputs, bind_outputs)
    return replace(res, fingerprint=fp, meta={**res.meta, "pinned_cpus": sorted(cpus or [])})


__all__ = ["build", "burst_timer", "prepare", "run", "measure_model", "session_options"]
