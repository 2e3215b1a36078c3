"""The hybrid predictor: GBDT correcting analytical estimators (its priors)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from costmodels.errors import ModelFileError
from costmodels.harness import metrics
from costmodels.spaces import nb201
from costmodels.tables import read_table
from predictors import load, make
from predictors.base import PredictorError

ROOT = Path(__file__).resolve().parents[1]
TRUTH = ROOT / "datasets" / "nb201" / "xeon-2c-ort-cifar10.csv"
PRIOR = "roofline:xeon_2c"


@pytest.fixture(scope="module")
def data():
    t = read_table(TRUTH)
    return [nb201.build_network(s) for s in t.arch_str], t.latency_ms


def test_hybrid_needs_a_prior():
    with pytest.raises(PredictorError, match="prior"):
        make("hybrid")


def test_hybrid_beats_plain_gbdt_and_round_trips(data, tmp_path):
    nets, y = data
    tr, te = np.arange(0, 200, 2), np.arange(1, 200, 2)
    hyb = make("hybrid", prior=[PRIOR]).fit([nets[i] for i in tr], y[tr])
    plain = make("gbdt").fit([nets[i] for i in tr], y[tr])
    p_h = hyb.predict([nets[i] for i in te])
    p_g = plain.predict([nets[i] for i in te])
    assert metrics.mape(y[te], p_h) < metrics.mape(y[te], p_g)
    hyb.save(tmp_path / "m")
    again = load(str(tmp_path / "m"))
    assert list(again.prior) == [PRIOR]
    np.testing.assert_array_equal(again.predict([nets[i] for i in te]), p_h)


def test_hybrid_whose_prior_is_gone_is_refused(data, tmp_path):
    nets, y = data
    spec = tmp_path / "spec.toml"
    shutil.copy(ROOT / "analytical" / "specs" / "xeon_2c.toml", spec)
    make("hybrid", prior=[f"roofline:{spec}"]).fit(nets[:20], y[:20]).save(tmp_path / "m")
    doc = json.loads((tmp_path / "m" / "manifest.json").read_text())
    assert doc["params"]["prior"] == [f"roofline:{spec}"]
    spec.unlink()
    with pytest.raises(ModelFileError, match="prior estimators"):
        load(str(tmp_path / "m"))


def test_fit_hybrid_cli(tmp_path, capsys):
    from costmodels.cli import main

    out = tmp_path / "hyb"
    assert main(["fit", "hybrid", "--train", str(TRUTH), "--limit", "30", "--prior", PRIOR,
                 "-o", str(out)]) == 0
    assert load(str(out)).prior == [PRIOR]
    assert main(["fit", "hybrid", "--train", str(TRUTH), "-o", str(tmp_path / "x")]) == 2
    assert "needs prior estimators: --prior" in capsys.readouterr().err


def test_a_saved_hybrid_reads_the_prior_files_it_was_fitted_with(data, tmp_path, monkeypatch,
                                                                    capsys):
    """A relative prior path is pinned at the fit: loaded from another folder, the model
    reads the same file, not one of that name there; a prior file whose bytes changed since
    is named in a warning (its estimates move with it)."""
    nets, y = data
    specs = ROOT / "analytical" / "specs"
    fit_dir, other = tmp_path / "fit", tmp_path / "other"
    fit_dir.mkdir()
    other.mkdir()
    shutil.copy(specs / "xeon_2c.toml", fit_dir / "spec.toml")
    shutil.copy(specs / "x86_generic.toml", other / "spec.toml")  # same name, other numbers
    monkeypatch.chdir(fit_dir)
    hyb = make("hybrid", prior=["roofline:spec.toml"]).fit(nets[:30], y[:30])
    want = hyb.predict(nets[30:60])
    hyb.save(tmp_path / "m")
    monkeypatch.chdir(other)
    again = load(str(tmp_path / "m"))
    assert again.prior == [f"roofline:{fit_dir / 'spec.toml'}"]
    np.testing.assert_array_equal(again.predict(nets[30:60]), want)
    assert "changed" not in capsys.readouterr().err
    with open(fit_dir / "spec.toml", "a") as fh:
        fh.write("\n# edited after the fit\n")
    load(str(tmp_path / "m"))
    assert f"prior file {fit_dir / 'spec.toml'} changed" in capsys.readouterr().err
