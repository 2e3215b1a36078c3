"""The reference-compatible accelerator models against HW-NAS-Bench's published values.

Reference data (literals below): HW-NAS-Bench, github.com/GATECH-EIC/HW-NAS-Bench,
``example.ipynb`` at commit 6c67e04 (cell 1: NAS-Bench-201 indices 0, 1, 2 on cifar10,
cifar100, ImageNet16-120; cell 4: FBNet [0]*22, [0]*21+[1], [0]*20+[1,1] on cifar100 and
ImageNet); index 0 / cifar10 also in its README. Latency in ms, energy in mJ.

What the default ``eyeriss`` spec reproduces (analytical/README.md says the same): the
DNN-Chip Predictor's cost of every NAS-Bench-201 cell operation, so the published
differences between architectures, to 1e-5 ms. What it does not: an
architecture-independent part of the published totals (the stem, head and reduction
blocks as HW-NAS-Bench costed them: 1.33 ms more than the predictor gives on CIFAR),
and the per-operation energies (4-6% below the published ones).
"""

from __future__ import annotations

import itertools

import pytest

from analytical.predictor import Problem, map_problem
from analytical.specs import FpgaSpec, PredictorSpec, load_spec
from costmodels.network import Network, make_layer
from costmodels.registry import create
from costmodels.spaces import get_space

# (index, dataset): (eyeriss_latency, eyeriss_energy, fpga_latency, fpga_energy)
NB201 = {
    (0, "cifar10"): (3.645620000000001, 0.6872827644999999, 2.57296, 18.01072),
    (0, "cifar100"): (3.648640000000001, 0.6874206219999999, 2.57296, 18.01072),
    (0, "ImageNet16-120"): (0.9145600000000003, 0.17677097200000003, 0.64912, 4.54384),
    (1, "cifar10"): (7.577780000000003, 1.5644240284999997, 5.31536, 37.20752),
    (1, "cifar100"): (7.5808000000000035, 1.5645618859999997, 5.31536, 37.20752),
    (1, "ImageNet16-120"): (1.8976000000000006, 0.4007401879999999, 1.8784, 13.148800000000001),
    (2, "cifar10"): (10.526900000000001, 2.0846801885, 5.28656, 37.005919999999996),
    (2, "cifar100"): (10.52992, 2.084818046, 5.28656, 37.005919999999996),
    (2, "ImageNet16-120"): (2.63488, 0.5342876919999999, 1.4208, 9.9456),
}
# op_idx_list tail, dataset: (eyeriss_latency, eyeriss_energy, fpga_latency, fpga_energy)
FBNET = {
    ("[0]*22", "cifar100"): (3.9408960000000004, 3.2420080000000002, 10.739520000000002,
                             75.17664),
    ("[0]*22", "ImageNet"): (18.127332000000003, 16.945472000000002, 29.42189999999999,
                             205.95329999999998),
    ("[0]*21+[1]", "cifar100"): (3.9004160000000003, 3.2549479999999997, 10.347840000000001,
                                 72.43488),
    ("[0]*21+[1]", "ImageNet"): (18.078716, 16.862542, 28.491659999999992, 199.44161999999997),
    ("[0]*20+[1,1]", "cifar100"): (3.8665600000000007, 3.263408, 10.07136, 70.49952),
    ("[0]*20+[1,1]", "ImageNet"): (18.063916000000003, 16.806142, 27.835019999999993,
                                   194.84513999999996),
}
DATASETS = ("cifar10", "cifar100", "ImageNet16-120")


@pytest.fixture(scope="module")
def nb201_eyeriss():
    space = get_space("nb201")
    archs = list(itertools.islice(space.archs(), 3))
    model = create("eyeriss")
    return {(i, ds): model.estimate(space.build_network(archs[i], ds, 1))
            for i in range(3) for ds in DATASETS}


@pytest.mark.parametrize("dataset", DATASETS)
@pytest.mark.parametrize("a, b", [(0, 1), (1, 2), (0, 2)])
def test_eyeriss_latency_differences_match_hw_nas_bench(nb201_eyeriss, dataset, a, b):
    """The published latency difference of two cells is the predictor's cost of the
    operations in which they differ: reproduced within 2% (in fact to 1e-5 ms)."""
    published = NB201[b, dataset][0] - NB201[a, dataset][0]
    ours = nb201_eyeriss[b, dataset].latency_ms - nb201_eyeriss[a, dataset].latency_ms
    assert ours == pytest.approx(published, rel=0.02)


@pytest.mark.parametrize("dataset", DATASETS)
def test_eyeriss_gap_to_hw_nas_bench_is_one_constant(nb201_eyeriss, dataset):
    """What the public predictor code does not cost is the same for every architecture of
    a dataset (the network's fixed part): without the spec's reference offset, the gap to
    the published totals is one constant, so rankings within the space are the published
    ones."""
    gaps = [NB201[i, dataset][0] - (nb201_eyeriss[i, dataset].latency_ms
                                    - nb201_eyeriss[i, dataset].meta["reference_offset_ms"])
            for i in range(3)]
    assert max(gaps) - min(gaps) < 1e-4 * max(gaps)
    assert gaps[0] > 0


@pytest.mark.parametrize("dataset", DATASETS)
@pytest.mark.parametrize("index", [1, 2])
def test_eyeriss_totals_match_hw_nas_bench(nb201_eyeriss, dataset, index):
    """With the offset taken from index 0 (spec data, its source cited there), the
    published totals of indices 1 and 2, which the offset never saw: latency within 2%
    (in fact to 1e-5 ms), energy within 3.5% (per-operation energies 4-6% low)."""
    est = nb201_eyeriss[index, dataset]
    lat, energy = NB201[index, dataset][:2]
    assert est.latency_ms == pytest.approx(lat, rel=0.02)
    assert est.energy_mj == pytest.approx(energy, rel=0.035)


def test_eyeriss_offset_only_for_nb201():
    from costmodels.spaces import get_space

    fb = get_space("fbnet")
    est = create("eyeriss").estimate(fb.build_network(fb.parse(",".join(["0"] * 22)),
                                                      "cifar100"))
    assert est.meta["reference_offset_ms"] == 0.0


@pytest.mark.parametrize("dataset", DATASETS)
def test_eyeriss_energy_differences_near_hw_nas_bench(nb201_eyeriss, dataset):
    """Energy differences: within 7% (our per-operation energies come out 4-6% below the
    published ones; the predictor version HW-NAS-Bench ran is not public)."""
    for a, b in [(0, 1), (1, 2)]:
        published = NB201[b, dataset][1] - NB201[a, dataset][1]
        ours = nb201_eyeriss[b, dataset].energy_mj - nb201_eyeriss[a, dataset].energy_mj
        assert ours == pytest.approx(published, rel=0.07), (a, b)


def test_fpga_board_power_is_hw_nas_bench_convention():
    """Every published FPGA pair has energy / latency = 7 W: the default fpga spec's
    board power, which the model applies to its own latency."""
    ratios = [e / lat for *_, lat, e in list(NB201.values()) + list(FBNET.values())]
    spec = load_spec("zc706_hwnas", FpgaSpec)
    assert spec.energy_model == "board_power"
    assert all(r == pytest.approx(spec.board_power_w, rel=1e-6) for r in ratios)
    net = get_space("nb201").build_network(
        next(iter(get_space("nb201").archs())), "cifar10", 1)
    est = create("fpga").estimate(net)
    assert est.energy_mj == pytest.approx(spec.board_power_w * est.latency_ms)


def test_predictor_one_tiling_by_hand():
    """A 1x1 conv of one channel over a 2x2 map (E = F = 2): the only legal tiling is
    M = C = (1, ...), E1 = 2, E3 = 1.

    cycles = M3*M2*M0 * C2*C0 * E3 * F * S = 2 -> 2 / 250 MHz = 8 ns.
    Values: I = 4 ifmap, Wt = 1 weight, O = 4 ofmap, 4 MACs.
    DRAM 4 + 1 + 4 = 9 (x 0.3 pJ); DRAM->GLB 4 + 4 = 8 (x 0.5); GLB 4 + max(0, 1)*4 = 8
    (x 0.5); NoC: rows = M3*M2*M1*R*(E/H)*I = 4, + E3*E1*Wt = 2, + max(0, 1)*O = 4 -> 10
    (x 2); RF: rows*M0*S*(F/W) = 4, + E3*E1*F*Wt = 4, + max(0, 1)*O = 4 -> 12 (x 2);
    MACs 4 x 1 pJ. Energy = 4 + 2.7 + 4 + 4 + 20 + 24 = 58.7 pJ.
    """
    spec = load_spec("eyeriss", PredictorSpec)
    got = map_problem(Problem("conv", 1, 1, 1, 2, 2, 1, 1, 2, 2), spec)
    assert got.cycles == 2
    assert got.energy_pj == pytest.approx(58.7)
    assert dict(got.tiling)["E1"] == 2
    layer = make_layer("c", "Conv", ["x"], ["y"], [(1, 1, 2, 2)], (1, 1, 2, 2), [(1, 1, 1, 1)],
                       kernel=(1, 1), stride=(1, 1), pads=(0, 0, 0, 0))
    est = create("eyeriss").estimate(Network("one", (("x", (1, 1, 2, 2)),), (layer,), ("y",)))
    assert est.latency_ms == pytest.approx(2 / 250e3)
    assert est.energy_mj == pytest.approx(58.7e-9)
    assert est.meta["arithmetic_intensity"] == pytest.approx(4 / 9)


def test_predictor_pool_costs_no_mac_energy():
    """Pooling is the predictor's dense C -> C 'AvgP': same tiling and cycles as the conv
    of that shape, energy lower by exactly its MACs x 1 pJ."""
    spec = load_spec("eyeriss", PredictorSpec)
    conv = map_problem(Problem("conv", 3, 3, 1, 8, 8, 16, 16, 8, 8), spec)
    pool = map_problem(Problem("pool", 3, 3, 1, 8, 8, 16, 16, 8, 8), spec)
    assert pool.cycles == conv.cycles
    assert conv.energy_pj - pool.energy_pj == pytest.approx(8 * 8 * 16 * 16 * 9 * 1.0)
