"""costmodels.harness.compare: coverage, train/test split, costs, fitted backends."""

from __future__ import annotations

import numpy as np
import pytest

from costmodels.baselines import ProxyModel
from costmodels.harness.compare import compare, compare_models, display_name, split_rows
from costmodels.interface import BaseCostModel, Estimate
from costmodels.spaces import nb201
from costmodels.tables import read_table, write_table


def make_truth(path, n=80, seed=0):
    """A synthetic device: latency ~ MACs plus noise, on n sampled cells."""
    idx = nb201.SPACE.sample(n, seed)
    rng = np.random.default_rng(seed)
    lat = [nb201.build_network(i).macs * 1e-7 * rng.uniform(0.9, 1.1) + 0.05 for i in idx]
    write_table(path, idx, [nb201.SPACE[i] for i in idx], lat)
    return read_table(path)


@pytest.fixture()
def truth(tmp_path):
    return make_truth(tmp_path / "nb201_fake.csv")


class OddFails(BaseCostModel):
    """Fails on odd arch indices, like a LUT with missing kernels."""

    name = "odd-fails"

    def estimate(self, net):
        if net.meta["arch_index"] % 2:
            raise KeyError(f"no kernel for {net.name}")
        return Estimate(net.macs * 1e-7)


class AlwaysFails(BaseCostModel):
    name = "always-fails"

    def estimate(self, net):
        raise RuntimeError("device unreachable")


class Recorder:
    """An unfitted estimator that records what it was fitted on."""

    name = "recorder"

    def is_fitted(self):  # the fitted-ness protocol the harness reads
        return hasattr(self, "seen_")

    def fit(self, nets, latencies):
        self.seen_ = {n.meta["arch_index"] for n in nets}
        self.inner_ = ProxyModel("macs").fit(nets, latencies)
        return self

    def estimate(self, net):
        return self.inner_.estimate(net)

    def estimate_many(self, nets):
        assert not self.seen_ & {n.meta["arch_index"] for n in nets}, "scored on training rows"
        return self.inner_.estimate_many(nets)


def test_proxies_full_coverage(truth):
    res = compare(truth, ["flops", "params"])
    flops = res.results[0]
    assert flops.n_covered == flops.n_total == len(truth)
    assert flops.metric("kendall") > 0.8
    assert not flops.calibrated and flops.build_measurements == 0
    assert flops.query_us > 0
    assert res.ranked()[0].name == "flops"


def test_partial_coverage_is_recorded_not_raised(truth):
    res = compare(truth, [OddFails(), AlwaysFails(), "flops"])
    odd, bad, flops = res.results
    n_even = int((truth.arch_index % 2 == 0).sum())
    assert odd.n_covered == n_even < odd.n_total
    assert "KeyError" in odd.first_error and "no kernel" in odd.first_error
    assert set(truth.arch_index[odd.rows] % 2) == {0}
    assert bad.n_covered == 0 and "device unreachable" in bad.first_error
    assert bad.metrics == {}
    assert flops.n_covered == flops.n_total
    assert res.ranked()[-1] is bad


class PartialSums(BaseCostModel):
    """Like a best-effort LUT: odd cells get a partial total, flagged as a lower bound."""

    name = "partial-sums"

    def estimate(self, net):
        odd = net.meta["arch_index"] % 2 == 1
        return Estimate(net.macs * 1e-7 * (0.5 if odd else 1.0), meta={"lower_bound": odd})


def test_lower_bound_totals_are_noted(truth):
    res = compare(truth, [PartialSums(), "flops"])
    part, flops = res.results
    n_odd = int((truth.arch_index % 2 == 1).sum())
    assert part.n_covered == len(truth)  # covered, but said to be partial
    assert f"{n_odd} of {len(truth)} totals are lower bounds" in part.note
    assert "lower bound" not in flops.note


def test_table_backend_with_some_cells(tmp_path, truth):
    part = tmp_path / "other_device.csv"
    write_table(part, truth.arch_index[:30], truth.arch_str[:30], truth.latency_ms[:30] * 2)
    res = compare(truth, [str(part)])
    r = res.results[0]
    assert r.name == "other_device.csv"
    assert r.n_covered == 30 and r.build_measurements == 30
    assert r.metric("kendall") == pytest.approx(1.0)
    assert r.metric("mape") == pytest.approx(100.0)


def test_backend_that_cannot_be_created_is_recorded(truth):
    res = compare(truth, ["flops", "nonexistent.csv"])
    assert res.results[1].n_covered == 0
    assert "nonexistent.csv" in res.results[1].first_error


def test_unknown_backend_name_fails_fast(truth):
    from costmodels.errors import UnknownBackend

    with pytest.raises(UnknownBackend, match="bogus"):
        compare(truth, ["bogus"])


def test_train_test_split_never_scores_training_rows(truth):
    res = compare(truth, ["flops", Recorder()], train_samples=20, seed=3)
    assert len(res.train_rows) == 20 and len(res.test_rows) == len(truth) - 20
    assert not set(res.train_rows) & set(res.test_rows)
    flops, rec = res.results
    assert flops.fitted and flops.calibrated and flops.build_measurements == 20
    assert flops.name == "flops (fit on 20)"
    assert flops.metric("mape") < 15
    assert rec.model.seen_ == set(truth.arch_index[res.train_rows].tolist())
    for r in res.results:
        assert not set(r.rows) & set(res.train_rows)
    again = compare(truth, ["flops"], train_samples=20, seed=3)
    assert np.array_equal(again.train_rows, res.train_rows)  # seeded


def test_learned_without_training_rows_is_an_error_result(truth):
    res = compare(truth, ["gbdt"])
    assert res.results[0].n_covered == 0
    assert res.results[0].first_error


def test_split_rows_bounds():
    with pytest.raises(ValueError, match="between 1 and 9"):
        split_rows(10, 10, 0)
    train, test = split_rows(10, None, 0)
    assert len(train) == 0 and len(test) == 10


def test_source_equal_to_truth_is_refused(truth):
    with pytest.raises(ValueError, match="truth table itself"):
        compare(truth, ["flops"], sources=[truth.source])


def test_a_copy_of_the_truth_as_source_backend_or_prior_is_refused(truth, tmp_path):
    """The truth under another file name (all its rows, or a subset of them) was taken as a
    source, a table backend or a hybrid prior, scored tau 1.000 and recommended."""
    half = tmp_path / "half.csv"
    write_table(half, truth.arch_index[::2], truth.arch_str[::2], truth.latency_ms[::2])
    for kw in ({"sources": [str(half)]}, {"backends": [str(half)]},
               {"priors": [str(half)], "backends": ["hybrid"], "train_samples": 10}):
        args = {"backends": ["flops"], **kw}
        with pytest.raises(ValueError, match="half.csv is the truth table itself"):
            compare(truth, args.pop("backends"), **args)
    other = tmp_path / "other.csv"  # another device: the same networks, other figures
    write_table(other, truth.arch_index, truth.arch_str, truth.latency_ms * 1.1)
    assert compare(truth, ["flops", str(other)]).results[1].n_covered == len(truth)


def test_max_cells_and_reference_only(truth):
    res = compare(truth, ["flops", "params"], max_cells=25, reference_only=["params"])
    assert res.results[0].n_total == 25
    assert res.results[1].reference_only and not res.results[0].reference_only


def test_display_name():
    assert display_name("../x/nb201_pixel3.csv") == "nb201_pixel3.csv"
    assert display_name("lut:/a/b/lut.sqlite") == "lut:lut.sqlite"
    assert display_name("roofline:x86_generic") == "roofline:x86_generic"


def test_compare_models_with_fitted_models(tmp_path, truth):
    from costmodels.harness.models import generate_models

    generate_models(tmp_path / "zoo", names=["mobilenet_w050_r96", "resnet_w16_r32",
                                             "attention_d64_t64"])
    fitted = compare(truth, ["flops"], train_samples=20).results[0]
    res = compare_models(tmp_path / "zoo", [fitted, OddFails(), ("pair", fitted.model)],
                         truth=ProxyModel("macs"))
    assert res.names == ["attention_d64_t64", "mobilenet_w050_r96", "resnet_w16_r32"]
    assert res.results[0].n_covered == 3
    assert res.results[0].metric("spearman") == pytest.approx(1.0)
    assert res.results[1].n_covered == 0  # imported networks have no arch_index -> KeyError
    assert res.results[0].build_measurements == 20 and res.results[0].fitted
    assert res.results[2].name == "pair" and res.results[2].n_covered == 3


def test_measure_errors_as_data_are_reported(truth):
    class NanWithError(BaseCostModel):
        name = "nan-err"

        def estimate(self, net):
            return Estimate(float("nan"), meta={"error": "session failed: out of memory"})

    r = compare(truth, [NanWithError()]).results[0]
    assert r.n_covered == 0 and "out of memory" in r.first_error


def test_macs_proxy_on_pixel3_matches_the_known_figure(refdata):
    """The NAS-Bench-201 convention: total MACs vs pixel3 latency, Kendall tau ~0.68."""
    truth = read_table(refdata / "nb201_pixel3.csv")
    r = compare(truth, ["flops"]).results[0]
    assert r.n_covered == 15625
    assert r.metric("kendall") == pytest.approx(0.68, abs=0.01)


def test_estimate_each_is_the_one_fallback_of_the_cli_and_the_harness():
    from costmodels.errors import CostModelError
    from costmodels.harness.scoring import estimate_all
    from costmodels.interface import estimate_each

    nets = [nb201.build_network(i) for i in (2, 3, 4)]

    class OddCostModelError(OddFails):
        def estimate(self, net):
            if net.meta["arch_index"] % 2:
                raise CostModelError(f"no kernel for {net.name}")
            return Estimate(net.macs * 1e-7)

    each = estimate_each(OddCostModelError(), nets)  # the CLI's catch: CostModelError only
    assert isinstance(each.batch_error, CostModelError)
    assert [type(r).__name__ for r in each.results] == ["Estimate", "CostModelError", "Estimate"]
    with pytest.raises(KeyError):  # a bug (not a CostModelError) surfaces in the CLI ...
        estimate_each(OddFails(), nets)
    scored = estimate_all(OddFails(), nets)  # ... and is data in the harness
    assert scored.ok.tolist() == [True, False, True]
    assert "KeyError" in scored.errors[1]

    class WrongLength(BaseCostModel):  # a batched call that drops a network is not trusted
        name = "wrong-length"

        def estimate(self, net):
            return Estimate(1.0)

        def estimate_many(self, nets):
            return [Estimate(1.0)] * (len(nets) - 1)

    each = estimate_each(WrongLength(), nets, catch=Exception)
    assert isinstance(each.batch_error, TypeError) and len(each.results) == 3
    assert estimate_each(WrongLength(), []).results == []


def test_a_lut_calibrated_on_scored_networks_is_noted(tmp_path):
    """A LUT whose overhead terms were fitted on some of the scored networks' end-to-end
    times says so (a probe's LUT built on a whole folder, scored on that folder)."""
    from pathlib import Path

    from measure.lut.model import LookupTable

    path = Path(__file__).resolve().parents[1] / "datasets" / "nb201" / "xeon-2c-ort-cifar10-lut.sqlite"
    lut = LookupTable(path)
    cells = sorted(a for a, d in lut.calibrated_on_ if d == "cifar10")[:6]
    idx = [nb201.SPACE.index(a) for a in cells] + nb201.SPACE.sample(6, 5)
    t = tmp_path / "t.csv"
    write_table(t, idx, [nb201.SPACE[i] for i in idx],
                [nb201.build_network(i).macs * 1e-7 + 0.05 for i in idx])
    res = compare(read_table(t), [f"lut:{path}", "flops"])
    notes = {r.name: r.note for r in res.results}
    assert [n for n in notes.values() if "end-to-end times of 6 of the scored" in n]
    assert "end-to-end" not in notes["flops"]


def test_models_folder_skips_a_link_out_of_it_as_the_space_does(tmp_path):
    """compare --models read a .onnx link out of the folder after warning it was skipped
    (and failed on what it pointed at): it reads the files the models: space holds."""
    import onnx

    from costmodels.harness.compare import load_models
    from measure.testing import tiny_model

    folder = tmp_path / "m"
    folder.mkdir()
    onnx.save(tiny_model(), folder / "a.onnx")
    (tmp_path / "notes.txt").write_text("not a model")
    (folder / "p.onnx").symlink_to(tmp_path / "notes.txt")
    names, nets = load_models(folder)
    assert names == ["a"] and len(nets) == 1
