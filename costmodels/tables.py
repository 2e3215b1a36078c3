"""Latency tables: ``arch_index,arch_str,latency_ms[,energy_mj]`` CSV files.

The form in which NAS-Bench-201 latencies measured elsewhere come in and the
form ``costmodels estimate`` writes. Reading validates every row and names the
file, line and field at fault. Duplicate cells: by default an error; with
``duplicates="mean"`` or ``"first"`` they are merged (documented policy).
"""

from __future__ import annotations

import contextlib
import csv
import io
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from costmodels.errors import (
    DuplicateRowError,
    NotCovered,
    TableError,
    UnknownArchitecture,
    UnknownBackend,
    read_capped,
    short_repr,
)
from costmodels.interface import BaseCostModel, Estimate
from costmodels.network import Network

REQUIRED = ("arch_index", "arch_str", "latency_ms")


@dataclass(frozen=True)
class LatencyTable:
    """Rows of a latency table, keyed by ``arch_str``. Arrays are aligned.

    ``arch_index`` is the space's standard index, or -1 where the space has none
    (a model folder, FBNet); rows are sorted by index when every row has one, and
    kept in file order otherwise.
    """

    arch_index: np.ndarray  # int64, -1 = no standard index
    arch_str: tuple[str, ...]
    latency_ms: np.ndarray  # float64
    energy_mj: np.ndarray | None = None
    source: str = ""
    #: rows that carry an ``error`` and no latency (a model that failed to measure or
    #: estimate): ``(arch_str, error)``; they are not rows of the table
    failed: tuple[tuple[str, str], ...] = ()
    #: rows left out because they name architectures the space lacks (``absent="skip"``)
    absent: tuple[str, ...] = ()

    def __len__(self) -> int:
        return len(self.arch_index)

    def lookup(self) -> dict[str, int]:
        return {s: i for i, s in enumerate(self.arch_str)}

    def subset(self, rows: Sequence[int] | np.ndarray) -> LatencyTable:
        rows = np.asarray(rows, dtype=np.int64)
        return LatencyTable(self.arch_index[rows], tuple(self.arch_str[i] for i in rows),
                            self.latency_ms[rows],
                            None if self.energy_mj is None else self.energy_mj[rows],
                            self.source)

    @property
    def indexed(self) -> bool:
        """Whether every row carries a standard index."""
        return bool(len(self) and (self.arch_index >= 0).all())

    @property
    def device(self) -> str:
        """Device name from the file name (``nb201_pixel3.csv`` -> ``pixel3``)."""
        stem = Path(self.source).stem if self.source else "table"
        return stem[len("nb201_"):] if stem.startswith("nb201_") else stem


def sidecar_path(path: str | Path) -> Path:
    """Where a table's sidecar lives: ``truth.csv`` -> ``truth.fingerprint.json``."""
    return Path(path).with_suffix(".fingerprint.json")


def read_sidecar(path: str | Path) -> dict:
    """A table's ``<stem>.fingerprint.json`` sidecar (what ``measure-space`` writes beside
    it: device, space, dataset, batch, ...), or {}; never an error."""
    import json

    try:
        side = sidecar_path(path)  # ValueError for a path with no name ('', '.')
        if not side.is_file() or side.stat().st_size > 1 << 20:
            return {}
        doc = json.loads(side.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError):  # RecursionError: nested thousands deep
        return {}
    return doc if isinstance(doc, dict) else {}


# Equal whole-millisecond figures on this many networks before a table counts as the target's.
INTEGER_SHARED = 20


def holds_figures_of(table: LatencyTable, target: LatencyTable, min_shared: int | None = None
                     ) -> bool:
    """Whether ``table`` holds ``target``'s latencies on the networks both list: all of the
    target's (``min_shared`` None), or at least ``min_shared`` of them (never fewer than 2),
    nearly all (90%) within 0.1%. A copy saved with fewer digits passes; two measurements of
    a device differ by 1-5% on most cells. The target's own table under another file name."""
    pos = table.lookup()
    shared = [(i, pos[a]) for i, a in enumerate(target.arch_str) if a in pos]
    need = len(target) if min_shared is None else min_shared
    mine, theirs = (list(x) for x in zip(*shared, strict=True)) if shared else ([], [])
    vals = target.latency_ms[mine]
    if np.all(vals == np.round(vals)):
        # whole milliseconds (a phone's table): two devices agree on ~8% of cells, so a
        # handful of equal figures is chance; it takes INTEGER_SHARED of them
        need = max(need, INTEGER_SHARED)
    if len(shared) < max(need, 2):
        return False
    close = np.isclose(table.latency_ms[theirs], vals, rtol=1e-3, atol=0.0)
    return bool(np.mean(close) >= 0.9)


def sidecar_device(path: str | Path) -> str:
    """The ``device`` a table's sidecar names (the machine it was measured on), or ''."""
    device = read_sidecar(path).get("device")
    return device if isinstance(device, str) else ""


def sidecar_mismatch(path: str | Path, dataset: str | None, batch: int) -> str:
    """A warning when the table's sidecar says it was measured at another dataset or batch
    than the networks a command is about to build for it, else ''."""
    doc = read_sidecar(path)
    diff = [f"{what} {theirs} (here {mine})" for what, theirs, mine in
            (("dataset", doc.get("dataset"), dataset), ("batch", doc.get("batch"), batch))
            if what in doc and theirs is not None and mine is not None and theirs != mine]
    if not diff:
        return ""
    return (f"warning: {path}: its sidecar says it was measured at {', '.join(diff)}; give "
            "--dataset/--batch as measured, or the networks scored are not the ones timed")


# The largest latency (ms) or energy (mJ) a table may hold: beyond it fits overflow.
MAX_VALUE = 1e11
# The smallest non-zero value: below it ratios and logs of it overflow.
MIN_VALUE = 1e-12


def _number(value: str, path: str, line: int, fld: str, *, positive: bool) -> float:
    if value is None:  # csv.DictReader's filler for a row shorter than the header
        raise TableError(f"{path}:{line}: field {fld!r} is missing: the row has fewer fields "
                         "than the header")
    try:
        if "_" in value:  # Python's digit grouping (1_000): no CSV writer means it
            raise ValueError(value)
        x = float(value)
    except (TypeError, ValueError):
        raise TableError(f"{path}:{line}: field {fld!r} is not a number: "
                         f"{short_repr(value)}") from None
    if not math.isfinite(x):
        raise TableError(f"{path}:{line}: field {fld!r} is {value!r}; every latency must be a "
                         "finite number (drop or re-measure that cell)")
    if positive and x <= 0:
        what, one = ("energies", "energy") if "energy" in fld else ("latencies", "latency")
        raise TableError(f"{path}:{line}: field {fld!r} is {x}, but {what} must be > 0 "
                         f"(a zero or negative {one} is a measurement error)")
    if x and abs(x) < MIN_VALUE:
        raise TableError(f"{path}:{line}: field {fld!r} is {x:g}, less than {MIN_VALUE:g} "
                         "(a femtosecond in ms): not a measurement; check the units and that "
                         "column")
    if abs(x) > MAX_VALUE:
        raise TableError(f"{path}:{line}: field {fld!r} is {x:g}, more than {MAX_VALUE:g} "
                         "(over a year in ms): not a measurement; check the units and that "
                         "column")
    return x


DUPLICATE_POLICIES = ("error", "mean", "first")
# The most a table may be when it comes through a pipe (a regular file's size is known).
PIPE_LIMIT = 256 << 20


def _csv(what: str) -> str:
    return what if what.endswith("CSV") else f"{what} CSV file"


def _article(text: str) -> str:
    return ("an " if text[:1].lower() in "aeiou" else "a ") + text


def iter_csv(path: str, what: str = "table", required: Sequence[str] = ()
             ) -> tuple[list[str], list[tuple[int, dict]]]:
    """``(header, rows)`` of a CSV; rows are ``(line, dict)``. Bad bytes name file and line.

    ``required`` columns are checked before any row is read (a file that is not a table
    at all is reported as such, not by its first odd row).
    """
    if not str(path).strip():
        raise TableError(f"an empty path given for the {_csv(what)}")
    try:
        data = read_capped(path, PIPE_LIMIT, _article(_csv(what)), TableError)
    except IsADirectoryError:
        raise TableError(f"{path}: is a directory, not {_article(_csv(what))}") from None
    except OSError as exc:
        raise TableError(f"{path}: cannot read {what}: {exc.strerror}") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[:exc.start].count(b"\n") + 1
        raise TableError(f"{path}:{line}: not UTF-8 text ({exc.reason} at byte {exc.start}); "
                         f"save the {what} as UTF-8 CSV") from None
    if "\x00" in text:
        raise TableError(f"{path}: contains NUL bytes; not a CSV {what}")
    reader = csv.DictReader(io.StringIO(text, newline=""))
    try:
        header = [(h or "").strip() for h in (reader.fieldnames or [])]
        reader.fieldnames = header
        twice = sorted({h for h in header if h and header.count(h) > 1})
        if twice:
            raise TableError(f"{path}:1: column {twice[0]!r} appears {header.count(twice[0])} "
                             f"times in the header; keep one")
        missing = [c for c in required if c not in header]
        if missing:
            sep = next((f"{name} ({c!r})" for c, name in ((";", "semicolons"),
                                                           ("\t", "tabs"))
                        if len(header) == 1 and c in header[0]), None)
            why = (f"; its header is split by {sep}, and a latency table is comma-separated"
                   if sep else "")
            raise TableError(f"{path}: missing column(s) {', '.join(missing)}; a latency table "
                             f"has the header {','.join(REQUIRED)}[,energy_mj] (found "
                             f"{len([h for h in header if h])} other column(s)){why}")
        rows = []
        for line, row in enumerate(reader, start=2):
            if None in row:
                raise TableError(f"{path}:{line}: more fields than the header has "
                                 f"({len(header)}); check for an unquoted comma")
            rows.append((line, row))
        if rows and None in rows[-1][1].values() and not text.endswith(("\n", "\r")):
            have = sum(v is not None for v in rows[-1][1].values())
            raise TableError(f"{path}:{rows[-1][0]}: the last line is cut short ({have} of "
                             f"{len(header)} fields, no line end): the file looks truncated "
                             "(a full disk, an interrupted copy?); nothing was read")
    except csv.Error as exc:
        raise TableError(f"{path}: malformed CSV: {exc}") from None
    return header, rows


def _resolve_space(space):
    if space is None or not isinstance(space, str):
        return space
    from costmodels.spaces import get_space

    return get_space(space)


_NOTED_ABSENT: set[tuple[str, int]] = set()


def read_table(path: str | Path, *, duplicates: str = "error", space="nb201",
               check_space: bool = True, absent: str = "error") -> LatencyTable:
    """Read and validate a latency table.

    ``space`` is a :class:`~costmodels.spaces.SearchSpace` or its spec (``None``:
    arch strings taken as they are). Every ``arch_str`` is parsed into the
    space's canonical form; with ``check_space`` a given ``arch_index`` must be
    the space's standard index of that string, and may be empty for a space
    without one. ``duplicates``: ``"error"`` (default), ``"mean"`` (average the
    latencies of a repeated ``arch_str``) or ``"first"``. Rows with an ``error`` column
    and no latency (what ``estimate`` and ``measure-space`` write for a model that
    failed) are kept aside in :attr:`LatencyTable.failed`, not read as rows.
    ``absent="skip"``: a row naming an architecture the space lacks (a model that is not in
    the folder: another device's table, or a truth measured before a file was removed) is
    left out, listed in :attr:`LatencyTable.absent` and named in one note; ``"error"``
    refuses the table.
    """
    path = str(path)
    if duplicates not in DUPLICATE_POLICIES:
        raise TableError(f"duplicates must be one of {', '.join(DUPLICATE_POLICIES)}, not "
                         f"{duplicates!r}")
    sp = _resolve_space(space)
    header, body = iter_csv(path, "latency table", required=("arch_str", "latency_ms"))
    need = ("arch_str", "latency_ms")
    missing = [c for c in need if c not in header]
    if missing:
        raise TableError(f"{path}: missing column(s) {', '.join(missing)}; a latency table "
                         f"has the header {','.join(REQUIRED)}[,energy_mj] (found "
                         f"{','.join(h for h in header if h) or 'nothing'})")
    has_energy = "energy_mj" in header
    rows: dict[str, list[tuple[int, float, float]]] = {}
    failed: list[tuple[str, str]] = []
    skipped: list[str] = []
    first_absent = ""
    for line, row in body:
        s = (row.get("arch_str") or "").strip()
        if (row.get("error") or "").strip() and not (row.get("latency_ms") or "").strip():
            failed.append((s, row["error"].strip()))
            continue
        if sp is not None:
            try:
                s = sp.parse(s)
            except UnknownArchitecture as exc:
                shown = short_repr(s)
                if shown != repr(s):
                    shown = shown[:-1] + "; an unterminated quote?)"
                why = f"{path}:{line}: field 'arch_str': {exc.reason} (got {shown})"
                if exc.absent and absent == "skip":
                    skipped.append(s)
                    first_absent = first_absent or why
                    continue
                raise TableError(why) from None
        elif not s:
            raise TableError(f"{path}:{line}: field 'arch_str' is empty")
        raw_idx = (row.get("arch_index") or "").strip()
        idx = -1
        if raw_idx:
            try:
                idx = int(raw_idx) if len(raw_idx) <= 18 else None  # fits an int64
            except ValueError:
                raise TableError(f"{path}:{line}: field 'arch_index' is not an integer: "
                                 f"{raw_idx[:40]!r}") from None
            if idx is None:
                raise TableError(f"{path}:{line}: field 'arch_index' has {len(raw_idx)} digits; "
                                 "no space has such an index")
        if sp is not None and check_space:
            std = sp.index(s)
            if raw_idx and std is not None and std != idx and sp.strict_index:
                raise TableError(f"{path}:{line}: arch_index {idx} does not match arch_str; "
                                 f"the standard index of that architecture is {std}")
            if std is not None:
                idx = std
            elif raw_idx:
                raise TableError(f"{path}:{line}: arch_index {idx} given, but space "
                                 f"{sp.spec!r} has no standard index; leave it empty")
        lat = _number(row.get("latency_ms"), path, line, "latency_ms", positive=True)
        en = (_number(row["energy_mj"], path, line, "energy_mj", positive=True)
              if has_energy and (row.get("energy_mj") or "") != "" else math.nan)
        if s in rows and duplicates == "error":
            raise DuplicateRowError(f"{path}:{line}: architecture {s} appears twice",
                                    "pass --duplicates mean (average repeats) or "
                                    "--duplicates first")
        rows.setdefault(s, []).append((idx, lat, en))
    if skipped and not rows:  # no row is this folder's: a table of another space
        raise TableError(first_absent)
    if skipped and (path, len(skipped)) not in _NOTED_ABSENT:
        _NOTED_ABSENT.add((path, len(skipped)))
        import sys

        print(f"note: {path}: left out {len(skipped)} row(s) naming models that are not in "
              f"{sp.spec} (first: {short_repr(skipped[0])})", file=sys.stderr)
    if not rows:
        why = f" ({len(failed)} rows are failures: first {failed[0][0]}: {failed[0][1]})" \
            if failed else ""
        raise TableError(f"{path}: the table has no rows with a latency{why}")
    keys = list(rows)
    if all(rows[k][0][0] >= 0 for k in keys):
        keys.sort(key=lambda k: rows[k][0][0])
    lat_arr, en_arr = [], []
    for k in keys:
        vals = rows[k][:1] if duplicates == "first" else rows[k]
        lat_arr.append(float(np.mean([v[1] for v in vals])))
        en_arr.append(float(np.mean([v[2] for v in vals])))
    energy = np.array(en_arr) if has_energy else None
    return LatencyTable(np.array([rows[k][0][0] for k in keys], dtype=np.int64), tuple(keys),
                        np.array(lat_arr), energy, path, tuple(failed), tuple(skipped))


@contextlib.contextmanager
def atomic_output(path: str | Path, mode: str = "w", **open_kw: Any) -> Iterator[Any]:
    """Open a file to write ``path`` whole or not at all: the data goes to a temporary file
    beside the target, renamed over it when the block ends without an error (a full disk,
    a Ctrl-C leave the old file, or none, never a truncated one). A symbolic link is
    written through (its target is replaced, the link kept). Yields the open file."""
    import os
    import secrets

    path = Path(path)
    target = path.resolve() if path.is_symlink() else path
    # a short name: the target's own may already be near the 255-byte limit
    tmp = target.with_name(f".costmodels-{os.getpid()}-{secrets.token_hex(4)}.tmp")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)  # as every command's outputs do
        fh = open(tmp, mode, **open_kw)  # noqa: SIM115 - closed below
    except OSError as exc:  # named by the file asked for, not the temporary one
        raise OSError(exc.errno, exc.strerror, str(path)) from None
    try:
        with fh:
            yield fh
        try:
            os.replace(tmp, target)
        except OSError as exc:
            raise OSError(exc.errno, exc.strerror, str(path)) from None
    finally:
        tmp.unlink(missing_ok=True)


def write_table(path: str | Path, arch_index: Iterable[int | None], arch_strs: Iterable[str],
                latency_ms: Iterable[float], energy_mj: Iterable[float | None] | None = None,
                extra: Mapping[str, Sequence[Any]] | None = None) -> None:
    """Write a latency table; ``energy_mj`` column only when given.

    An ``arch_index`` of ``None`` or < 0 is written empty (a space without a
    standard index). ``extra`` adds columns after the standard ones (e.g. an
    ``error`` column for rows that could not be estimated).
    """
    path = Path(path)
    if path.parent and not path.parent.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
    extra = dict(extra or {})
    # nothing is left behind by a value that fails mid-way or a target that is a folder
    with atomic_output(path, "w", newline="", encoding="utf-8") as fh:
        _write_rows(fh, arch_index, arch_strs, latency_ms, energy_mj, extra)


def _write_rows(fh: Any, arch_index, arch_strs, latency_ms, energy_mj, extra) -> None:
    w = csv.writer(fh)
    cols = list(REQUIRED) + (["energy_mj"] if energy_mj is not None else []) + list(extra)
    w.writerow(cols)
    energies = list(energy_mj) if energy_mj is not None else None
    for r, (i, s, lat) in enumerate(zip(arch_index, arch_strs, latency_ms, strict=False)):
        idx = "" if i is None or int(i) < 0 else int(i)
        row = [idx, s, "" if lat is None or not math.isfinite(lat) else repr(float(lat))]
        if energies is not None:
            en = energies[r]
            row.append("" if en is None or not math.isfinite(en) else repr(float(en)))
        row += ["" if v[r] is None else v[r] for v in extra.values()]
        w.writerow(row)


class TableModel(BaseCostModel):
    """A latency table as a backend: answers for the architectures it lists (any space).

    A network it does not list raises :class:`~costmodels.errors.NotCovered` naming
    it (the harness reports that as partial coverage).
    """

    def __init__(self, path: str, duplicates: str = "error") -> None:
        self.path = path
        self.duplicates = duplicates
        self.table_ = read_table(path, duplicates=duplicates, space=None)
        self.name = f"table:{Path(path).stem}"
        self._row = self.table_.lookup()

    def estimate(self, net: Network) -> Estimate:
        s = net.meta.get("arch_str")
        if s is None or s not in self._row:
            raise NotCovered(f"{self.path} has no row for {net.name} (arch_str {s})")
        i = self._row[s]
        en = None if self.table_.energy_mj is None else float(self.table_.energy_mj[i])
        if en is not None and math.isnan(en):
            en = None
        return Estimate(float(self.table_.latency_ms[i]), en,
                        meta={"backend": self.name, "source": self.path})


def table_from_spec(arg: str | None) -> TableModel:
    """``table:PATH.csv[?duplicates=mean]``."""
    if not arg:
        raise UnknownBackend("the table backend needs a path: table:PATH.csv (or just PATH.csv)")
    path, _, query = arg.partition("?")
    opts = dict(kv.partition("=")[::2] for kv in query.split("&") if kv)
    unknown = set(opts) - {"duplicates"}
    if unknown:
        raise UnknownBackend(f"table:{arg}: unknown option(s) {', '.join(sorted(unknown))}; "
                             "the only option is ?duplicates=error|mean|first")
    return TableModel(path, duplicates=opts.get("duplicates", "error"))
