"""The LUT file: an open, versioned SQLite schema, plus CSV export/import and merge.

Tables (schema 2; the file layer is :mod:`measure.sqlite`, shared with the measurement
store)::

    meta(key PRIMARY KEY, value)       schema='costmodels.lut', version, runtime,
                                       fingerprint (JSON), config (JSON), rules (JSON text),
                                       rules_hash, calibration (JSON), created_at
    entries(key PRIMARY KEY, ops, ok, median_ms, p10_ms, p90_ms, cv, count, noisy,
            uses, error, source, measured_at)
    calibration_points(name PRIMARY KEY, arch_str, dataset, latency_ms, p10_ms, p90_ms,
                       cv, kernel_sum_ms, n_kernels, measured_at)
    space_index(space, dataset, batch, rules_hash, keys, counts)   per-cell kernel counts

Times are milliseconds, timestamps UTC ISO 8601; ``count`` is the number of timed runs
behind an entry, ``uses`` how many networks of the build set contain the kernel. A file
that is not a LUT of a known schema is refused untouched (:class:`ModelFileError`).
Schema 1 files (``meta(name, value)`` with ``format='costmodels-lut'``) are read as they
are and migrated at their first write. Opening a LUT to write changes nothing until the
first write, so a LUT refused after reading its meta stays byte-identical.
"""

from __future__ import annotations

import csv
import json
import math
import sqlite3
import zlib
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from costmodels.errors import ModelFileError
from measure.sqlite import Database, Schema, SchemaFile, inspect, to_utc, utc_now

SCHEMA_NAME = "costmodels.lut"
SCHEMA_VERSION = 2
FORMAT = "costmodels-lut"  # schema 1's meta 'format' value
CSV_COLUMNS = ("key", "ops", "median_ms", "p10_ms", "p90_ms", "cv", "count", "uses", "noisy",
               "source")

_DDL = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS entries (
    key TEXT PRIMARY KEY, ops TEXT NOT NULL, ok INTEGER NOT NULL,
    median_ms REAL, p10_ms REAL, p90_ms REAL, cv REAL, count INTEGER NOT NULL DEFAULT 0,
    noisy INTEGER NOT NULL DEFAULT 0, uses INTEGER NOT NULL DEFAULT 0, error TEXT NOT NULL
    DEFAULT '', source TEXT NOT NULL DEFAULT '', measured_at TEXT NOT NULL DEFAULT '');
CREATE TABLE IF NOT EXISTS calibration_points (
    name TEXT PRIMARY KEY, arch_str TEXT, dataset TEXT, latency_ms REAL NOT NULL,
    p10_ms REAL, p90_ms REAL, cv REAL, kernel_sum_ms REAL, n_kernels INTEGER,
    measured_at TEXT NOT NULL DEFAULT '');
CREATE TABLE IF NOT EXISTS space_index (
    space TEXT NOT NULL, dataset TEXT NOT NULL, batch INTEGER NOT NULL, rules_hash TEXT NOT NULL,
    keys TEXT NOT NULL, counts BLOB NOT NULL, PRIMARY KEY (space, dataset, batch, rules_hash))
"""


def _legacy(tables: set[str], raw: dict[str, str]) -> tuple[str, int] | None:
    """Schema 1: meta(name, value) with format='costmodels-lut' and schema_version."""
    if raw.get("format") == FORMAT and "entries" in tables:
        try:
            return SCHEMA_NAME, int(raw.get("schema_version", "0"))
        except ValueError:
            return SCHEMA_NAME, 0
    return None


def _migrate_1(con: sqlite3.Connection) -> None:
    """Schema 1 -> 2: the common meta layout and UTC timestamps."""
    con.execute("ALTER TABLE meta RENAME COLUMN name TO key")
    con.execute("UPDATE meta SET key = 'schema', value = ? WHERE key = 'format'", (SCHEMA_NAME,))
    con.execute("UPDATE meta SET key = 'version' WHERE key = 'schema_version'")
    for table, col, pk in (("meta", "value", "key"), ("entries", "measured_at", "key"),
                           ("calibration_points", "measured_at", "name")):
        where = " WHERE key = 'created_at'" if table == "meta" else ""
        rows = con.execute(f"SELECT {pk}, {col} FROM {table}{where}").fetchall()
        con.executemany(f"UPDATE {table} SET {col} = ? WHERE {pk} = ?",
                        [(to_utc(v), k) for k, v in rows if v])


SCHEMA = Schema(SCHEMA_NAME, SCHEMA_VERSION, _DDL, what="LUT",
                hint="rebuild it with `costmodels lut build`, import a CSV with "
                     "`costmodels lut import`, or pass another path",
                migrations={1: _migrate_1}, legacy=_legacy, readable=frozenset({1}))


@dataclass(frozen=True)
class Entry:
    """One measured kernel. ``ok=False`` entries keep the error and count as missing."""

    key: str
    ops: str
    ok: bool = True
    median_ms: float = math.nan
    p10_ms: float = math.nan
    p90_ms: float = math.nan
    cv: float = math.nan
    count: int = 0
    noisy: bool = False
    uses: int = 0
    error: str = ""
    source: str = ""
    measured_at: str = ""


@dataclass(frozen=True)
class CalibrationPoint:
    """One network measured end to end, used to fit the overhead terms."""

    name: str
    arch_str: str
    dataset: str
    latency_ms: float
    p10_ms: float = math.nan
    p90_ms: float = math.nan
    cv: float = math.nan
    kernel_sum_ms: float = math.nan
    n_kernels: int = 0
    measured_at: str = ""


def now() -> str:
    """The timestamp of an entry: UTC ISO 8601 (the one format of costmodels files)."""
    return utc_now()


def check_file(path: Path) -> None:
    """Refuse (``ModelFileError``) a file that is not a LUT of a known schema; never writes."""
    if not Path(path).exists():
        raise ModelFileError(f"{path}: no such LUT file; build one with `costmodels lut build` "
                             "or `costmodels lut import`")
    inspect(path, SCHEMA)


def peek(path: str | Path) -> dict[str, str]:
    """The meta of the LUT at ``path`` (common keys), read without opening it for writing --
    what a builder checks (runtime, rules, settings) before it resumes a file."""
    check_file(Path(path))
    return dict(inspect(path, SCHEMA).meta)


class LutFile(SchemaFile):
    """An open LUT. ``LutFile.create(...)`` makes a new one; ``LutFile(path)`` opens one.

    Writes commit at once (one transaction per entry, WAL journal while open), so
    an interrupted build keeps what it measured. Use as a context manager or call
    :meth:`close`. The meta is read at open and stays readable after :meth:`close`.
    """

    schema = SCHEMA
    _check = staticmethod(check_file)

    @classmethod
    def create(cls, path: str | Path, runtime: str, rules_json: str, rules_hash: str,
               fingerprint: dict[str, Any] | None = None,
               config: dict[str, Any] | None = None) -> LutFile:
        """A new, empty LUT at ``path`` (refuses to overwrite an existing file)."""
        path = Path(path)
        if path.exists():
            raise ModelFileError(f"{path}: already exists; open it to resume, or remove it first")
        meta = {"runtime": runtime, "rules": rules_json, "rules_hash": rules_hash,
                "fingerprint": json.dumps(fingerprint or {}, sort_keys=True),
                "config": json.dumps(config or {}, sort_keys=True), "calibration": ""}
        Database(path, SCHEMA, create_meta=meta).close()
        return cls(path)

    # ------------------------------------------------------------------ meta
    @property
    def runtime(self) -> str:
        return self.get_meta("runtime")

    @property
    def fingerprint(self) -> dict[str, Any]:
        return json.loads(self.get_meta("fingerprint", "{}") or "{}")

    @property
    def calibration(self) -> dict[str, Any]:
        """The stored overhead fit (:func:`measure.lut.calibrate.fit`'s record), checked: a
        JSON object whose terms are finite numbers; {} when there is none."""
        text = self.get_meta("calibration")
        if not text:
            return {}
        try:
            cal = json.loads(text)
        except ValueError:
            cal = None
        bad = "not a JSON object" if not isinstance(cal, dict) else next(
            (f"{k} {cal[k]!r}, not a number" for k in ("intercept_ms", "per_kernel_ms", "scale",
                                                        "n_points", "rmse_ms", "mape")
             if k in cal and not (isinstance(cal[k], (int, float))
                                  and not isinstance(cal[k], bool)
                                  and math.isfinite(cal[k]))), None)
        # a fit on end-to-end times of real networks: an intercept or per-kernel term within
        # an hour, a scale of kernel sums within 1e-3..1e3 (a hand-edited 1e300 gave 1e300 ms)
        bounds = {"intercept_ms": (-MAX_KERNEL_MS, MAX_KERNEL_MS),
                  "per_kernel_ms": (-MAX_KERNEL_MS, MAX_KERNEL_MS), "scale": (1e-3, 1e3)}
        bad = bad or next((f"{k} {cal[k]!r}, outside {lo:g}..{hi:g}"
                           for k, (lo, hi) in bounds.items()
                           if k in cal and not lo <= cal[k] <= hi), None)
        if bad:
            raise ModelFileError(f"{self.path}: its calibration (meta 'calibration') has {bad} "
                                 "(edited by hand, or corrupt); refit it with `costmodels lut "
                                 "refit`")
        return cal

    # ------------------------------------------------------------------ entries
    def put(self, entry: Entry) -> None:
        """Insert or replace one entry and commit."""
        with self._db.transaction() as con:
            con.execute(
                "INSERT OR REPLACE INTO entries VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (entry.key, entry.ops, int(entry.ok), _num(entry.median_ms), _num(entry.p10_ms),
                 _num(entry.p90_ms), _num(entry.cv), int(entry.count), int(entry.noisy),
                 int(entry.uses), entry.error, entry.source, entry.measured_at))

    def entries(self) -> Iterator[Entry]:
        cur = self._con.execute("SELECT * FROM entries ORDER BY key")
        for row in cur:
            yield self._checked(self._entry(row))

    def get(self, key: str) -> Entry | None:
        row = self._con.execute("SELECT * FROM entries WHERE key = ?", (key,)).fetchone()
        return self._checked(self._entry(row)) if row else None

    def _entry(self, row: tuple) -> Entry:
        """:func:`_entry` of a stored row; the file refused naming the entry and field when a
        figure is not a number (SQLite keeps whatever was written)."""
        try:
            return _entry(row)
        except ValueError as exc:
            key = str(row[0])
            shown = key if len(key) <= 120 else key[:117] + "..."
            raise ModelFileError(f"{self.path}: entry {shown!r} has {exc} (edited by hand, or "
                                 "corrupt); rebuild the LUT or `lut import` the entry "
                                 "again") from None

    def _checked(self, e: Entry) -> Entry:
        """``e``, or the file refused naming the entry when a usable one holds what no
        measurement gives (a LUT edited by hand: ``lut import`` refuses such values too):
        a median that is not a finite positive number, a negative cv or quantile, p10
        above p90 (absent ones, NaN, pass)."""
        if not e.ok:
            return e
        med = _as_float(e.median_ms)
        usable = math.isfinite(med) and med > 0
        spread = _spread_problem(*(_as_float(v) for v in (e.p10_ms, e.p90_ms, e.cv)))
        if usable and spread is None:
            return e
        shown = e.key if len(e.key) <= 120 else e.key[:117] + "..."
        what = (f"median_ms {e.median_ms!r}, not a positive number" if not usable
                else f"p10_ms {e.p10_ms!r}, p90_ms {e.p90_ms!r}, cv {e.cv!r}: {spread}")
        raise ModelFileError(f"{self.path}: entry {shown!r} has {what} (edited by hand, or "
                             "corrupt); rebuild the LUT or `lut import` the entry again")

    def keys(self, ok_only: bool = True, since: str = "") -> set[str]:
        """Keys of the entries (usable ones only with ``ok_only``; measured at or after
        ``since``, a UTC timestamp, when given)."""
        where = (["ok = 1"] if ok_only else []) + (["measured_at >= ?"] if since else [])
        q = "SELECT key FROM entries" + (" WHERE " + " AND ".join(where) if where else "")
        return {r[0] for r in self._con.execute(q, (since,) if since else ())}

    def values(self) -> dict[str, float]:
        """key -> median_ms of the usable (ok) entries."""
        out = {}
        for row in self._con.execute("SELECT * FROM entries WHERE ok = 1 AND median_ms IS "
                                     "NOT NULL"):
            e = self._checked(self._entry(row))
            out[e.key] = float(e.median_ms)
        return out

    def __len__(self) -> int:
        return int(self._con.execute("SELECT COUNT(*) FROM entries").fetchone()[0])

    def latest(self) -> str:
        """The newest ``measured_at`` of the entries and calibration points ('' if none)."""
        row = self._con.execute(
            "SELECT max(t) FROM (SELECT max(measured_at) AS t FROM entries UNION ALL "
            "SELECT max(measured_at) FROM calibration_points)").fetchone()
        return row[0] or ""

    def drop_points_older_than(self, since: str) -> int:
        """Drop the calibration points measured before ``since`` (end-to-end times of a
        remeasured LUT's old kernels), and the calibration fitted on them (a build that
        calibrates fits it again); how many went."""
        with self._db.transaction() as con:
            n = con.execute("DELETE FROM calibration_points WHERE measured_at < ?",
                            (since,)).rowcount
            if n:
                con.execute("UPDATE meta SET value = '' WHERE key = 'calibration'")
        if n:
            self._db.meta["calibration"] = ""
        return n

    # ------------------------------------------------------------------ calibration
    def put_point(self, p: CalibrationPoint) -> None:
        with self._db.transaction() as con:
            con.execute("INSERT OR REPLACE INTO calibration_points VALUES "
                              "(?,?,?,?,?,?,?,?,?,?)",
                              (p.name, p.arch_str, p.dataset, p.latency_ms, _num(p.p10_ms),
                               _num(p.p90_ms), _num(p.cv), _num(p.kernel_sum_ms), p.n_kernels,
                               p.measured_at))

    def keep_points(self, arch_strs: set[str]) -> int:
        """Drop the calibration points of networks outside ``arch_strs``; how many. (The demo
        calibrates on its training networks only; a rerun with another split must not keep
        points of networks it now scores.)"""
        drop = [p.name for p in self.points() if p.arch_str not in arch_strs]
        with self._db.transaction() as con:
            con.executemany("DELETE FROM calibration_points WHERE name = ?",
                            [(n,) for n in drop])
        return len(drop)

    def points(self) -> list[CalibrationPoint]:
        rows = self._con.execute("SELECT * FROM calibration_points ORDER BY name").fetchall()
        return [CalibrationPoint(*[math.nan if v is None else v for v in r]) for r in rows]

    # ------------------------------------------------------------------ space index
    def put_index(self, space: str, dataset: str, batch: int, rules_hash: str,
                  keys: list[str], counts: np.ndarray) -> None:
        blob = zlib.compress(np.ascontiguousarray(counts, dtype=np.uint16).tobytes(), 6)
        with self._db.transaction() as con:
            con.execute("INSERT OR REPLACE INTO space_index VALUES (?,?,?,?,?,?)",
                              (space, dataset, batch, rules_hash, json.dumps(keys), blob))

    def get_index(self, space: str, dataset: str, batch: int,
                  rules_hash: str) -> tuple[list[str], np.ndarray] | None:
        row = self._con.execute(
            "SELECT keys, counts FROM space_index WHERE space=? AND dataset=? AND batch=? AND "
            "rules_hash=?", (space, dataset, batch, rules_hash)).fetchone()
        if row is None:
            return None
        where = (f"{self.path}: space_index row ({space}, {dataset}, batch {batch})")
        try:
            keys = json.loads(row[0])
            if not isinstance(keys, list) or not all(isinstance(k, str) for k in keys):
                raise ValueError("not a list of kernel keys")
        except (ValueError, TypeError) as exc:
            raise ModelFileError(f"{where}: field 'keys' is not what costmodels writes ({exc})"
                                 "; rebuild the LUT's index with `costmodels lut build`"
                                 ) from None
        try:
            counts = np.frombuffer(zlib.decompress(row[1]), dtype=np.uint16)
            return keys, counts.reshape(-1, len(keys)) if keys else counts.reshape(0, 0)
        except (zlib.error, TypeError, ValueError) as exc:
            raise ModelFileError(f"{where}: field 'counts' is not what costmodels writes ({exc}"
                                 "); rebuild the LUT's index with `costmodels lut build`"
                                 ) from None

    def index_rows(self) -> list[tuple]:
        """Every space-index row as stored (for merging)."""
        return self._con.execute("SELECT * FROM space_index").fetchall()



def _num(x: float) -> float | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


def _entry(row: tuple) -> Entry:
    """An :class:`Entry` of a stored row; ``ValueError`` naming the field whose value is not
    a number (absent figures are NaN)."""
    names = ("median_ms", "p10_ms", "p90_ms", "cv", "count", "uses")

    def num(i: int, kind: type) -> Any:
        v = row[i]
        if v is None and kind is float:
            return math.nan
        try:
            out = kind(v)
        except (TypeError, ValueError):
            out = None
        if out is None or isinstance(v, bytes) or (kind is int and out != v):
            raise ValueError(f"{names[(3, 4, 5, 6, 7, 9).index(i)]} {v!r}, not a number")
        return out

    return Entry(key=row[0], ops=row[1], ok=bool(row[2]), median_ms=num(3, float),
                 p10_ms=num(4, float), p90_ms=num(5, float), cv=num(6, float),
                 count=num(7, int), noisy=bool(row[8]), uses=num(9, int), error=row[10] or "",
                 source=row[11] or "", measured_at=row[12] or "")


# ----------------------------------------------------------------------------- CSV and merge
def export_csv(lut: LutFile, path: str | Path) -> int:
    """Write the usable entries as CSV (``CSV_COLUMNS``); returns the row count."""
    path = Path(path)
    rows = [[e.key, e.ops, repr(e.median_ms), repr(e.p10_ms), repr(e.p90_ms), repr(e.cv),
             e.count, e.uses, int(e.noisy), e.source]
            for e in lut.entries() if e.ok]  # all read (and checked) before a byte is written
    from costmodels.tables import atomic_output

    with atomic_output(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(CSV_COLUMNS)
        w.writerows(rows)
    return len(rows)


def known_op(op: str) -> bool:
    """Whether ``op`` can name a kernel: an ONNX operator (any domain onnx knows) or one
    costmodels builds (its pseudo-kernels and ONNX Runtime's contrib ops,
    :data:`measure.lut.kernel_onnx.ANCHORS`)."""
    import onnx.defs

    from measure.lut.kernel_onnx import ANCHORS

    return op in ANCHORS or onnx.defs.has(op) or onnx.defs.has(op, "ai.onnx.ml")


def read_csv(path: str | Path) -> list[Entry]:
    """Entries from a CSV of the exported form; only ``key`` and ``median_ms`` are required.

    Every key is parsed (:func:`costmodels.fusion.parse_key`); a bad row raises
    ``ModelFileError`` naming the file and line.
    """
    from costmodels.errors import TableError
    from costmodels.fusion import parse_key
    from costmodels.tables import iter_csv

    path = Path(path)
    out = []
    try:
        cols, rows = iter_csv(str(path), "LUT CSV")
    except TableError as exc:
        raise ModelFileError(str(exc)) from None
    if "key" not in cols or "median_ms" not in cols:
        raise ModelFileError(f"{path}: a LUT CSV needs the columns key and median_ms "
                             f"(found {','.join(c for c in cols if c) or 'nothing'}); see "
                             "`lut export`")
    seen: dict[str, int] = {}
    for line, row in rows:
        try:
            given = sum(row.get(c) is not None for c in cols)
            if given < len(cols):  # csv gives None for the fields a short row lacks
                raise ValueError(f"the row has {given} fields, the header {len(cols)} (a "
                                 "field missing, or a quote left open)")
            key = parse_key(row["key"])
            if unknown := [op for op in key.ops if not known_op(op)]:
                raise ValueError(f"kernel {key.text[:80]!r}: {unknown[0]!r} is no ONNX "
                                 "operator nor one of costmodels' kernels (check its "
                                 "spelling: op types are case-sensitive); no network's "
                                 "kernel would ever match it")
            med = _opt(row, "median_ms")
            if not math.isfinite(med) or med <= 0 or med > MAX_KERNEL_MS:
                raise ValueError(f"median_ms must be a positive number of ms up to "
                                 f"{MAX_KERNEL_MS:g}, got {med}")
            if key.text in seen:
                raise ValueError(f"kernel {key.text[:80]!r} is listed again (first on line "
                                 f"{seen[key.text]}); a LUT holds one figure per kernel")
            seen[key.text] = line
            p10, p90, cv = _opt(row, "p10_ms"), _opt(row, "p90_ms"), _opt(row, "cv")
            if any(row.get(c) not in (None, "") and not math.isfinite(v)
                   for c, v in (("p10_ms", p10), ("p90_ms", p90), ("cv", cv))):
                raise ValueError("p10_ms, p90_ms and cv must be finite numbers where given")
            count, uses = _opt(row, "count", 0), _opt(row, "uses", 0)
            if not (0 <= count < 2 ** 62 and 0 <= uses < 2 ** 62  # an SQLite integer
                    and count == int(count) and uses == int(uses)):
                raise ValueError(f"count and uses must be whole numbers from 0 to 2**62 (got "
                                 f"{count:.3g}, {uses:.3g})")
            count, uses = int(count), int(uses)
            spread = _spread_problem(p10, p90, cv)
            if spread:
                raise ValueError(f"p10_ms {p10}, p90_ms {p90}, cv {cv}: {spread}")
            if row.get("ops") and row["ops"] != "+".join(key.ops):
                raise ValueError(f"ops {row['ops']!r} is not the key's ({'+'.join(key.ops)!r})")
            noisy = _opt(row, "noisy", 0)
            if noisy not in (0, 1):
                raise ValueError(f"field 'noisy' is {noisy:g}: 0 or 1 (a flag)")
            out.append(Entry(
                key=key.text, ops="+".join(key.ops), ok=True, median_ms=med,
                p10_ms=p10, p90_ms=p90, cv=cv, count=count, uses=uses,
                noisy=bool(noisy),
                source=row.get("source") or f"csv:{path.name}", measured_at=now()))
        except (ValueError, KeyError) as exc:
            raise ModelFileError(f"{path}:{line}: {exc}") from None
    return out


def _as_float(v: Any) -> float:
    """A stored figure as a float (NaN when absent or not a number)."""
    try:
        return float(v) if v is not None else math.nan
    except (TypeError, ValueError):
        return math.nan


# One kernel's time above this (an hour) is not a measurement.
MAX_KERNEL_MS = 3.6e6


def _opt(row: dict, name: str, default: float = math.nan) -> float:
    """Field ``name`` of a CSV row as a number (``default`` when empty or absent); a
    ValueError naming the field otherwise."""
    v = row.get(name)
    if v in (None, ""):
        return default
    try:
        return float(v)
    except ValueError:
        raise ValueError(f"field {name!r} is {v[:40]!r}, not a number") from None


def merge_entries(dst: LutFile, src: Iterable[Entry], policy: str = "lower-cv") -> dict[str, int]:
    """Merge entries into ``dst``: new keys are added; on a clash ``policy`` decides.

    ``"lower-cv"`` (default) keeps the quieter measurement (an entry with a
    CV beats one without); ``"keep"`` keeps ``dst``'s; ``"replace"`` takes the new one.
    Failed (``ok=False``) entries never replace usable ones.
    """
    if policy not in ("lower-cv", "keep", "replace"):
        raise ValueError(f"merge policy must be lower-cv, keep or replace, not {policy!r}")
    stats = {"added": 0, "replaced": 0, "kept": 0}
    for e in src:
        old = dst.get(e.key)
        if old is None:
            dst.put(e)
            stats["added"] += 1
            continue
        take = (e.ok and (not old.ok or policy == "replace"
                          or (policy == "lower-cv" and _cv(e) < _cv(old))))
        if take:
            dst.put(e)
            stats["replaced"] += 1
        else:
            stats["kept"] += 1
    return stats


def _spread_problem(p10: float, p90: float, cv: float) -> str | None:
    """What is wrong with a measured spread (absent values, NaN, pass), or None: what no
    measurement gives, a negative quantile or cv, p10 above p90. Checked on stored entries
    and on ``lut import`` rows alike."""
    if any(v < 0 for v in (p10, p90, cv)):
        return "a quantile or the cv is negative"
    if p10 > p90:
        return "p10_ms is above p90_ms"
    return None


def _cv(e: Entry) -> float:
    return math.inf if e.cv is None or math.isnan(e.cv) else e.cv



def merge_luts(dst: LutFile, src: LutFile, policy: str = "lower-cv") -> dict[str, int]:
    """Merge ``src`` into ``dst``: entries (``policy``), calibration points, space indices.

    Refuses (``ModelFileError``, nothing written) LUTs of another runtime, other
    fusion rules or another device: their numbers do not mix.
    """
    from measure.lut.keys import outputs_bound

    for name in ("runtime", "rules_hash"):
        if dst.get_meta(name) != src.get_meta(name):
            raise ModelFileError(f"cannot merge {src.path} into {dst.path}: {name} differs "
                                 f"({src.get_meta(name)!r} vs {dst.get_meta(name)!r})")
    ways = [("bound" if outputs_bound(f.meta()) else "returned") for f in (src, dst)]
    if ways[0] != ways[1]:
        raise ModelFileError(f"cannot merge {src.path} into {dst.path}: kernel_outputs differs "
                             f"({ways[0]} vs {ways[1]}): one timed its one-kernel models with "
                             "bound outputs, the other with returned ones, so they take "
                             "different empty runs off; build the older one again into a new "
                             "--db")
    a, b = dst.fingerprint, src.fingerprint
    for name in ("cpu_model", "cores", "runtime_version"):
        if a.get(name) and b.get(name) and a.get(name) != b.get(name):
            raise ModelFileError(f"cannot merge {src.path} into {dst.path}: measured on another "
                                 f"device ({name} {b.get(name)!r} vs {a.get(name)!r})")
    from measure.lut.calibrate import KERNELS_META, point_kernels

    try:  # everything of src read (and decoded) before dst is written at all
        entries, points, rows = list(src.entries()), list(src.points()), src.index_rows()
        kernels = point_kernels(src)
    except ModelFileError:
        raise
    except (ValueError, TypeError, KeyError) as exc:
        raise ModelFileError(f"{src.path}: an entry cannot be read ({type(exc).__name__}: "
                             f"{exc}); nothing was merged into {dst.path}") from None
    stats = merge_entries(dst, entries, policy)
    have = {p.name for p in dst.points()}
    new_points = [p for p in points if p.name not in have]
    for p in new_points:
        dst.put_point(p)
    moved = {p.name: kernels[p.name] for p in new_points if p.name in kernels}
    if moved:  # the kernel lists refit sums a point's LUT values over
        dst.set_meta(KERNELS_META, json.dumps({**point_kernels(dst), **moved}, sort_keys=True))
    stats["points"] = len(new_points)
    with dst._db.transaction() as con:
        con.executemany("INSERT OR IGNORE INTO space_index VALUES (?,?,?,?,?,?)", rows)
    return stats
