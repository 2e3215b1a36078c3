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
    assert main(["fit", "gbdt", "--train", str(tmp_path / "nb201_dev.csv"), "--limit", "10",
                 "--source", str(tmp_path / "nb201_src.csv"), "-o", str(tmp_path / "t")]) == 0
    out = tmp_path / "curve.csv"
    assert main(["fewshot", "--target", str(tmp_path / "nb201_dev.csv"), "--source",
                 str(tmp_path / "nb201_src.csv"), "--model", "transfer", "--samples", "5,20",
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
