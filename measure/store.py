"""Measurement store: one SQLite file, one row per measured network (schema 2).

Rows are keyed by (network key, config hash, device hash): the same network measured
with the same settings on the same device is stored once -- also when two campaigns
write the same store at the same time (``INSERT ... ON CONFLICT``: the first row is
kept). Each row keeps the arch string / index when the network has one, the config
and fingerprint as JSON, the statistics, the raw times and the round medians
(zlib-compressed float64 bytes, never pickle), the drift-corrected median when a
reference was measured, the error text of a failure and a UTC timestamp. The
``campaigns`` table keeps what each campaign saw (its windows' drift).

The file goes through :mod:`measure.sqlite`: a file that is not this store is refused
byte-identical; schema 1 stores are migrated at the first write (their rows were one
burst: ``rounds`` 1); every :meth:`MeasureStore.put` commits, so a SIGKILL loses at most
the window in flight.
"""

from __future__ import annotations

import json
import sqlite3
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from costmodels.errors import ModelFileError
from measure.config import MeasureConfig, MeasureResult
from measure.sqlite import Database, Schema, add_columns, inspect, utc_now

SCHEMA_NAME = "costmodels.measure"
SCHEMA_VERSION = 2

_DDL = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS measurements (
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
    rounds INTEGER NOT NULL DEFAULT 1,
    round_medians_zlib BLOB,
    round_cv REAL,
    corrected_ms REAL,
    campaign_id INTEGER,
    UNIQUE (net_key, config_hash, device_hash)
);
CREATE INDEX IF NOT EXISTS measurements_arch ON measurements (arch_index);
CREATE TABLE IF NOT EXISTS campaigns (
    id INTEGER PRIMARY KEY,
    config_hash TEXT NOT NULL,
    device_hash TEXT NOT NULL,
    started_at TEXT NOT NULL,
    finished_at TEXT,
    networks INTEGER NOT NULL DEFAULT 0,
    measured INTEGER NOT NULL DEFAULT 0,
    failed INTEGER NOT NULL DEFAULT 0,
    drift REAL,
    reference_drift REAL,
    windows_json TEXT NOT NULL DEFAULT '[]',
    meta_json TEXT NOT NULL DEFAULT '{}'
)
"""
_V2_COLUMNS = {"rounds": "INTEGER NOT NULL DEFAULT 1", "round_medians_zlib": "BLOB",
               "round_cv": "REAL", "corrected_ms": "REAL", "campaign_id": "INTEGER"}
_STATS = ("median_ms", "mean_ms", "p10_ms", "p90_ms", "std_ms", "cv")
_COLS = ("net_key", "config_hash", "device_hash", "name", "arch_str", "arch_index", "dataset",
         "runtime", "ok", *_STATS, "repeat", "noisy", "error", "config_json", "fingerprint_json",
         "meta_json", "times_zlib", "created_at", "rounds", "round_medians_zlib", "round_cv",
         "corrected_ms", "campaign_id")


def _migrate_1(con: sqlite3.Connection) -> None:
    """Schema 1 -> 2: round columns (old rows: one burst) and the campaigns table."""
    add_columns(con, "measurements", _V2_COLUMNS)


SCHEMA = Schema(SCHEMA_NAME, SCHEMA_VERSION, _DDL, what="measurement store",
                hint="pass another --db path (`measure-space` creates a new store there)",
                migrations={1: _migrate_1}, readable=frozenset({1}))


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
    """Refuse anything that is not this store (never writes); True when it exists and is ours."""
    return inspect(path, SCHEMA).exists


class MeasureStore:
    """The SQLite measurement store. Use as a context manager or call :meth:`close`.

    ``readonly=True`` opens an existing store to read (nothing is written or created).
    """

    def __init__(self, path: str | Path, readonly: bool = False) -> None:
        self.path = Path(path)
        self.db = Database(self.path, SCHEMA, readonly=readonly)
        self.con = self.db.con
        self.readonly = readonly

    def __enter__(self) -> MeasureStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.db.close()

    # ------------------------------------------------------------------ writing
    def put(self, net: NetKey, config: MeasureConfig, config_hash: str, device_hash: str,
            result: MeasureResult, replace_existing: bool = False,
            campaign_id: int | None = None) -> bool:
        """Store one result and commit; True when this row was written.

        A row for the same key is kept as it is (False) -- the first of two concurrent
        campaigns wins -- unless ``replace_existing`` (then it is overwritten).
        """
        row = (net.key, config_hash, device_hash, net.name, net.arch_str, net.arch_index,
               net.dataset, result.runtime or config.runtime, int(result.ok),
               *(_real(getattr(result, s)) for s in _STATS), result.repeat, int(result.noisy),
               result.error, json.dumps(config.to_dict(), sort_keys=True),
               json.dumps(result.fingerprint, sort_keys=True, default=str),
               json.dumps(result.meta, sort_keys=True, default=str),
               pack_times(result.times_ms) if result.times_ms else None, utc_now(),
               max(1, result.rounds) if result.ok else 0,
               pack_times(result.round_medians_ms) if result.round_medians_ms else None,
               _real(result.round_cv), _real(result.corrected_ms), campaign_id)
        update = ", ".join(f"{c} = excluded.{c}" for c in _COLS[3:])
        conflict = f"DO UPDATE SET {update}" if replace_existing else "DO NOTHING"
        with self.db.transaction() as con:
            cur = con.execute(
                f"INSERT INTO measurements ({', '.join(_COLS)}) VALUES "
                f"({','.join('?' * len(_COLS))}) "
                f"ON CONFLICT (net_key, config_hash, device_hash) {conflict}", row)
            return cur.rowcount > 0

    def start_campaign(self, config_hash: str, device_hash: str, networks: int,
                       meta: dict[str, Any] | None = None) -> int:
        """A new campaign row; returns its id."""
        with self.db.transaction() as con:
            cur = con.execute("INSERT INTO campaigns (config_hash, device_hash, started_at, "
                              "networks, meta_json) VALUES (?, ?, ?, ?, ?)",
                              (config_hash, device_hash, utc_now(), networks,
                               json.dumps(meta or {}, sort_keys=True, default=str)))
            return int(cur.lastrowid)

    def add_window(self, campaign_id: int, window: dict[str, Any], measured: int,
                   failed: int) -> None:
        """Append one window's report to a campaign and update its drift (median over
        windows) and counts."""
        with self.db.transaction() as con:
            row = con.execute("SELECT windows_json, measured, failed FROM campaigns WHERE id=?",
                              (campaign_id,)).fetchone()
            try:
                windows = json.loads(row[0]) + [window]
                counts = {"measured": row[1], "failed": row[2]}
                row = (row[0], *(int(_stat(counts, k)) for k in counts))
            except (TypeError, ValueError) as exc:
                raise ModelFileError(f"{self.path}: campaign {campaign_id} cannot be updated "
                                     f"({str(exc).splitlines()[0]}); edited by hand or corrupt: "
                                     "what was measured is stored; use another --db") from None
            drifts = [w["drift"] for w in windows if w.get("drift") is not None]
            refs = [w["reference_drift"] for w in windows if w.get("reference_drift") is not None]
            con.execute("UPDATE campaigns SET windows_json=?, measured=?, failed=?, drift=?, "
                        "reference_drift=?, finished_at=? WHERE id=?",
                        (json.dumps(windows), row[1] + measured, row[2] + failed,
                         float(np.median(drifts)) if drifts else None,
                         float(np.median(refs)) if refs else None, utc_now(), campaign_id))

    def reference_anchor(self, config_hash: str, device_hash: str,
                         candidate_ms: float | None = None) -> float | None:
        """The drift reference's anchor (ms) for this config and device: stored once (the
        first campaign's first window sets it, also under concurrency), then reused."""
        from measure.rounds import PANEL_VERSION

        key = f"reference_anchor:{PANEL_VERSION}:{config_hash}:{device_hash}"
        row = self.con.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        if row is None and candidate_ms is not None and not self.readonly:
            with self.db.transaction() as con:
                con.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) "
                            "DO NOTHING", (key, repr(float(candidate_ms))))
            row = self.con.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        if row is None:
            return None
        value = _as_number(row[0])
        if value is None or not value > 0:
            raise ModelFileError(f"{self.path}: meta {key!r} is {row[0]!r}, not a time in ms; "
                                 "edited by hand or corrupt: it was left as it is, use another "
                                 "--db (or delete that meta row to take a new anchor)")
        return value

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
                out.append(self._decoded(d))
        return out

    def _decoded(self, d: dict[str, Any]) -> StoredMeasurement:
        """:func:`_record`, or an error naming the file and record for one edited by hand."""
        try:
            rec = _record(d)
        except (zlib.error, json.JSONDecodeError, KeyError, TypeError, ValueError,
                OverflowError) as exc:
            raise ModelFileError(f"{self.path}: measurement {d.get('id')} ({d.get('name')!r}) "
                                 f"cannot be decoded ({type(exc).__name__}: "
                                 f"{str(exc).splitlines()[0] if str(exc) else ''}); edited by "
                                 "hand or corrupt: it was left as it is, use another --db") from None
        if rec.result.ok and not (np.isfinite(rec.result.median_ms) and rec.result.median_ms >= 0):
            raise ModelFileError(f"{self.path}: measurement {d.get('id')} ({d.get('name')!r}) "
                                 f"has median_ms {rec.result.median_ms!r}, not a time; "
                                 "edited by hand or corrupt: it was left as it is, use another "
                                 "--db")
        return rec

    def campaigns(self) -> list[dict[str, Any]]:
        """Every campaign row (oldest first) with its windows decoded."""
        if "campaigns" not in {r[0] for r in self.con.execute(
                "SELECT name FROM sqlite_master WHERE type='table'")}:
            return []  # a schema 1 store read as it is
        cur = self.con.execute("SELECT * FROM campaigns ORDER BY id")
        cols = [d[0] for d in cur.description]
        out = []
        for r in cur:
            d = dict(zip(cols, r, strict=True))
            try:
                out.append(_campaign(d))
            except (KeyError, TypeError, ValueError) as exc:
                why = f"no column {exc}" if isinstance(exc, KeyError) else str(exc)
                raise ModelFileError(f"{self.path}: campaign {d.get('id')!r} cannot be decoded "
                                     f"({why.splitlines()[0]}); edited by hand or corrupt: it "
                                     "was left as it is, use another --db") from None
        return out

    def count(self) -> int:
        return int(self.con.execute("SELECT COUNT(*) FROM measurements").fetchone()[0])

    def export_table(self, path: str | Path, records: Sequence[StoredMeasurement],
                     figure: str = "raw", errors: bool = False) -> int:
        """Write the rows as a latency-table CSV (``figure``: raw or drift-corrected ms).

        Rows are ordered by ``arch_index`` (then ``arch_str``); with ``errors``, failed rows
        are written too, with an empty ``latency_ms`` and their ``error``. Rows without an
        ``arch_str`` (plain ONNX files) are left out. Returns the number of latencies written.
        """
        from costmodels.tables import write_table

        best: dict[str, StoredMeasurement] = {}
        for r in records:
            if r.net.arch_str is None:
                continue
            old = best.get(r.net.arch_str)
            if old is None or (r.result.ok and not old.result.ok):
                best[r.net.arch_str] = r
        rows = sorted((r for r in best.values() if r.result.ok or errors),
                      key=lambda r: (r.net.arch_index is None, r.net.arch_index or 0,
                                     r.net.arch_str))
        lat = [r.result.figure(figure) if r.result.ok else float("nan") for r in rows]
        extra = None
        if errors and any(not r.result.ok for r in rows):
            extra = {"error": [r.result.error.splitlines()[0] if not r.result.ok and
                               r.result.error else "" for r in rows]}
        write_table(path, [r.net.arch_index for r in rows], [r.net.arch_str for r in rows], lat,
                    extra=extra)
        return sum(r.result.ok for r in rows)


def _as_number(v: Any) -> float | None:
    """A stored figure as a float, or None when it is not a number (SQLite keeps text)."""
    if isinstance(v, bool) or not isinstance(v, (int, float, str)):
        return None
    try:
        return float(v)
    except ValueError:
        return None


def _stat(d: dict[str, Any], name: str) -> float:
    """A stored statistic: NaN where absent, ``ValueError`` naming it where not a number."""
    v = d.get(name)
    if v is None:
        return np.nan
    x = _as_number(v)
    if x is None:
        raise ValueError(f"{name} {v!r} is not a number")
    return x


def _record(d: dict[str, Any]) -> StoredMeasurement:
    res = MeasureResult(
        ok=bool(d["ok"]), **{s: _stat(d, s) for s in _STATS},
        repeat=d["repeat"], runtime=d["runtime"], noisy=bool(d["noisy"]), error=d["error"],
        times_ms=tuple(unpack_times(d["times_zlib"]).tolist()),
        fingerprint=json.loads(d["fingerprint_json"]), meta=json.loads(d["meta_json"]),
        rounds=int(_stat(d, "rounds")) if d.get("rounds") else (1 if d["ok"] else 0),
        round_medians_ms=tuple(unpack_times(d.get("round_medians_zlib")).tolist()),
        round_cv=_stat(d, "round_cv"), corrected_ms=_stat(d, "corrected_ms"))
    net = NetKey(d["net_key"], d["name"], d["arch_str"], d["arch_index"], d["dataset"])
    return StoredMeasurement(d["id"], net, d["config_hash"], d["device_hash"],
                             json.loads(d["config_json"]), res, d["created_at"])


def _campaign(d: dict[str, Any]) -> dict[str, Any]:
    """A campaign row with its windows and meta decoded, its figures checked (``KeyError``
    for a missing column, ``TypeError``/``ValueError`` naming a field that is not what
    :meth:`MeasureStore.add_window` writes)."""
    out = {k: v for k, v in d.items() if k not in ("windows_json", "meta_json")}
    out["windows"] = json.loads(d["windows_json"])
    out["meta"] = json.loads(d["meta_json"])
    if not isinstance(out["windows"], list) or not all(isinstance(w, dict)
                                                       for w in out["windows"]):
        raise ValueError("windows_json is not a list of windows")
    if not isinstance(out["meta"], dict):
        raise ValueError("meta_json is not an object")
    for name in ("drift", "reference_drift"):
        v = d[name]
        if v is not None and _as_number(v) is None:
            raise ValueError(f"{name} {v!r} is not a number")
        out[name] = None if v is None else _as_number(v)
    for name in ("networks", "measured", "failed"):
        if _as_number(d[name]) is None:
            raise ValueError(f"{name} {d[name]!r} is not a number")
    d["started_at"]  # noqa: B018 - the column must be there (KeyError otherwise)
    return out


def _real(x: float) -> float | None:
    return None if x is None or not np.isfinite(x) else float(x)
