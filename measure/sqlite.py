"""The one SQLite layer of costmodels' files (measurement store, LUT).

Every file costmodels writes has the same ``meta(key TEXT PRIMARY KEY, value TEXT)``
table with ``schema`` (``costmodels.measure``, ``costmodels.lut``), ``version`` and
``created_at``; every timestamp is UTC ISO 8601 (:func:`utc_now`); every file is in
WAL mode while a writer has it open (concurrent campaigns) and back in rollback-journal
mode when the last writer closes it (self-contained at rest: no ``-wal``/``-shm`` beside
it, readable from a read-only checkout).

Safety, in this order and before anything is written:

1. :func:`inspect` reads the header and opens the file read-only in a way that creates
   nothing (``immutable=1`` without a ``-wal``; a private copy when a killed writer left a
   ``-wal`` but no ``-shm``). A file that is not SQLite, is corrupt, or is a database
   costmodels did not create -- even one with no tables, only a view, only a
   ``user_version`` -- is refused with :class:`~costmodels.errors.ModelFileError` and left
   byte-identical.
2. :class:`Database` opened for writing checks that the file and its folder are writable,
   creates a new file atomically (written aside, then linked into place: two processes
   creating the same store at once get one file) and touches nothing until the first
   :meth:`Database.transaction`: that is when the journal switches to WAL and an older
   schema is migrated. A file opened only to be read and refused stays as it was.

Schemas are declared with :class:`Schema` (idempotent DDL, migrations ``v -> v+1``, older
layouts it recognises, versions readable without migration).
"""

from __future__ import annotations

import math
import os
import shutil
import sqlite3
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from costmodels.errors import ModelFileError

SQLITE_MAGIC = b"SQLite format 3\x00"
BUSY_TIMEOUT_S = 60.0
# Every costmodels schema name starts with this; used to say what a file of another kind is.
SCHEMA_PREFIX = "costmodels."

Migration = Callable[[sqlite3.Connection], None]
# Recognises an older meta layout: (tables, raw meta rows) -> (schema name, version) or None.
LegacyProbe = Callable[[set[str], dict[str, str]], tuple[str, int] | None]


def utc_now() -> str:
    """The one timestamp format of costmodels files: UTC, ISO 8601, seconds."""
    return datetime.now(UTC).isoformat(timespec="seconds")


def to_utc(text: str) -> str:
    """A stored timestamp (any ISO form, with or without offset) -> :func:`utc_now`'s form.

    Text that is not a timestamp comes back unchanged (never fails a migration).
    """
    if not text:
        return text
    try:
        t = datetime.fromisoformat(text)
    except ValueError:
        try:
            t = datetime.strptime(text, "%Y-%m-%dT%H:%M:%S%z")
        except ValueError:
            return text
    if t.tzinfo is None:
        t = t.astimezone()  # naive times were written in local time
    return t.astimezone(UTC).isoformat(timespec="seconds")


@dataclass(frozen=True)
class Schema:
    """One kind of costmodels file.

    ``ddl``: idempotent (``CREATE ... IF NOT EXISTS``) statements of the current version;
    ``migrations[v]`` turns version ``v`` into ``v + 1`` inside a write transaction;
    ``legacy`` recognises layouts from before the common meta table; ``readable``: older
    versions that read-only users may read as they are (their reading code copes).
    ``what`` names the kind in messages, ``hint`` says what to do instead.
    """

    name: str
    version: int
    ddl: str
    what: str
    hint: str
    migrations: Mapping[int, Migration] = field(default_factory=dict)
    legacy: LegacyProbe | None = None
    readable: frozenset[int] = frozenset()


@dataclass(frozen=True)
class FileState:
    """What :func:`inspect` found: ``exists`` (a file with content) and its schema ``version``;
    ``meta`` is the normalised meta table (``schema``, ``version``, ...)."""

    exists: bool
    version: int = 0
    meta: Mapping[str, str] = field(default_factory=dict)


def _sidecars(path: Path) -> dict[str, bool]:
    return {s: Path(f"{path}{s}").exists() for s in ("-wal", "-shm", "-journal")}


def _header(path: Path, schema: Schema) -> bytes:
    try:
        with open(path, "rb") as fh:
            return fh.read(100)
    except OSError as exc:
        raise ModelFileError(f"{path}: cannot read the {schema.what}: {exc.strerror}; check the "
                             "path and its permissions") from None


def inspect(path: str | Path, schema: Schema) -> FileState:
    """Refuse anything that is not a file of ``schema``; never writes, creates nothing.

    A missing file is ``FileState(exists=False)``; an empty (0-byte) one is refused too
    (costmodels never leaves one: new files are written aside and linked into place).
    """
    path = Path(path)
    if not path.exists():
        return FileState(False)
    if not path.is_file():
        raise ModelFileError(f"{path}: is not a file; {schema.hint}")
    if path.stat().st_size == 0:
        raise ModelFileError(f"{path}: is an empty file (0 bytes), not a {schema.what}; "
                             f"costmodels creates its files itself: remove it or "
                             f"{schema.hint}")
    head = _header(path, schema)
    if head[:16] != SQLITE_MAGIC:
        raise ModelFileError(f"{path}: is not a SQLite database (corrupt, or another kind of "
                             f"file); refusing to use it as a {schema.what}. The file was not "
                             f"modified; {schema.hint}")
    tables, views, user_version, raw, cols = _read_objects(path, schema)
    name, version = _identify(tables, raw, cols, schema)
    if not name and str(raw.get("format", "")).startswith("costmodels-"):
        name = str(raw["format"])  # one of our other files in the (name, value) meta layout
    if name != schema.name:
        _refuse_foreign(path, schema, name, tables, views, user_version)
    if version > schema.version:
        raise ModelFileError(f"{path}: {schema.what} schema version {version} is newer than this "
                             f"costmodels understands ({schema.version}); upgrade costmodels. "
                             "The file was not modified.")
    if version < 1:
        raise ModelFileError(f"{path}: {schema.what} has an invalid schema version "
                             f"{raw.get('version', raw.get('schema_version'))!r}; the file was "
                             f"not modified; {schema.hint}")
    return FileState(True, version, _normalise(raw, cols, name))


def _read_objects(path: Path, schema: Schema):
    """(tables, views, user_version, raw meta rows, meta columns) read without a trace.

    No ``-wal`` beside the file: opened ``immutable=1`` (no locks, no files). With a
    ``-wal`` (a writer is running, or was killed): the database and its ``-wal`` are copied
    aside and read there, so that not even the ``-shm`` is touched; should the copy of a
    file being written be torn, the live file is read ``mode=ro`` (a running writer's
    ``-shm`` is shared state every reader uses).
    """
    for _ in range(5):
        if not Path(f"{path}-wal").exists():
            return _read_at(path, path, "mode=ro&immutable=1", schema)
        try:
            with tempfile.TemporaryDirectory(prefix="costmodels-inspect-") as tmp:
                copy = Path(tmp) / "db.sqlite"
                shutil.copyfile(path, copy)
                shutil.copyfile(f"{path}-wal", f"{copy}-wal")
                return _read_at(copy, path, "mode=ro", schema)
        except FileNotFoundError:
            continue  # the writer closed meanwhile and folded its -wal back: look again
        except ModelFileError:
            if not Path(f"{path}-shm").exists():
                raise
            return _read_at(path, path, "mode=ro", schema)
    return _read_at(path, path, "mode=ro", schema)  # writers kept coming and going


def _read_at(target: Path, path: Path, flags: str, schema: Schema):
    try:
        con = sqlite3.connect(f"{target.resolve().as_uri()}?{flags}", uri=True)
        try:
            objs = con.execute("SELECT type, name FROM sqlite_master").fetchall()
            user_version = con.execute("PRAGMA user_version").fetchone()[0]
            tables = {n for t, n in objs if t == "table"}
            views = {n for t, n in objs if t == "view"}
            triggers = sorted(n for t, n in objs if t == "trigger")
            raw: dict[str, str] = {}
            cols: list[str] = []
            if "meta" in tables:
                cols = [r[1] for r in con.execute("PRAGMA table_info(meta)")]
                if len(cols) >= 2:
                    raw = {str(k): str(v) for k, v in con.execute(
                        f'SELECT "{cols[0]}", "{cols[1]}" FROM meta')}
            con.execute("PRAGMA quick_check(1)").fetchall()
        finally:
            con.close()
    except sqlite3.DatabaseError as exc:
        raise ModelFileError(f"{path}: is a corrupt SQLite file ({exc}); refusing to use it "
                             f"as a {schema.what}. The file was not modified; "
                             f"{schema.hint}") from None
    if triggers:  # SQL stored in the file, run by SQLite on our writes: never ours
        raise ModelFileError(f"{path}: holds SQL triggers ({', '.join(triggers)[:120]}), which "
                             f"costmodels never writes and SQLite would run on every write; "
                             f"refusing to use it as a {schema.what}. The file was not "
                             f"modified; {schema.hint}")
    return tables, views, user_version, raw, cols


def _identify(tables: set[str], raw: dict[str, str], cols: list[str],
              schema: Schema) -> tuple[str, int]:
    if cols[:2] == ["key", "value"] and raw.get("schema", "").startswith(SCHEMA_PREFIX):
        try:
            return raw["schema"], int(raw.get("version", "0"))
        except ValueError:
            return raw["schema"], 0
    if schema.legacy is not None:
        found = schema.legacy(tables, raw)
        if found is not None:
            return found
    return "", 0


def _normalise(raw: dict[str, str], cols: list[str], name: str = "costmodels.lut"
               ) -> dict[str, str]:
    """Meta rows of any recognised layout under the common keys (``name``: the schema the
    legacy probe identified)."""
    if cols[:2] == ["key", "value"]:
        return dict(raw)
    out = dict(raw)
    if "format" in out and "schema" not in out:  # schema 1 layouts: meta(name, value)
        out.pop("format")
        out["schema"] = name
    if "schema_version" in out:
        out["version"] = out.pop("schema_version")
    return out


def _refuse_foreign(path: Path, schema: Schema, name: str, tables: set[str], views: set[str],
                    user_version: int) -> None:
    if name.replace("costmodels-", "costmodels.", 1) == schema.name:  # ours, in the old layout
        raise ModelFileError(f"{path}: a {schema.what} of the first layout that lacks tables it "
                             f"needs (it has {', '.join(sorted(tables)) or 'none'}): damaged or "
                             f"edited by hand; the file was not modified; {schema.hint}")
    if name.startswith(SCHEMA_PREFIX) or name.startswith("costmodels-"):
        use = (" (a block LUT: estimate and compare read it as blocklut:PATH)"
               if "blocklut" in name else "")
        # the schema's hint says how to make a file of this kind: not what this one needs
        raise ModelFileError(f"{path}: is a costmodels file of another kind ({name!r}){use}, "
                             f"not a {schema.what}; the file was not modified; pass a "
                             f"{schema.what} here")
    found = []
    if tables:
        found.append(f"tables: {', '.join(sorted(tables))}")
    if views:
        found.append(f"views: {', '.join(sorted(views))}")
    if user_version:
        found.append(f"user_version {user_version}")
    what = "; ".join(found) or "no tables"
    raise ModelFileError(f"{path}: is a SQLite database of another program, not a costmodels "
                         f"{schema.what} (no {schema.name!r} schema in a meta table; {what}); "
                         f"refusing to read or write it. The file was not modified; "
                         f"{schema.hint}")


def check_writable(path: Path, schema: Schema) -> None:
    """A writer needs the file and its folder (for the ``-wal``) writable: say so up front."""
    folder = path.parent if str(path.parent) else Path(".")
    # Write bits cleared is read-only on purpose, also for root (whom os.access lets write).
    if path.exists() and (not os.access(path, os.W_OK) or not path.stat().st_mode & 0o222):
        raise ModelFileError(f"{path}: the {schema.what} is read-only (permission denied); make "
                             f"it writable or {schema.hint}")
    probe = folder
    while not probe.exists():
        probe = probe.parent
    if not probe.is_dir():
        raise ModelFileError(f"{path}: {probe} is a file, not a folder; {schema.hint}")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise ModelFileError(f"{path}: its folder {probe} is not writable (SQLite needs to put "
                             f"a journal beside the {schema.what}); {schema.hint}")


class DatabaseFileError(ModelFileError, sqlite3.OperationalError):
    """SQLite refused a statement on a costmodels file: the error names the file (still an
    ``OperationalError`` for the code that retries a lock)."""


def _file_fault(exc: BaseException) -> bool:
    """An error of the file or of what it holds (a lock, a full disk, a corrupt page, text
    that is not UTF-8), not of the statement (a ProgrammingError or IntegrityError is ours)."""
    return isinstance(exc, sqlite3.OperationalError) or type(exc) in (sqlite3.DatabaseError,
                                                                       sqlite3.DataError)


def _naming(method: Callable) -> Callable:
    """``method`` of a cursor, with the file's errors named by its connection."""
    def wrapped(self, *args):
        try:
            return method(self, *args)
        except sqlite3.Error as exc:
            raise (self.connection._named(exc) if _file_fault(exc) else exc) from None
    return wrapped


class _NamedCursor(sqlite3.Cursor):
    """A cursor whose errors while reading rows (a corrupt page met half-way, a value
    that does not decode) name the file, as the connection's do."""

    __next__ = _naming(sqlite3.Cursor.__next__)
    fetchone = _naming(sqlite3.Cursor.fetchone)
    fetchmany = _naming(sqlite3.Cursor.fetchmany)
    fetchall = _naming(sqlite3.Cursor.fetchall)


class _NamedConnection(sqlite3.Connection):
    """A connection whose errors name its file and say what to do: a lock another process
    holds past the busy timeout, a table or column that is not ours (a file edited by
    hand), a corrupt file. The file is left as it is."""

    path = ""
    what = "database"

    def execute(self, sql, parameters=(), /):
        try:
            return self.cursor(_NamedCursor).execute(sql, parameters)
        except UnicodeDecodeError as exc:  # a column name in the stored schema
            raise self._named(exc) from None
        except sqlite3.Error as exc:
            if not _file_fault(exc) or isinstance(exc, DatabaseFileError):
                raise
            raise self._named(exc) from None

    def executemany(self, sql, parameters, /):
        try:
            return self.cursor(_NamedCursor).executemany(sql, parameters)
        except sqlite3.Error as exc:
            if not _file_fault(exc) or isinstance(exc, DatabaseFileError):
                raise
            raise self._named(exc) from None

    def commit(self):
        try:
            return super().commit()
        except sqlite3.OperationalError as exc:
            raise self._named(exc) from None

    def _named(self, exc: sqlite3.Error | UnicodeDecodeError) -> DatabaseFileError:
        msg = str(exc)
        if "malformed" in msg or "not a database" in msg or "decode" in msg:
            return DatabaseFileError(
                f"{self.path}: this {self.what} is corrupt ({msg}); it was left as it is: "
                "restore a copy, or rebuild it")
        if "full" in msg or "disk I/O" in msg:
            return DatabaseFileError(
                f"{self.path}: could not write ({msg}); what was committed before is kept: "
                "free disk space (or write elsewhere) and rerun: a campaign or a build "
                "resumes")
        if "locked" in msg or "busy" in msg:
            return DatabaseFileError(
                f"{self.path}: database is locked by another process (waited "
                f"{BUSY_TIMEOUT_S:.0f} s); wait for the campaign, build or merge that holds it "
                "to finish, or use another file")
        return DatabaseFileError(f"{self.path}: this {self.what} cannot be read as costmodels "
                                 f"writes it ({msg}; edited by hand or by another tool?); it "
                                 "was left as it is: rebuild it or use another file")


def _connect(target: str, path: Path, what: str, **kw) -> sqlite3.Connection:
    con = sqlite3.connect(target, factory=_NamedConnection, **kw)
    con.path, con.what = str(path), what
    return con


class Database:
    """An open costmodels SQLite file of one :class:`Schema`.

    ``readonly=True``: the file must exist; opened read-only (immutable when no writer
    journal is beside it); older versions in ``schema.readable`` are read as they are.
    Otherwise the file is created (atomically) when missing and migrated at the first
    :meth:`transaction`. ``create_meta``: extra meta rows of a new file.
    ``con`` is the ``sqlite3`` connection (autocommit; write inside :meth:`transaction`).
    """

    def __init__(self, path: str | Path, schema: Schema, readonly: bool = False,
                 create_meta: Mapping[str, str] | None = None) -> None:
        _given(path, schema)
        self.path = Path(path)
        self.schema = schema
        self.readonly = readonly
        state = inspect(self.path, schema)
        if readonly:
            if not state.exists:
                raise ModelFileError(f"{self.path}: no such {schema.what}; {schema.hint}")
            if state.version < schema.version and state.version not in schema.readable:
                raise ModelFileError(f"{self.path}: {schema.what} schema version "
                                     f"{state.version} is older than this costmodels reads "
                                     f"({schema.version}); open it once for writing to migrate "
                                     "it, or rebuild it")
            self.con = self._connect_readonly()
        else:
            check_writable(self.path, schema)
            if not state.exists:
                state = self._create(create_meta or {})
            self.con = _connect(str(self.path), self.path, schema.what,
                                timeout=BUSY_TIMEOUT_S, isolation_level=None)
        self.version = state.version
        self.meta: dict[str, str] = dict(state.meta)
        self._wal = False

    # ------------------------------------------------------------------ opening
    def _connect_readonly(self) -> sqlite3.Connection:
        head = _header(self.path, self.schema)
        in_wal = len(head) > 19 and head[18] == 2
        wal = Path(f"{self.path}-wal").exists()
        flags = "mode=ro&immutable=1" if in_wal and not wal else "mode=ro"
        if not os.access(self.path.parent, os.W_OK) and not wal:
            flags = "mode=ro&immutable=1"  # a read-only checkout: nothing can change it
        return _connect(f"{self.path.resolve().as_uri()}?{flags}", self.path, self.schema.what,
                        uri=True, timeout=BUSY_TIMEOUT_S, isolation_level=None)

    def _create(self, extra: Mapping[str, str]) -> FileState:
        """Write a complete new file aside and link it into place; another process that
        won the race leaves us its file (which is inspected like any other)."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", suffix=".new",
                                   dir=self.path.parent)
        os.close(fd)
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; a store is an ordinary file
        try:
            con = _connect(tmp, self.path, self.schema.what, isolation_level=None)
            try:
                con.execute("BEGIN")
                for stmt in _statements(self.schema.ddl):
                    con.execute(stmt)
                meta = {"schema": self.schema.name, "version": str(self.schema.version),
                        "created_at": utc_now(), **extra}
                con.executemany("INSERT INTO meta (key, value) VALUES (?, ?)", meta.items())
                con.execute("COMMIT")
            finally:
                con.close()
            try:
                os.link(tmp, self.path)
            except FileExistsError:
                pass  # created meanwhile by another process: use theirs
        finally:
            Path(tmp).unlink(missing_ok=True)
        state = inspect(self.path, self.schema)
        if not state.exists:
            raise ModelFileError(f"{self.path}: could not create the {self.schema.what}")
        return state

    # ------------------------------------------------------------------ writing
    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (``BEGIN IMMEDIATE``; committed on success, rolled back on
        error). The first one switches the journal to WAL and migrates an older schema."""
        if self.readonly:
            raise ModelFileError(f"{self.path}: opened read-only; cannot write the "
                                 f"{self.schema.what}")
        if not self._wal:
            _retry_locked(lambda: self.con.execute("PRAGMA journal_mode=WAL"))
            self.con.execute("PRAGMA synchronous=NORMAL")
            self._wal = True
        self.con.execute("BEGIN IMMEDIATE")
        try:
            if self.version < self.schema.version:
                self._migrate()
            yield self.con
        except BaseException:
            self.con.execute("ROLLBACK")
            raise
        self.con.execute("COMMIT")

    def _migrate(self) -> None:
        """Inside the caller's transaction: bring the file to the current version."""
        version = _stored_version(self.con)  # another process may have migrated it
        while version < self.schema.version:
            step = self.schema.migrations.get(version)
            if step is None:
                raise ModelFileError(f"{self.path}: no migration of {self.schema.what} schema "
                                     f"version {version}; rebuild it")
            step(self.con)
            version += 1
        for stmt in _statements(self.schema.ddl):
            self.con.execute(stmt)
        self.con.execute("INSERT INTO meta (key, value) VALUES ('version', ?) ON CONFLICT(key) "
                         "DO UPDATE SET value = excluded.value", (str(version),))
        self.version = version
        self.meta = dict(self.con.execute("SELECT key, value FROM meta"))

    def set_meta(self, key: str, value: str) -> None:
        """Insert or replace one meta row and commit."""
        with self.transaction() as con:
            con.execute("INSERT INTO meta (key, value) VALUES (?, ?) ON CONFLICT(key) DO UPDATE "
                        "SET value = excluded.value", (key, value))
        self.meta[key] = value

    # ------------------------------------------------------------------ closing
    def close(self) -> None:
        """Close; a writer that was the last connection puts the file back in rollback-journal
        mode (self-contained at rest). With other connections open it stays WAL."""
        if self._wal:
            try:
                self.con.execute("PRAGMA busy_timeout = 0")
                self.con.execute("PRAGMA journal_mode=DELETE")
            except sqlite3.OperationalError:  # another connection is open
                pass
        self.con.close()

    def __enter__(self) -> Database:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _retry_locked(step: Callable[[], object], timeout_s: float = BUSY_TIMEOUT_S) -> None:
    """Run ``step``, retrying while SQLite says the database is locked.

    Changing the journal mode needs the file to itself, and SQLite does not call the busy
    handler for it when another process is switching its own connection back at close;
    so the switch waits here, up to the busy timeout, as every other statement does.
    """
    import time

    deadline = time.monotonic() + timeout_s
    delay = 0.005
    while True:
        try:
            step()
            return
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) or time.monotonic() > deadline:
                raise
            time.sleep(delay)
            delay = min(delay * 2, 0.2)


def _given(path: str | Path, schema: Schema) -> None:
    """Refuse an empty path: ``Path('')`` is '.', which the errors would name instead."""
    if not str(path).strip():
        raise ModelFileError(f"an empty path given for the {schema.what}")


class SchemaFile:
    """Base of a costmodels file of one schema (a LUT, a block LUT) opened through
    :class:`Database`: the file is checked (``_check``, refusing without writing) before it
    is opened; the meta, ``close`` and the context manager are the same for every kind.

    Subclasses set ``schema`` and ``_check`` (their module's ``check_file``).
    """

    schema: Schema
    _check: Callable[[Path], None]

    def __init__(self, path: str | Path, readonly: bool = False) -> None:
        _given(path, self.schema)
        self.path = Path(path)
        type(self)._check(self.path)
        self._db = Database(self.path, self.schema, readonly=readonly)
        self._con = self._db.con
        self.readonly = readonly

    @property
    def schema_version(self) -> int:
        """The schema version of the file as opened (an older readable one stays as it is)."""
        return self._db.version

    def meta(self) -> dict[str, str]:
        return dict(self._db.meta)

    def get_meta(self, name: str, default: str = "") -> str:
        return self._db.meta.get(name, default)

    def set_meta(self, name: str, value: str) -> None:
        self._db.set_meta(name, value)

    def close(self) -> None:
        """Close; a writer leaves the file in rollback-journal mode, self-contained at rest
        (no -wal/-shm files beside it, readable from a read-only checkout)."""
        self._db.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def migrate_legacy_meta(con: sqlite3.Connection, schema_name: str,
                        timestamps: Sequence[tuple[str, str, str]] = ()) -> None:
    """A schema-1 layout -> the common one, inside a migration: ``meta(name, value)`` with
    ``format``/``schema_version`` becomes ``meta(key, value)`` with ``schema``/``version``;
    ``created_at`` and each ``(table, column, primary key)`` in ``timestamps`` become UTC
    (:func:`to_utc`)."""
    con.execute("ALTER TABLE meta RENAME COLUMN name TO key")
    con.execute("UPDATE meta SET key = 'schema', value = ? WHERE key = 'format'", (schema_name,))
    con.execute("UPDATE meta SET key = 'version' WHERE key = 'schema_version'")
    for table, col, pk in (("meta", "value", "key"), *timestamps):
        where = " WHERE key = 'created_at'" if table == "meta" else ""
        rows = con.execute(f"SELECT {pk}, {col} FROM {table}{where}").fetchall()
        con.executemany(f"UPDATE {table} SET {col} = ? WHERE {pk} = ?",
                        [(to_utc(v), k) for k, v in rows if v])


def real_or_null(x: float | None) -> float | None:
    """A float for a REAL column: NaN (and None) stored as NULL."""
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else float(x)


def _stored_version(con: sqlite3.Connection) -> int:
    cols = [r[1] for r in con.execute("PRAGMA table_info(meta)")]
    raw = {str(k): str(v) for k, v in con.execute(f'SELECT "{cols[0]}", "{cols[1]}" FROM meta')}
    return int(_normalise(raw, cols).get("version", "0"))


def _statements(ddl: str) -> list[str]:
    return [s.strip() for s in ddl.split(";") if s.strip()]


def columns(con: sqlite3.Connection, table: str) -> set[str]:
    """Column names of ``table`` (empty when it does not exist)."""
    return {r[1] for r in con.execute(f'PRAGMA table_info("{table}")')}


def add_columns(con: sqlite3.Connection, table: str, defs: Mapping[str, str]) -> None:
    """``ALTER TABLE ADD COLUMN`` for each ``name: type`` not there yet (idempotent)."""
    have = columns(con, table)
    for name, typ in defs.items():
        if name not in have:
            con.execute(f'ALTER TABLE "{table}" ADD COLUMN {name} {typ}')
