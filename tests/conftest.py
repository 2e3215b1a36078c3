"""Shared fixtures. Tests need no network access and no GPU."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
REFDATA = ROOT.parent / "shared" / "refdata"
# CI sets COSTMODELS_SHORT=1: slow tests run in a short form.
SHORT = os.environ.get("COSTMODELS_SHORT", "") not in ("", "0")


@pytest.fixture
def refdata() -> Path:
    if not REFDATA.is_dir():
        pytest.skip(f"reference tables not found at {REFDATA}")
    return REFDATA


@pytest.fixture
def tiny_onnx(tmp_path):
    """A two-layer conv net as an ONNX file (Conv-Relu-GlobalAveragePool)."""
    import numpy as np
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.random.default_rng(0).normal(size=(8, 3, 3, 3))
                                .astype(np.float32), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("GlobalAveragePool", ["r"], ["y"], name="gap")]
    g = helper.make_graph(nodes, "tiny",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 16, 16])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8, 1, 1])],
                          [w])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    path = tmp_path / "tiny.onnx"
    onnx.save(m, path)
    return path


@pytest.fixture(autouse=True)
def _private_anchor_file(tmp_path_factory, monkeypatch):
    """Every test sees its own machine-anchor file (never the user's ~/.cache one)."""
    monkeypatch.setenv("COSTMODELS_ANCHORS",
                       str(tmp_path_factory.mktemp("anchors") / "anchors.json"))
