"""Store and campaigns: refusal of foreign files, round trips, failures as data, resume."""

from __future__ import annotations

import sqlite3
import subprocess
import sys

import numpy as np
import pytest

from costmodels.errors import ModelFileError
from costmodels.tables import read_table
from measure import MeasureConfig, MeasureResult
from measure.campaign import Job, file_jobs, nb201_jobs, run_campaign
from measure.store import MeasureStore, NetKey, pack_times, unpack_times
from measure.testing import malformed_model, tiny_model

FAST = MeasureConfig(warmup=1, repeat=5)


def test_corrupt_file_is_refused_and_untouched(tmp_path):
    for content in (b"not a database at all\n" * 10,
                    b"SQLite format 3\x00" + bytes(range(256)) * 8):
        path = tmp_path / "runs.sqlite"
        path.write_bytes(content)
        with pytest.raises(ModelFileError, match="runs.sqlite.*(not a SQLite|corrupt)"):
            MeasureStore(path)
        assert path.read_bytes() == content
        assert sorted(p.name for p in tmp_path.iterdir()) == ["runs.sqlite"]


def test_foreign_sqlite_is_refused_and_untouched(tmp_path):
    path = tmp_path / "other.db"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE people (name TEXT)")
    con.execute("INSERT INTO people VALUES ('ada')")
    con.commit()
    con.close()
    before = path.read_bytes()
    with pytest.raises(ModelFileError, match="other.db.*another program.*people"):
        MeasureStore(path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["other.db"]


def test_foreign_wal_database_left_by_a_killed_writer_is_refused(tmp_path):
    path = tmp_path / "app.db"
    code = ("import os, sqlite3, sys; c = sqlite3.connect(sys.argv[1]); "
            "c.execute('PRAGMA journal_mode=WAL'); c.execute('CREATE TABLE t (x)'); "
            "c.execute('INSERT INTO t VALUES (1)'); c.commit(); os._exit(0)")
    subprocess.run([sys.executable, "-c", code, str(path)], check=True)
    wal = tmp_path / "app.db-wal"
    before = (path.read_bytes(), wal.read_bytes())
    with pytest.raises(ModelFileError, match="another program.*tables: t"):
        MeasureStore(path)
    assert (path.read_bytes(), wal.read_bytes()) == before


def test_newer_schema_is_refused(tmp_path):
    path = tmp_path / "runs.sqlite"
    MeasureStore(path).close()
    con = sqlite3.connect(path)
    con.execute("UPDATE meta SET value='99' WHERE key='version'")
    con.commit()
    con.close()
    with pytest.raises(ModelFileError, match="newer"):
        MeasureStore(path)


def test_round_trip_wal_and_unique_key(tmp_path):
    path = tmp_path / "runs.sqlite"
    res = MeasureResult.from_times([1.0, 2.0, 3.0], "ort", fingerprint={"cpu_model": "x"},
                                   meta={"attempts": 1})
    key = NetKey("abc", "net", "|skip_connect~0|+|none~0|none~1|+|none~0|none~1|none~2|", 7,
                 "cifar10")
    with MeasureStore(path) as store:
        assert store.put(key, FAST, "c", "d", res)
        # The same key again is kept once (the first row wins) unless replacing.
        assert not store.put(key, FAST, "c", "d", MeasureResult.failure("later", "ort"))
        store.put(key, FAST, "c", "other-device", MeasureResult.failure("boom", "ort"))
        assert store.con.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert not (tmp_path / "runs.sqlite-wal").exists()  # back to a self-contained file
    with MeasureStore(path) as store:  # reopening our own file is fine
        recs = store.records("c", "d")
        assert len(recs) == 1 and store.count() == 2
        got = recs[0].result
        assert got.times_ms == (1.0, 2.0, 3.0) and got.median_ms == 2.0
        assert got.fingerprint == {"cpu_model": "x"} and recs[0].net == key
        assert recs[0].config == FAST.to_dict()
        fail = store.records("c", "other-device")[0].result
        assert not fail.ok and fail.error == "boom" and np.isnan(fail.median_ms)
    t = np.array([0.5, 1.25, 3.0])
    assert np.array_equal(unpack_times(pack_times(t)), t)


def test_failed_networks_are_recorded_and_the_campaign_goes_on(tmp_path):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(malformed_model())
    jobs = nb201_jobs([3, 11]) + file_jobs([bad, tmp_path / "missing.onnx"])
    with MeasureStore(tmp_path / "runs.sqlite") as store:
        s = run_campaign(jobs, FAST, store, show_progress=False)
        assert (s.total, s.measured, s.failed, s.skipped) == (4, 4, 2, 0)
        by_name = {r.net.name: r.result for r in s.records}
        assert by_name["bad.onnx"].error.startswith("build failed")
        assert "missing.onnx" in by_name["missing.onnx"].error
        assert by_name["nb201-cifar10-3"].ok and by_name["nb201-cifar10-11"].ok
        # Resume: nothing left; --retry-failed measures the failures again (still failing).
        s2 = run_campaign(jobs, FAST, store, show_progress=False)
        assert (s2.measured, s2.skipped) == (0, 4)
        s3 = run_campaign(jobs, FAST, store, retry_failed=True, show_progress=False)
        assert (s3.measured, s3.failed) == (2, 2) and store.count() == 4
        n = store.export_table(tmp_path / "t.csv", s.records)
    table = read_table(tmp_path / "t.csv")
    assert n == 2 and list(table.arch_index) == [3, 11]


@pytest.mark.tvm
def test_tvm_campaign_records_import_failure(tmp_path):
    pytest.importorskip("tvm")
    import onnx

    good, bad = tmp_path / "good.onnx", tmp_path / "celu.onnx"
    onnx.save(tiny_model(), good)
    onnx.save(tiny_model("Celu"), bad)
    cfg = MeasureConfig(runtime="tvm", warmup=1, repeat=3)
    with MeasureStore(tmp_path / "runs.sqlite") as store:
        s = run_campaign(file_jobs([bad, good]), cfg, store, show_progress=False)
    res = {r.net.name: r.result for r in s.records}
    assert not res["celu.onnx"].ok and "Celu" in res["celu.onnx"].error
    assert res["good.onnx"].ok


def test_job_that_cannot_build_its_model_is_a_failure(tmp_path):
    job = Job(NetKey("k", "broken", "|bogus|", None, "cifar10"), arch="|bogus|")
    with MeasureStore(tmp_path / "runs.sqlite") as store:
        s = run_campaign([job], FAST, store, show_progress=False)
    assert s.failed == 1 and "bogus" in s.records[0].result.error


def _store_with_a_campaign(path):
    res = MeasureResult.from_times([1.0, 2.0, 3.0], "ort", fingerprint={"cpu_model": "x"})
    key = NetKey("abc", "net", "|skip_connect~0|+|none~0|none~1|+|none~0|none~1|none~2|", 7,
                 "cifar10")
    with MeasureStore(path) as store:
        store.put(key, FAST, "c", "d", res)
        cid = store.start_campaign("c", "d", 1)
        store.add_window(cid, {"drift": 0.01, "reference_drift": 0.02}, 1, 0)
        assert store.reference_anchor("c", "d", 1.5) == 1.5


@pytest.mark.parametrize("edit, match", [
    ("ALTER TABLE campaigns DROP COLUMN drift", "campaign 1 .*no column 'drift'"),
    ("UPDATE campaigns SET windows_json = '{not json'", "campaign 1 cannot be decoded"),
    ("UPDATE campaigns SET windows_json = 'null'", "windows_json is not a list"),
    ("UPDATE campaigns SET reference_drift = 'x'", "reference_drift 'x' is not a number"),
    ("UPDATE measurements SET round_cv = 'x'", "measurement 1 .*round_cv 'x' is not a number"),
    ("UPDATE measurements SET median_ms = 'abc'", "median_ms 'abc' is not a number"),
    ("UPDATE measurements SET rounds = 9e999", "measurement 1 .*OverflowError"),
    ("UPDATE meta SET value = 'x' WHERE key LIKE 'reference_anchor:%'",
     "meta 'reference_anchor:.*' is 'x', not a time"),
])
def test_a_store_field_edited_by_hand_is_named(tmp_path, edit, match):
    """What mutation fuzzing found: each had been an internal error in measure-quality or a
    resumed measure-space. The file is left as it is."""
    path = tmp_path / "runs.sqlite"
    _store_with_a_campaign(path)
    con = sqlite3.connect(path)
    con.execute(edit)
    con.commit()
    con.close()
    before = path.read_bytes()
    with pytest.raises(ModelFileError, match=match):
        with MeasureStore(path, readonly=True) as store:
            store.records()
            store.campaigns()
            store.reference_anchor("c", "d")
    assert path.read_bytes() == before
