"""Few-shot model selection: prior power, default families, the dead-code family."""

from __future__ import annotations

import numpy as np
import pytest

from costmodels.harness import metrics
from costmodels.spaces import nb201
from predictors import additive as A
from predictors import features as F
from predictors import load
from predictors.select import FewShotModel, default_families
from predictors.transfer import TransferModel, dce_index, source_prior


@pytest.fixture(scope="module")
def devices():
    """Three synthetic source devices, additive in per-edge op costs, on every NB201 cell."""
    b = A.all_cells_basis()
    rng = np.random.default_rng(3)
    coefs = rng.uniform(0.1, 2.0, size=(3, b.shape[1]))
    coefs[:, -1] = 5.0
    lat = b @ coefs.T + rng.normal(0, 0.05, size=(nb201.NUM_ARCHS, 3))
    cells = np.sort(rng.choice(nb201.NUM_ARCHS, 300, replace=False))
    x = F.features([nb201.build_network(int(i)) for i in cells])
    return lat, cells, x


def test_prior_power_concentrates_the_mix():
    rng = np.random.default_rng(0)
    s = rng.uniform(1, 3, size=(12, 3))
    y = s[:, 0] + rng.normal(0, 0.01, 12)  # tracks source 0, not the others
    design = np.c_[s, np.ones(12), -np.ones(12), np.zeros((12, 2))]
    p1, p2 = source_prior(design, y, 3, 1.0), source_prior(design, y, 3, 2.0)
    assert np.isclose(p1.sum(), 1) and np.isclose(p2.sum(), 1)
    assert p2[0] > p1[0] > 1 / 3


def test_default_families_follow_k():
    assert default_families(5) == ("mix-plain", "additive")
    assert "mix" in default_families(10) and "gbdt" not in default_families(10)
    assert "counts" in default_families(10) and "counts" in default_families(100)
    assert "gbdt" not in default_families(20) and "gbdt" in default_families(100)


def test_small_k_fit_reports_its_cv_score(devices):
    lat, cells, x = devices
    y = 0.6 * lat[cells, 0] + 0.3 * lat[cells, 2]
    m = FewShotModel().use_matrix(lat, ["a", "b", "c"])
    m.fit_arrays(cells[:5], x[:5], y[:5])
    assert m.report_["chosen"] == {"mix-plain": 0.75, "additive": 0.25}  # fixed below 8 cells
    assert set(m.report_["cv_log_mse"]) == {"mix-plain", "additive"}
    assert np.isfinite(m.report_["cv_log_mse_final"])
    rho = metrics.spearman(y[5:], m.predict_arrays(cells[5:], x[5:]))
    assert rho > 0.95


def test_dce_family_fits_a_dead_code_eliminating_target(devices):
    lat, cells, x = devices
    y = lat[dce_index(cells), 1]  # the target runs each cell without its dead edges
    train, test = np.arange(10), np.arange(10, len(cells))
    rho = {}
    for fam in ("mix-plain", "mix-dce"):
        m = FewShotModel(families=(fam,)).use_matrix(lat, ["a", "b", "c"])
        m.fit_arrays(cells[train], x[train], y[train])
        rho[fam] = metrics.spearman(y[test], m.predict_arrays(cells[test], x[test]))
    assert rho["mix-dce"] > 0.99 and rho["mix-dce"] > rho["mix-plain"]


def test_counts_family_fits_a_device_that_costs_each_layer_on_its_own(devices):
    """An accelerator-like target (overhead + a cost per operation, 1% noise) whose costs
    are unlike every source's: the counts family gets the largest stack weight and the
    stack ranks the other cells better with it than without it."""
    lat, cells, x = devices
    cost = np.array([0.02, 0.45, 1.0, 0.6])  # skip, conv 1x1, conv 3x3, pool
    rng = np.random.default_rng(7)
    y = (4.0 + A.op_count_bases()['all edges'][cells, :4] @ cost) * np.exp(rng.normal(0, 0.01, len(cells)))
    np.testing.assert_allclose(A.op_count_bases()['all edges'][cells, :4].sum(axis=1)
                               + (np.array([nb201.parse_arch(nb201.SPACE[i]) for i in cells])
                                  == 0).sum(axis=1), 6)
    train, test = np.arange(10), np.arange(10, len(cells))
    rho = {}
    for label, fams in (("with", default_families(10)),
                        ("without", tuple(f for f in default_families(10) if f != "counts"))):
        m = FewShotModel(families=fams, priors="none").use_matrix(lat, ["a", "b", "c"])
        m.fit_arrays(cells[train], x[train], y[train])
        rho[label] = metrics.spearman(y[test], m.predict_arrays(cells[test], x[test]))
        if label == "with":
            chosen = m.report_["chosen"]
            assert max(chosen, key=chosen.get) == "counts", chosen
            # the basis that counts every edge ("every layer" nests the edges alone)
            assert m.report_["counts_basis"]["every layer"] > 0.9, m.report_
    assert rho["with"] > rho["without"] + 0.05 and rho["with"] > 0.97, rho


def test_counts_family_finds_a_device_that_drops_dead_edges(devices):
    """The same kind of device, but one that skips edges whose result never reaches the
    output: the counts family picks the basis of those edges from the k cells alone."""
    lat, cells, x = devices
    cost = np.array([0.05, 0.3, 1.0, 0.4])
    b = A.op_count_bases()["edges reaching the output"]
    rng = np.random.default_rng(8)
    y = (3.0 + b[cells, :4] @ cost) * np.exp(rng.normal(0, 0.01, len(cells)))
    m = FewShotModel(families=("counts",), priors="none").use_matrix(lat, ["a", "b", "c"])
    m.fit_arrays(cells[:10], x[:10], y[:10])
    assert m.report_["counts_basis"]["edges reaching the output"] > 0.9, m.report_
    assert metrics.spearman(y[10:], m.predict_arrays(cells[10:], x[10:])) > 0.97
    fit = A.fit_counts(cells[:10], 3.0 + A.op_count_bases()["all edges"][cells[:10], :4] @ cost)
    assert fit["edges reaching the output"][0] < 0.01
    assert np.isclose(sum(w for w, _ in fit.values()), 1)


def test_counts_shares_of_a_noise_free_target_are_finite():
    """A noise-free target that the basis counting every edge fits exactly, leave-one-out
    (zero error): all of the share goes to it, finite (these nine cells of a synthetic
    accelerator gave 0/0)."""
    idx = np.array([9376, 4662, 6463, 1707, 13079, 12719, 4085, 7049, 5232])
    y = np.array([13.156452175366983, 13.181344149673562, 12.324077261572775,
                  12.348969235879354, 12.781244167990463, 12.278368909373086,
                  12.603210892838115, 11.435585806632323, 12.806136142297042])
    fit = A.fit_counts(idx, y)
    shares = {name: w for name, (w, _) in fit.items()}
    assert np.isfinite(list(shares.values())).all(), shares
    assert shares["every layer"] > 0.99
    assert np.isfinite(A.predict_counts(fit, np.arange(100))).all()


def test_sum_layer_counts_match_the_built_cell():
    """The Add layers and zero-filled nodes of :func:`A.sum_layer_counts` are those of the
    network the space builds, for a few cells."""
    for i in (0, 1, 77, 5000, 15624):
        kinds = [n.op for n in nb201.describe(nb201.parse_arch(nb201.SPACE[i]))
                 if n.name.startswith("s")]  # the cells' layers (not stem, reductions, head)
        cells = nb201.CELLS_PER_STAGE * len(nb201.STAGE_CHANNELS)  # the basis counts one
        adds, zeros = A.sum_layer_counts()[i]
        assert kinds.count("Add") == adds * cells, (i, kinds.count("Add"))
        assert kinds.count("Mul") == zeros * cells, (i, kinds.count("Mul"))


def test_counts_and_stack_find_a_device_that_costs_its_sums(devices):
    """A layer-wise accelerator that also costs each cell's Add layers and zero fills (as
    our ``fpga`` does), noise-free like an analytical model: the "every layer" basis gets
    the counts share, the stack gives counts nearly all of its weight (an exact fit on the
    k cells) and ranks the other cells almost perfectly."""
    lat, cells, x = devices
    b = A.op_count_bases()["every layer"]
    y = b[cells] @ np.array([0.03, 0.4, 1.0, 0.5, 0.3, 0.4, 2.0])
    m = FewShotModel(priors="none").use_matrix(lat, ["a", "b", "c"])
    m.fit_arrays(cells[:10], x[:10], y[:10])
    assert m.report_["counts_basis"]["every layer"] > 0.9, m.report_
    assert m.report_["chosen"]["counts"] > 0.9, m.report_
    assert metrics.spearman(y[10:], m.predict_arrays(cells[10:], x[10:])) > 0.99


def test_counts_coefficients_are_non_negative():
    b = A.op_count_bases()["all edges"][:40]
    y = b @ np.array([0.0, 0.5, 1.0, 0.2, 3.0]) - 0.3 * b[:, 0]  # skip "saves" time
    assert (A.fit_nonnegative(b, y) >= 0).all()


def test_transfer_prior_power_round_trips(tmp_path, devices):
    from costmodels.tables import LatencyTable

    lat, cells, _ = devices
    tabs = [LatencyTable(cells, tuple(nb201.SPACE[i] for i in cells), lat[cells, j], None,
                         f"nb201_{n}.csv") for j, n in enumerate("abc")]
    nets = [nb201.build_network(int(i)) for i in cells[:40]]
    y = 0.5 * lat[cells[:40], 0] + lat[cells[:40], 1]
    est = TransferModel(sources=tabs, prior_power=2.0, smooth="none").fit(nets[:20], y[:20])
    est.save(tmp_path / "t")
    again = load(str(tmp_path / "t"))
    assert again.prior_power == 2.0
    np.testing.assert_array_equal(est.predict(nets[20:]), again.predict(nets[20:]))


def test_count_basis_counts_edges_outputs_and_live_edges():
    b = A.count_basis()
    assert b.shape == (nb201.NUM_ARCHS, 14)
    # |nor_conv_3x3~0|+|none~0|none~1|+|skip_connect~0|none~1|nor_conv_1x1~2|: the edge 2<-0
    # is none, so node 2 gets nothing and its conv1x1 into node 3 is on a zero input
    i = nb201.SPACE.index(nb201.parse_arch(
        "|nor_conv_3x3~0|+|none~0|none~1|+|skip_connect~0|none~1|nor_conv_1x1~2|"))
    ops = list(nb201.OPS[1:])
    row = b[i]
    c3, c1, skip = ops.index("nor_conv_3x3"), ops.index("nor_conv_1x1"), ops.index("skip_connect")
    assert row[c3] == 1 and row[4 + c3] == 0 and row[8 + c3] == 0   # conv3x3 feeds dead node 1
    assert row[c1] == 1 and row[4 + c1] == 1 and row[8 + c1] == 0   # reaches out, not live
    assert row[skip] == row[4 + skip] == row[8 + skip] == 1
    assert row[12] == 1 and row[13] == 1


def test_additive_family_fits_a_target_unlike_its_sources():
    """A target that skips edges whose result is never used, sources that run them all:
    the additive family learns it from its cells (the wide prior grid lets it leave the
    sources' coefficients)."""
    b = A.count_basis()
    rng = np.random.default_rng(5)
    per_op = rng.uniform(0.2, 2.0, size=(4, 4))                 # 4 sources x 4 ops
    src = np.zeros((4, 14))
    src[:, :4] = per_op
    src[:, 13] = 3.0
    lat = b @ src.T * rng.lognormal(0, 0.01, size=(nb201.NUM_ARCHS, 4))
    tgt = np.zeros(14)
    tgt[4:8] = [0.3, 1.5, 3.0, 0.8]                              # only edges that reach out
    tgt[13] = 2.0
    y_all = b @ tgt
    cells = np.sort(rng.choice(nb201.NUM_ARCHS, 400, replace=False))
    x = F.features([nb201.build_network(int(i)) for i in cells])
    m = FewShotModel(families=["additive"], priors="none").use_matrix(lat, list("abcd"))
    m.fit_arrays(cells[:30], x[:30], y_all[cells[:30]])
    rho = metrics.spearman(y_all[cells[30:]], m.predict_arrays(cells[30:], x[30:]))
    assert rho > 0.95  # 0.977 here; 0.89 with the former grid (tau <= 0.1)


def test_a_model_that_refuses_other_networks_does_not_warn_first(devices, capsys):
    """The domain warning is for models that extrapolate; a few-shot model refuses a network
    of another dataset (its sources do not cover it), with its error and no warning."""
    from costmodels.tables import LatencyTable
    from predictors.base import PredictorError

    lat, cells, _ = devices
    tabs = [LatencyTable(cells, tuple(nb201.SPACE[i] for i in cells), lat[cells, j], None,
                         f"nb201_{n}.csv") for j, n in enumerate("abc")]
    nets = [nb201.build_network(int(i)) for i in cells[:10]]
    est = FewShotModel(sources=tabs, priors="none").fit(nets, lat[cells[:10], 0])
    est.estimate_many([nb201.build_network(int(i)) for i in cells[10:13]])
    capsys.readouterr()
    with pytest.raises(PredictorError, match="cifar100"):
        est.estimate_many([nb201.build_network(int(cells[20]), "cifar100")])
    assert "warning" not in capsys.readouterr().err


def test_inverse_error_shares():
    """Shares by 1/error**power (the source mix's prior and the counts bases): finite for an
    exact fit, which takes (nearly) all of the share."""
    from predictors.linear import inverse_error_shares

    np.testing.assert_allclose(inverse_error_shares(np.array([1.0, 2.0]), 2.0), [0.8, 0.2])
    np.testing.assert_allclose(inverse_error_shares(np.array([3.0, 3.0, 3.0]), 1.0), 1 / 3)
    exact = inverse_error_shares(np.array([0.0, 0.5]), 2.0)
    assert np.isfinite(exact).all() and exact[0] > 0.999 and np.isclose(exact.sum(), 1)


def test_two_cells_that_rank_against_the_sources_still_give_a_ranking(devices):
    lat, cells, x = devices
    y = lat[cells, 0].copy()
    a, b = np.argmin(y[:20]), np.argmax(y[:20])
    train = np.array([a, b])
    yt = y[train][::-1].copy()  # the slower cell measured faster: a negative slope
    m = FewShotModel(families=("mix-plain",)).use_matrix(lat, ["a", "b", "c"])
    m.fit_arrays(cells[train], x[train], yt)
    pred = m.predict_arrays(cells, x)
    assert np.ptp(pred) > 0  # before: every source weight 0, one value for every cell
    assert metrics.spearman(y, pred) > 0.5


def _twins(n: int, seed: int = 0) -> list[tuple[int, int]]:
    """n pairs of NB201 cells that run the same kernels (edge 2<-1 none, nodes 1, 2 swapped)."""
    from predictors.fewshot import swap_pairs

    pairs = swap_pairs(list(nb201.SPACE))
    rng = np.random.default_rng(seed)
    return [tuple(map(int, p)) for p in pairs[rng.choice(len(pairs), n, replace=False)]]


def test_twin_cells_are_left_out_together_in_the_cv(devices):
    """Cells that are one network (NB201's swapped twins; cells that differ in dead edges)
    form one CV group: leave-one-out kept a twin's partner in the fit, and a family that
    gives both one prediction (counts) looked exact."""
    from predictors.rows import Rows
    from predictors.select import cv_groups

    lat, _, _ = devices
    pairs = _twins(3)
    extra = [i for i in (11, 222, 3333, 4444) if i not in {c for p in pairs for c in p}]
    cells = np.array([c for p in pairs for c in p] + extra)
    x = F.features([nb201.build_network(int(i)) for i in cells])
    g = cv_groups(Rows(), cells, x)
    assert len(set(g)) == 3 + len(extra)
    assert all(g[2 * i] == g[2 * i + 1] for i in range(3))
    y = lat[cells, 0]
    m = FewShotModel().use_matrix(lat, ["a", "b", "c"]).fit_arrays(cells, x, y)
    assert m.report_["cv_groups"] == 7 and m.report_["cv"] == "leave-one-group-out"
    assert m.report_["strategy"] == ("fixed shares below 8 distinct networks (7 distinct "
                                      "networks among the 10 cells)")
    two = cells[:4]  # two twin pairs: 2 distinct networks, too few for any CV
    m = FewShotModel().use_matrix(lat, ["a", "b", "c"]).fit_arrays(two, x[:4], y[:4])
    assert m.report_["cv"] == "none" and m.report_["cv_groups"] == 2
    # off NB201, networks with the same feature row are one group
    rows = Rows(keys=[f"m{i}" for i in range(4)], space="models")
    same = np.array([[1.0, 2.0], [1.0, 2.0], [3.0, 4.0], [5.0, 6.0]])
    g = cv_groups(rows, np.arange(4), same)
    assert g[0] == g[1] and len(set(g)) == 3
