"""Roofline kernel planning (fusion rules as data), calibration and the CLI."""

from __future__ import annotations

import numpy as np
import pytest

from analytical.calibrate import SIZES, Calibration, fit_line, spec_toml, write_spec
from analytical.roofline import RooflineModel, op_class, plan_kernels
from analytical.specs import Fusion, FusionRule, RooflineSpec, load_spec
from costmodels.cli import main
from costmodels.network import make_layer
from costmodels.spaces import nb201

ORT = Fusion(drop=("Identity",), dedupe=True,
             rules=(FusionRule("Conv", ("BatchNormalization", "Add", "Relu")),))
SHAPE = (1, 8, 8, 8)


def _conv(name, x):
    return make_layer(name, "Conv", [x], [name], [SHAPE], SHAPE, [(8, 8, 3, 3)], kernel=(3, 3),
                      stride=(1, 1), pads=(1, 1, 1, 1))


def _op(name, op, xs, weights=()):
    return make_layer(name, op, xs, [name], [SHAPE] * len(xs), SHAPE, weights)


def test_plan_kernels_fuses_drops_and_dedupes():
    """x -> Identity -> {Relu a, Relu b (same input: one kernel)} -> conv1, conv2 with BN;
    conv2's BN output is added to conv1's BN output and ReLU'd: conv2 absorbs BN, Add, Relu."""
    layers = [
        _op("id", "Identity", ["x"]),
        _op("ra", "Relu", ["id"]), _op("rb", "Relu", ["id"]),
        _conv("c1", "ra"), _op("bn1", "BatchNormalization", ["c1"], [(8,)] * 4),
        _conv("c2", "rb"), _op("bn2", "BatchNormalization", ["c2"], [(8,)] * 4),
        _op("add", "Add", ["bn1", "bn2"]), _op("out", "Relu", ["add"]),
    ]
    kernels = plan_kernels(layers, ORT)
    assert [[x.name for x in k.layers] for k in kernels] == [
        ["ra"], ["c1", "bn1"], ["c2", "bn2", "add", "out"]]
    # the absorbed Add reads bn1's output from memory: its bytes are charged
    assert kernels[2].bytes == kernels[2].layers[0].bytes_in + sum(
        x.bytes_weights for x in kernels[2].layers) + 2 * 8 * 8 * 8 * 4


def test_plan_kernels_without_fusion_is_one_kernel_per_layer():
    layers = [_op("r", "Relu", ["x"]), _conv("c", "r"), _op("bn", "BatchNormalization", ["c"])]
    assert len(plan_kernels(layers, Fusion())) == 3


def test_output_read_twice_is_not_fused():
    layers = [_conv("c", "x"), _op("bn", "BatchNormalization", ["c"]),
              _op("r1", "Relu", ["bn"]), _op("p", "AveragePool", ["bn"])]
    kernels = plan_kernels(layers, ORT)
    assert [len(k.layers) for k in kernels] == [2, 1, 1]


def test_op_classes():
    assert op_class(_conv("c", "x")) == "conv"
    one = make_layer("c", "Conv", ["x"], ["c"], [SHAPE], SHAPE, [(8, 8, 1, 1)], kernel=(1, 1))
    dw = make_layer("c", "Conv", ["x"], ["c"], [SHAPE], SHAPE, [(8, 1, 3, 3)], kernel=(3, 3),
                    groups=8, pads=(1, 1, 1, 1))
    assert (op_class(one), op_class(dw)) == ("conv1x1", "depthwise")
    assert op_class(_op("a", "Add", ["x", "y"])) == "elementwise"


def test_fused_kernels_match_ort_on_nb201():
    """ONNX Runtime (ORT_ENABLE_ALL) turns the all-3x3 cell network's 340 nodes into 106."""
    est = RooflineModel(load_spec("x86_generic", RooflineSpec)).estimate(
        nb201.build_network(1462))
    assert est.meta["layers"] == 340
    assert 100 <= est.meta["kernels"] <= 110


def test_fit_line_recovers_launch_and_rate():
    work = np.array([1e3, 1e5, 1e6])
    secs = 2e-6 + work / 5e10
    launch, rate = fit_line(work, secs)
    assert launch == pytest.approx(2e-6) and rate == pytest.approx(5e10)
    launch, rate = fit_line(work, work / 5e10 - 1e-9)  # negative intercept: through origin
    assert launch == 0.0 and rate == pytest.approx(5e10, rel=1e-3)


def _fake_calibration() -> Calibration:
    ops = {c: {"launch_us": 1.0, "compute_efficiency": 0.8}
           for c in ("conv", "conv1x1", "gemm")}
    ops |= {c: {"launch_us": 0.5, "memory_efficiency": 0.6}
            for c in ("depthwise", "pool", "global_pool", "elementwise")}
    return Calibration(100.0, 20.0, 60.0, 1 << 21, ops, "test cpu", "1.0", 1.0)


def test_spec_toml_round_trip(tmp_path):
    path = write_spec(_fake_calibration(), tmp_path / "sub" / "local.toml", name="mine")
    spec = load_spec(str(path), RooflineSpec)
    assert spec.name == "mine" and spec.peak_gflops == 100.0 and spec.cache_bytes == 1 << 21
    assert spec.ops["conv"].compute_efficiency == 0.8
    assert spec.ops["pool"].memory_efficiency == 0.6
    assert spec.ops["view"].traffic_factor == 0.0
    assert spec.fusion == load_spec("x86_generic", RooflineSpec).fusion
    assert str(SIZES) in spec_toml(_fake_calibration())


def test_cli_calibrate_specs_and_layers(tmp_path, capsys):
    out = tmp_path / "cal.toml"
    assert main(["roofline", "calibrate", "-o", str(out), "--repeats", "2"]) == 0
    spec = load_spec(str(out), RooflineSpec)
    assert spec.peak_gflops > 0 and spec.dram_bandwidth_gbps > 0
    assert RooflineModel(spec).estimate(nb201.build_network(1835)).latency_ms > 0
    assert main(["roofline", "specs"]) == 0
    assert "eyeriss" in capsys.readouterr().out
    assert main(["roofline", "layers", "1835", "--backend", "eyeriss"]) == 0
    assert "total" in capsys.readouterr().out
