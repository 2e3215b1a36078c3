"""Bad inputs: a corrupt machine-anchor file is refused (not silently replaced), and a fitted
model's manifest cannot make loading or `estimate` measure or create files."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from costmodels.cli import main
from costmodels.errors import InputError, ModelFileError
from costmodels.spaces import nb201
from costmodels.tables import read_table
from measure.config import MeasureConfig

ROOT = Path(__file__).resolve().parents[1]
TRUTH = ROOT / "datasets" / "nb201" / "xeon-2c-ort-cifar10.csv"
QUICK = ["--repeat", "5", "--rounds", "2", "--warmup", "1", "--min-round-s", "0"]


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _tree(d: Path) -> dict[str, str]:
    return {str(p.relative_to(d)): _digest(p) for p in sorted(d.rglob("*")) if p.is_file()}


# ----------------------------------------------------------------------------- anchors
def _anchor_file(path: Path, key: str, anchor_ms, version=1) -> bytes:
    doc = {"schema": "costmodels.anchors", "version": version,
           "anchors": {key: {"anchor_ms": anchor_ms, "panel": "panel-v1", "runtime": "ort"}}}
    path.write_text(json.dumps(doc, indent=1))
    return path.read_bytes()


@pytest.mark.parametrize("bad", [-1, 0, "x", None, 1e300, 1e-300, True, [1.0]])
def test_an_anchor_entry_that_is_no_time_is_refused_and_left_as_it_is(tmp_path, monkeypatch,
                                                                       bad):
    """An entry of -1, 0, "x", null, 1e300 or 1e-300 ms was taken as no anchor: a new one
    was set and the file rewritten. It is refused, naming the file, entry and field."""
    from measure.rounds import anchor_key, check_anchors, machine_anchor

    cfg = MeasureConfig(drift_ref=True)
    path = tmp_path / "anchors.json"
    monkeypatch.setenv("COSTMODELS_ANCHORS", str(path))
    before = _anchor_file(path, anchor_key(cfg), bad)
    for call in (lambda: check_anchors(cfg), lambda: machine_anchor(cfg),
                 lambda: machine_anchor(cfg, 1.5)):
        with pytest.raises(InputError) as err:
            call()
        text = str(err.value)
        assert str(path) in text and "anchor_ms is" in text and "not a time in ms" in text
        assert anchor_key(cfg) in text and "0.001" in text and "10000" in text
        assert len(text.splitlines()) == 1
        assert path.read_bytes() == before
    assert not (tmp_path / "anchors.json.active").exists()


def test_an_anchor_entry_of_another_setting_that_is_corrupt_is_refused(tmp_path, monkeypatch):
    """A corrupt entry of another timing setting would be carried into the rewritten file."""
    from measure.rounds import machine_anchor

    path = tmp_path / "anchors.json"
    monkeypatch.setenv("COSTMODELS_ANCHORS", str(path))
    before = _anchor_file(path, "panel-v1:other:setting", -5)
    with pytest.raises(InputError, match="'panel-v1:other:setting': anchor_ms is -5"):
        machine_anchor(MeasureConfig(drift_ref=True), 1.5)
    assert path.read_bytes() == before
    path.write_text('{"schema": "costmodels.anchors", "version": 1, "anchors": {"k": 3}}')
    before = path.read_bytes()
    with pytest.raises(InputError, match="anchor 'k' is 3, not an object"):
        machine_anchor(MeasureConfig(drift_ref=True), 1.5)
    assert path.read_bytes() == before


@pytest.mark.parametrize("version,why", [(99, "newer costmodels"), ("1", "edited by hand"),
                                         (True, "edited by hand"), (None, "edited by hand")])
def test_an_anchor_file_of_an_unknown_version_is_refused(tmp_path, monkeypatch, version, why):
    from measure.rounds import anchor_key, machine_anchor

    cfg = MeasureConfig(drift_ref=True)
    path = tmp_path / "anchors.json"
    monkeypatch.setenv("COSTMODELS_ANCHORS", str(path))
    before = _anchor_file(path, anchor_key(cfg), 1.25, version=version)
    with pytest.raises(InputError, match=f'"version" is .*, not 1 .*{why}'):
        machine_anchor(cfg, 1.5)
    assert path.read_bytes() == before


def test_a_sane_anchor_file_is_still_used(tmp_path, monkeypatch):
    from measure.rounds import anchor_key, machine_anchor

    cfg = MeasureConfig(drift_ref=True)
    path = tmp_path / "anchors.json"
    monkeypatch.setenv("COSTMODELS_ANCHORS", str(path))
    before = _anchor_file(path, anchor_key(cfg), 1.25)
    assert machine_anchor(cfg, 9.0) == 1.25 and path.read_bytes() == before
    # a candidate no later read would accept is not recorded
    path.unlink()
    assert machine_anchor(cfg, 1e300) is None and not path.exists()


@pytest.mark.parametrize("bad", [-1, "x", 1e300])
def test_measure_with_a_corrupt_anchor_is_one_error_line(tmp_path, monkeypatch, capsys, bad):
    """The CLI repro: `measure` exited 0 and rewrote the file; now one error line, exit 2,
    the file byte-identical."""
    import onnx

    from measure.rounds import anchor_key
    from measure.testing import tiny_model

    model = tmp_path / "m.onnx"
    onnx.save(tiny_model(), model)
    path = tmp_path / "anchors.json"
    monkeypatch.setenv("COSTMODELS_ANCHORS", str(path))
    before = _anchor_file(path, anchor_key(MeasureConfig(drift_ref=True)), bad)
    assert main(["measure", str(model), *QUICK]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert str(path) in err and f"anchor_ms is {bad!r}" in err
    assert path.read_bytes() == before


# ----------------------------------------------------------------------------- manifests
@pytest.fixture(scope="module")
def hybrid_dir(tmp_path_factory):
    """A hybrid fitted on 20 cells with a FLOPs prior (a second or so)."""
    from predictors import make

    t = read_table(TRUTH)
    nets = [nb201.build_network(s) for s in t.arch_str[:20]]
    d = tmp_path_factory.mktemp("hyb") / "m"
    make("hybrid", prior=["flops"], n_estimators=10).fit(nets, t.latency_ms[:20]).save(d)
    return d


def _forged(src: Path, dst: Path, fn) -> Path:
    """A copy of a model folder whose manifest ``fn`` edits, checksum recomputed."""
    import shutil

    from predictors.persistence import _canonical_sha256

    shutil.copytree(src, dst)
    path = dst / "manifest.json"
    doc = json.loads(path.read_text())
    fn(doc)
    doc["manifest_sha256"] = _canonical_sha256(doc)
    path.write_text(json.dumps(doc))
    return dst


def _set_prior(value):
    return lambda doc: doc["params"].update({"prior": value})


@pytest.mark.parametrize("prior,says", [
    (["measure:ort,db={store}"], "entry 0 is 'measure:ort"),
    (["measure:tvm"], "entry 0 is 'measure:tvm'"),
    ("flops", "is 'flops', not a list of backend specs"),
    ([1], "entry 0 is 1, not a backend spec"),
    ([""], "entry 0 is '', not a backend spec"),
    (["flops", "nosuch:x"], "entry 1 is 'nosuch:x'"),
    ([], "is empty"),
])
def test_a_manifest_prior_that_is_no_pure_estimator_is_refused_at_load(hybrid_dir, tmp_path,
                                                                        prior, says):
    from predictors import load

    store = tmp_path / "x" / "newstore.sqlite"
    if isinstance(prior, list):
        prior = [p.format(store=store) if isinstance(p, str) else p for p in prior]
    d = _forged(hybrid_dir, tmp_path / "m", _set_prior(prior))
    before = _tree(d)
    with pytest.raises(ModelFileError) as err:
        load(str(d))
    text = str(err.value)
    assert text.startswith(f"{d / 'manifest.json'}: field 'params.prior' ")
    assert says in text and len(text.splitlines()) == 1
    if "measure" in says or "nosuch" in says:
        assert "flops, params, roofline" in text  # the allowed backends are named
    assert not store.exists() and not store.parent.exists()
    assert _tree(d) == before


def test_a_prior_coef_that_does_not_fit_the_priors_is_refused_at_load(hybrid_dir, tmp_path):
    """Two priors, but the saved blend has one coefficient and an intercept: refused when
    loading, not after the priors ran (`matmul: ... size 1 is different from 2`)."""
    from predictors import load

    t = read_table(TRUTH)  # the folder as saved loads and predicts
    again = load(str(hybrid_dir))
    assert again.prior == ["flops"]
    assert np.isfinite(again.predict([nb201.build_network(s) for s in t.arch_str[20:25]])).all()
    d = _forged(hybrid_dir, tmp_path / "m", _set_prior(["flops", "params"]))
    before = _tree(d)
    with pytest.raises(ModelFileError, match=r"'prior_coef' holds 2 numbers, not 3 "
                                             r"\(one per prior of 'params.prior'"):
        load(str(d))
    assert _tree(d) == before


def test_fit_refuses_a_measuring_prior(tmp_path, capsys):
    out = tmp_path / "hyb"
    assert main(["fit", "hybrid", "--train", str(TRUTH), "--limit", "10", "--prior",
                 f"measure:ort,db={tmp_path / 's.sqlite'}", "-o", str(out)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()  # a warning of few rows first
    [err] = [line for line in lines if line.startswith("error: ")]
    assert err == lines[-1] and "entry 0 is 'measure:ort" in err
    assert not (tmp_path / "s.sqlite").exists() and not out.exists()


def test_estimate_with_a_forged_measuring_prior_measures_nothing(hybrid_dir, tmp_path, capsys):
    """The tester's repro: `estimate` created the prior's store and measured for 23 s, then
    failed; now one error line before anything runs, nothing created."""
    store = tmp_path / "x" / "newstore.sqlite"
    d = _forged(hybrid_dir, tmp_path / "m", _set_prior([f"measure:ort,db={store}"]))
    before = _tree(d)
    archs = tmp_path / "archs.csv"
    archs.write_text("arch_str\n" + read_table(TRUTH).arch_str[0] + "\n")
    out = tmp_path / "e.csv"
    assert main(["estimate", f"hybrid:{d}", "--archs", str(archs), "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and len(err.strip().splitlines()) == 1
    assert "params.prior" in err and str(d / "manifest.json") in err
    assert not store.parent.exists() and not out.exists() and _tree(d) == before
