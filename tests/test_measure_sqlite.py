"""The one SQLite layer: foreign files refused byte-identical (sha256), no -wal/-shm left,
schema migration, read-only and concurrent use -- for the store and the LUT alike."""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from costmodels.errors import ModelFileError
from measure import MeasureConfig, MeasureResult
from measure.lut.table import LutFile
from measure.store import MeasureStore, NetKey

ROOT = Path(__file__).resolve().parents[1]
COMMITTED_LUT = ROOT / "datasets" / "nb201" / "xeon-2c-ort-cifar10-lut.sqlite"


def _digest(folder: Path) -> dict[str, str]:
    """sha256 of every file in the folder (so an extra -wal/-shm shows up too)."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def _sql(path: Path, *stmts: str, wal: bool = False, keep_wal: bool = False) -> None:
    """Make a foreign database; with ``keep_wal`` the writer dies before checkpointing."""
    code = ("import os, sqlite3, sys; c = sqlite3.connect(sys.argv[1]);"
            + ("c.execute('PRAGMA journal_mode=WAL');" if wal else "")
            + "".join(f"c.execute({s!r});" for s in stmts) + "c.commit();"
            + ("os._exit(0)" if keep_wal else "c.close()"))
    subprocess.run([sys.executable, "-c", code, str(path)], check=True)


FOREIGN = {
    "tables": ("CREATE TABLE people (name TEXT)", "INSERT INTO people VALUES ('ada')"),
    "no_tables": ("CREATE TABLE t (x)", "DROP TABLE t"),
    "view_only": ("CREATE VIEW v AS SELECT 1 AS one",),
    "user_version_only": ("PRAGMA user_version = 7",),
    "meta_of_others": ("CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT)",
                       "INSERT INTO meta VALUES ('schema', 'someone.else')",
                       "INSERT INTO meta VALUES ('version', '1')"),
}


def _open_store(p: Path) -> None:
    MeasureStore(p).close()


def _open_lut(p: Path) -> None:
    LutFile(p).close()


def _open_lut_model(p: Path) -> None:
    from measure.lut.model import LookupTable

    LookupTable(str(p))


OPENERS = {"store": _open_store, "store-ro": lambda p: MeasureStore(p, readonly=True).close(),
           "lut": _open_lut, "lut-ro": lambda p: LutFile(p, readonly=True).close(),
           "lut-model": _open_lut_model}


@pytest.mark.parametrize("kind", sorted(FOREIGN))
@pytest.mark.parametrize("opener", sorted(OPENERS))
def test_foreign_sqlite_files_are_refused_and_left_byte_identical(tmp_path, kind, opener):
    path = tmp_path / "foreign.sqlite"
    _sql(path, *FOREIGN[kind])
    before = _digest(tmp_path)
    with pytest.raises(ModelFileError, match="foreign.sqlite.*(another program|not a costmodels)"):
        OPENERS[opener](path)
    assert _digest(tmp_path) == before  # same bytes, and no -wal/-shm/-journal beside it


@pytest.mark.parametrize("shm", [True, False], ids=["wal+shm", "wal-only"])
@pytest.mark.parametrize("opener", ["store", "lut"])
def test_foreign_wal_left_by_a_killed_writer_is_refused_untouched(tmp_path, shm, opener):
    path = tmp_path / "app.db"
    _sql(path, "CREATE TABLE t (x)", "INSERT INTO t VALUES (1)", wal=True, keep_wal=True)
    assert (tmp_path / "app.db-wal").exists()
    if not shm:
        (tmp_path / "app.db-shm").unlink()
    before = _digest(tmp_path)
    with pytest.raises(ModelFileError, match="another program.*tables: t"):
        OPENERS[opener](path)
    assert _digest(tmp_path) == before


@pytest.mark.parametrize("opener", ["store", "lut"])
def test_a_file_of_the_other_kind_is_refused_by_name(tmp_path, opener):
    store, lut = tmp_path / "runs.sqlite", tmp_path / "lut.sqlite"
    MeasureStore(store).close()
    LutFile.create(lut, "ort", "{}", "h").close()
    target = lut if opener == "store" else store
    before = _digest(tmp_path)
    with pytest.raises(ModelFileError, match="costmodels file of another kind"):
        OPENERS[opener](target)
    assert _digest(tmp_path) == before


def test_corrupt_and_truncated_stores_are_a_clear_error(tmp_path):
    good = tmp_path / "good.sqlite"
    with MeasureStore(good) as s:
        s.put(NetKey("k", "n"), MeasureConfig(), "c", "d",
              MeasureResult.from_times([1.0, 2.0], "ort"))
    data = good.read_bytes()
    for name, content in (("garbage.sqlite", b"not a database\n" * 50),
                          ("truncated.sqlite", data[:len(data) // 2]),
                          ("scrambled.sqlite", data[:100] + bytes(len(data) - 100))):
        p = tmp_path / name
        p.write_bytes(content)
        before = _digest(tmp_path)
        with pytest.raises(ModelFileError, match=f"{name}.*(not a SQLite|corrupt)"):
            MeasureStore(p)
        assert _digest(tmp_path) == before


def test_read_only_store_is_a_clear_error_and_can_still_be_read(tmp_path):
    path = tmp_path / "runs.sqlite"
    with MeasureStore(path) as s:
        s.put(NetKey("k", "n"), MeasureConfig(), "c", "d",
              MeasureResult.from_times([1.0, 2.0], "ort"))
    os.chmod(path, 0o444)
    try:
        before = _digest(tmp_path)
        with pytest.raises(ModelFileError, match="read-only"):
            MeasureStore(path)
        with MeasureStore(path, readonly=True) as s:
            assert s.count() == 1 and s.records()[0].result.median_ms == 1.5
        assert _digest(tmp_path) == before
    finally:
        os.chmod(path, 0o644)


def test_opening_a_lut_to_write_changes_nothing_until_a_write(tmp_path):
    """`lut build --runtime tvm` on an ORT LUT reads the meta and refuses: the file stays."""
    path = tmp_path / "lut.sqlite"
    LutFile.create(path, "ort", "{}", "h").close()
    before = _digest(tmp_path)
    lut = LutFile(path)
    lut.close()
    assert lut.runtime == "ort"  # the meta stays readable after close (a refusal message)
    assert _digest(tmp_path) == before


def _store_v1(path: Path) -> None:
    """A schema 1 store as costmodels wrote it before schema 2 (one burst per row)."""
    con = sqlite3.connect(path)
    con.executescript("""
        CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
        CREATE TABLE measurements (id INTEGER PRIMARY KEY, net_key TEXT NOT NULL,
            config_hash TEXT NOT NULL, device_hash TEXT NOT NULL, name TEXT NOT NULL,
            arch_str TEXT, arch_index INTEGER, dataset TEXT, runtime TEXT NOT NULL,
            ok INTEGER NOT NULL, median_ms REAL, mean_ms REAL, p10_ms REAL, p90_ms REAL,
            std_ms REAL, cv REAL, repeat INTEGER NOT NULL, noisy INTEGER NOT NULL,
            error TEXT NOT NULL, config_json TEXT NOT NULL, fingerprint_json TEXT NOT NULL,
            meta_json TEXT NOT NULL, times_zlib BLOB, created_at TEXT NOT NULL,
            UNIQUE (net_key, config_hash, device_hash));
        INSERT INTO meta VALUES ('schema', 'costmodels.measure'), ('version', '1'),
            ('created_at', '2026-11-30T10:00:00+00:00');
        INSERT INTO measurements VALUES (1, 'old', 'c', 'd', 'net', NULL, NULL, NULL, 'ort', 1,
            2.0, 2.0, 1.9, 2.1, 0.1, 0.05, 100, 0, '', '{}', '{}', '{}', NULL,
            '2026-11-30T10:00:00+00:00');
    """)
    con.commit()
    con.close()


def test_schema_1_store_is_read_as_is_and_migrated_at_the_first_write(tmp_path):
    path = tmp_path / "old.sqlite"
    _store_v1(path)
    before = _digest(tmp_path)
    with MeasureStore(path, readonly=True) as s:
        [old] = s.records()
        assert old.result.median_ms == 2.0 and old.result.rounds == 1
        assert s.campaigns() == []
    with MeasureStore(path) as s:  # opened to write, nothing written yet: unchanged
        pass
    assert _digest(tmp_path) == before
    with MeasureStore(path) as s:
        s.put(NetKey("new", "n2"), MeasureConfig(), "c", "d",
              MeasureResult.from_rounds([[1.0, 1.1], [1.2, 1.3]], "ort"))
    con = sqlite3.connect(path)
    assert dict(con.execute("SELECT key, value FROM meta"))["version"] == "2"
    assert con.execute("SELECT rounds FROM measurements ORDER BY id").fetchall() == [(1,), (2,)]
    con.close()
    with MeasureStore(path) as s:
        assert [r.result.rounds for r in s.records()] == [1, 2]


def test_committed_schema_1_lut_loads_read_only_untouched_and_migrates_a_copy(tmp_path):
    if not COMMITTED_LUT.exists():
        pytest.skip("committed LUT not in this checkout")
    from costmodels.spaces import nb201
    from measure.lut.model import LookupTable

    folder = COMMITTED_LUT.parent
    before = _digest(folder)
    est = LookupTable(str(COMMITTED_LUT)).estimate(nb201.build_network(1462))
    with LutFile(COMMITTED_LUT, readonly=True) as lut:
        assert lut.runtime == "ort" and len(lut) > 0
    assert est.latency_ms > 0 and _digest(folder) == before
    copy = tmp_path / "lut.sqlite"
    shutil.copyfile(COMMITTED_LUT, copy)
    with LutFile(copy) as lut:
        n = len(lut)
        first = next(lut.entries())
        lut.put(replace(first, source="rewritten"))
        meta = lut.meta()
    assert meta["schema"] == "costmodels.lut" and meta["version"] == "2"
    assert "+00:00" in meta["created_at"]
    with LutFile(copy, readonly=True) as lut:
        assert len(lut) == n and lut.runtime == "ort"
        assert lut.get(first.key).source == "rewritten"
    assert LookupTable(str(copy)).estimate(nb201.build_network(1462)).latency_ms == \
        pytest.approx(est.latency_ms)


_WRITER = """
import sys
from measure import MeasureConfig, MeasureResult
from measure.store import MeasureStore, NetKey
path, tag, lo, hi = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
for i in range(lo, hi):
    with MeasureStore(path) as s:  # open, create or migrate, write, close: all at once
        s.put(NetKey(f"k{i}", f"n{i}"), MeasureConfig(), "c", "d",
              MeasureResult.from_times([float(i), float(i)], "ort", meta={"by": tag}))
"""


def test_concurrent_writers_on_one_new_store_both_finish_each_key_kept_once(tmp_path):
    path = tmp_path / "runs.sqlite"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    procs = [subprocess.Popen([sys.executable, "-c", _WRITER, str(path), tag, lo, hi], env=env,
                              stderr=subprocess.PIPE)
             for tag, lo, hi in (("a", "0", "30"), ("b", "15", "45"))]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err.decode()
    with MeasureStore(path, readonly=True) as s:
        recs = s.records()
    keys = [r.net.key for r in recs]
    assert sorted(keys) == sorted(f"k{i}" for i in range(45)) and len(set(keys)) == 45
    assert {r.result.meta["by"] for r in recs if r.net.key in {f"k{i}" for i in range(15)}} \
        == {"a"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs.sqlite"]


def test_a_store_locked_by_another_process_or_edited_by_hand_is_named(tmp_path, monkeypatch):
    """A lock held past the busy timeout, and a table whose columns are not ours, are a
    clear error naming the file (not an internal error), and the file is left as it was."""
    from measure import sqlite as S

    good = tmp_path / "good.sqlite"
    key = NetKey("k", "n")
    with MeasureStore(good) as s:
        s.put(key, MeasureConfig(), "c", "d", MeasureResult.from_times([1.0, 2.0], "ort"))
    monkeypatch.setattr(S, "BUSY_TIMEOUT_S", 0.2)
    holder = sqlite3.connect(good, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        with pytest.raises(ModelFileError, match="good.sqlite: database is locked by another"):
            with MeasureStore(good) as s:
                s.records("c", "d", keys=[key.key])
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    edited = tmp_path / "edited.sqlite"
    shutil.copy(good, edited)
    _sql(edited, "DROP TABLE measurements", "CREATE TABLE measurements (foo TEXT)")
    before = _digest(tmp_path)
    with pytest.raises(ModelFileError, match="edited.sqlite: this measurement store cannot be "
                                             "read.*left as it is"):
        with MeasureStore(edited) as s:
            s.records("c", "d", keys=[key.key])
    assert _digest(tmp_path) == before


@pytest.mark.parametrize("edit, match", [
    ("UPDATE measurements SET times_zlib = x'00010203'", "cannot be decoded"),
    ("UPDATE measurements SET config_json = '{bad'", "cannot be decoded"),
    ("UPDATE measurements SET median_ms = -3", "median_ms -3.0, not a time"),
])
def test_a_record_edited_by_hand_is_named_and_left_as_it_is(tmp_path, edit, match):
    p = tmp_path / "runs.sqlite"
    key = NetKey("k", "n")
    with MeasureStore(p) as s:
        s.put(key, MeasureConfig(), "c", "d", MeasureResult.from_times([1.0, 2.0], "ort"))
    _sql(p, edit)
    before = _digest(tmp_path)
    with pytest.raises(ModelFileError, match=f"runs.sqlite: measurement 1 \\('n'\\) .*{match}"):
        with MeasureStore(p, readonly=True) as s:
            s.records("c", "d")
    assert _digest(tmp_path) == before


def test_a_full_disk_is_named_as_such_not_as_a_foreign_file(tmp_path):
    import sqlite3

    from measure.sqlite import DatabaseFileError, _connect

    con = _connect(str(tmp_path / "s.sqlite"), tmp_path / "s.sqlite", "measurement store")
    try:
        exc = con._named(sqlite3.OperationalError("database or disk is full"))
    finally:
        con.close()
    assert isinstance(exc, DatabaseFileError)
    assert "s.sqlite: could not write (database or disk is full)" in str(exc)
    assert "rerun" in str(exc) and "edited by hand" not in str(exc)
