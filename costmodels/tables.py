"""Latency tables: ``arch_index,arch_str,latency_ms[,energy_mj]`` CSV files.

The form in which NAS-Bench-201 latencies measured elsewhere come in and the
form ``costmodels estimate`` writes. Reading validates every row and names the
file, line and field at fault. Duplicate cells: by default an error; with
``duplicates="mean"`` or ``"first"`` they are merged (documented policy).
"""

from __future__ import annotations

import csv
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from costmodels.errors import TableError, UnknownArchitecture
from costmodels.interface import BaseCostModel, Estimate
from costmodels.network import Network

REQUIRED = ("arch_index", "arch_str", "latency_ms")


@dataclass(frozen=True)
class LatencyTable:
    """Rows of a latency table, sorted by ``arch_index``. Arrays are aligned."""

    arch_index: np.ndarray  # int64
    arch_str: tuple[str, ...]
    latency_ms: np.ndarray  # float64
    energy_mj: np.ndarray | None = None
    source: str = ""

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
    def device(self) -> str:
        """Device name from the file name (``nb201_pixel3.csv`` -> ``pixel3``)."""
        stem = Path(self.source).stem if self.source else "table"
        return stem[len("nb201_"):] if stem.startswith("nb201_") else stem


def _number(value: str, path: str, line: int, fld: str, *, positive: bool) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise TableError(f"{path}:{line}: field {fld!r} is not a number: {value!r}") from None
    if not math.isfinite(x):
        raise TableError(f"{path}:{line}: field {fld!r} is {value!r}; every latency must be a "
                         "finite number (drop or re-measure that cell)")
    if positive and x <= 0:
        raise TableError(f"{path}:{line}: field {fld!r} is {x}, but latencies must be > 0 "
                         "(a zero or negative time is a measurement error)")
    return x


def read_table(path: str | Path, *, duplicates: str = "error", space: str = "nb201",
               check_space: bool = True) -> LatencyTable:
    """Read and validate a latency table.

    Every ``arch_str`` is parsed; with ``check_space`` its ``arch_index`` must be
    the standard index of that string. ``duplicates``: ``"error"`` (default),
    ``"mean"`` (average the latencies of repeated cells) or ``"first"``.
    """
    from costmodels.spaces import nb201

    path = str(path)
    if duplicates not in ("error", "mean", "first"):
        raise ValueError(f"duplicates must be 'error', 'mean' or 'first', not {duplicates!r}")
    try:
        fh = open(path, newline="")
    except OSError as exc:
        raise TableError(f"{path}: cannot open latency table: {exc.strerror}") from None
    with fh:
        reader = csv.DictReader(fh)
        header = reader.fieldnames or []
        missing = [c for c in REQUIRED if c not in header]
        if missing:
            raise TableError(f"{path}: missing column(s) {', '.join(missing)}; a latency table "
                             f"has the header {','.join(REQUIRED)}[,energy_mj] (found "
                             f"{','.join(header) or 'nothing'})")
        has_energy = "energy_mj" in header
        rows: dict[int, list[tuple[str, float, float]]] = {}
        for line, row in enumerate(reader, start=2):
            s = (row.get("arch_str") or "").strip()
            try:
                ops = nb201.parse_arch(s)
            except UnknownArchitecture as exc:
                raise TableError(f"{path}:{line}: field 'arch_str': {exc.reason} "
                                 f"(got {s!r})") from None
            try:
                idx = int(row["arch_index"])
            except (TypeError, ValueError):
                raise TableError(f"{path}:{line}: field 'arch_index' is not an integer: "
                                 f"{row['arch_index']!r}") from None
            if check_space and nb201.SPACE.index(ops) != idx:
                raise TableError(f"{path}:{line}: arch_index {idx} does not match arch_str; the "
                                 f"standard NAS-Bench-201 index of that cell is "
                                 f"{nb201.SPACE.index(ops)}")
            lat = _number(row["latency_ms"], path, line, "latency_ms", positive=True)
            en = (_number(row["energy_mj"], path, line, "energy_mj", positive=True)
                  if has_energy and row.get("energy_mj", "") != "" else math.nan)
            if idx in rows and duplicates == "error":
                raise TableError(f"{path}:{line}: arch_index {idx} appears twice; pass "
                                 "duplicates='mean' (--duplicates mean) to average repeats")
            rows.setdefault(idx, []).append((s, lat, en))
    if not rows:
        raise TableError(f"{path}: the table has no rows")
    order = sorted(rows)
    pick = (lambda v: v[0]) if duplicates == "first" else None
    lat_arr, en_arr = [], []
    for i in order:
        vals = rows[i]
        if pick:
            vals = [pick(vals)]
        lat_arr.append(float(np.mean([v[1] for v in vals])))
        en_arr.append(float(np.mean([v[2] for v in vals])))
    energy = np.array(en_arr) if has_energy else None
    return LatencyTable(np.array(order, dtype=np.int64), tuple(rows[i][0][0] for i in order),
                        np.array(lat_arr), energy, path)


def write_table(path: str | Path, arch_index: Iterable[int], arch_strs: Iterable[str],
                latency_ms: Iterable[float], energy_mj: Iterable[float | None] | None = None
                ) -> None:
    """Write a latency table; ``energy_mj`` column only when given."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    with open(tmp, "w", newline="") as fh:
        w = csv.writer(fh)
        cols = list(REQUIRED) + (["energy_mj"] if energy_mj is not None else [])
        w.writerow(cols)
        energies = energy_mj if energy_mj is not None else iter(lambda: None, 0)
        for i, s, lat, en in zip(arch_index, arch_strs, latency_ms, energies, strict=False):
            row = [int(i), s, repr(float(lat))]
            if energy_mj is not None:
                row.append("" if en is None else repr(float(en)))
            w.writerow(row)
    tmp.replace(path)


class TableModel(BaseCostModel):
    """A latency table as a backend: answers for the NAS-Bench-201 cells it lists.

    A network it does not list raises ``KeyError`` naming the cell (the harness
    reports that as partial coverage).
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.table_ = read_table(path, duplicates="mean")
        self.name = f"table:{Path(path).stem}"
        self._row = self.table_.lookup()

    def estimate(self, net: Network) -> Estimate:
        s = net.meta.get("arch_str")
        if s is None or s not in self._row:
            raise KeyError(f"{self.path} has no row for {net.name} ({s})")
        i = self._row[s]
        en = None if self.table_.energy_mj is None else float(self.table_.energy_mj[i])
        if en is not None and math.isnan(en):
            en = None
        return Estimate(float(self.table_.latency_ms[i]), en,
                        meta={"backend": self.name, "source": self.path})


def table_from_spec(arg: str | None) -> TableModel:
    if not arg:
        raise ValueError("the table backend needs a path: table:PATH.csv (or just PATH.csv)")
    return TableModel(arg)
