"""Roofline, Eyeriss and FPGA models pinned to hand-computed single-conv cases, plus
monotonicity (more channels never cost less) and the roofline bounds."""

from __future__ import annotations

import math

import pytest

from analytical.eyeriss import ConvShape, EyerissModel, conv_shape, search_mapping
from analytical.fpga import FpgaModel
from analytical.roofline import RooflineModel
from analytical.specs import EyerissSpec, FpgaSpec, RooflineSpec, load_spec
from costmodels.network import Network, make_layer
from costmodels.spaces import nb201


def one_conv(cin: int, cout: int, hw: int, k: int, pad: int, dtype: str = "float32") -> Network:
    """A network of one ``k x k`` conv, ``cin -> cout`` channels, ``hw x hw`` input."""
    out = (1, cout, hw + 2 * pad - k + 1, hw + 2 * pad - k + 1)
    layer = make_layer("conv", "Conv", ["x"], ["y"], [(1, cin, hw, hw)], out,
                       [(cout, cin, k, k)], kernel=(k, k), stride=(1, 1),
                       pads=(pad,) * 4, dilation=(1, 1), dtype=dtype)
    return Network("one_conv", (("x", (1, cin, hw, hw)),), (layer,), ("y",))


@pytest.fixture(scope="module")
def eyeriss() -> EyerissModel:
    return EyerissModel(load_spec("eyeriss_rs", EyerissSpec))


@pytest.fixture(scope="module")
def fpga() -> FpgaModel:
    return FpgaModel(load_spec("zc706", FpgaSpec))


@pytest.fixture(scope="module")
def x86() -> RooflineModel:
    return RooflineModel(load_spec("x86_generic", RooflineSpec))


def test_roofline_single_conv_by_hand(x86):
    """3x3 conv, 16 -> 16 channels on 32x32, fp32, pad 1, on x86_generic.

    MACs = 16*16*9*32*32 = 2,359,296 -> 4,718,592 FLOP. Kernel class ``conv``:
    compute = 4,718,592 / (96e9 * 0.5) = 98.304 us.
    Bytes = input 16*32*32*4 = 65,536 + weights 16*16*9*4 = 9,216 + output 65,536
    = 140,288 B <= 1 MiB cache -> 100 GB/s * 0.5: memory = 2.80576 us.
    Time = max(98.304, 2.80576) + launch 5 us = 103.304 us, compute-bound.
    ONNX Runtime runs the conv in NCHWc (its rules, ``ort``), so the input is reordered
    in and the output out, each a ``reorder`` copy of 65,536 B in + 65,536 B out at
    100 GB/s * 0.5 = 2.62144 us, + launch 3 us = 5.62144 us: 114.54688 us in all.
    """
    est = x86.estimate(one_conv(16, 16, 32, 3, 1))
    reorder_in, lc, reorder_out = est.per_layer
    assert lc.op == "Conv"
    assert lc.meta["compute_ms"] == pytest.approx(0.098304)
    assert lc.meta["memory_ms"] == pytest.approx(0.00280576)
    assert lc.latency_ms == pytest.approx(0.103304)
    assert lc.bound == "compute"
    assert (reorder_in.op, reorder_out.op) == ("ReorderInput", "ReorderOutput")
    for r in (reorder_in, reorder_out):
        assert r.latency_ms == pytest.approx(0.00562144) and r.bound == "memory"
    assert est.latency_ms == pytest.approx(0.11454688)


def test_eyeriss_single_conv_by_hand(eyeriss):
    """One 3x3 filter over a 1-channel 5x5 input (no padding): E = F = 3, 81 MACs.

    M = C = 1 forces p = q = r = t = 1; R = S = 3, so a PE set is 3 rows x e columns.
    Candidates e = 1, 2, 3 (passes = ceil(3/e), cycles/pass = p*q*S*F = 9):
    e = 3 has 1 pass = 9 cycles and the least energy, so it wins under any objective.
    Counts for e = 3:
      MAC 81; weights 9 (DRAM once, 8-bit = 9 B), multicast to e = 3 PEs: 27 NoC;
      ifmap: 1 pass x 1 set x q=1 x (R=3 x e=3 PEs) x W=5 = 45 NoC and 45 spad writes;
      psums: 1 pass x p*t*e*F = 9 values x R*r = 3 hops = 27 NoC;
      spad = 4*81 + 27 + 45 = 396; NoC = 27 + 45 + 27 = 99;
      GLB: ifmap rows read min(1*((3-1)*1+3), 5) = 5 rows x 5 = 25, psums written 9 = 34.
    Energy = 81*0.2 + 396*0.2 + 99*0.4 + 34*1.2 + 9 B*20 = 355.8 pJ.
    Utilisation = 81 / (9 cycles * 168 PEs).
    In the network the input (25 B) comes from DRAM and the output (9 B) goes back:
    DRAM = 43 B at 0.48e9/200e6 = 2.4 B/cycle = 17.92 cycles > 9 compute -> memory
    bound; latency = (17.9167 + 1794 setup) / 200 MHz; energy adds 34 B * 20 pJ.
    """
    net = one_conv(1, 1, 5, 3, 0)
    oc = search_mapping(conv_shape(net.layers[0]), eyeriss.spec)
    assert dict(oc.mapping) == {"e": 3, "p": 1, "q": 1, "r": 1, "t": 1, "passes": 1,
                                "cycles_per_pass": 9}
    assert oc.compute_cycles == 9
    assert dict(oc.counts) == pytest.approx({"mac": 81, "spad": 396, "noc": 99, "glb": 34,
                                             "dram": 9})
    assert sum(oc.energy_pj.values()) == pytest.approx(355.8)
    assert oc.utilisation == pytest.approx(81 / (9 * 168))
    est = eyeriss.estimate(net)
    (lc,) = est.per_layer
    assert lc.bound == "memory"
    assert est.latency_ms == pytest.approx((43 / 2.4 + 1794) / 200e3)
    assert est.energy_mj == pytest.approx((355.8 + 34 * 20) * 1e-9)
    assert lc.meta["mapping"]["e"] == 3 and set(lc.meta["energy_pj"]) >= {"mac", "glb", "dram"}


def test_eyeriss_mapping_respects_scratchpads(eyeriss):
    s = eyeriss.spec
    for shape in (ConvShape(1, 64, 64, 1, 10, 10, 3, 3, 8, 8, 1),
                  ConvShape(1, 32, 16, 1, 33, 33, 3, 3, 16, 16, 2),
                  ConvShape(1, 10, 64, 1, 1, 1, 1, 1, 1, 1, 1)):
        m = search_mapping(shape, s).mapping
        assert m["q"] * shape.s <= s.spad_ifmap_entries
        assert m["p"] * m["q"] * shape.s <= s.spad_weight_entries
        assert m["p"] <= s.spad_psum_entries
        assert m["r"] * m["t"] <= (s.pe_rows // shape.r) * (s.pe_cols // m["e"])


def test_fpga_single_conv_by_hand(fpga):
    """3x3 conv, 24 -> 32 channels on 8x8, pad 1, on a 32 x 24 array (16-bit data).

    One tile covers the output (Tr = Tc = 8): the double-buffered tiles
    2*2*(24*10*10 + 32*24*9 + 32*64) = 45,440 B fit the BRAM.
    compute = ceil(32/32)*ceil(24/24)*8*8*9 = 576 cycles (array fully used).
    DDR = input tile 24*10*10*2 = 4,800 + weights 32*24*9*2 = 13,824 + output
    32*64*2 = 4,096 = 22,720 B at 4.264 GB/s * 0.8 / 200 MHz = 17.056 B/cycle
    = 1,332.08 cycles -> memory-bound; latency = (1,332.08 + 2,000) / 200 MHz.
    Energy: MACs 442,368 * 8 pJ; BRAM 576*(24 + 768 + 64)*2 + 22,720 = 1,008,832 B * 5 pJ;
    DDR 22,720 * 200 pJ; static 1.8 W * latency.
    """
    est = fpga.estimate(one_conv(24, 32, 8, 3, 1))
    (lc,) = est.per_layer
    assert lc.meta["tiling"] == {"Tm": 32, "Tn": 24, "Tr": 8, "Tc": 8}
    assert lc.meta["cycles"]["compute"] == 576
    assert lc.meta["ddr_bytes"] == 22720
    assert lc.meta["utilisation"] == 1.0
    latency_s = (22720 / 17.056 + 2000) / 200e6
    assert est.latency_ms == pytest.approx(latency_s * 1e3)
    energy_pj = 442368 * 8 + 1008832 * 5 + 22720 * 200 + 1.8 * latency_s * 1e12
    assert est.energy_mj == pytest.approx(energy_pj * 1e-9)
    assert lc.bound == "memory"


@pytest.mark.parametrize("model_name", ["x86", "eyeriss", "fpga"])
@pytest.mark.parametrize("hw, k", [(32, 3), (16, 1), (8, 3)])
def test_more_channels_never_cost_less(request, model_name, hw, k):
    model = request.getfixturevalue(model_name)
    prev_lat, prev_energy = 0.0, 0.0
    for c in (4, 8, 12, 16, 24, 32, 48, 64, 96, 128):
        est = model.estimate(one_conv(c, c, hw, k, k // 2))
        assert est.latency_ms >= prev_lat - 1e-12, (c, est.latency_ms, prev_lat)
        energy = est.energy_mj or 0.0
        assert energy >= prev_energy - 1e-15, (c, energy, prev_energy)
        prev_lat, prev_energy = est.latency_ms, energy


@pytest.mark.parametrize("model_name", ["x86", "eyeriss", "fpga"])
def test_wider_cells_never_cost_less(request, model_name):
    """Replacing an edge's op by a heavier one (skip -> 1x1 -> 3x3) never costs less."""
    model = request.getfixturevalue(model_name)
    for base in (1835, 100, 5000):
        ops = list(nb201._arch_ops(base))
        for edge in range(6):
            costs = []
            for op in ("skip_connect", "nor_conv_1x1", "nor_conv_3x3"):
                ops[edge] = nb201.OP_INDEX[op]
                costs.append(model.estimate(nb201.build_network(tuple(ops))).latency_ms)
            assert costs == sorted(costs), (base, edge, costs)


@pytest.mark.parametrize("spec", ["x86_generic", "cortex_a72", "desktop_gpu"])
def test_roofline_time_at_least_both_bounds(spec):
    model = RooflineModel(load_spec(spec, RooflineSpec))
    for arch in (1462, 1835, 7000, 12345):
        est = model.estimate(nb201.build_network(arch))
        for lc in est.per_layer:
            assert lc.latency_ms >= lc.meta["compute_ms"] and lc.latency_ms >= lc.meta["memory_ms"]
            assert lc.bound == ("compute" if lc.meta["compute_ms"] >= lc.meta["memory_ms"]
                                else "memory")
        assert math.isclose(est.latency_ms, sum(lc.latency_ms for lc in est.per_layer))


def test_accelerator_breakdowns_are_complete(eyeriss, fpga):
    net = nb201.build_network(1462)
    for model in (eyeriss, fpga):
        est = model.estimate(net)
        assert len(est.per_layer) == len(net.layers)
        assert est.energy_mj == pytest.approx(sum(lc.energy_mj for lc in est.per_layer))
        for lc in est.per_layer:
            if lc.op in ("Conv", "Gemm"):
                assert 0 < lc.meta["utilisation"] <= 1
            if lc.op in ("Add", "AveragePool", "GlobalAveragePool", "Mul"):
                assert lc.latency_ms > 0 and lc.energy_mj > 0  # never free
            if lc.op in ("Relu", "BatchNormalization"):
                assert lc.energy_mj > 0


@pytest.mark.parametrize("model_name", ["x86", "eyeriss", "fpga"])
def test_imported_onnx_model(request, tiny_onnx, model_name):
    from costmodels.onnx_import import import_onnx

    net = import_onnx(tiny_onnx)
    est = request.getfixturevalue(model_name).estimate(net)
    assert est.latency_ms > 0 and all(lc.latency_ms >= 0 for lc in est.per_layer)


def test_fpga_tile_candidates_are_the_even_splits_up_to_the_bram_bound():
    """The candidate tile sizes are the distinct ceil(E / k), found without looping over E
    (a 2^31-row feature map hung the FPGA model) and without pairs whose outputs overflow
    the BRAM (tr * tc above the bound never fit)."""
    from analytical.fpga import _tile_pairs, _tile_sizes

    for extent in (1, 2, 7, 32, 97, 224):
        brute = sorted({-(-extent // k) for k in range(1, extent + 1)})
        assert _tile_sizes(extent, 10**9).tolist() == brute
        assert _tile_sizes(extent, 10).tolist() == [v for v in brute if v <= 10]
    huge = _tile_sizes(2**31, 5000)
    assert huge[0] == 1 and huge[-1] <= 5000 and len(huge) <= 5000
    tr, tc = _tile_pairs(_tile_sizes(56, 300), _tile_sizes(56, 300), 300)
    pairs = {(a, b) for a in _tile_sizes(56, 300) for b in _tile_sizes(56, 300) if a * b <= 300}
    assert set(zip(tr.astype(int).tolist(), tc.astype(int).tolist(), strict=True)) == pairs
