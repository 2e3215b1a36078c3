"""Measurement: build (ORT session / TVM module) and run (local or TVM RPC) networks.

Import-light: runtimes are imported inside the functions that need them.

>>> from measure import MeasureConfig, measure
>>> res = measure("model.onnx", MeasureConfig(runtime="ort"))   # doctest: +SKIP
>>> res.ok, res.median_ms, res.cv                                # doctest: +SKIP
"""

from __future__ import annotations

from typing import Any

from measure.config import DEFAULT_CONFIG, BuildResult, MeasureConfig, MeasureResult

RUNTIMES = ("ort", "tvm")


def measure(model, config: MeasureConfig = DEFAULT_CONFIG,
            inputs: dict[str, Any] | None = None, bind_outputs: bool = False) -> MeasureResult:
    """Measure an ONNX model (ModelProto, bytes or path) with ``config.runtime``.

    ``bind_outputs``: ONNX Runtime writes the outputs into buffers allocated once
    (:func:`measure.ort.burst_timer`; how a lookup table times one kernel).

    With ``config.isolate`` it runs in a fresh worker process killed after
    ``config.timeout_s``. Never raises for a bad model: ``ok=False`` and ``error``.
    """
    if config.isolate:
        if inputs is not None:
            raise ValueError("explicit inputs cannot be sent to an isolated worker; "
                             "use isolate=False or let the worker draw them from config.seed")
        from measure.worker import measure_isolated

        return measure_isolated(model, config, bind_outputs)
    if config.runtime == "ort":
        from measure.ort import measure_model

        return measure_model(model, config, inputs, bind_outputs)
    if config.runtime == "tvm":
        from measure.tvm import measure_model_tvm

        return measure_model_tvm(model, config, inputs)
    return MeasureResult.failure(f"unknown runtime {config.runtime!r}; expected one of "
                                 f"{', '.join(RUNTIMES)}", config.runtime)


__all__ = ["BuildResult", "MeasureConfig", "MeasureResult", "RUNTIMES", "measure"]
