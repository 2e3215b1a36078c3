"""Latency tables: round trip, and bad tables refused with file, line and field named."""

from __future__ import annotations

import math

import numpy as np
import pytest

from costmodels.errors import TableError
from costmodels.spaces import nb201
from costmodels.tables import TableModel, read_table, write_table

HEADER = "arch_index,arch_str,latency_ms\n"


def _write(tmp_path, body, header=HEADER, name="t.csv"):
    p = tmp_path / name
    p.write_text(header + body)
    return p


def _row(i, lat):
    return f"{i},{nb201.SPACE[i]},{lat}\n"


def test_round_trip_with_energy(tmp_path):
    p = tmp_path / "out.csv"
    write_table(p, [5, 3], [nb201.SPACE[5], nb201.SPACE[3]], [1.5, 2.25], [0.1, None])
    t = read_table(p)
    assert list(t.arch_index) == [3, 5] and list(t.latency_ms) == [2.25, 1.5]
    assert math.isnan(t.energy_mj[0]) and t.energy_mj[1] == 0.1


def test_reads_reference_table(refdata):
    t = read_table(refdata / "nb201_pixel3.csv")
    assert len(t) == 15625 and t.device == "pixel3"


@pytest.mark.parametrize("body, match", [
    (_row(1, "nan"), r"t.csv:2: field 'latency_ms' is 'nan'"),
    (_row(1, "-3"), r"t.csv:2: field 'latency_ms' is -3.0"),
    (_row(1, "0"), r"must be > 0"),
    (_row(1, "fast"), r"'latency_ms' is not a number"),
    (_row(1, "1") + _row(1, "2"), r"t.csv:3: arch_index 1 appears twice"),
    (f"7,{nb201.SPACE[8]},1.0\n", r"arch_index 7 does not match arch_str.*is 8"),
    ("1,|bogus~0|,1.0\n", r"t.csv:2: field 'arch_str'"),
    ("", r"no rows"),
])
def test_bad_rows(tmp_path, body, match):
    with pytest.raises(TableError, match=match):
        read_table(_write(tmp_path, body))


def test_missing_column_and_missing_file(tmp_path):
    with pytest.raises(TableError, match="missing column.*latency_ms"):
        read_table(_write(tmp_path, "1,x\n", header="arch_index,arch_str\n"))
    with pytest.raises(TableError, match="cannot open"):
        read_table(tmp_path / "nope.csv")


def test_duplicate_policy_mean(tmp_path):
    p = _write(tmp_path, _row(1, "1") + _row(1, "3"))
    assert read_table(p, duplicates="mean").latency_ms[0] == 2.0
    assert read_table(p, duplicates="first").latency_ms[0] == 1.0


def test_table_backend(tmp_path):
    p = _write(tmp_path, _row(1, "4.0"))
    model = TableModel(str(p))
    assert model.estimate(nb201.build_network(1)).latency_ms == 4.0
    with pytest.raises(KeyError, match="no row"):
        model.estimate(nb201.build_network(2))
    assert np.isfinite(read_table(p).latency_ms).all()
