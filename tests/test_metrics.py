"""costmodels.harness.metrics: against scipy on random data, and hand-computed cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats

from costmodels.harness import metrics as m


@pytest.fixture(params=[0, 1, 2])
def data(request):
    rng = np.random.default_rng(request.param)
    t = rng.lognormal(1.0, 0.5, 300)
    p = t * rng.lognormal(0.0, 0.3, 300)
    return t, p


def test_correlations_match_scipy(data):
    t, p = data
    assert m.kendall(t, p) == pytest.approx(stats.kendalltau(t, p)[0], abs=1e-12)
    assert m.spearman(t, p) == pytest.approx(stats.spearmanr(t, p)[0], abs=1e-12)
    assert m.pearson(t, p) == pytest.approx(stats.pearsonr(t, p)[0], abs=1e-12)


def test_ties_use_tau_b_and_average_ranks():
    rng = np.random.default_rng(5)
    t = rng.integers(1, 8, 200).astype(float)  # integer ms, many ties, as phone tables
    p = t + rng.normal(0, 2, 200)
    assert m.kendall(t, p) == pytest.approx(stats.kendalltau(t, p, variant="b")[0])
    ranks_t, ranks_p = stats.rankdata(t), stats.rankdata(p)
    assert m.spearman(t, p) == pytest.approx(np.corrcoef(ranks_t, ranks_p)[0, 1])


def test_outputs_are_python_floats(data):
    t, p = data
    for v in m.summary(t, p).values():
        assert type(v) is float


def test_constant_prediction_gives_nan_correlation():
    assert math.isnan(m.kendall([1, 2, 3], [5, 5, 5]))
    assert math.isnan(m.spearman([1, 2, 3], [5, 5, 5]))


def test_hand_cases():
    t = [10.0, 20.0, 40.0, 50.0]
    p = [11.0, 18.0, 40.0, 60.0]  # errors: 10%, 10%, 0%, 20%
    assert m.mape(t, p) == pytest.approx(10.0)
    assert m.rmspe(t, p) == pytest.approx(math.sqrt((100 + 100 + 0 + 400) / 4))
    assert m.rmse(t, p) == pytest.approx(math.sqrt((1 + 4 + 0 + 100) / 4))
    assert m.acc_within(t, p, 10) == pytest.approx(0.75)  # exactly 10% counts as within
    assert m.acc_within(t, p, 5) == pytest.approx(0.25)
    assert m.acc_within(t, p, 20) == pytest.approx(1.0)


def test_topk_overlap_hand_cases():
    t = [1.0, 2.0, 3.0, 4.0, 5.0]
    assert m.topk_overlap(t, [1, 2, 3, 4, 5], 2) == 1.0
    assert m.topk_overlap(t, [5, 4, 3, 2, 1], 2) == 0.0
    assert m.topk_overlap(t, [1, 3, 2, 4, 5], 2) == 0.5  # true {0,1}, predicted {0,2}
    assert m.topk_overlap(t, [1, 3, 2, 4, 5], 99) == 1.0  # k clipped to n
    # ties count as broken at random: a constant finds k/n, not the first rows
    assert m.topk_overlap(t, [7, 7, 7, 7, 7], 2) == pytest.approx(2 / 5)
    assert m.topk_overlap(t, [1, 2, 2, 2, 5], 2) == pytest.approx(0.5 + 0.5 / 3)
    assert m.topk_overlap([1, 1, 3, 4], [1, 2, 3, 4], 1) == 1.0  # either tied cell is right
    tied = [1, 2, 3, 3, 3, 4, 5]
    assert m.topk_overlap(tied, tied, 3) == 1.0  # a perfect predictor, ties in the truth


@pytest.mark.parametrize("t,p,msg", [
    ([1.0, 2.0], [1.0], "aligned"),
    ([1.0, math.nan], [1.0, 2.0], "non-finite"),
    ([1.0, 2.0], [1.0, math.inf], "non-finite"),
    ([], [], "empty"),
])
def test_bad_input_raises(t, p, msg):
    with pytest.raises(ValueError, match=msg):
        m.kendall(t, p)


def test_percent_metrics_need_positive_truth():
    with pytest.raises(ValueError, match="> 0"):
        m.mape([1.0, 0.0], [1.0, 1.0])


def test_summary_connected_subset():
    t = np.array([1.0, 2.0, 3.0, 4.0, 5.0, 6.0])
    p = np.array([1.0, 2.0, 3.0, 6.0, 5.0, 4.0])
    conn = np.array([True, True, True, False, False, False])
    s = m.summary(t, p, conn, k=2)
    assert s["n"] == 6 and s["n_connected"] == 3
    assert s["kendall_connected"] == pytest.approx(1.0)
    assert s["kendall"] == pytest.approx(stats.kendalltau(t, p)[0])
    assert set(m.METRIC_KEYS) <= set(s)
    assert {f"{k}_connected" for k in m.METRIC_KEYS} <= set(s)
    with pytest.raises(ValueError, match="connected"):
        m.summary(t, p, conn[:3])
