"""Noise ceiling (swap pairs) and the built-in analytical priors of the few-shot models."""

from __future__ import annotations

import numpy as np
import pytest

from costmodels import registry
from costmodels.harness import metrics
from costmodels.spaces import nb201
from costmodels.tables import LatencyTable
from predictors import features as F
from predictors import fewshot, load
from predictors import transfer as T
from predictors.base import PredictorError
from predictors.select import FewShotModel


def _table(idx, lat, name="dev"):
    idx = np.asarray(idx, dtype=np.int64)
    return LatencyTable(idx, tuple(nb201.SPACE[i] for i in idx), np.asarray(lat, dtype=float),
                        None, f"nb201_{name}.csv")


@pytest.fixture(scope="module")
def space_pairs():
    return fewshot.swap_pairs(list(nb201.SPACE))


def test_swap_pairs_of_the_whole_space_build_the_same_layers(space_pairs):
    assert space_pairs.shape == (1500, 2)
    assert len(np.unique(space_pairs)) == 3000
    for i, j in space_pairs[::300]:
        a, b = nb201.build_network(int(i)), nb201.build_network(int(j))
        assert nb201.SPACE[i] != nb201.SPACE[j]
        assert (a.macs, a.params) == (b.macs, b.params)
        assert sorted(ly.op for ly in a.layers) == sorted(ly.op for ly in b.layers)


def test_noise_ceiling_recovers_the_noise_of_a_synthetic_table(space_pairs):
    rng = np.random.default_rng(0)
    true = np.exp(rng.normal(0, 0.5, nb201.NUM_ARCHS))
    true[space_pairs[:, 1]] = true[space_pairs[:, 0]]  # equivalent cells: equal latency
    measured = true * np.exp(rng.normal(0, 0.05, nb201.NUM_ARCHS))
    c = fewshot.noise_ceiling(_table(np.arange(nb201.NUM_ARCHS), measured))
    assert c["pairs"] == 1500 and c["method"].startswith("swap-pairs")
    assert c["noise_sd"] == pytest.approx(0.05, rel=0.1)
    # a perfect predictor (the true latencies) scores about the ceiling
    assert c["rho"] == pytest.approx(metrics.spearman(measured, true), abs=0.003)
    assert c["acc10"] == pytest.approx(metrics.acc_within(measured, true, 10), abs=0.02)


def test_noise_ceiling_is_none_without_observable_pairs(space_pairs):
    lat = np.arange(1, nb201.NUM_ARCHS + 1, dtype=float)
    lat[space_pairs[:, 1]] = lat[space_pairs[:, 0]]  # one figure per class: no noise seen
    assert fewshot.noise_ceiling(_table(np.arange(nb201.NUM_ARCHS), lat)) is None
    assert fewshot.noise_ceiling(_table(np.arange(50), np.ones(50))) is None  # no pair in it
    other = LatencyTable(np.full(3, -1), ("a", "b", "c"), np.ones(3), None, "x.csv")
    assert fewshot.swap_pairs(other.arch_str) is None


def test_prior_columns_are_the_registry_backends():
    idx = np.array([0, 77, 15_000])
    cols = T.prior_columns(idx)
    names = T.builtin_prior_names()
    assert cols.shape == (3, len(names)) and len(set(names)) == len(names)
    for spec, ds in (("eyeriss", "ImageNet16-120"), ("fpga", "cifar10"), ("flops", "cifar10")):
        nets = [nb201.build_network(int(i), ds) for i in idx]
        want = [e.latency_ms for e in registry.create(spec).estimate_many(nets)]
        np.testing.assert_allclose(cols[:, names.index(f"prior:{spec}/{ds}")], want)


def test_additive_priors_extend_exactly_to_unseen_cells():
    idx = np.random.default_rng(4).choice(nb201.NUM_ARCHS, 25, replace=False)
    for spec, ds in (("eyeriss", "cifar100"), ("params", "cifar10")):
        col = T._additive_column(spec, ds)
        assert col is not None
        np.testing.assert_allclose(col[idx], T.prior_columns(idx, [(spec, ds)])[:, 0],
                                   rtol=1e-9)
    assert T._additive_column("fpga", "cifar10") is None  # tiling + DDR: not additive


@pytest.fixture()
def fake_priors(monkeypatch):
    """A cheap stand-in for the 15,625-cell prior matrix (an additive 'accelerator')."""
    b = T.cell_basis()
    rng = np.random.default_rng(5)
    mat = np.abs(b @ rng.uniform(0.1, 3.0, size=(b.shape[1], len(T.builtin_prior_names()))))
    mat += 1.0
    monkeypatch.setattr(T, "builtin_priors", lambda: mat)
    return mat


@pytest.fixture(scope="module")
def measured():
    """Two measured source devices and features of 200 cells."""
    b = T.cell_basis()
    rng = np.random.default_rng(1)
    lat = np.abs(b @ rng.uniform(0.1, 2.0, size=(b.shape[1], 2))) + 2.0
    lat *= np.exp(rng.normal(0, 0.03, lat.shape))
    cells = np.sort(rng.choice(nb201.NUM_ARCHS, 200, replace=False))
    return lat, cells, F.features([nb201.build_network(int(i)) for i in cells])


def _rho(model, lat, cells, x, y, k=10):
    model.use_matrix(lat, ["a", "b"]).fit_arrays(cells[:k], x[:k], y[:k])
    return metrics.spearman(y[k:], model.predict_arrays(cells[k:], x[k:]))


def test_priors_explain_an_analytical_target(fake_priors, measured):
    lat, cells, x = measured
    y = 2.5 * fake_priors[cells, 3]  # the target is one of the priors, scaled
    with_p, without = FewShotModel(priors="builtin"), FewShotModel(priors="none")
    rho_with = _rho(with_p, lat, cells, x, y)
    rho_without = _rho(without, lat, cells, x, y)
    assert with_p.report_["priors_used"] and not without.report_["priors_used"]
    assert rho_with > 0.99 and rho_with > rho_without + 0.02


def test_priors_stay_out_when_a_source_explains_the_target(fake_priors, measured):
    lat, cells, x = measured
    y = 1.7 * lat[cells, 0]
    m = FewShotModel(priors="builtin")
    rho = _rho(m, lat, cells, x, y)
    assert not m.report_["priors_used"] and rho > 0.99


def test_priors_option_is_checked_and_saved(tmp_path, fake_priors, measured):
    lat, cells, x = measured
    with pytest.raises(PredictorError, match="priors must be one of"):
        FewShotModel(priors="yes").use_matrix(lat, ["a", "b"]).fit_arrays(cells[:5], x[:5],
                                                                          lat[cells[:5], 0])
    tabs = [_table(cells, lat[cells, j], n) for j, n in enumerate("ab")]
    nets = [nb201.build_network(int(i)) for i in cells[:30]]
    y = 2.0 * fake_priors[cells[:30], 0]
    est = T.TransferModel(sources=tabs, priors="builtin", smooth="none").fit(nets[:15], y[:15])
    assert est.source_lat_.shape[1] == 2 + len(T.builtin_prior_names())
    est.save(tmp_path / "t")
    again = load(str(tmp_path / "t"))
    assert again.priors == "builtin"
    np.testing.assert_array_equal(est.predict(nets[15:]), again.predict(nets[15:]))


def test_cli_priors_option(tmp_path, fake_priors, capsys):
    import json

    from costmodels.cli import main
    from costmodels.tables import write_table

    idx = nb201.SPACE.sample(60, seed=3)
    write_table(tmp_path / "nb201_dev.csv", idx, [nb201.SPACE[i] for i in idx],
                0.5 + 2.0 * fake_priors[idx, 1])  # a device that is one of the priors
    write_table(tmp_path / "nb201_src.csv", idx, [nb201.SPACE[i] for i in idx],
                np.sqrt(fake_priors[idx, 2]) + 1.0)
    used = {}
    for pr in ("builtin", "none"):
        out = tmp_path / pr
        assert main(["fit", "fewshot", "--train", str(tmp_path / "nb201_dev.csv"), "--limit",
                     "10", "--source", str(tmp_path / "nb201_src.csv"), "--priors", pr,
                     "-o", str(out)]) == 0
        doc = json.loads((out / "manifest.json").read_text())
        assert doc["params"]["priors"] == pr
        used[pr] = doc["state"]["report"]["priors_used"]
    assert used == {"builtin": True, "none": False}
    assert "built-in priors used" in capsys.readouterr().err
    assert main(["fit", "gbdt", "--train", str(tmp_path / "nb201_dev.csv"), "--priors",
                 "builtin", "-o", str(tmp_path / "g")]) == 2
    assert main(["fewshot", "--target", str(tmp_path / "nb201_dev.csv"), "--model", "flops",
                 "--priors", "none", "-o", str(tmp_path / "c.csv")]) == 2
    assert "--priors is for" in capsys.readouterr().err
