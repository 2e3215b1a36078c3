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


def _prior_file(data, folder, variant: int) -> tuple[str, str]:
    """A roofline spec file in ``folder`` (variant 0: xeon_2c's numbers, 1: another spec's,
    2: edited after the fit): (its relative prior spec, its name)."""
    specs = ROOT / "analytical" / "specs"
    if variant == 2:
        with open(folder / "spec.toml", "a") as fh:
            fh.write("\n# edited after the fit\n")
    else:
        shutil.copy(specs / ("xeon_2c.toml", "x86_generic.toml")[variant], folder / "spec.toml")
    return "roofline:spec.toml", "spec.toml"


def _prior_model(data, folder, variant: int) -> tuple[str, str]:
    """A saved gbdt model's folder in ``folder``, fitted on the latencies times 1, 10 or 2
    (variant 0, 1: another model of that name, 2: refitted after the fit)."""
    nets, y = data
    make("gbdt").fit(nets[:30], (1, 10, 2)[variant] * y[:30]).save(folder / "g")
    return "gbdt:g", "g"


@pytest.mark.parametrize("prior", [_prior_file, _prior_model])
def test_a_saved_hybrid_reads_the_priors_it_was_fitted_with(data, tmp_path, monkeypatch,
                                                            capsys, prior):
    """A relative prior path, a file or a saved model's folder (gbdt:DIR), is pinned at the
    fit: loaded from another folder, the model reads the same prior, not one of that name
    there; a prior whose content changed since (a file edited, a model refitted) is named
    in a warning (its estimates move with it)."""
    nets, y = data
    fit_dir, other = tmp_path / "fit", tmp_path / "other"
    fit_dir.mkdir()
    other.mkdir()
    spec, name = prior(data, fit_dir, 0)
    prior(data, other, 1)  # same name, other numbers
    monkeypatch.chdir(fit_dir)
    hyb = make("hybrid", prior=[spec]).fit(nets[:30], y[:30])
    want = hyb.predict(nets[30:60])
    hyb.save(tmp_path / "m")
    monkeypatch.chdir(other)
    again = load(str(tmp_path / "m"))
    assert again.prior == [f"{spec.split(':')[0]}:{fit_dir / name}"]
    np.testing.assert_array_equal(again.predict(nets[30:60]), want)
    assert "changed" not in capsys.readouterr().err
    prior(data, fit_dir, 2)
    load(str(tmp_path / "m"))
    assert f"prior file {fit_dir / name} changed" in capsys.readouterr().err


def test_an_output_is_never_a_file_a_saved_model_reads(data, tmp_path, monkeypatch, capsys):
    """-o naming a file the command reads only through a saved model's manifest (a
    hybrid's prior spec), or the local roofline spec a bare `roofline` reads, is refused,
    byte-identical: neither is named on the command line."""
    from costmodels.cli import main

    nets, y = data
    spec = tmp_path / "spec.toml"
    shutil.copy(ROOT / "analytical" / "specs" / "xeon_2c.toml", spec)
    make("hybrid", prior=[f"roofline:{spec}"]).fit(nets[:20], y[:20]).save(tmp_path / "m")
    before = spec.read_bytes()
    assert main(["estimate", f"hybrid:{tmp_path / 'm'}", "--sample", "2",
                 "-o", str(spec)]) == 2
    assert "is one of this command's inputs" in capsys.readouterr().err
    monkeypatch.setenv("COSTMODELS_ROOFLINE_SPEC", str(spec))
    assert main(["estimate", "roofline", "--sample", "2", "-o", str(spec)]) == 2
    assert "is one of this command's inputs" in capsys.readouterr().err
    assert spec.read_bytes() == before
    # only a bare `roofline` reads it: `roofline calibrate` (its writer) and a command
    # with another backend may still name it
    from costmodels.cli import _input_files, build_parser

    for argv in (["roofline", "calibrate"], ["roofline", "calibrate", "-o", str(spec)],
                 ["estimate", "flops", "--sample", "2", "-o", str(spec)]):
        assert spec.resolve() not in _input_files(build_parser().parse_args(argv)), argv


def test_a_lut_prior_rewritten_with_the_same_rows_is_not_changed(data, tmp_path, capsys):
    """A LUT prior is compared by its rows, not its bytes: SQLite rewriting the file without
    changing a row (a `lut build` that measured nothing, a VACUUM) raises no warning; a
    changed value does. A model saved with the older byte digest is still checked by bytes."""
    import sqlite3

    nets, y = data
    lut = tmp_path / "lut.sqlite"
    shutil.copy(ROOT / "datasets" / "nb201" / "xeon-2c-ort-cifar10-lut.sqlite", lut)
    make("hybrid", prior=[f"lut:{lut}"]).fit(nets[:30], y[:30]).save(tmp_path / "m")
    before = lut.read_bytes()
    con = sqlite3.connect(lut)
    con.execute("UPDATE entries SET key = key")  # rows rewritten as they were
    con.commit()
    con.execute("VACUUM")
    con.close()
    assert lut.read_bytes() != before
    load(str(tmp_path / "m"))
    assert "changed" not in capsys.readouterr().err
    con = sqlite3.connect(lut)
    con.execute("UPDATE entries SET median_ms = median_ms * 2 WHERE rowid = "
                "(SELECT MIN(rowid) FROM entries)")
    con.commit()
    con.close()
    load(str(tmp_path / "m"))
    assert f"prior file {lut} changed since this model was fitted (its content differs)" \
        in capsys.readouterr().err
    # a model saved before: the bytes' SHA-256 under "prior_sha256"
    manifest = tmp_path / "m" / "manifest.json"
    doc = json.loads(manifest.read_text())
    from predictors.persistence import _canonical_sha256, file_sha256

    doc["state"] = {"prior_sha256": {str(lut): file_sha256(lut)}}
    doc["manifest_sha256"] = _canonical_sha256(doc)
    manifest.write_text(json.dumps(doc))
    load(str(tmp_path / "m"))
    assert "changed" not in capsys.readouterr().err
    con = sqlite3.connect(lut)
    con.execute("UPDATE entries SET key = key")  # the header's change counter moves
    con.commit()
    con.close()
    load(str(tmp_path / "m"))
    assert "(its bytes differ)" in capsys.readouterr().err


def test_a_hybrid_whose_prior_is_itself_is_one_short_error(data, tmp_path):
    """A manifest edited so that a prior is the model itself recursed into a 26 kB error
    line; a loop of saved models is named once."""
    from test_predictors_models import _edit_manifest

    nets, y = data
    d = tmp_path / "h"
    make("hybrid", prior=[PRIOR]).fit(nets[:30], y[:30]).save(d)
    _edit_manifest(d, lambda m: m["params"].update({"prior": [f"hybrid:{d}"]}))
    with pytest.raises(ModelFileError, match="is the model itself") as err:
        load(str(d))
    assert len(str(err.value)) < 1000


def test_a_table_prior_that_is_no_csv_keeps_its_backend_name():
    """`--prior table:DIR` was pinned as the bare path and read back as a backend named
    after it ('unknown backend'); only a .csv path names a table by itself."""
    from predictors.gbdt import pin_prior

    assert pin_prior("table:some/dir") == "table:some/dir"
    assert pin_prior("table:t.csv") == "t.csv"
