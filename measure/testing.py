"""Tiny ONNX models for tests and examples (no files, milliseconds to build and run)."""

from __future__ import annotations

import numpy as np


def tiny_model(activation: str = "Relu", size: int = 16, opset: int = 17):
    """Conv3x3(3->8) -> ``activation`` -> Conv1x1(8->8) on a 1x3xSIZExSIZE input.

    ``activation="Celu"`` gives a model ONNX Runtime runs but TVM's Relax ONNX
    importer cannot read (a build failure as data).
    """
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    w1 = numpy_helper.from_array(rng.normal(0, 0.2, (8, 3, 3, 3)).astype(np.float32), "w1")
    w2 = numpy_helper.from_array(rng.normal(0, 0.3, (8, 8, 1, 1)).astype(np.float32), "w2")
    nodes = [helper.make_node("Conv", ["x", "w1"], ["a"], pads=[1, 1, 1, 1], name="conv1"),
             helper.make_node(activation, ["a"], ["b"], name="act"),
             helper.make_node("Conv", ["b", "w2"], ["y"], name="conv2")]
    graph = helper.make_graph(
        nodes, "tiny", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, size, size])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, size, size])], [w1, w2])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name="costmodels-tests")
    model.ir_version = 8
    return model


def malformed_model() -> bytes:
    """Bytes that are not an ONNX model."""
    return b"\x08\x07this is not an onnx model\xff\xfe"
