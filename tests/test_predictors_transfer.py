"""Few-shot transfer and sample selection."""

from __future__ import annotations

import numpy as np
import pytest

from costmodels.spaces import nb201
from costmodels.tables import LatencyTable
from predictors import features as F
from predictors import fewshot, load, make, sampling
from predictors.base import PredictorError


def _table(idx, lat, name):
    return LatencyTable(np.asarray(idx, dtype=np.int64), tuple(nb201.SPACE[i] for i in idx),
                        np.asarray(lat, dtype=float), None, f"nb201_{name}.csv")


@pytest.fixture(scope="module")
def synthetic():
    """Three devices with different per-op costs; the target mixes two of them plus noise."""
    idx = nb201.SPACE.sample(600, seed=1)
    x = F.features([nb201.build_network(i) for i in idx])
    counts = np.stack([x[:, F.FEATURE_NAMES.index(f"n_live_{op}")] for op in nb201.OPS[1:]], 1)
    rng = np.random.default_rng(0)
    costs = {"gpu": [0.1, 1.0, 2.5, 0.4], "cpu": [0.2, 3.0, 9.0, 1.5], "npu": [0.05, 0.5, 0.8, 2.0]}
    devs = {k: 2.0 + counts @ np.array(c) + rng.normal(0, 0.05, len(idx)) for k, c in costs.items()}
    target = 0.7 * devs["gpu"] + 0.4 * devs["cpu"] + rng.normal(0, 0.05, len(idx))
    return _table(idx, target, "target"), [_table(idx, v, k) for k, v in devs.items()]


def test_transfer_beats_scratch_on_synthetic_devices(synthetic):
    target, sources = synthetic
    tgt = fewshot.prepare(target, sources)
    tr = fewshot.point(tgt, "transfer", 5, seeds=3)
    gb = fewshot.point(tgt, "gbdt", 5, seeds=3, params={"n_estimators": 30})
    assert tr["spearman"] > gb["spearman"] and tr["spearman"] > 0.95


@pytest.mark.parametrize("residual", ["ridge", "gbdt", "none"])
def test_transfer_round_trip(tmp_path, synthetic, residual):
    target, sources = synthetic
    nets = [nb201.build_network(int(i)) for i in target.arch_index[:60]]
    est = make("transfer", sources=sources, device="target", residual=residual)
    est.fit(nets[:30], target.latency_ms[:30])
    before = est.predict(nets[30:])
    est.save(tmp_path / "tr")
    again = load(str(tmp_path / "tr"))
    np.testing.assert_array_equal(before, again.predict(nets[30:]))
    assert again.residual_kind_ == residual


def test_transfer_beats_scratch_on_refdata(refdata):
    srcs = [refdata / f"nb201_{d}.csv" for d in ("1080ti_1", "titanx_32", "silver_4210r")]
    target = fewshot._as_table(refdata / "nb201_titanx_1.csv").subset(np.arange(0, 15625, 10))
    tgt = fewshot.prepare(target, srcs)
    tr = fewshot.point(tgt, "transfer", 10, seeds=2)
    gb = fewshot.point(tgt, "gbdt", 10, seeds=2, params={"n_estimators": 50})
    assert tr["spearman"] > gb["spearman"] and tr["spearman"] > 0.9


def test_sampling_is_deterministic_and_diverse_spans_the_range(synthetic):
    target, sources = synthetic
    tgt = fewshot.prepare(target, sources)
    for method in sampling.METHODS:
        a = sampling.select(method, 10, 7, tgt.x, tgt.source_lat)
        assert np.array_equal(a, sampling.select(method, 10, 7, tgt.x, tgt.source_lat))
        assert len(set(a.tolist())) == 10
        assert not np.array_equal(a, sampling.select(method, 10, 8, tgt.x, tgt.source_lat))
    cons = sampling.consensus(tgt.source_lat, tgt.x)
    d = sampling.select("diverse", 10, 0, tgt.x, tgt.source_lat)
    q = np.searchsorted(np.sort(cons), cons[d]) / len(cons)
    assert q.min() < 0.1 and q.max() > 0.9  # both ends of the latency range are measured


def test_transfer_refuses_networks_outside_nb201(synthetic):
    from costmodels.network import Network, make_layer

    target, sources = synthetic
    nets = [nb201.build_network(int(i)) for i in target.arch_index[:10]]
    est = make("transfer", sources=sources).fit(nets, target.latency_ms[:10])
    relu = make_layer("relu", "Relu", ["x"], ["y"], [(1, 4, 8, 8)], (1, 4, 8, 8))
    with pytest.raises(PredictorError, match="not a NAS-Bench-201 cell"):
        est.predict([Network("t", (("x", (1, 4, 8, 8)),), (relu,), ("y",))])


def test_dce_index_drops_edges_that_never_reach_the_output():
    from predictors.transfer import dce_index

    dead = nb201.SPACE.index("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|"
                             "+|skip_connect~0|none~1|none~2|")
    pruned = nb201.SPACE.index("|none~0|+|none~0|none~1|+|skip_connect~0|none~1|none~2|")
    live = nb201.SPACE.index("|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|"
                             "+|skip_connect~0|none~1|avg_pool_3x3~2|")
    assert dce_index(np.array([dead, live, pruned])).tolist() == [pruned, live, pruned]


def test_source_prior_favours_the_source_that_tracks_the_target():
    from predictors.transfer import source_prior

    rng = np.random.default_rng(3)
    s = rng.uniform(1, 3, size=(10, 3))
    y = 0.5 + 2.0 * s[:, 1] + rng.normal(0, 0.01, 10)
    one = np.ones((10, 1))
    x = np.hstack([s, one, -one, one, -one])
    w = source_prior(x, y / y.mean(), 3)
    assert w.sum() == pytest.approx(1.0) and np.argmax(w) == 1 and w[1] > 0.9
    assert np.allclose(source_prior(x[:2], y[:2], 3), 1 / 3)  # too few rows: equal shares


def test_transfer_learns_a_dead_code_eliminating_target():
    """Sources run every edge; the target skips edges whose result never reaches the output."""
    from predictors.transfer import dce_index

    idx = np.arange(nb201.NUM_ARCHS)
    ops = np.array([nb201.parse_arch(nb201.SPACE[i]) for i in idx])
    rng = np.random.default_rng(0)

    def lat(costs):
        return 2.0 + np.array([0.0, *costs])[ops].sum(axis=1) + rng.normal(0, 0.05, len(idx))

    def table(lat_ms, name):
        return LatencyTable(idx, tuple(nb201.SPACE[i] for i in idx), lat_ms, None,
                            f"nb201_{name}.csv")

    gpu, cpu, npu = lat([0.1, 1.0, 2.5, 0.4]), lat([0.2, 3.0, 9.0, 1.5]), lat([0.05, 0.5, 0.8, 2.0])
    pruned = dce_index(idx)
    target = 0.7 * gpu[pruned] + 0.4 * cpu[pruned] + rng.normal(0, 0.05, len(idx))
    tgt = fewshot.prepare(table(target, "dce").subset(np.arange(0, nb201.NUM_ARCHS, 5)),
                          [table(gpu, "gpu"), table(cpu, "cpu"), table(npu, "npu")])
    assert fewshot.point(tgt, "transfer", 20, seeds=2)["spearman"] > 0.98


def test_prepare_reuses_given_networks_and_checks_their_count(synthetic):
    target, sources = synthetic
    built = fewshot.prepare(target, sources)
    given = fewshot.prepare(target, sources, nets=built.nets)
    assert all(a is b for a, b in zip(given.nets, built.nets, strict=True))
    np.testing.assert_array_equal(given.x, built.x)
    np.testing.assert_array_equal(given.source_lat, built.source_lat)
    with pytest.raises(ValueError, match="networks for a target table"):
        fewshot.prepare(target, sources, nets=built.nets[:-1])


def test_a_saved_transfer_whose_rows_state_is_no_object_is_refused(tmp_path, synthetic):
    """state.rows edited to a string (the checksum recomputed, as anyone can): one error
    naming the manifest, not an AttributeError."""
    from badinput import edit_manifest

    from costmodels.errors import ModelFileError

    target, sources = synthetic
    nets = [nb201.build_network(int(i)) for i in target.arch_index[:30]]
    est = make("transfer", sources=sources, device="target", residual="none")
    est.fit(nets[:20], target.latency_ms[:20]).save(tmp_path / "tr")
    edit_manifest(tmp_path / "tr", tmp_path / "bad",
                  lambda doc: doc["state"].update(rows="evil"), reseal=True)
    with pytest.raises(ModelFileError, match="state.rows is str, not an object"):
        load(str(tmp_path / "bad"))
