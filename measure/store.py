"""Measurement store: one SQLite file (WAL mode), one row per measured network.

Rows are keyed by (network fingerprint, config hash, device hash): the same
network measured with the same settings on the same device is stored once.
Each row keeps the arch string / index when the network has one, the config and
fingerprint as JSON, the statistics, the raw times (zlib-compressed float64
bytes, never pickle), the error text of a failure and a UTC timestamp.

Safety: the file is checked before anything is written. A file that is not
SQLite, is corrupt, or is a SQLite database of some other program (no ``meta``
table naming this schema) is refused with :class:`~costmodels.errors.ModelFileError`
and left byte-for-byte untouched. Every :meth:`MeasureStore.put` commits, so a
SIGKILL loses at most the network in flight.
"""

from __future__ import annotations

import json
import sqlite3
import zlib
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from costmodels.errors import ModelFileError
from measure.config import MeasureConfig, MeasureResult

SCHEMA_NAME = "costmodels.measure"
SCHEMA_VERSION = 1
SQLITE_MAGIC = b"SQLite format 3\x00"

_DDL = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE measurements (
    id INTEGER PRIMARY KEY,
    net_key TEXT NOT NULL,
    config_hash TEXT NOT NULL,
    device_hash TEXT NOT NULL,
    name TEXT NOT NULL,
    arch_str TEXT,
    arch_index INTEGER,
    dataset TEXT,
    runtime TEXT NOT NULL,
    ok INTEGER NOT NULL,
    median_ms REAL, mean_ms REAL, p10_ms REAL, p90_ms REAL, std_ms REAL, cv REAL,
    repeat INTEGER NOT NULL,
    noisy INTEGER NOT NULL,
    error TEXT NOT NULL,
    config_json TEXT NOT NULL,
    fingerprint_json TEXT NOT NULL,
    meta_json TEXT NOT NULL,
    times_zlib BLOB,
    created_at TEXT NOT NULL,
    UNIQUE (net_key, config_hash, device_hash)
);
CREATE INDEX measurements_arch ON measurements (arch_index);
"""
_STATS = ("median_ms", "mean_ms", "p10_ms", "p90_ms", "std_ms", "cv")


@dataclass(frozen=True)
class NetKey:
    """What identifies a measured network: fingerprint plus where it came from."""

    key: str
    name: str
    arch_str: str | None = None
    arch_index: int | None = None
    dataset: str | None = None


@dataclass(frozen=True)
class StoredMeasurement:
    """One row read back: the network, the hashes, the settings and the result."""

    id: int
    net: NetKey
    config_hash: str
    device_hash: str
    config: dict[str, Any]
    result: MeasureResult
    created_at: str


def pack_times(times_ms: Sequence[float]) -> bytes:
    """Raw times (ms) -> zlib of little-endian float64 bytes."""
    return zlib.compress(np.asarray(times_ms, dtype="<f8").tobytes())


def unpack_times(blob: bytes | None) -> np.ndarray:
    return np.frombuffer(zlib.decompress(blob), dtype="<f8") if blob else np.empty(0)


def check_file(path: Path) -> bool:
    """Refuse anything that is not this store; True when the file exists and is ours.

    False for a missing file, an empty one, or a SQLite database with no tables at
    all (a store killed while being created). Never writes: reads the header, then
    opens the database read-only.
    """
    if not path.exists() or (path.is_file() and path.stat().st_size == 0):
        return False
    if not path.is_file():
        raise ModelFileError(f"{path}: is not a file; give a path for the measurement store "
                             "(e.g. runs.sqlite)")
    with open(path, "rb") as fh:
        head = fh.read(len(SQLITE_MAGIC))
    if head != SQLITE_MAGIC:
        raise ModelFileError(f"{path}: is not a SQLite database (corrupt, or some other kind of "
                             "file); refusing to use it as a measurement store. The file was not "
                             "modified; pass another --db path.")
    # A store killed before a checkpoint keeps its rows in the -wal file: read it
    # (read-only; only a writer checkpoints). Otherwise open immutable: no locks, no files.
    wal = Path(f"{path}-wal")
    flags = "mode=ro" if wal.is_file() and wal.stat().st_size > 0 else "mode=ro&immutable=1"
    try:
        con = sqlite3.connect(f"{path.resolve().as_uri()}?{flags}", uri=True)
        try:
            tables = {r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            meta = dict(con.execute("SELECT key, value FROM meta")) if "meta" in tables else {}
        finally:
            con.close()
    except sqlite3.DatabaseError as exc:
        raise ModelFileError(f"{path}: is a corrupt SQLite file ({exc}); refusing to use it as a "
                             "measurement store. The file was not modified.") from None
    if not tables:
        return False  # an empty database (e.g. killed while being created): nothing to lose
    if meta.get("schema") != SCHEMA_NAME:
        raise ModelFileError(f"{path}: is a SQLite database of another program (no "
                             f"{SCHEMA_NAME!r} schema in a meta table; tables: "
                             f"{', '.join(sorted(tables)) or 'none'}); refusing to write into it. "
                             "The file was not modified; pass another --db path.")
    version = int(meta.get("version", "0"))
    if version > SCHEMA_VERSION:
        raise ModelFileError(f"{path}: store schema version {version} is newer than this "
                             f"costmodels understands ({SCHEMA_VERSION}); upgrade costmodels. "
                             "The file was not modified.")
    if version < 1:
        raise ModelFileError(f"{path}: store has an invalid schema version {version!r}; "
                             "the file was not modified.")
    return True


class MeasureStore:
    """The SQLite measurement store. Use as a context manager or call :meth:`close`."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        exists = check_file(self.path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.con = sqlite3.connect(str(self.path), timeout=30.0, isolation_level=None)
        self.con.execute("PRAGMA journal_mode=WAL")
        self.con.execute("PRAGMA synchronous=NORMAL")
        if not exists:
            with self._transaction():
                for stmt in _DDL.strip().split(";"):
                    if stmt.strip():
                        self.con.execute(stmt)
                self.con.executemany("INSERT INTO meta VALUES (?, ?)",
                                     [("schema", SCHEMA_NAME),
                                      ("version", str(SCHEMA_VERSION)),
                                      ("created_at", _now())])

    @contextmanager
    def _transaction(self) -> Iterator[None]:
        """One explicit transaction: committed on success, rolled back on error."""
        self.con.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self.con.execute("ROLLBACK")
            raise
        self.con.execute("COMMIT")

    def __enter__(self) -> MeasureStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.con.close()

    # ------------------------------------------------------------------ writing
    def put(self, net: NetKey, config: MeasureConfig, config_hash: str, device_hash: str,
            result: MeasureResult, replace_existing: bool = False) -> None:
        """Store one result and commit. A second row for the same key raises
        ``sqlite3.IntegrityError`` unless ``replace_existing``."""
        verb = "INSERT OR REPLACE" if replace_existing else "INSERT"
        row = (net.key, config_hash, device_hash, net.name, net.arch_str, net.arch_index,
               net.dataset, result.runtime or config.runtime, int(result.ok),
               *(_real(getattr(result, s)) for s in _STATS), result.repeat, int(result.noisy),
               result.error, json.dumps(config.to_dict(), sort_keys=True),
               json.dumps(result.fingerprint, sort_keys=True, default=str),
               json.dumps(result.meta, sort_keys=True, default=str),
               pack_times(result.times_ms) if result.times_ms else None, _now())
        with self._transaction():
            self.con.execute(
                f"{verb} INTO measurements (net_key, config_hash, device_hash, name, arch_str, "
                "arch_index, dataset, runtime, ok, median_ms, mean_ms, p10_ms, p90_ms, std_ms, cv, "
                "repeat, noisy, error, config_json, fingerprint_json, meta_json, times_zlib, "
                "created_at) VALUES (" + ",".join("?" * 23) + ")", row)

    # ------------------------------------------------------------------ reading
    def done_keys(self, config_hash: str, device_hash: str, include_failed: bool = True
                  ) -> set[str]:
        """Network keys already stored for this config and device."""
        sql = "SELECT net_key FROM measurements WHERE config_hash=? AND device_hash=?"
        if not include_failed:
            sql += " AND ok=1"
        return {r[0] for r in self.con.execute(sql, (config_hash, device_hash))}

    def records(self, config_hash: str | None = None, device_hash: str | None = None,
                keys: Iterable[str] | None = None) -> list[StoredMeasurement]:
        """Rows, optionally for one config / device / set of network keys, oldest first."""
        where, args = [], []
        if config_hash:
            where.append("config_hash=?")
            args.append(config_hash)
        if device_hash:
            where.append("device_hash=?")
            args.append(device_hash)
        sql = "SELECT * FROM measurements" + (f" WHERE {' AND '.join(where)}" if where else "")
        cur = self.con.execute(sql + " ORDER BY id", args)
        cols = [d[0] for d in cur.description]
        wanted = set(keys) if keys is not None else None
        out = []
        for r in cur:
            d = dict(zip(cols, r, strict=True))
            if wanted is None or d["net_key"] in wanted:
                out.append(_record(d))
        return out

    def count(self) -> int:
        return int(self.con.execute("SELECT COUNT(*) FROM measurements").fetchone()[0])

    def export_table(self, path: str | Path, records: Sequence[StoredMeasurement]) -> int:
        """Write the successful NAS-Bench-201 rows as a latency-table CSV (median ms).

        Returns the number of rows written.
        """
        from costmodels.tables import write_table

        rows = sorted({r.net.arch_index: r for r in records
                       if r.result.ok and r.net.arch_index is not None}.values(),
                      key=lambda r: r.net.arch_index)
        write_table(path, [r.net.arch_index for r in rows], [r.net.arch_str for r in rows],
                    [r.result.median_ms for r in rows])
        return len(rows)


def _record(d: dict[str, Any]) -> StoredMeasurement:
    res = MeasureResult(
        ok=bool(d["ok"]), **{s: (np.nan if d[s] is None else d[s]) for s in _STATS},
        repeat=d["repeat"], runtime=d["runtime"], noisy=bool(d["noisy"]), error=d["error"],
        times_ms=tuple(unpack_times(d["times_zlib"]).tolist()),
        fingerprint=json.loads(d["fingerprint_json"]), meta=json.loads(d["meta_json"]))
    net = NetKey(d["net_key"], d["name"], d["arch_str"], d["arch_index"], d["dataset"])
    return StoredMeasurement(d["id"], net, d["config_hash"], d["device_hash"],
                             json.loads(d["config_json"]), res, d["created_at"])


def _real(x: float) -> float | None:
    return None if x is None or not np.isfinite(x) else float(x)


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")
