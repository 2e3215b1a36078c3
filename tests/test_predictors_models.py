"""GBDT and GNN predictors: fitting, persistence, refusal of foreign model files."""

from __future__ import annotations

import json

import numpy as np
import pytest

from costmodels.errors import ModelFileError
from costmodels.registry import create
from costmodels.spaces import nb201
from predictors import load, make

FAST_GNN = {"epochs": 5, "min_steps": 20, "hidden": 16}


@pytest.fixture(scope="module")
def data():
    idx = nb201.SPACE.sample(120, seed=3)
    nets = [nb201.build_network(i) for i in idx]
    # A synthetic device: MAC-bound with a per-kernel overhead, positive.
    y = np.array([1.0 + n.macs * 2e-8 + 0.01 * len(n) for n in nets])
    return nets, y


@pytest.mark.parametrize("name,params", [("gbdt", {"n_estimators": 30}), ("gnn", FAST_GNN)])
def test_round_trip_gives_identical_predictions(tmp_path, data, name, params):
    nets, y = data
    est = make(name, device="synthetic", **params).fit(nets[:80], y[:80])
    before = est.predict(nets[80:])
    est.save(tmp_path / name)
    again = load(str(tmp_path / name))
    np.testing.assert_array_equal(before, again.predict(nets[80:]))
    via_registry = create(f"{name}:{tmp_path / name}")
    got = [e.latency_ms for e in via_registry.estimate_many(nets[80:])]
    np.testing.assert_array_equal(before, got)
    manifest = json.loads((tmp_path / name / "manifest.json").read_text())
    assert manifest["device"] == "synthetic" and manifest["n_train"] == 80
    assert manifest["feature_schema"]["name"] == "costmodels-ir"


def test_saving_over_another_class_removes_only_its_listed_files(tmp_path, data):
    nets, y = data
    d = tmp_path / "m"
    make("gnn", **FAST_GNN).fit(nets[:40], y[:40]).save(d)
    (d / "notes.txt").write_text("mine")
    doc = json.loads((d / "manifest.json").read_text())
    doc["files"]["notes.txt"] = "0" * 64  # an edited manifest names a file of the user's
    (d / "manifest.json").write_text(json.dumps(doc))
    assert (d / "model.safetensors").is_file()
    make("gbdt", n_estimators=10).fit(nets[:40], y[:40]).save(d)
    assert not (d / "model.safetensors").exists()  # the GNN's weights, listed by its manifest
    assert (d / "notes.txt").read_text() == "mine"  # not a name our classes write: kept
    assert sorted(json.loads((d / "manifest.json").read_text())["files"]) == \
        ["arrays.npz", "model.json"]
    load(str(d))


@pytest.mark.parametrize("name,params", [("gbdt", {"n_estimators": 30}), ("gnn", FAST_GNN)])
def test_small_k_fits(data, name, params):
    nets, y = data
    est = make(name, **params).fit(nets[:5], y[:5])
    pred = est.predict(nets[5:])
    assert pred.shape == (len(nets) - 5,) and np.all(np.isfinite(pred)) and np.all(pred > 0)


def test_gnn_is_deterministic_for_a_seed(data):
    nets, y = data
    a = make("gnn", **FAST_GNN).fit(nets[:40], y[:40]).predict(nets[40:])
    b = make("gnn", **FAST_GNN).fit(nets[:40], y[:40]).predict(nets[40:])
    np.testing.assert_array_equal(a, b)


def test_gnn_prediction_far_outside_its_training_set_stays_finite(data, monkeypatch):
    """A network unlike any it was fitted on (one that folds to no layer, a model 1e6x
    larger) could drive the GNN's output to an overflow (inf ms, a numpy warning): the
    output is clipped to GNN_CLIP standard deviations of the training log-latencies."""
    import warnings

    from predictors import gnn

    nets, y = data
    model = make("gnn", **FAST_GNN).fit(nets[:40], y[:40])
    real = model.module_.forward
    monkeypatch.setattr(model.module_, "forward", lambda *a: real(*a) * 0 + 1e6)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no overflow warning
        pred = model.predict(nets[40:42])
    expect = np.exp(gnn.GNN_CLIP * model.y_std_ + model.y_mean_)
    np.testing.assert_allclose(pred, expect)
    assert np.isfinite(pred).all()


def test_gbdt_learns_the_ranking(data):
    from scipy.stats import spearmanr

    nets, y = data
    pred = make("gbdt").fit(nets[:100], y[:100]).predict(nets[100:])
    assert spearmanr(pred, y[100:]).correlation > 0.9


@pytest.fixture
def saved_gbdt(tmp_path, data):
    nets, y = data
    d = tmp_path / "gbdt"
    make("gbdt", n_estimators=10).fit(nets[:30], y[:30]).save(d)
    return d


def _edit_manifest(d, fn, rehash=True):
    """Edit the manifest; with ``rehash`` recompute its checksum (a deliberate forgery)."""
    from predictors.persistence import _canonical_sha256

    path = d / "manifest.json"
    doc = json.loads(path.read_text())
    fn(doc)
    if rehash:
        doc["manifest_sha256"] = _canonical_sha256(doc)
    path.write_text(json.dumps(doc))


def test_tampered_model_file_is_refused(saved_gbdt):
    path = saved_gbdt / "model.json"
    path.write_text(path.read_text().replace('"', '"', 1) + " ")
    with pytest.raises(ModelFileError, match="model.json: checksum differs"):
        load(str(saved_gbdt))


@pytest.mark.parametrize("edit,match", [
    (lambda d: d["feature_schema"].update(version=99), "feature schema"),
    (lambda d: d["feature_schema"]["features"].pop(), "feature names differ"),
    (lambda d: d["libraries"].update(xgboost="1.7.6"), "different major version"),
    (lambda d: d.update({"class": "predictors.gnn.GNNModel"}), "parameters do not fit GNNModel"),
    (lambda d: d.update({"class": "os.system"}), "model of an unknown class"),
    (lambda d: d["libraries"].update(os="1.0"), "outside the allow-list"),
    (lambda d: d["files"].update({"../../etc/passwd": "0" * 64}), "not a plain file name"),
    (lambda d: d["files"].update({"/etc/passwd": "0" * 64}), "not a plain file name"),
])
def test_mismatched_manifest_is_refused(saved_gbdt, edit, match):
    _edit_manifest(saved_gbdt, edit)
    with pytest.raises(ModelFileError, match=match) as err:
        load(str(saved_gbdt))
    assert "manifest.json" in str(err.value) or "safetensors" in str(err.value)


def test_edited_parameter_is_refused_and_nothing_is_written(saved_gbdt):
    import hashlib

    _edit_manifest(saved_gbdt, lambda d: d["params"].update(max_depth=12), rehash=False)
    before = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in saved_gbdt.iterdir()}
    with pytest.raises(ModelFileError, match="checksum does not match its content"):
        create(f"gbdt:{saved_gbdt}")
    after = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in saved_gbdt.iterdir()}
    assert before == after


def test_symlink_out_of_the_directory_is_refused(saved_gbdt, tmp_path):
    outside = tmp_path / "outside.json"
    (saved_gbdt / "model.json").rename(outside)
    (saved_gbdt / "model.json").symlink_to(outside)
    with pytest.raises(ModelFileError, match="is a link or lies outside"):
        load(str(saved_gbdt))


def test_unparsable_manifest_error_does_not_echo_content(saved_gbdt):
    secret = "SECRET-CONTENT-1234"
    (saved_gbdt / "manifest.json").write_text("{" + secret)
    with pytest.raises(ModelFileError) as err:
        create(f"gbdt:{saved_gbdt}")
    assert secret not in str(err.value) and "not valid JSON" in str(err.value)


def test_not_a_model_directory(tmp_path):
    with pytest.raises(ModelFileError, match="no manifest"):
        create(f"gbdt:{tmp_path}")


def test_gnn_loader_refuses_a_gbdt_directory(saved_gbdt):
    with pytest.raises(ModelFileError, match="not a predictors.gnn.GNNModel.*gbdt:"):
        create(f"gnn:{saved_gbdt}")
    with pytest.raises(ModelFileError, match="load it as gbdt:"):
        create(f"hybrid:{saved_gbdt}")


def test_estimating_another_space_or_dataset_warns_once(tmp_path, data, capsys):
    """A model saved with its training domain warns (one line, once) when asked about
    networks of a dataset it was not fitted on, and stays quiet on its own domain."""
    nets, y = data
    make("gbdt", n_estimators=10).fit(nets[:60], y[:60]).save(tmp_path / "g")
    manifest = json.loads((tmp_path / "g" / "manifest.json").read_text())
    assert manifest["trained_on"]["datasets"] == ["cifar10"]
    assert len(manifest["trained_on"]["archs"]) == 60
    model = create(f"gbdt:{tmp_path / 'g'}")
    model.estimate_many(nets[60:])
    assert "warning" not in capsys.readouterr().err
    other = [nb201.build_network(i, "cifar100") for i in nb201.SPACE.sample(3, seed=5)]
    model.estimate_many(other)
    model.estimate_many(other)
    err = capsys.readouterr().err
    assert err.count("warning:") == 1 and "dataset cifar100" in err and "cifar10" in err


@pytest.mark.parametrize("coef, match, rc", [
    (np.zeros(3), "do not have the shapes of one ridge", 2), (None, "latency of nan", 1)])
def test_arrays_edited_and_sealed_again_are_named(saved_gbdt, data, tmp_path, coef, match, rc,
                                                   capsys):
    """A forgery that re-seals the manifest over edited arrays: wrong shapes are a model-file
    error naming the file, at load; NaN coefficients an error row, not a blank 'estimated'."""
    from costmodels.cli import main
    from predictors.persistence import file_sha256

    arrays = saved_gbdt / "arrays.npz"
    z = dict(np.load(arrays))
    key = next(k for k in z if k.startswith("base_") and z[k].ndim == 1 and len(z[k]) > 3)
    z[key] = coef if coef is not None else np.full_like(z[key], np.nan)
    with open(arrays, "wb") as fh:
        np.savez(fh, **z)
    _edit_manifest(saved_gbdt, lambda doc: doc["files"].update(
        {"arrays.npz": file_sha256(arrays)}))
    out = tmp_path / "o.csv"
    assert main(["estimate", f"gbdt:{saved_gbdt}", "--sample", "2", "-o", str(out)]) == rc
    assert match in capsys.readouterr().err


@pytest.mark.parametrize("edit", ["loop", "feature", "short"])
def test_a_booster_edited_and_sealed_again_is_refused_not_run(data, tmp_path, edit, capsys):
    """XGBoost walks a tree's child indices unchecked: a child that points back at its
    parent crashed the process (SIGSEGV, exit 139, no message). The trees are checked
    before XGBoost reads them."""
    from costmodels.cli import main
    from predictors.persistence import file_sha256

    nets, y = data
    d = tmp_path / "g"
    noisy = y * np.exp(np.random.default_rng(0).normal(0, 0.3, len(y)))  # trees that split
    make("gbdt", n_estimators=5).fit(nets, noisy).save(d)
    path = d / "model.json"
    doc = json.loads(path.read_text())
    tree = next(t for t in doc["learner"]["gradient_booster"]["model"]["trees"]
                if int(t["tree_param"]["num_nodes"]) > 1)
    if edit == "loop":
        tree["left_children"] = [0] * len(tree["left_children"])
    elif edit == "feature":
        tree["split_indices"][0] = 10**6
    else:
        tree["right_children"] = tree["right_children"][:-1]
    path.write_text(json.dumps(doc))
    _edit_manifest(d, lambda m: m["files"].update({"model.json": file_sha256(path)}))
    assert main(["estimate", f"gbdt:{d}", "--sample", "2", "-o", str(tmp_path / "o.csv")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error:") and "model.json: tree " in err


def test_a_trained_on_of_another_shape_is_refused(tmp_path, data):
    """A manifest whose trained_on holds a list where a batch size goes (checksum resealed,
    as an editor who knows the format would): refused by name, not an internal error."""
    from predictors import persistence as P

    nets, y = data
    make("gbdt", n_estimators=5).fit(nets[:20], y[:20]).save(tmp_path / "g")
    path = tmp_path / "g" / "manifest.json"
    doc = json.loads(path.read_text())
    doc["trained_on"]["batches"] = [[1]]
    doc["manifest_sha256"] = P._canonical_sha256(doc)
    path.write_text(json.dumps(doc))
    with pytest.raises(ModelFileError, match="trained_on is not what costmodels writes"):
        create(f"gbdt:{tmp_path / 'g'}")


def test_model_files_edited_past_what_a_fit_writes_are_refused_at_load(data, tmp_path,
                                                                       capsys):
    """A probe's resealed forgeries: an array of strings (a UFuncTypeError inside numpy), a
    GNN of 10**6 layers (it was built for minutes before its weights were read), a
    transfer model whose state.rows is a list (an AttributeError)."""
    from costmodels.cli import main
    from predictors.persistence import file_sha256

    nets, y = data

    def refused(spec, *said):
        capsys.readouterr()
        assert main(["estimate", spec, "--sample", "2", "-o", str(tmp_path / "o.csv")]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error:") and all(s in err for s in said), err

    g = tmp_path / "g"
    make("gbdt", n_estimators=3).fit(nets[:30], y[:30]).save(g)
    z = dict(np.load(g / "arrays.npz"))
    z["base_coef"] = np.array(["x"] * len(z["base_coef"]))
    with open(g / "arrays.npz", "wb") as fh:
        np.savez(fh, **z)
    _edit_manifest(g, lambda m: m["files"].update({"arrays.npz": file_sha256(g / "arrays.npz")}))
    refused(f"gbdt:{g}", "'base_coef' holds <U1 values, not numbers")
    n = tmp_path / "n"
    make("gnn", epochs=1, min_steps=1).fit(nets[:20], y[:20]).save(n)
    _edit_manifest(n, lambda m: m["params"].update({"layers": 10 ** 6}))
    refused(f"gnn:{n}", "'params.layers' is 1000000, outside 1..64")
    from costmodels.tables import LatencyTable

    src = LatencyTable(np.array([nb201.SPACE.index(s) for s in [n_.meta["arch_str"]
                                                                for n_ in nets]]),
                       tuple(n_.meta["arch_str"] for n_ in nets), y * 1.3, source="s.csv")
    t = tmp_path / "t"
    make("transfer", sources=[src]).fit(nets[:10], y[:10]).save(t)
    _edit_manifest(t, lambda m: m["state"].update({"rows": [1, 2]}))
    refused(f"transfer:{t}", "does not fit a TransferModel")
