"""A scikit-learn-style check shared by every learned class, and features off NAS-Bench-201."""

from __future__ import annotations

import inspect

import numpy as np
import pytest

from costmodels.network import Network, make_layer
from costmodels.spaces import nb201
from costmodels.tables import LatencyTable
from predictors import features as F
from predictors import fit_from_spec, is_fitted, make
from predictors.base import NotFittedError
from predictors.learned import LEARNED

FAST = {"gnn": {"epochs": 3, "min_steps": 10, "hidden": 8}, "gbdt": {"n_estimators": 20},
        "hybrid": {"n_estimators": 20}}


@pytest.fixture(scope="module")
def data():
    idx = nb201.SPACE.sample(60, seed=5)
    nets = [nb201.build_network(i) for i in idx]
    y = np.array([0.5 + n.macs * 2e-8 + 0.01 * len(n) for n in nets])
    src = LatencyTable(np.array(sorted(idx)), tuple(nb201.SPACE[i] for i in sorted(idx)),
                       np.array([1.0 + nb201.build_network(i).macs * 3e-8 for i in sorted(idx)]),
                       source="nb201_src.csv")
    return nets, y, src


def _kwargs(name, src):
    return {"sources": [src] if name in ("transfer", "fewshot") else (),
            "prior": ["flops"] if name == "hybrid" else (), **FAST.get(name, {})}


@pytest.mark.parametrize("name", list(LEARNED))
def test_shared_estimator_check(name, data, tmp_path):
    nets, y, src = data
    est = make(name, **_kwargs(name, src))
    # __init__ stores its parameters and does nothing else; get_params from the signature
    sig = [p for p in inspect.signature(type(est).__init__).parameters if p != "self"]
    assert list(est.get_params()) == sig
    assert not any(k.endswith("_") for k in vars(est))
    assert not is_fitted(est) and not est.__sklearn_is_fitted__()
    with pytest.raises(NotFittedError):
        est.predict(nets[:2])
    with pytest.raises(NotFittedError):
        est.save(tmp_path / "unfitted")
    assert not (tmp_path / "unfitted").exists()
    # fit returns self and declares itself fitted; save/load round-trips the predictions
    assert est.fit(nets[:30], y[:30]) is est and is_fitted(est)
    before = est.predict(nets[30:])
    assert before.shape == (30,) and np.all(np.isfinite(before)) and np.all(before > 0)
    est.save(tmp_path / name)
    again = type(est).load(tmp_path / name)
    assert is_fitted(again)
    np.testing.assert_allclose(again.predict(nets[30:]), before, rtol=1e-6)


def test_fit_from_spec_keeps_hybrid_priors(data):
    nets, y, _ = data
    est = fit_from_spec("hybrid", nets[:20], y[:20], prior=["flops"], device="d", n_estimators=10)
    assert list(est.prior) == ["flops"] and est.device_ == "d" and est.priors_


def _toy_network(kind: str) -> Network:
    """Small networks built without NAS-Bench-201: a depthwise block and a matmul head."""
    shapes = {"x": (1, 8, 16, 16)}
    layers = []

    def add(name, op, inputs, out_shape, **kw):
        layers.append(make_layer(name, op, inputs, [name], [shapes[i] for i in inputs],
                                 out_shape, **kw))
        shapes[name] = out_shape

    if kind == "depthwise":
        add("dw", "Conv", ["x"], (1, 8, 16, 16), weight_shapes=[(8, 1, 3, 3)], kernel=(3, 3),
            stride=(1, 1), groups=8)
        add("pw", "Conv", ["dw"], (1, 16, 16, 16), weight_shapes=[(16, 8, 1, 1)], kernel=(1, 1),
            stride=(1, 1))
        add("act", "Relu", ["pw"], (1, 16, 16, 16))
        out = "act"
    else:
        add("gp", "GlobalAveragePool", ["x"], (1, 8, 1, 1))
        add("fl", "Flatten", ["gp"], (1, 8))
        add("mm", "MatMul", ["fl"], (1, 10), weight_shapes=[(8, 10)])
        add("sm", "Softmax", ["mm"], (1, 10))
        out = "sm"
    return Network(kind, (("x", shapes["x"]),), tuple(layers), (out,), {"space": None})


def test_features_and_gnn_work_off_nb201():
    nets = [_toy_network("depthwise"), _toy_network("head")]
    x = F.features(nets)
    col = {n: i for i, n in enumerate(F.FEATURE_NAMES)}
    assert x[0, col["depthwise_conv_count"]] == 1 and x[0, col["conv1x1_count"]] == 1
    assert x[1, col["matmul_count"]] == 1 and x[1, col["softmax_count"]] == 1
    assert x[0, col["max_width"]] == 16 and x[1, col["depth"]] == 4
    assert np.isnan(x[:, [col[n] for n in F.CELL_NAMES]]).all()
    gnn = make("gnn", **FAST["gnn"]).fit(nets * 3, [1.0, 0.2] * 3)
    assert np.all(np.isfinite(gnn.predict(nets)))


def test_feature_cache_is_structural_not_by_identity():
    a = _toy_network("depthwise")
    b = _toy_network("depthwise")  # fresh layer objects, same structure
    F.clear_caches()
    xa = F.features([a])
    n_rows = len(F._BANK.rows)
    np.testing.assert_array_equal(F.features([b]), xa)
    assert len(F._BANK.rows) == n_rows
