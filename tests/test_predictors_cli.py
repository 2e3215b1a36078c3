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


def _devices(tmp_path, n=200):
    idx = nb201.SPACE.sample(n, seed=4)
    macs = np.array([nb201.build_network(i).macs for i in idx], dtype=float)
    for name, a, b in (("dev", 1.0, 3e-8), ("src", 2.0, 5e-8), ("other", 0.5, 4e-8)):
        _write(tmp_path / f"nb201_{name}.csv", idx, a + macs * b)
    return idx


def test_a_source_that_is_the_target_under_another_name_is_left_out(tmp_path, capsys):
    """The target's own table as a source leaked its values into the prediction (Spearman
    1.000) when its file name differed from the training file's: a source with the training
    latencies on every training cell is left out, in fit and in the fewshot curve."""
    _devices(tmp_path)
    (tmp_path / "copy.csv").write_bytes((tmp_path / "nb201_dev.csv").read_bytes())
    train = tmp_path / "ten.csv"
    dev = list(csv.DictReader(open(tmp_path / "nb201_dev.csv")))[:10]
    write_table(train, [int(r["arch_index"]) for r in dev], [r["arch_str"] for r in dev],
                [float(r["latency_ms"]) for r in dev])
    srcs = [str(tmp_path / n) for n in ("nb201_src.csv", "nb201_other.csv", "copy.csv")]
    assert main(["fit", "fewshot", "--train", str(train), "--source", *srcs,
                 "-o", str(tmp_path / "m")]) == 0
    err = capsys.readouterr().err
    assert "skipped 1 source table(s)" in err and "copy.csv" in err
    assert main(["fewshot", "--target", str(tmp_path / "copy.csv"), "--source", *srcs[:2],
                 str(tmp_path / "nb201_dev.csv"), "--samples", "5", "--seeds", "1",
                 "-o", str(tmp_path / "c.csv")]) == 0
    err = capsys.readouterr().err
    assert "left out 1 source table(s)" in err and "nb201_dev.csv" in err


def test_fewshot_and_select_refuse_duplicate_rows_unless_told(tmp_path, capsys):
    """Both read tables with duplicates silently averaged, against the README; they now
    refuse them like fit and compare, and take --duplicates mean|first."""
    _devices(tmp_path)
    src = tmp_path / "nb201_src.csv"
    lines = src.read_text().splitlines()
    dup = tmp_path / "nb201_dup.csv"
    dup.write_text("\n".join(lines + [lines[1].rsplit(",", 1)[0] + ",999"]) + "\n")
    target = str(tmp_path / "nb201_dev.csv")
    assert main(["fewshot", "--target", target, "--source", str(dup), "--samples", "5",
                 "--seeds", "1", "-o", str(tmp_path / "c.csv")]) == 2
    assert "appears twice; pass --duplicates" in capsys.readouterr().err
    assert main(["select", "5", "--source", str(dup), "-o", str(tmp_path / "s.csv")]) == 2
    assert "appears twice" in capsys.readouterr().err
    assert main(["select", "5", "--source", str(dup), "--duplicates", "first",
                 "-o", str(tmp_path / "s.csv")]) == 0


def test_fit_warns_when_every_training_latency_is_equal(tmp_path, capsys):
    _devices(tmp_path)
    rows = list(csv.DictReader(open(tmp_path / "nb201_dev.csv")))[:10]
    flat = tmp_path / "flat.csv"
    write_table(flat, [int(r["arch_index"]) for r in rows], [r["arch_str"] for r in rows],
                [10.0] * 10)
    assert main(["fit", "fewshot", "--train", str(flat), "--source",
                 str(tmp_path / "nb201_src.csv"), "-o", str(tmp_path / "m")]) == 0
    assert "all 10 training latencies are equal (10 ms)" in capsys.readouterr().err
