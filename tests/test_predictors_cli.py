"""`costmodels fit` and `costmodels fewshot`."""

from __future__ import annotations

import csv

import numpy as np

from costmodels.cli import main
from costmodels.spaces import nb201
from costmodels.tables import write_table


def _write(path, idx, lat):
    write_table(path, idx, [nb201.SPACE[i] for i in idx], lat)


def test_fit_estimate_and_fewshot(tmp_path):
    idx = nb201.SPACE.sample(300, seed=2)
    macs = np.array([nb201.build_network(i).macs for i in idx], dtype=float)
    _write(tmp_path / "nb201_dev.csv", idx, 1.0 + macs * 3e-8)
    _write(tmp_path / "nb201_src.csv", idx, 2.0 + macs * 5e-8)
    assert main(["fit", "gbdt", "--train", str(tmp_path / "nb201_dev.csv"), "--limit", "40",
                 "-o", str(tmp_path / "m")]) == 0
    assert (tmp_path / "m" / "manifest.json").is_file()
    assert main(["estimate", f"gbdt:{tmp_path / 'm'}", "--sample", "20",
                 "-o", str(tmp_path / "est.csv")]) == 0
    # --source never silently turns gbdt into another model
    assert main(["fit", "gbdt", "--train", str(tmp_path / "nb201_dev.csv"), "--limit", "10",
                 "--source", str(tmp_path / "nb201_src.csv"), "-o", str(tmp_path / "t")]) == 2
    assert not (tmp_path / "t").exists()
    for name in ("transfer", "fewshot"):
        assert main(["fit", name, "--train", str(tmp_path / "nb201_dev.csv"), "--limit", "10",
                     "--source", str(tmp_path / "nb201_src.csv"), "-o", str(tmp_path / name)]) == 0
        assert main(["estimate", f"{name}:{tmp_path / name}", "--archs",
                     str(tmp_path / "nb201_src.csv"), "-o", str(tmp_path / f"est-{name}.csv")]) == 0
        est = list(csv.DictReader(open(tmp_path / f"est-{name}.csv")))
        assert len(est) == 300 and all(float(r["latency_ms"]) > 0 for r in est)
        # a directory of one class is refused by another class's backend
        assert main(["estimate", f"gbdt:{tmp_path / name}", "--sample", "5",
                     "-o", str(tmp_path / "no.csv")]) == 2
    out = tmp_path / "curve.csv"
    assert main(["fewshot", "--target", str(tmp_path / "nb201_dev.csv"), "--source",
                 str(tmp_path / "nb201_src.csv"), "--model", "fewshot", "--samples", "5,20",
                 "--seeds", "2", "--select", "diverse", "-o", str(out)]) == 0
    rows = list(csv.DictReader(open(out)))
    assert [r["k"] for r in rows] == ["5", "20"] and float(rows[0]["spearman"]) > 0.9
    assert out.with_suffix(".png").stat().st_size > 1000


def test_fewshot_transfer_without_sources_is_an_error(tmp_path, capsys):
    idx = nb201.SPACE.sample(30, seed=2)
    _write(tmp_path / "nb201_dev.csv", idx, np.linspace(1, 2, 30))
    assert main(["fewshot", "--target", str(tmp_path / "nb201_dev.csv"), "--model", "transfer",
                 "-o", str(tmp_path / "c.csv")]) == 2
    assert "--source" in capsys.readouterr().err


def test_a_save_that_fails_part_way_leaves_no_half_model_and_a_rerun_works(tmp_path, capsys,
                                                                            monkeypatch):
    """A full disk mid-save (XGBoost's own error): one error line, exit 2, no half-written
    model.json left to block the rerun."""
    from predictors.gbdt import GBDTModel

    idx = nb201.SPACE.sample(40, seed=3)
    _write(tmp_path / "nb201_dev.csv", idx, np.linspace(1.0, 2.0, len(idx)))
    real_save = GBDTModel.save

    def full_disk(self, model_dir):
        (tmp_path / "m").mkdir(exist_ok=True)
        (tmp_path / "m" / "model.json").write_text("{")
        raise RuntimeError("FileStream.Write incomplete")

    monkeypatch.setattr(GBDTModel, "save", full_disk)
    argv = ["fit", "gbdt", "--train", str(tmp_path / "nb201_dev.csv"), "-o", str(tmp_path / "m")]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "could not be saved (FileStream.Write incomplete)" in err and err.count("\n") == 1
    assert not (tmp_path / "m").exists()
    monkeypatch.setattr(GBDTModel, "save", real_save)
    assert main(argv) == 0 and (tmp_path / "m" / "manifest.json").is_file()
