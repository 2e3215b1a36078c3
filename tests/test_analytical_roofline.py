"""Roofline costing of the core planner's kernels (fusion rules named by the spec),
calibration and the CLI."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from analytical.calibrate import SIZES, Calibration, fit_line, spec_toml, write_spec
from analytical.roofline import RooflineModel, op_class
from analytical.specs import RooflineSpec, SpecError, load_spec, spec_dir
from costmodels.cli import main
from costmodels.fusion import load_rules
from costmodels.network import Network, make_layer, numel
from costmodels.spaces import nb201

SHAPE = (1, 8, 8, 8)
XEON = load_spec("xeon_2c", RooflineSpec)


def _conv(name, x):
    return make_layer(name, "Conv", [x], [name], [SHAPE], SHAPE, [(8, 8, 3, 3)], kernel=(3, 3),
                      stride=(1, 1), pads=(1, 1, 1, 1))


def _op(name, op, xs, weights=()):
    return make_layer(name, op, xs, [name], [SHAPE] * len(xs), SHAPE, weights)


def _net(layers, outputs):
    return Network("t", (("x", SHAPE),), tuple(layers), tuple(outputs))


def _kernels(est):
    """(op, layers covered) of each costed kernel, layout reorders left out."""
    return [(c.op, c.meta["fused"]) for c in est.per_layer if c.meta["op_class"] != "reorder"]


def test_kernels_fuse_drop_and_dedupe_as_the_rules_say():
    """x -> Identity -> {Relu a, Relu b (same input: one kernel)} -> conv1, conv2 with BN;
    the BN outputs are added and ReLU'd: ORT's rules let the first conv absorb Add and Relu
    (its other input is NCHWc), and the absorbed Add's second input is read from memory."""
    layers = [
        _op("id", "Identity", ["x"]),
        _op("ra", "Relu", ["id"]), _op("rb", "Relu", ["id"]),
        _conv("c1", "ra"), _op("bn1", "BatchNormalization", ["c1"], [(8,)] * 4),
        _conv("c2", "rb"), _op("bn2", "BatchNormalization", ["c2"], [(8,)] * 4),
        _op("add", "Add", ["bn1", "bn2"]), _op("out", "Relu", ["add"]),
    ]
    est = RooflineModel(XEON).estimate(_net(layers, ["out"]))
    assert _kernels(est) == [
        ("Relu", ("ra",)), ("Conv+BatchNormalization+Add+Relu", ("c1", "bn1", "add", "out")),
        ("Conv+BatchNormalization", ("c2", "bn2"))]
    fused = est.per_layer[1]
    by_name = {x.name: x for x in layers}
    covered = [by_name[n] for n in fused.meta["fused"]]
    assert fused.meta["flops"] == sum(2 * x.macs + x.elem_ops for x in covered)
    assert fused.meta["bytes"] == by_name["c1"].bytes_in + sum(
        x.bytes_weights for x in covered) + 2 * 8 * 8 * 8 * 4


def test_a_conv_left_in_nchw_is_priced_by_its_nchw_class():
    """Depthwise convs of 32 channels run in ORT's blocked NCHWc layout, of 34 (not a
    multiple of 4) in plain NCHW: the second is priced with ``depthwise_nchw`` when the spec
    has it, with ``depthwise`` when it does not; a misspelt class is refused."""
    def dw(c):
        shape = (1, c, 16, 16)
        layer = make_layer("dw", "Conv", ["x"], ["dw"], [shape], shape, [(c, 1, 3, 3)],
                           kernel=(3, 3), stride=(1, 1), pads=(1, 1, 1, 1), groups=c)
        return Network("t", (("x", shape),), (layer,), ("dw",))

    slow = replace(XEON.ops["depthwise"], compute_efficiency=0.01)
    spec = replace(XEON, ops={**XEON.ops, "depthwise_nchw": slow})
    with_class, without = RooflineModel(spec), RooflineModel(XEON)
    kinds = {c: [(k.meta["op_class"], k.meta["layout"]) for k in with_class.estimate(dw(c))
                 .per_layer if k.meta["op_class"] != "reorder"] for c in (32, 34)}
    assert kinds == {32: [("depthwise", "nchwc")], 34: [("depthwise_nchw", "nchw")]}
    assert with_class.estimate(dw(32)).latency_ms == without.estimate(dw(32)).latency_ms
    assert with_class.estimate(dw(34)).latency_ms > 5 * without.estimate(dw(34)).latency_ms
    with pytest.raises(SpecError, match="did you mean 'depthwise_nchw'"):
        RooflineModel(replace(XEON, ops={**XEON.ops, "depthwise_ncwh": slow}))


def test_a_post_pass_activation_adds_one_pass_over_the_output():
    """A Conv absorbs a following Clip (ReLU6) and a Relu alike; a spec listing Clip in
    ``post_pass_ops`` adds the output's bytes read and written at the element-wise rate to
    the Clip kernel only."""
    def net(act):
        layers = [_conv("c", "x"), make_layer("a", act, ["c"], ["a"], [SHAPE], SHAPE)]
        return _net(layers, ["a"])

    post = RooflineModel(replace(XEON, post_pass_ops=("Clip",)))
    plain = RooflineModel(replace(XEON, post_pass_ops=()))
    clip, relu = post.estimate(net("Clip")), post.estimate(net("Relu"))
    assert [c.op for c in clip.per_layer if c.meta["op_class"] != "reorder"] == ["Conv+Clip"]
    extra = clip.latency_ms - plain.estimate(net("Clip")).latency_ms
    out = 2 * numel(SHAPE) * 4
    assert extra == pytest.approx(out / (XEON.bandwidth_gbps(out) * 1e6
                                         * XEON.ops["elementwise"].memory_efficiency))
    assert relu.latency_ms == plain.estimate(net("Relu")).latency_ms
    with pytest.raises(SpecError, match="'post_pass_ops' names Clipp"):
        RooflineModel(replace(XEON, post_pass_ops=("Clipp",)))


def test_a_blocked_conv_computes_its_channels_padded_to_whole_blocks():
    """ORT's NCHWc convs compute whole blocks of 16 channels: 8 -> 8 channels (a stem: input
    not padded) costs 16/8 of its FLOPs, 24 -> 40 costs (32/24) x (48/40); a plain-layout
    conv and a conv of whole blocks cost their own FLOPs."""
    from analytical.roofline import block_padding

    def conv(cin, cout, groups=1):
        shape_in, shape_out = (1, cin, 8, 8), (1, cout, 8, 8)
        return make_layer("c", "Conv", ["x"], ["c"], [shape_in], shape_out,
                          [(cout, cin // groups, 3, 3)], kernel=(3, 3), stride=(1, 1),
                          pads=(1, 1, 1, 1), groups=groups)

    assert block_padding(conv(8, 8), 16) == 2.0
    assert block_padding(conv(24, 40), 16) == pytest.approx(32 / 24 * 48 / 40)
    assert block_padding(conv(32, 64), 16) == 1.0
    assert block_padding(conv(40, 40, groups=40), 16) == pytest.approx(48 / 40)
    est = RooflineModel(XEON).estimate(_net([_conv("c", "x")], ["c"]))
    (k,) = [c for c in est.per_layer if c.meta["op_class"] != "reorder"]
    assert k.meta["block_padding"] == 2.0 and k.meta["flops"] == 2 * 8 * 8 * 8 * 8 * 9


def test_without_fusion_is_one_kernel_per_layer():
    layers = [_op("r", "Relu", ["x"]), _conv("c", "r"), _op("bn", "BatchNormalization", ["c"])]
    est = RooflineModel(replace(XEON, fusion="naive")).estimate(_net(layers, ["bn"]))
    assert [c.meta["fused"] for c in est.per_layer] == [("r",), ("c",), ("bn",)]


def test_output_read_twice_is_not_fused():
    layers = [_conv("c", "x"), _op("bn", "BatchNormalization", ["c"]),
              _op("r1", "Relu", ["bn"]), _op("p", "AveragePool", ["bn"])]
    est = RooflineModel(XEON).estimate(_net(layers, ["r1", "p"]))
    assert [len(f) for _, f in _kernels(est)] == [2, 1, 1]


def test_layout_reorders_are_costed_as_data_movement():
    """Conv runs in NCHWc; its output leaves the blocked layout (8 channels padded to 16)."""
    est = RooflineModel(XEON).estimate(_net([_conv("c", "x")], ["c"]))
    (reorder,) = [c for c in est.per_layer if c.meta["op_class"] == "reorder"]
    assert reorder.op == "ReorderOutput" and reorder.meta["fused"] == ()
    assert reorder.meta["flops"] == 0
    assert reorder.meta["bytes"] == (numel((1, 16, 8, 8)) + numel(SHAPE)) * 4
    r = XEON.ops["reorder"]
    assert reorder.latency_ms == pytest.approx(
        reorder.meta["bytes"] / (XEON.cache_bandwidth_gbps * 1e6 * r.memory_efficiency)
        + r.launch_us * 1e-3)


def test_spec_names_its_rules_by_name_or_path(tmp_path):
    text = (spec_dir() / "xeon_2c.toml").read_text()
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules" / "mine.json").write_text(load_rules("naive").doc)
    spec = tmp_path / "s.toml"
    spec.write_text(text.replace('fusion = "ort"', 'fusion = "rules/mine.json"'))
    model = RooflineModel(load_spec(str(spec), RooflineSpec))  # relative to the spec file
    assert model.rules.name == "naive"
    spec.write_text(text.replace('fusion = "ort"', "[fusion]\ndrop = []"))
    with pytest.raises(SpecError, match=r"s\.toml: field 'fusion' must name fusion rules"):
        load_spec(str(spec), RooflineSpec)


def test_op_classes():
    assert op_class(_conv("c", "x")) == "conv"
    one = make_layer("c", "Conv", ["x"], ["c"], [SHAPE], SHAPE, [(8, 8, 1, 1)], kernel=(1, 1))
    dw = make_layer("c", "Conv", ["x"], ["c"], [SHAPE], SHAPE, [(8, 1, 3, 3)], kernel=(3, 3),
                    groups=8, pads=(1, 1, 1, 1))
    grouped = make_layer("c", "Conv", ["x"], ["c"], [SHAPE], SHAPE, [(8, 2, 3, 3)],
                         kernel=(3, 3), groups=4, pads=(1, 1, 1, 1))
    assert (op_class(one), op_class(dw), op_class(grouped)) == ("conv1x1", "depthwise",
                                                                "grouped")
    mm = make_layer("m", "MatMul", ["x", "y"], ["m"], [(1, 4, 8), (1, 8, 4)], (1, 4, 4))
    assert op_class(mm) == "gemm"
    assert op_class(_op("a", "Add", ["x", "y"])) == "elementwise"
    # dynamic quantization's conv: ONNX Runtime's slow im2col path, not QLinearConv's kernel
    ci = make_layer("c", "ConvInteger", ["x"], ["c"], [SHAPE], SHAPE, [(8, 8, 3, 3)],
                    kernel=(3, 3), pads=(1, 1, 1, 1), dtype="uint8")
    assert op_class(ci) == "conv_integer"
    epyc = RooflineModel(load_spec("epyc_2c", RooflineSpec))
    assert epyc.class_cost("conv_integer") is epyc.spec.ops["conv_integer"]
    assert RooflineModel(XEON).class_cost("conv_integer") is XEON.ops["conv"]  # via conv_nchw


def test_costly_element_wise_ops_are_priced_by_their_work():
    """An op ONNX Runtime computes element by element (Softplus: ~19 Gelu elements each) costs
    its work in the spec's transcendental class; a Sigmoid half a unit; a Softmax's work per
    element falls with its row length; a ReLU stays one element-wise pass."""
    from analytical.roofline import TRANSCENDENTAL_WORK, transcendental_work

    epyc = RooflineModel(load_spec("epyc_2c", RooflineSpec))
    big = (1, 64, 56, 56)

    def one(op, shape=big):
        layer = make_layer("y", op, ["x"], ["y"], [shape], shape)
        net = Network("t", (("x", shape),), (layer,), ("y",))
        [k] = [c for c in epyc.estimate(net).per_layer if c.op == op]
        return k, layer

    relu, _ = one("Relu")
    soft, layer = one("Softplus")
    sig, _ = one("Sigmoid")
    assert relu.meta["op_class"] == "elementwise"
    assert soft.meta["op_class"] == sig.meta["op_class"] == "transcendental"
    assert transcendental_work(layer) == round(TRANSCENDENTAL_WORK["Softplus"] * numel(big))
    assert soft.latency_ms > 15 * relu.latency_ms and soft.latency_ms > 20 * sig.latency_ms
    short, long_ = (transcendental_work(make_layer("s", "Softmax", ["x"], ["s"], [sh], sh))
                    for sh in ((1, 4, 64, 56), (1, 4, 64, 384)))
    assert short / (4 * 64 * 56) > 1.5 * long_ / (4 * 64 * 384)
    assert transcendental_work(_op("r", "Relu", ["x"])) is None


def test_fused_kernels_match_ort_on_nb201():
    """ONNX Runtime (ORT_ENABLE_ALL) turns the all-3x3 cell network's 340 nodes into 106
    (reorders included); the roofline costs the same 106 kernels."""
    est = RooflineModel(load_spec("x86_generic", RooflineSpec)).estimate(
        nb201.build_network(1462))
    assert est.meta["layers"] == 340 and est.meta["rules"] == "ort"
    assert est.meta["kernels"] == 106


def test_fit_line_recovers_launch_and_rate():
    work = np.array([1e3, 1e5, 1e6])
    secs = 2e-6 + work / 5e10
    launch, rate = fit_line(work, secs)
    assert launch == pytest.approx(2e-6) and rate == pytest.approx(5e10)
    launch, rate = fit_line(work, work / 5e10 - 1e-9)  # negative intercept: through origin
    assert launch == 0.0 and rate == pytest.approx(5e10, rel=0.02)  # 5% off the small point


def test_fit_line_intercept_is_not_swung_by_the_largest_points_noise():
    """Timings with 3% noise, spanning 10 us to 8 ms (the GEMM benchmarks' range): the
    relative fit finds the 2 us launch far closer than an unweighted one."""
    rng = np.random.default_rng(0)
    work = np.array([1e5, 1e6, 1e7, 4e8])
    errs = {"relative": [], "unweighted": []}
    for _ in range(200):
        secs = (2e-6 + work / 5e10) * rng.lognormal(0, 0.03, work.size)
        errs["relative"].append(abs(fit_line(work, secs)[0] - 2e-6))
        slope, icpt = np.polyfit(work, secs, 1)
        errs["unweighted"].append(abs(max(icpt, 0.0) - 2e-6))
    assert np.median(errs["relative"]) < 1e-6 < np.median(errs["unweighted"])


def _fake_calibration() -> Calibration:
    ops = {c: {"launch_us": 1.0, "compute_efficiency": 0.8, "memory_efficiency": 0.7}
           for c in ("conv", "conv1x1", "gemm", "depthwise", "grouped", "conv_nchw")}
    ops["depthwise_nchw"] = {"launch_us": 2.0, "compute_efficiency": 0.1,
                             "memory_efficiency": 0.7}
    ops |= {c: {"launch_us": 0.5, "memory_efficiency": 0.6}
            for c in ("pool", "global_pool", "elementwise")}
    ops["recurrent"] = {"launch_us": 0.3, "compute_efficiency": 0.01, "memory_efficiency": 0.6}
    return Calibration(100.0, 20.0, 60.0, 1 << 21, ops, "test cpu", "1.0", 1.0)


def test_spec_toml_round_trip(tmp_path):
    path = write_spec(_fake_calibration(), tmp_path / "sub" / "local.toml", name="mine")
    spec = load_spec(str(path), RooflineSpec)
    assert spec.name == "mine" and spec.peak_gflops == 100.0 and spec.cache_bytes == 1 << 21
    assert spec.ops["conv"].compute_efficiency == 0.8
    assert spec.ops["pool"].memory_efficiency == 0.6
    assert spec.ops["grouped"].compute_efficiency == 0.8
    assert spec.ops["pool"].compute_efficiency == 1.0  # measured on bytes only
    assert spec.ops["view"].traffic_factor == 0.0
    assert spec.ops["recurrent"].launch_us == 0.3
    assert spec.ops["depthwise_nchw"].compute_efficiency == 0.1
    assert spec.ops["reorder"].memory_efficiency == spec.ops["elementwise"].memory_efficiency
    assert spec.fusion == load_spec("x86_generic", RooflineSpec).fusion == "ort"
    assert str(SIZES) in spec_toml(_fake_calibration())


def test_last_level_cache_prices_kernels_between_the_l2_and_it(tmp_path):
    """A kernel over the L2 but within ``llc_bytes`` streams at the L3's rate, one beyond
    it at DRAM's; a spec without the level prices both at DRAM's; the level round-trips
    through a calibrated spec, and half of it is refused."""
    cal = replace(_fake_calibration(), llc_bandwidth_gbps=45.0, llc_bytes=1 << 24)
    assert [cal.bandwidth_gbps(b) for b in (1 << 20, 1 << 23, 1 << 25)] == [60.0, 45.0, 20.0]
    spec = load_spec(str(write_spec(cal, tmp_path / "llc.toml")), RooflineSpec)
    assert (spec.llc_bytes, spec.llc_bandwidth_gbps) == (1 << 24, 45.0)
    assert [spec.bandwidth_gbps(b) for b in (1 << 20, 1 << 23, 1 << 25)] == [60.0, 45.0, 20.0]
    plain = load_spec(str(write_spec(_fake_calibration(), tmp_path / "plain.toml")),
                      RooflineSpec)
    assert plain.llc_bytes == 0 and plain.bandwidth_gbps(1 << 23) == 20.0
    mid = RooflineModel(spec)._roof("elementwise", 0, 1 << 23)[1]
    assert mid == pytest.approx(RooflineModel(plain)._roof("elementwise", 0, 1 << 23)[1]
                                * 20.0 / 45.0)
    half = tmp_path / "half.toml"
    half.write_text("\n".join(line for line in (tmp_path / "llc.toml").read_text().splitlines()
                              if not line.startswith("llc_bandwidth_gbps")))
    with pytest.raises(SpecError, match="'llc_bandwidth_gbps' is not"):
        load_spec(str(half), RooflineSpec)


def test_llc_bytes_is_half_an_l3_larger_than_the_l2(monkeypatch):
    import analytical.calibrate as cal

    sizes = {2: 1 << 20, 3: 32 << 20}
    monkeypatch.setattr(cal, "_sysfs_cache", lambda level: sizes.get(level))
    assert cal.llc_bytes() == 16 << 20
    sizes[3] = 2 << 20          # half of it no larger than the L2: no level
    assert cal.llc_bytes() == 0
    del sizes[3]                # no L3 at all
    assert cal.llc_bytes() == 0


def test_run_overhead_is_paid_once_per_network(tmp_path):
    """``run_overhead_us`` adds once to a network's latency, as a ``run`` entry of
    ``per_layer`` (the entries still sum to the total); estimate and estimate_many agree."""
    net = nb201.build_network(1835)
    plain = RooflineModel(load_spec(str(write_spec(_fake_calibration(), tmp_path / "a.toml")),
                                    RooflineSpec))
    spec = load_spec(str(write_spec(replace(_fake_calibration(), run_overhead_us=5.0),
                                    tmp_path / "b.toml")), RooflineSpec)
    assert spec.run_overhead_us == 5.0
    est, base = RooflineModel(spec).estimate(net), plain.estimate(net)
    assert est.latency_ms == pytest.approx(base.latency_ms + 0.005)
    assert est.latency_ms == pytest.approx(sum(c.latency_ms for c in est.per_layer))
    assert [c.op for c in est.per_layer if c.meta["op_class"] == "run"] == ["run"]
    assert est.meta["kernels"] == base.meta["kernels"] == len(base.per_layer)
    assert RooflineModel(spec).estimate_many([net])[0].latency_ms == est.latency_ms


@pytest.mark.slow
def test_cli_calibrate_specs_and_layers(tmp_path, capsys, monkeypatch):
    """A real calibration (micro-benchmarks through ONNX Runtime); one round of one timed
    run per benchmark under COSTMODELS_SHORT=1."""
    import analytical.calibrate as cal

    short = os.environ.get("COSTMODELS_SHORT", "") not in ("", "0")
    if short:
        monkeypatch.setattr(cal, "ROUNDS", 1)
    out = tmp_path / "cal.toml"
    assert main(["roofline", "calibrate", "-o", str(out), "--repeats",
                 "1" if short else "2"]) == 0
    spec = load_spec(str(out), RooflineSpec)
    assert spec.peak_gflops > 0 and spec.dram_bandwidth_gbps > 0
    assert spec.int8_peak_gflops > 0 and {"conv_int8", "depthwise_int8", "gemm_int8"} <= set(
        spec.ops)  # the quantized (QDQ) benchmarks
    assert {"conv_transpose", "conv3d"} <= set(spec.ops)
    assert RooflineModel(spec).estimate(nb201.build_network(1835)).latency_ms > 0
    assert main(["roofline", "specs"]) == 0
    assert "eyeriss" in capsys.readouterr().out
    assert main(["roofline", "layers", "1835", "--backend", "eyeriss"]) == 0
    assert "total" in capsys.readouterr().out


def _lstm_net(seq, batch=1, hidden=32, inputs=16, dirs=1, layout=0):
    x = (seq, batch, inputs) if layout == 0 else (batch, seq, inputs)
    y = (seq, dirs, batch, hidden) if layout == 0 else (batch, seq, dirs, hidden)
    w = [(dirs, 4 * hidden, inputs), (dirs, 4 * hidden, hidden), (dirs, 8 * hidden)]
    layer = make_layer("lstm", "LSTM", ["x"], ["y"], [x], y, w)
    return Network("lstm", (("x", x),), (layer,), ("y",))


def test_recurrence_geometry_is_read_off_either_layout():
    from costmodels.network import recurrence

    for layout in (0, 1):
        layer = _lstm_net(50, batch=3, dirs=2, layout=layout).layers[0]
        geo = recurrence("LSTM", layer.input_shapes[0], layer.weight_shapes, layer.output_shape)
        assert (geo.seq, geo.batch, geo.dirs, geo.gates, geo.hidden, geo.inputs,
                geo.layout) == (50, 3, 2, 4, 32, 16, layout)
    layer = _lstm_net(50).layers[0]  # GRU has 3 gates: these are not a GRU's weights
    assert recurrence("GRU", layer.input_shapes[0], layer.weight_shapes,
                      layer.output_shape) is None
    assert recurrence("LSTM", layer.input_shapes[0], layer.weight_shapes, (7, 7)) is None


def test_recurrence_costs_its_steps_one_after_the_other():
    model = RooflineModel(XEON)
    short, long_ = (model.estimate(_lstm_net(t)) for t in (100, 1000))
    step = model.class_cost("gemm").launch_us + model.class_cost("elementwise").launch_us
    # ten times the steps: about ten times the time, each step at least its two launches
    assert 9 < long_.latency_ms / short.latency_ms < 11
    assert long_.latency_ms >= 1000 * step * 1e-3
    cost = long_.per_layer[0]
    assert cost.meta["sequential_steps"] == 1000
    assert cost.meta["flops"] == 2 * _lstm_net(1000).macs  # no work lost or added
    # the same work as one GEMM (what the roofline did before) is cheaper: steps cost more
    one_gemm = model._roof("gemm", cost.meta["flops"], cost.meta["bytes"])
    assert long_.latency_ms > max(one_gemm[:2]) + one_gemm[2]
    # a bidirectional layer runs twice the steps; batch-first costs the same as seq-first
    both = model.estimate(_lstm_net(1000, dirs=2))
    assert both.per_layer[0].meta["sequential_steps"] == 2000
    assert model.estimate(_lstm_net(1000, layout=1)).latency_ms == pytest.approx(
        long_.latency_ms)
    # a calibrated `recurrent` class prices each step's overhead (the spec lacks it: the
    # element-wise figures stand in)
    from analytical.specs import OpClassCost

    slow = RooflineModel(replace(XEON, ops={**XEON.ops, "recurrent": OpClassCost(
        1.0, 1.0, model.class_cost("elementwise").launch_us + 5.0)}))
    assert slow.estimate(_lstm_net(1000)).latency_ms == pytest.approx(
        long_.latency_ms + 1000 * 5.0e-3, rel=0.02)


def test_a_networks_figure_does_not_depend_on_what_was_estimated_before():
    """Two kernels of one key whose weights differ in bytes (int8 vs float32 storage) are
    costed each from its own bytes: the cache must not hand one the other's figure."""
    def head(weight_bytes):
        layer = make_layer("fc", "Gemm", ["x"], ["fc"], [(1, 1024)], (1, 1024),
                           [(1024, 1024)], bytes_weights=weight_bytes)
        return Network("t", (("x", (1, 1024)),), (layer,), ("fc",))

    a, b = head(1024 * 1024 * 4), head(1024 * 1024)  # a batch-1 head: memory-bound
    fresh_a = RooflineModel(XEON).estimate(a).latency_ms
    fresh_b = RooflineModel(XEON).estimate(b).latency_ms
    assert fresh_b < fresh_a
    model = RooflineModel(XEON)
    assert model.estimate(a).latency_ms == fresh_a
    assert model.estimate(b).latency_ms == fresh_b


def test_layers_takes_the_network_from_space(capsys):
    from costmodels.cli import main
    from costmodels.spaces import get_space

    sp = get_space("fbnet")
    arch = sp.sample(1, seed=3)[0]
    net = sp.build_network(arch, "cifar100", 1)
    assert main(["roofline", "layers", arch, "--space", "fbnet", "--dataset", "cifar100", "--backend", "eyeriss"]) == 0
    out = capsys.readouterr().out
    assert net.name in out and "nb201" not in out  # it was NB201 cell 0, whatever --space said


def test_roofline_local_names_the_calibrated_spec(tmp_path, monkeypatch):
    """``estimate roofline`` labels its backend ``roofline:local`` with a calibrated spec:
    that label is a spec too."""
    import shutil

    from analytical.roofline import LOCAL_SPEC_ENV
    from analytical.specs import SpecError
    from costmodels.registry import create

    local = tmp_path / "local.toml"
    monkeypatch.setenv(LOCAL_SPEC_ENV, str(local))
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SpecError, match="roofline calibrate"):
        create("roofline:local")
    shutil.copy(Path(__file__).resolve().parents[1] / "analytical" / "specs" / "xeon_2c.toml",
                local)
    net = nb201.build_network(1835)
    assert (create("roofline:local").estimate(net).latency_ms
            == create("roofline").estimate(net).latency_ms
            == create(f"roofline:{local}").estimate(net).latency_ms)


def test_transcendental_ops_are_their_own_class_where_the_spec_has_one():
    """ONNX Runtime's Gelu takes several times a Relu's time on the same tensor (the
    function is computed per element); a spec with a calibrated ``transcendental`` class
    prices it so, and one without it (x86_generic) as an element-wise pass, as before."""
    from analytical.roofline import from_spec

    def net(op):
        layer = make_layer("a", op, ["x"], ["y"], [(1, 384, 56, 56)], (1, 384, 56, 56))
        return Network(op, (("x", (1, 384, 56, 56)),), (layer,), ("y",))

    assert op_class(net("Gelu").layers[0]) == "transcendental"
    assert op_class(net("Relu").layers[0]) == "elementwise"
    cal, generic = from_spec("epyc_2c"), from_spec("x86_generic")
    assert "transcendental" in cal.spec.ops and "transcendental" not in generic.spec.ops
    assert cal.estimate(net("Gelu")).latency_ms > 3 * cal.estimate(net("Relu")).latency_ms
    assert generic.estimate(net("Gelu")).latency_ms == pytest.approx(
        generic.estimate(net("Relu")).latency_ms)


def test_quantized_kernels_take_the_int8_classes_where_the_spec_has_them(tmp_path):
    """A QDQ model's quantized conv (ONNX Runtime's QLinearConv) computes in int8, several
    times the float rate on a CPU with VNNI: a spec with calibrated ``conv_int8`` /
    ``depthwise_int8`` / ``gemm_int8`` classes prices it so (the float rate had read a
    quantized ResNet-18 at its float time, 3.2x the measured); one without them (the
    float classes) as before. The float model is priced the same either way."""
    from analytical.roofline import from_spec
    from costmodels.onnx_import import import_onnx
    from tests.test_fusion import _qdq_model

    q = import_onnx(_qdq_model("uint8"))
    cal, generic = from_spec("epyc_2c"), from_spec("x86_generic")
    assert {"conv_int8", "depthwise_int8", "gemm_int8"} <= set(cal.spec.ops)
    assert not {"conv_int8", "gemm_int8"} & set(generic.spec.ops)
    classes = {c.meta["op_class"] for c in cal.estimate(q).per_layer
               if c.op.startswith("DequantizeLinear+")}
    assert {"conv_int8", "depthwise_int8", "gemm_int8"} <= classes
    plain = {c.meta["op_class"] for c in generic.estimate(q).per_layer
             if c.op.startswith("DequantizeLinear+")}
    assert "conv_int8" not in plain and "conv" in plain
    # the same spec less its int8 classes prices the quantized convs at the float rate
    import re

    text = (Path(__file__).resolve().parents[1] / "analytical" / "specs" /
            "epyc_2c.toml").read_text()
    f = tmp_path / "no_int8.toml"
    f.write_text(re.sub(r"\[ops\.\w+_int8\][^\[]*", "", text))
    float_only = from_spec(str(f))
    conv = [c for c in cal.estimate(q).per_layer if c.op == "DequantizeLinear+Conv+QuantizeLinear"]
    conv_f = [c for c in float_only.estimate(q).per_layer
              if c.op == "DequantizeLinear+Conv+QuantizeLinear"]
    assert sum(c.meta["compute_ms"] for c in conv) < 0.5 * sum(c.meta["compute_ms"] for c in conv_f)


def test_int8_peak_round_trips_and_is_checked(tmp_path):
    """A calibration's int8 roof and classes round-trip through its spec; the roof is 0
    (none: the float peak) or a rate, not 1e-9 (a typo's 1e12 ms)."""
    ops = dict(_fake_calibration().ops)
    ops["conv_int8"] = {"launch_us": 2.0, "compute_efficiency": 0.9, "memory_efficiency": 0.7}
    cal = replace(_fake_calibration(), ops=ops, int8_peak_gflops=400.0)
    spec = load_spec(str(write_spec(cal, tmp_path / "q.toml")), RooflineSpec)
    assert spec.int8_peak_gflops == 400.0 and spec.ops["conv_int8"].compute_efficiency == 0.9
    model = RooflineModel(spec)
    assert model._roof("conv_int8", 4e9, 0)[0] == pytest.approx(4e9 / (400e6 * 0.9))
    assert model._roof("conv", 4e9, 0)[0] == pytest.approx(4e9 / (100e6 * 0.8))
    bad = tmp_path / "bad.toml"
    bad.write_text((tmp_path / "q.toml").read_text().replace("int8_peak_gflops = 400.000",
                                                             "int8_peak_gflops = 1e-9"))
    with pytest.raises(SpecError, match="'int8_peak_gflops' must be 0"):
        load_spec(str(bad), RooflineSpec)


def test_transposed_and_3d_convs_have_classes_of_their_own(tmp_path):
    """ONNX Runtime runs a ConvTranspose as a GEMM and a col2im scatter and a 3-D conv
    without its blocked kernel: a TF probe's measured times were 2.0x and 2.4x what the
    conv class priced. Each has its class where the spec has it (calibrate measures them
    on chains whose FLOPs the IR counts exactly), the conv class's figures elsewhere."""
    import analytical.calibrate as cal
    from analytical.roofline import op_class
    from costmodels.onnx_import import import_onnx

    for chain, cls in ((cal.conv_transpose_fan(8, 8), "conv_transpose"),
                       (cal.conv3d_chain(8, 8), "conv3d")):
        net = import_onnx(chain.model)
        assert 2 * net.macs == pytest.approx(chain.flops * chain.ops)
        assert {op_class(la) for la in net.layers if la.macs} == {cls}
        plain = RooflineModel(load_spec(str(write_spec(_fake_calibration(),
                                                       tmp_path / "p.toml")), RooflineSpec))
        slow = _fake_calibration()
        slow = replace(slow, ops={**slow.ops, cls: {**slow.ops["conv"],
                                                    "compute_efficiency": 0.05}})
        slower = RooflineModel(load_spec(str(write_spec(slow, tmp_path / f"{cls}.toml")),
                                         RooflineSpec))
        assert slower.estimate(net).latency_ms > plain.estimate(net).latency_ms
        assert {c.meta["op_class"] for c in plain.estimate(net).per_layer} >= {cls}


def test_a_quick_gelu_costs_half_a_gelu_per_element():
    """SiLU planned as ORT's QuickGelu is one kernel; priced as one element-wise pass it
    read 25 us on a 1x64x56x56 map that ORT takes 57 us over (3.6x a ReLU pass; Gelu
    8x). It is a transcendental kernel of half a Gelu's work per element."""
    from onnx import helper

    from costmodels.onnx_import import import_onnx

    def net(nodes):
        g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", 1, (1, 64, 56,
                                                                             56))],
                              [helper.make_tensor_value_info("y", 1, None)])
        return import_onnx(helper.make_model(g, opset_imports=[helper.make_opsetid("", 20)]))

    spec = load_spec("epyc_2c", RooflineSpec)
    model = RooflineModel(spec)
    silu = model.estimate(net([helper.make_node("Sigmoid", ["x"], ["s"]),
                               helper.make_node("Mul", ["x", "s"], ["y"])]))
    gelu = model.estimate(net([helper.make_node("Gelu", ["x"], ["y"])]))
    (q,) = [c for c in silu.per_layer if c.op == "QuickGelu"]
    (g,) = [c for c in gelu.per_layer if c.op == "Gelu"]
    assert q.meta["op_class"] == g.meta["op_class"] == "transcendental"
    assert q.meta["flops"] == g.meta["flops"] // 2
    assert q.meta["compute_ms"] == pytest.approx(g.meta["compute_ms"] / 2)


def test_a_copied_spec_with_a_misspelt_class_names_its_file(tmp_path):
    """A shipped spec copied and edited keeps its ``name``: the error named only the
    shipped spec (``epyc_2c: ...``), not the file at fault; the file is left as it was."""
    from analytical.roofline import from_spec

    src = Path(__file__).resolve().parents[1] / "analytical" / "specs" / "epyc_2c.toml"
    bad = tmp_path / "mine.toml"
    bad.write_text(src.read_text().replace("[ops.conv3d]", "[ops.conv3D]"))
    before = bad.read_bytes()
    with pytest.raises(SpecError, match=r"mine\.toml: epyc_2c: .*conv3D \(did you mean "
                                        r"'conv3d'\?\)"):
        from_spec(str(bad))
    assert bad.read_bytes() == before


def test_a_matrix_products_fused_bias_is_a_pass_over_its_output():
    """MatMul + bias Add is one Gemm in ONNX Runtime, which copies the bias into the output
    first: the fused kernel costs that pass (the two kernels it replaced priced the Add as
    one), and a Relu the 2-D Gemm absorbs one more."""
    from onnx import helper, numpy_helper

    from costmodels.onnx_import import import_onnx

    rng = np.random.default_rng(0)

    def est(act):
        nodes = [helper.make_node("MatMul", ["x", "w"], ["m"]),
                 helper.make_node("Add", ["m", "b"], ["a" if act else "y"])]
        if act:
            nodes.append(helper.make_node("Relu", ["a"], ["y"]))
        g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", 1, (197, 384))],
                              [helper.make_tensor_value_info("y", 1, None)],
                              [numpy_helper.from_array(rng.random((384, 384), np.float32), "w"),
                               numpy_helper.from_array(rng.random(384, np.float32), "b")])
        m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
        return RooflineModel(load_spec("epyc_2c", RooflineSpec)).estimate(import_onnx(m))

    (one,) = [c for c in est(False).per_layer if c.op == "MatMul+Add"]
    (two,) = [c for c in est(True).per_layer if c.op == "MatMul+Add+Relu"]
    assert "Add" not in load_spec("epyc_2c", RooflineSpec).post_pass_ops
    assert one.meta["post_pass_ms"] > 0
    assert two.meta["post_pass_ms"] == pytest.approx(2 * one.meta["post_pass_ms"])


def test_a_quantized_pool_outside_the_channels_last_region_is_priced_as_ort_runs_it():
    """A uint8 MaxPool in NCHW is ONNX Runtime's plain integer kernel, ~20x its float pool:
    the spec's pool_int8 class where it has one (epyc_2c), the float pool class else."""
    shape, out = (1, 32, 16, 16), (1, 32, 16, 16)
    pool = make_layer("p", "MaxPool", ["x"], ["p"], [shape], out, kernel=(3, 3), stride=(1, 1),
                      pads=(1, 1, 1, 1), dtype="uint8")
    net = Network("t", (("x", shape),), (pool,), ("p",))
    epyc = RooflineModel(load_spec("epyc_2c", RooflineSpec))
    [k] = [c for c in epyc.estimate(net).per_layer if c.op == "MaxPool"]
    assert k.meta["op_class"] == "pool_int8" and k.meta["layout"] == "nchw"
    [f] = [c for c in RooflineModel(XEON).estimate(net).per_layer if c.op == "MaxPool"]
    assert f.meta["op_class"] == "pool"
    assert k.latency_ms > 10 * f.latency_ms
