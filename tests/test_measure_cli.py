"""measure / measure-space / measure-quality through the real CLI: bad inputs refused before
any work, any search space, error rows, representatives, concurrent campaigns."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from costmodels.cli import main

ROOT = Path(__file__).resolve().parents[1]
QUICK = ["--repeat", "4", "--rounds", "2", "--warmup", "0", "--min-round-s", "0"]
CELLS = ("|avg_pool_3x3~0|+|skip_connect~0|none~1|+|none~0|none~1|skip_connect~2|",   # 3
         "|skip_connect~0|+|avg_pool_3x3~0|none~1|+|none~0|skip_connect~1|none~2|",   # 14483
         "|nor_conv_3x3~0|+|skip_connect~0|avg_pool_3x3~1|+|none~0|nor_conv_1x1~1|none~2|")


def _archs(tmp_path: Path, cells=CELLS, name="cells.csv") -> Path:
    p = tmp_path / name
    p.write_text("arch_str\n" + "\n".join(cells) + "\n")
    return p


def _rows(path: Path) -> list[dict]:
    with open(path, newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.mark.parametrize("args,flag", [
    (["--repeat", "0"], "--repeat"), (["--warmup", "-1"], "--warmup"),
    (["--threads", "0"], "--threads"), (["--rounds", "0"], "--rounds"),
    (["--pin-cpu", "9999"], "--pin-cpu"), (["--batch", "0"], "--batch"),
    (["--timeout", "0"], "--timeout"), (["--window", "0"], "--window"),
    (["--figure", "corrected", "--no-drift-correct"], "--figure"),
])
def test_bad_options_are_one_error_line_before_any_work(tmp_path, capsys, args, flag):
    db, out = tmp_path / "runs.sqlite", tmp_path / "t.csv"
    code = main(["measure-space", "--archs", str(_archs(tmp_path)), "--db", str(db),
                 "-o", str(out), *QUICK, *args])
    err = capsys.readouterr().err
    assert code == 2 and err.startswith("error: ") and flag in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1
    assert not db.exists() and not out.exists()
    if flag != "--window" and flag != "--figure":
        assert main(["measure", CELLS[0], *QUICK, *args]) == 2
        assert capsys.readouterr().err.startswith("error: ")


def test_unwritable_outputs_and_foreign_stores_fail_before_measuring(tmp_path, capsys):
    archs = _archs(tmp_path)
    (tmp_path / "a_dir").mkdir()
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    foreign = tmp_path / "other.db"
    con = sqlite3.connect(foreign)
    con.execute("CREATE VIEW v AS SELECT 1")
    con.commit()
    con.close()
    readonly = tmp_path / "ro.sqlite"
    assert main(["measure-space", "--archs", str(archs), "--db", str(readonly),
                 "-o", str(tmp_path / "ok.csv"), *QUICK]) == 0
    os.chmod(readonly, 0o444)
    capsys.readouterr()
    snapshot = {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
                for p in tmp_path.iterdir() if p.is_file()}
    cases = [(str(tmp_path / "a_dir"), str(tmp_path / "new.sqlite"), "directory"),
             (str(blocker / "t.csv"), str(tmp_path / "new.sqlite"), "is a file"),
             (str(tmp_path / "t.csv"), str(blocker / "db.sqlite"), "is a file"),
             (str(tmp_path / "t.csv"), str(foreign), "another program"),
             (str(tmp_path / "t.csv"), str(readonly), "read-only")]
    try:
        for out, db, why in cases:
            code = main(["measure-space", "--archs", str(archs), "--db", db, "-o", out, *QUICK])
            err = capsys.readouterr().err
            assert code == 2 and err.startswith("error: ") and why in err, (out, db, err)
    finally:
        os.chmod(readonly, 0o644)
    after = {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
             for p in tmp_path.iterdir() if p.is_file()}
    assert after == snapshot  # nothing created (no new.sqlite, no t.csv), nothing changed


def test_representatives_measure_one_per_class_and_map_to_all(tmp_path, capsys):
    db, out = tmp_path / "runs.sqlite", tmp_path / "t.csv"
    args = ["measure-space", "--archs", str(_archs(tmp_path)), "--representatives",
            "--db", str(db), "-o", str(out), *QUICK]
    assert main(args) == 0
    err = capsys.readouterr().err
    assert "2 measured" in err and "from 2 representatives of 3" in err
    rows = {r["arch_str"]: r for r in _rows(out)}
    assert set(rows) == set(CELLS)
    assert rows[CELLS[0]]["latency_ms"] == rows[CELLS[1]]["latency_ms"]  # one measurement
    side = json.loads(out.with_suffix(".fingerprint.json").read_text())
    assert side["representatives"] == "graph" and side["classes"] == 2 and side["cells"] == 3
    assert main(args) == 0  # resumable: nothing left to measure
    assert "0 measured, 0 failed, 2 already in" in capsys.readouterr().err


def test_models_folder_with_a_broken_model_gives_an_error_row(tmp_path, capsys):
    import onnx

    from measure.testing import tiny_model

    folder = tmp_path / "models"
    folder.mkdir()
    onnx.save(tiny_model(), folder / "good.onnx")
    (folder / "broken.onnx").write_bytes(b"\x08\x07garbage")
    out = tmp_path / "t.csv"
    code = main(["measure-space", "--space", f"models:{folder}", "--db",
                 str(tmp_path / "runs.sqlite"), "-o", str(out), *QUICK])
    err = capsys.readouterr().err
    assert code == 1 and "1 failed" in err and "Traceback" not in err
    rows = {r["arch_str"]: r for r in _rows(out)}
    assert float(rows["good"]["latency_ms"]) > 0 and rows["good"]["error"] == ""
    assert rows["broken"]["latency_ms"] == "" and rows["broken"]["error"]


def test_models_folder_with_two_copies_of_a_model_lists_both(tmp_path, capsys):
    """The same network under two file names: measured once, a row for each (one used to
    overwrite the other: a row silently missing)."""
    import onnx

    from measure.testing import tiny_model

    folder = tmp_path / "models"
    folder.mkdir()
    onnx.save(tiny_model(), folder / "a.onnx")
    onnx.save(tiny_model(), folder / "b.onnx")
    out = tmp_path / "t.csv"
    assert main(["measure-space", "--space", f"models:{folder}", "--db",
                 str(tmp_path / "runs.sqlite"), "-o", str(out), *QUICK]) == 0
    err = capsys.readouterr().err
    assert "1 identical to another one" in err, err
    rows = {r["arch_str"]: r for r in _rows(out)}
    assert set(rows) == {"a", "b"} and rows["a"]["latency_ms"] == rows["b"]["latency_ms"] != ""


def test_fbnet_space_is_measured_through_onnx_for(tmp_path, capsys):
    out = tmp_path / "fb.csv"
    assert main(["measure-space", "--space", "fbnet", "--sample", "1", "--db",
                 str(tmp_path / "runs.sqlite"), "-o", str(out), *QUICK]) == 0
    [row] = _rows(out)
    assert float(row["latency_ms"]) > 0 and row["arch_str"].count("|") == 21


def test_two_campaigns_on_one_store_at_once_share_the_work(tmp_path):
    from costmodels.spaces import get_space

    cells = get_space("nb201").sample(8, seed=5)
    db = tmp_path / "runs.sqlite"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = []
    for tag, sub in (("a", cells[:6]), ("b", cells[2:])):
        archs = _archs(tmp_path, sub, f"{tag}.csv")
        procs.append(subprocess.Popen(
            [sys.executable, "-m", "costmodels.cli", "measure-space", "--archs", str(archs),
             "--db", str(db), "-o", str(tmp_path / f"{tag}-t.csv"), "--window", "2", *QUICK],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
    for p in procs:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err.decode()
    con = sqlite3.connect(db)
    keys = [r[0] for r in con.execute("SELECT net_key FROM measurements")]
    con.close()
    assert len(keys) == len(set(keys)) == 8  # overlapping cells kept once
    assert {r["arch_str"] for r in _rows(tmp_path / "a-t.csv")} == set(cells[:6])
    assert {r["arch_str"] for r in _rows(tmp_path / "b-t.csv")} == set(cells[2:])
    assert sorted(p.name for p in tmp_path.iterdir() if "sqlite" in p.name) == ["runs.sqlite"]


def test_measure_quality_of_two_tables_and_a_store(tmp_path, capsys):
    a, b = tmp_path / "a.csv", tmp_path / "b.csv"
    a.write_text("arch_index,arch_str,latency_ms\n,x,1.0\n,y,2.0\n,z,4.0\n,w,1.0\n")
    b.write_text("arch_index,arch_str,latency_ms,error\n,x,1.02,\n,y,2.2,\n,z,4.0,\n,w,,boom\n")
    assert main(["measure-quality", str(a), str(b), "--json"]) == 0
    d = json.loads(capsys.readouterr().out)["deviation"]
    devs = sorted([0.02 / 1.01, 0.2 / 2.1, 0.0])
    assert d["cells"] == 3 and d["median"] == pytest.approx(devs[1])
    assert d["p90"] == pytest.approx(float(__import__("numpy").percentile(devs, 90)))
    assert d["only_a"] == 1
    db = tmp_path / "runs.sqlite"
    assert main(["measure-space", "--archs", str(_archs(tmp_path)), "--db", str(db),
                 "-o", str(tmp_path / "t.csv"), *QUICK]) == 0
    capsys.readouterr()
    assert main(["measure-quality", "--db", str(db)]) == 0
    text = capsys.readouterr().out
    assert "round-to-round CV" in text and "campaign 1" in text and "drift" in text
    assert main(["measure-quality"]) == 2


def test_two_stores_on_one_machine_share_the_anchor_level(tmp_path):
    """A second campaign into a NEW store starts on the machine's anchor (set by the first),
    so both tables' corrected figures are on one level; the anchor file says so."""
    import sqlite3

    for name in ("a", "b"):
        assert main(["measure-space", "--archs", str(_archs(tmp_path)), "--db",
                     str(tmp_path / f"{name}.sqlite"), "-o", str(tmp_path / f"{name}.csv"),
                     *QUICK]) == 0
    anchors = []
    for name in ("a", "b"):
        with sqlite3.connect(tmp_path / f"{name}.sqlite") as con:
            anchors += [float(v) for k, v in con.execute("SELECT key, value FROM meta")
                        if k.startswith("reference_anchor:panel-v1:")]
    doc = json.loads(Path(os.environ["COSTMODELS_ANCHORS"]).read_text())
    [entry] = doc["anchors"].values()
    assert len(anchors) == 2 and anchors[0] == anchors[1] == entry["anchor_ms"]
    side = json.loads((tmp_path / "b.fingerprint.json").read_text())
    assert side["figure"] == "drift-corrected"


def test_a_corrupt_anchor_file_is_one_error_line_and_left_as_it_is(tmp_path, monkeypatch,
                                                                    capsys):
    bad = tmp_path / "anchors.json"
    bad.write_bytes(b'{"schema": "costmodels.anchors", "anchors": [1, 2')
    before = bad.read_bytes()
    monkeypatch.setenv("COSTMODELS_ANCHORS", str(bad))
    assert main(["measure", CELLS[0], *QUICK]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "anchors.json" in err and len(err.splitlines()) == 1
    assert bad.read_bytes() == before
    # --no-drift-correct does not read it
    assert main(["measure", CELLS[0], *QUICK, "--no-drift-correct"]) == 0


def test_figure_min_exports_the_fastest_stored_run_without_measuring_again(tmp_path, capsys):
    """One store, two figures: --figure min writes each cell's fastest timed run, read back
    from the store (nothing measured again, the store unchanged); never above the raw median."""
    from costmodels.tables import read_table
    from measure.store import MeasureStore

    db = tmp_path / "runs.sqlite"
    args = ["measure-space", "--archs", str(_archs(tmp_path)), "--db", str(db), *QUICK]
    assert main([*args, "-o", str(tmp_path / "med.csv")]) == 0
    with MeasureStore(db, readonly=True) as store:
        stored = {r.net.arch_str: r.result for r in store.records()}
    capsys.readouterr()
    assert main([*args, "-o", str(tmp_path / "min.csv"), "--figure", "min"]) == 0
    assert "0 measured" in capsys.readouterr().err
    low = read_table(tmp_path / "min.csv")
    assert sorted(low.arch_str) == sorted(stored) and len(low) == len(CELLS)
    for s, v in zip(low.arch_str, low.latency_ms, strict=True):
        res = stored[s]
        assert v == pytest.approx(min(res.times_ms)) and v <= res.median_ms
        assert len(res.times_ms) == 4  # --repeat 4: the runs the figure is taken from
    side = json.loads((tmp_path / "min.fingerprint.json").read_text())
    assert side["figure"] == "min" and "fastest" in side["latency_ms"]
    with MeasureStore(db, readonly=True) as store:
        assert len(store.records()) == len(stored)


def test_measure_keeps_input_shape_for_a_model_the_ir_cannot_cost(tmp_path, capsys):
    """NonZero is outside the IR, so the model is measured as a file; --input-shape must
    still fix its dynamic input (it used to be dropped: every dynamic dim became 1)."""
    import argparse

    import onnx
    from onnx import TensorProto, helper

    from costmodels.errors import OnnxImportError
    from measure.cli import _model_for
    from measure.inputs import input_specs

    g = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["r"]), helper.make_node("NonZero", ["r"], ["y"])],
        "nz", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 4])],
        [helper.make_tensor_value_info("y", TensorProto.INT64, [2, "k"])])
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    path = tmp_path / "nz.onnx"
    onnx.save(m, path)
    before = path.read_bytes()
    proto, net = _model_for(argparse.Namespace(model=str(path), input_shape=["300x4"]))
    assert net is None and input_specs(proto)[0][1] == (300, 4)
    with pytest.raises(OnnxImportError, match="rank 2"):
        _model_for(argparse.Namespace(model=str(path), input_shape=["1x300x4"]))
    with pytest.raises(OnnxImportError, match=r"--input-shape x=Nx4"):
        _model_for(argparse.Namespace(model=str(path), input_shape=None))
    assert main(["measure", str(path), "--input-shape", "300x4", "--repeat", "3",
                 "--rounds", "1", "--warmup", "1", "--json"]) == 0
    capsys.readouterr()
    assert path.read_bytes() == before


def test_a_model_tvm_cannot_build_says_it_is_tvm_and_names_ort(tiny_onnx, capsys, monkeypatch):
    """TVM's frontend errors (InternalError: Check failed ...) came through bare: the line
    now says it was TVM that refused the model and that ONNX Runtime may run it."""
    import measure
    from measure.config import MeasureResult

    monkeypatch.setattr(measure, "measure", lambda model, config: MeasureResult.failure(
        "build failed: InternalError: Check failed: arr_size == nbytes", config.runtime))
    assert main(["measure", str(tiny_onnx), "--runtime", "tvm", "--trials", "0"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "InternalError" in err and "--runtime ort" in err
    assert main(["measure", str(tiny_onnx), "--runtime", "ort"]) == 2
    assert "--runtime ort" not in capsys.readouterr().err


def test_measure_without_an_anchor_file(monkeypatch, capsys):
    """$COSTMODELS_ANCHORS='' (no anchor file: each call its own level) with `measure`: its
    figure, not an internal error (None / float in adopt_anchor)."""
    from costmodels.cli import main

    monkeypatch.setenv("COSTMODELS_ANCHORS", "")
    assert main(["measure", "1462", "--repeat", "3", "--rounds", "2",
                 "--min-round-s", "0"]) == 0
    assert "internal error" not in capsys.readouterr().err


def test_measure_quality_warns_on_tables_of_other_networks(tmp_path, capsys):
    """Two tables whose sidecars name different datasets (or one table twice) are not two
    campaigns of the same networks: a warning says so (compare and fit warn the same)."""
    import json

    from costmodels.cli import main

    rows = "arch_index,arch_str,latency_ms\n" + "".join(
        f"{i},{s},{1 + i / 10}\n" for i, s in enumerate(
            ["|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|"
             "nor_conv_3x3~2|", "|none~0|+|none~0|none~1|+|none~0|none~1|skip_connect~2|"]))
    for name, ds in (("a", "cifar10"), ("b", "cifar100")):
        (tmp_path / f"{name}.csv").write_text(rows)
        (tmp_path / f"{name}.fingerprint.json").write_text(json.dumps({"dataset": ds}))
    assert main(["measure-quality", str(tmp_path / "a.csv"), str(tmp_path / "b.csv")]) == 0
    assert "different datasets ('cifar10' and 'cifar100'" in capsys.readouterr().err
    assert main(["measure-quality", str(tmp_path / "a.csv"), str(tmp_path / "a.csv")]) == 0
    assert "compared with itself" in capsys.readouterr().err


def test_a_sidecar_nested_thousands_deep_is_read_as_none(tmp_path):
    """A sidecar JSON nested 100,000 deep was an internal error (RecursionError) in
    measure-quality; the sidecar reader never fails."""
    from costmodels.tables import read_sidecar

    (tmp_path / "a.csv").write_text("arch_index,arch_str,latency_ms\n")
    (tmp_path / "a.fingerprint.json").write_text("[" * 100_000)
    assert read_sidecar(tmp_path / "a.csv") == {}
