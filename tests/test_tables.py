"""Latency tables: round trip, and bad tables refused with file, line and field named."""

from __future__ import annotations

import math

import numpy as np
import pytest

from costmodels.errors import NotCovered, TableError
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
    (_row(1, "1") + _row(1, "2"), r"t.csv:3: architecture .* appears twice"),
    (f"7,{nb201.SPACE[8]},1.0\n", r"arch_index 7 does not match arch_str.*is 8"),
    ("1,|bogus~0|,1.0\n", r"t.csv:2: field 'arch_str'"),
    ("", r"no rows"),
    (_row(1, "1e308"), r"t.csv:2: field 'latency_ms' is 1e\+308, more than"),
])
def test_bad_rows(tmp_path, body, match):
    with pytest.raises(TableError, match=match):
        read_table(_write(tmp_path, body))


def test_a_column_twice_in_the_header_is_refused(tmp_path):
    """csv.DictReader would keep the last copy silently (a constant 99 for every cell)."""
    p = _write(tmp_path, f"1,{nb201.SPACE[1]},1.0,99\n",
               header="arch_index,arch_str,latency_ms,latency_ms\n")
    with pytest.raises(TableError, match=r"t.csv:1: column 'latency_ms' appears 2 times"):
        read_table(p)


def test_missing_column_and_missing_file(tmp_path):
    with pytest.raises(TableError, match="missing column.*latency_ms"):
        read_table(_write(tmp_path, "1,x\n", header="arch_index,arch_str\n"))
    with pytest.raises(TableError, match="nope.csv: cannot read latency table: No such file"):
        read_table(tmp_path / "nope.csv")
    for sep, name in ((";", "semicolons"), ("\t", "tabs")):
        body = sep.join(["0", nb201.SPACE[0], "1.5"]) + "\n"
        with pytest.raises(TableError, match=f"split by {name}.*comma-separated"):
            read_table(_write(tmp_path, body, header=sep.join(
                ["arch_index", "arch_str", "latency_ms"]) + "\n"))


def test_utf8_bom_accepted_and_bad_bytes_named(tmp_path):
    good = _write(tmp_path, _row(1, "2.5"))
    bom = tmp_path / "bom.csv"
    bom.write_bytes(b"\xef\xbb\xbf" + good.read_bytes())
    assert read_table(bom).latency_ms[0] == 2.5
    bad = tmp_path / "latin1.csv"
    bad.write_bytes(good.read_bytes() + b"2,caf\xe9,1.0\n")
    with pytest.raises(TableError, match=r"latin1.csv:3: not UTF-8"):
        read_table(bad)


def test_space_without_index_leaves_arch_index_empty(tmp_path):
    from costmodels.spaces.models import ModelsSpace

    folder = tmp_path / "zoo"
    folder.mkdir()
    for name in ("b", "a"):
        (folder / f"{name}.onnx").write_bytes(nb201.build_onnx(1).SerializeToString())
    space = ModelsSpace(folder)
    out = tmp_path / "m.csv"
    write_table(out, [None, None], ["a", "b"], [1.0, 2.0])
    assert out.read_text().splitlines()[1].startswith(",a,")
    t = read_table(out, space=space)
    assert t.arch_str == ("a", "b") and list(t.arch_index) == [0, 1]
    with pytest.raises(TableError, match="no c.onnx"):
        write_table(out, [None], ["c"], [1.0])
        read_table(out, space=space)



def test_a_folder_names_the_files_it_skips_once(tmp_path, capsys):
    """A link out of the folder is not a model of it, and the user is told which."""
    from costmodels.spaces.models import ModelsSpace

    folder = tmp_path / "zoo"
    folder.mkdir()
    (tmp_path / "outside.onnx").write_bytes(nb201.build_onnx(1).SerializeToString())
    (folder / "a.onnx").write_bytes(nb201.build_onnx(1).SerializeToString())
    (folder / "link.onnx").symlink_to(tmp_path / "outside.onnx")
    assert list(ModelsSpace(folder).archs()) == ["a"]
    assert "link.onnx" in capsys.readouterr().err
    ModelsSpace(folder)
    assert capsys.readouterr().err == ""


def test_a_model_name_with_an_edge_space_is_skipped_by_name(tmp_path, capsys):
    """' lead.onnx' could be listed but not named in a table (CSV fields are stripped): it
    is skipped with a warning that says to rename it."""
    from costmodels.spaces.models import ModelsSpace

    folder = tmp_path / "zoo"
    folder.mkdir()
    for name in (" lead", "ok"):
        (folder / f"{name}.onnx").write_bytes(nb201.build_onnx(1).SerializeToString())
    assert list(ModelsSpace(folder).archs()) == ["ok"]
    assert "' lead.onnx'" in capsys.readouterr().err


def test_archs_output_reads_back_with_a_comma_in_a_model_name(tmp_path, capsys):
    from costmodels.cli import main

    folder = tmp_path / "zoo"
    folder.mkdir()
    (folder / 'a,b"c.onnx').write_bytes(nb201.build_onnx(1).SerializeToString())
    assert main(["archs", "--space", f"models:{folder}"]) == 0
    listing = tmp_path / "archs.csv"
    listing.write_text(capsys.readouterr().out)
    out = tmp_path / "o.csv"
    assert main(["estimate", "flops", "--space", f"models:{folder}", "--archs", str(listing),
                 "-o", str(out)]) == 0
    assert 'a,b"c' in read_table(out, space=f"models:{folder}").arch_str

def test_a_truth_row_of_a_model_no_longer_in_the_folder_is_named_not_scored(tmp_path, capsys):
    """compare on a folder whose truth lists a removed model: that row is named (a note and
    the report's warnings) and the others are scored; an arch list naming it is refused."""
    from costmodels.cli import main

    folder = tmp_path / "zoo"
    folder.mkdir()
    for i in (1, 2, 3, 4):
        (folder / f"m{i}.onnx").write_bytes(nb201.build_onnx(i * 1000).SerializeToString())
    truth = tmp_path / "truth.csv"
    truth.write_text("arch_index,arch_str,latency_ms\n,m1,1.0\n,m2,2.0\n,m3,3.0\n,m4,4.0\n"
                     ",gone,5.0\n")
    assert main(["compare", "flops", "--space", f"models:{folder}", "--truth", str(truth),
                 "-o", str(tmp_path / "rep")]) == 0
    err = capsys.readouterr().err
    assert "left out 1 row(s) naming models that are not in" in err and "'gone'" in err
    report = (tmp_path / "rep" / "report.md").read_text()
    assert "1 truth row(s) name models that are not in" in report
    assert "4 cells scored" in report or "4/4" in report
    with pytest.raises(Exception, match="no gone.onnx"):
        read_table(truth, space=f"models:{folder}")  # the default: refused


def test_duplicate_policy_mean(tmp_path):
    p = _write(tmp_path, _row(1, "1") + _row(1, "3"))
    assert read_table(p, duplicates="mean").latency_ms[0] == 2.0
    assert read_table(p, duplicates="first").latency_ms[0] == 1.0


def test_table_backend(tmp_path):
    p = _write(tmp_path, _row(1, "4.0"))
    model = TableModel(str(p))
    assert model.estimate(nb201.build_network(1)).latency_ms == 4.0
    with pytest.raises(NotCovered, match="no row"):
        model.estimate(nb201.build_network(2))
    assert np.isfinite(read_table(p).latency_ms).all()


def test_sidecar_mismatch_names_dataset_and_batch(tmp_path):
    import json

    from costmodels.tables import sidecar_mismatch

    (tmp_path / "t.fingerprint.json").write_text(json.dumps({"dataset": "cifar10",
                                                             "batch": 1}))
    assert sidecar_mismatch(tmp_path / "t.csv", "cifar10", 1) == ""
    note = sidecar_mismatch(tmp_path / "t.csv", "cifar100", 4)
    assert "dataset cifar10 (here cifar100)" in note and "batch 1 (here 4)" in note
    assert sidecar_mismatch(tmp_path / "none.csv", "cifar100", 4) == ""  # no sidecar
    (tmp_path / "m.fingerprint.json").write_text(json.dumps({"dataset": None, "batch": 1}))
    assert sidecar_mismatch(tmp_path / "m.csv", None, 1) == ""  # a models:DIR table


def test_a_table_through_a_pipe_is_read_a_device_refused(monkeypatch):
    """``--truth /dev/stdin`` fed by a shell works; /dev/zero (it never ends) is refused
    before it is read, and a pipe that gives more than a table holds is cut off."""
    import os

    from costmodels import tables
    from costmodels.errors import TableError
    from costmodels.tables import iter_csv

    def pipe(data: bytes) -> str:
        r, w = os.pipe()
        os.write(w, data)
        os.close(w)
        return f"/dev/fd/{r}"

    cols, rows = iter_csv(pipe(b"arch_index,latency_ms\n3,1.5\n"), "latency table")
    assert cols == ["arch_index", "latency_ms"] and rows == [(2, {"arch_index": "3",
                                                                  "latency_ms": "1.5"})]
    with pytest.raises(TableError, match="/dev/zero: is a device, not a latency table CSV"):
        iter_csv("/dev/zero", "latency table")
    monkeypatch.setattr(tables, "PIPE_LIMIT", 16)
    with pytest.raises(TableError, match="a pipe that gave more than"):
        iter_csv(pipe(b"arch_index,latency_ms\n" * 4), "latency table")


def test_holds_figures_of_needs_more_equal_cells_in_whole_milliseconds(tmp_path):
    """Two phones' integer-ms tables agree on ~8% of cells: five equal whole-ms figures are
    chance, not the target's table under another name; five equal float figures are not."""
    from costmodels.tables import INTEGER_SHARED, LatencyTable, holds_figures_of

    def table(values, n=None):
        n = len(values) if n is None else n
        idx = np.arange(n)
        return LatencyTable(idx, tuple(nb201.SPACE[i] for i in idx), np.asarray(values, float))

    whole = [5.0, 7.0, 12.0, 21.0, 30.0]
    assert not holds_figures_of(table(whole + [9.0] * 30), table(whole))
    assert holds_figures_of(table([1.25, 2.5, 3.75, 5.125, 6.5] + [9.0] * 30),
                            table([1.25, 2.5, 3.75, 5.125, 6.5]))
    many = [float(v) for v in range(3, 3 + INTEGER_SHARED)]
    assert holds_figures_of(table(many + [1.0]), table(many))
    assert not holds_figures_of(table([v + 1 for v in many]), table(many))
    floats = [1.23456, 2.34567, 3.45678, 4.56789, 5.67891]
    assert holds_figures_of(table([round(v, 3) for v in floats]), table(floats))  # rounded copy
    assert not holds_figures_of(table([v * 1.01 for v in floats]), table(floats))
