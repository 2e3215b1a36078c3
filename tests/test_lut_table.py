"""The LUT file and the LookupTable model, without measuring anything (fast)."""

from __future__ import annotations

import math
import os
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from costmodels.errors import MissingKernel, ModelFileError
from costmodels.fusion import kernels, load_rules
from costmodels.spaces import nb201
from measure.lut.model import LookupTable, from_spec
from measure.lut.table import (
    CalibrationPoint,
    Entry,
    LutFile,
    export_csv,
    merge_entries,
    merge_luts,
    read_csv,
)

ARCHS = ("|nor_conv_3x3~0|+|skip_connect~0|avg_pool_3x3~1|+|none~0|nor_conv_1x1~1|none~2|",
         "|none~0|+|none~0|none~1|+|none~0|nor_conv_3x3~1|nor_conv_3x3~2|")


def fake_value(text: str) -> float:
    """A deterministic, key-dependent time in ms."""
    return 0.001 + (sum(map(ord, text)) % 97) / 10000


def make_lut(path, archs=ARCHS, drop: set[str] = frozenset(), runtime="ort",
             cpu="Test CPU") -> tuple[str, set[str]]:
    rules = load_rules("ort")
    keys = {k.text for a in archs for k in kernels(nb201.build_network(a), rules)}
    with LutFile.create(path, runtime, rules.doc, rules.hash,
                        {"cpu_model": cpu, "cores": 2}, {}) as lut:
        for t in sorted(keys - set(drop)):
            lut.put(Entry(t, t.split("|")[0], median_ms=fake_value(t), p10_ms=0.0009,
                          p90_ms=0.002, cv=0.05, count=100))
    return str(path), keys


def test_sum_of_entries_and_per_kernel_breakdown(tmp_path):
    path, _ = make_lut(tmp_path / "a.sqlite")
    model = LookupTable(path)
    net = nb201.build_network(ARCHS[0])
    est = model.estimate(net)
    ks = kernels(net, load_rules("ort"))
    assert est.latency_ms == pytest.approx(sum(fake_value(k.text) for k in ks))
    assert len(est.per_layer) == len(ks)
    assert est.meta["missing_kernels"] == ()
    [many] = model.estimate_many([net])
    assert many.latency_ms == pytest.approx(est.latency_ms)


def test_missing_kernel_raises_or_is_reported(tmp_path):
    net = nb201.build_network(ARCHS[0])
    gone = kernels(net, load_rules("ort"))[3].text
    path, _ = make_lut(tmp_path / "a.sqlite", drop={gone})
    with pytest.raises(MissingKernel) as err:
        LookupTable(path).estimate(net)
    assert gone in str(err.value) and err.value.keys == [gone]
    assert "\n" not in str(err.value) and "best-effort" in str(err.value)  # the CLI's one line
    with pytest.raises(MissingKernel):
        LookupTable(path).estimate_many([net])
    est = from_spec(f"{path}?best-effort").estimate_many([net])[0]
    assert est.meta["missing_kernels"] == (gone,)
    assert math.isfinite(est.latency_ms) and est.latency_ms > 0
    with pytest.raises(ValueError, match="unknown lut option"):
        from_spec(f"{path}?bogus")


def test_cli_best_effort_names_the_rows_that_miss_kernels(tmp_path, capsys):
    """``estimate lut:PATH?best-effort``: a row's total that leaves kernels out says so in
    its own column (and the warning names the worst row), not only in a global count."""
    from costmodels.cli import main
    from costmodels.tables import read_table

    net = nb201.build_network(ARCHS[0])
    gone = kernels(net, load_rules("ort"))[3].text
    path, _ = make_lut(tmp_path / "a.sqlite", drop={gone})
    out = tmp_path / "o.csv"
    archs = tmp_path / "archs.csv"
    archs.write_text("arch_str\n" + "\n".join(ARCHS[:2]) + "\n")
    assert main(["estimate", f"lut:{path}?best-effort", "--archs", str(archs),
                 "-o", str(out)]) == 0
    rows = out.read_text().splitlines()
    assert rows[0].endswith(",missing_kernels")
    counts = [int(r.rsplit(",", 1)[1]) for r in rows[1:]]
    assert counts[0] >= 1 and len(counts) == 2
    assert "missing_kernels" in capsys.readouterr().err
    assert len(read_table(out)) == 2


def test_space_index_gives_the_same_sums(tmp_path):
    path, _ = make_lut(tmp_path / "a.sqlite")
    rules = load_rules("ort")
    nets = [nb201.build_network(a) for a in ARCHS]
    slow = [e.latency_ms for e in LookupTable(path).estimate_many(nets)]
    keys = sorted({k.text for n in nets for k in kernels(n, rules)})
    counts = np.zeros((nb201.NUM_ARCHS, len(keys)), dtype=np.uint16)
    for n in nets:
        for k in kernels(n, rules):
            counts[n.meta["arch_index"], keys.index(k.text)] += 1
    with LutFile(path) as lut:
        lut.put_index("nb201", "cifar10", 1, rules.hash, keys, counts)
    model = LookupTable(path)
    assert model._space_index("cifar10", 1) is not None
    fast = [e.latency_ms for e in model.estimate_many(nets)]
    assert fast == pytest.approx(slow)


def test_calibration_terms_are_applied(tmp_path):
    import json

    path, _ = make_lut(tmp_path / "a.sqlite")
    with LutFile(path) as lut:
        lut.set_meta("calibration", json.dumps({"intercept_ms": 0.5, "per_kernel_ms": 0.001,
                                                "scale": 1.0}))
    net = nb201.build_network(ARCHS[0])
    bare = from_spec(f"{path}?uncalibrated").estimate(net)
    cal = LookupTable(path).estimate(net)
    assert cal.latency_ms == pytest.approx(bare.latency_ms + 0.5 + 0.001 * bare.meta["kernels"])


@pytest.mark.parametrize("term,value", [("scale", 1e300), ("intercept_ms", 1e300),
                                        ("scale", 0.0)])
def test_calibration_terms_out_of_range_are_refused(tmp_path, term, value):
    """A hand-edited fit (intercept 1e300 gave 1e300 ms per network) is refused by name."""
    import json

    path, _ = make_lut(tmp_path / "a.sqlite")
    cal = {"intercept_ms": 0.5, "per_kernel_ms": 0.001, "scale": 1.0, term: value}
    with LutFile(path) as lut:
        lut.set_meta("calibration", json.dumps(cal))
    with pytest.raises(ModelFileError, match=f"{term} .*outside"):
        LookupTable(path)


@pytest.mark.parametrize("content", [b"", b"garbage, not a database" * 10,
                                     b"SQLite format 3\x00" + b"\x00" * 200])
def test_corrupt_file_is_refused_untouched(tmp_path, content):
    path = tmp_path / "bad.sqlite"
    path.write_bytes(content)
    before = (path.read_bytes(), os.stat(path).st_mtime_ns)
    with pytest.raises(ModelFileError, match="left untouched|not a"):
        LookupTable(str(path))
    with pytest.raises(ModelFileError):
        LutFile(path)
    assert (path.read_bytes(), os.stat(path).st_mtime_ns) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.sqlite"]


def test_foreign_sqlite_and_newer_schema_are_refused(tmp_path):
    other = tmp_path / "other.sqlite"
    con = sqlite3.connect(other)
    con.execute("CREATE TABLE meta (name TEXT, value TEXT)")
    con.execute("INSERT INTO meta VALUES ('format', 'something-else')")
    con.commit()
    con.close()
    before = other.read_bytes()
    with pytest.raises(ModelFileError, match="not a costmodels LUT"):
        LutFile(other)
    assert other.read_bytes() == before
    path, _ = make_lut(tmp_path / "a.sqlite")
    con = sqlite3.connect(path)
    con.execute("UPDATE meta SET value = '99' WHERE key = 'version'")
    con.commit()
    con.close()
    with pytest.raises(ModelFileError, match="schema version 99 is newer"):
        LookupTable(path)
    with pytest.raises(ModelFileError, match="no such LUT"):
        LookupTable(str(tmp_path / "missing.sqlite"))


def test_csv_round_trip(tmp_path):
    path, keys = make_lut(tmp_path / "a.sqlite")
    with LutFile(path, readonly=True) as lut:
        n = export_csv(lut, tmp_path / "a.csv")
        original = {e.key: e for e in lut.entries()}
    assert n == len(keys)
    back = read_csv(tmp_path / "a.csv")
    assert {e.key for e in back} == set(original)
    for e in back:
        o = original[e.key]
        assert (e.median_ms, e.p10_ms, e.p90_ms, e.cv, e.count) == (
            o.median_ms, o.p10_ms, o.p90_ms, o.cv, o.count)
    rules = load_rules("ort")
    with LutFile.create(tmp_path / "b.sqlite", "ort", rules.doc, rules.hash) as lut:
        merge_entries(lut, back)
    net = nb201.build_network(ARCHS[1])
    assert LookupTable(tmp_path / "b.sqlite").estimate(net).latency_ms == pytest.approx(
        LookupTable(path).estimate(net).latency_ms)
    (tmp_path / "bad.csv").write_text("key,median_ms\nConv|in=1x2|out=1x2,abc\n")
    with pytest.raises(ModelFileError, match="bad.csv:2"):
        read_csv(tmp_path / "bad.csv")


def test_merge_luts(tmp_path):
    net0, net1 = (nb201.build_network(a) for a in ARCHS)
    a, _ = make_lut(tmp_path / "a.sqlite", archs=ARCHS[:1])
    b, _ = make_lut(tmp_path / "b.sqlite", archs=ARCHS[1:])
    with pytest.raises(MissingKernel):
        LookupTable(a).estimate(net1)
    shared = kernels(net0, load_rules("ort"))[0].text  # the stem: in both
    with LutFile(b) as lut:
        lut.put(Entry(shared, "Conv", median_ms=9.0, cv=0.01, count=100))
        lut.put_point(CalibrationPoint("p1", ARCHS[1], "cifar10", 1.0))
    with LutFile(a) as dst, LutFile(b, readonly=True) as src:
        stats = merge_luts(dst, src)
    assert stats["added"] > 0 and stats["replaced"] == 1 and stats["points"] == 1
    model = LookupTable(a)
    assert model.estimate(net1).latency_ms > 0  # now complete
    assert model.values_[shared] == 9.0  # lower CV won
    c, _ = make_lut(tmp_path / "c.sqlite", runtime="tvm")
    d, _ = make_lut(tmp_path / "d.sqlite", cpu="Other CPU")
    for other in (c, d):
        with LutFile(a) as dst, LutFile(other, readonly=True) as src:
            with pytest.raises(ModelFileError, match="cannot merge"):
                merge_luts(dst, src)


def test_an_entry_edited_by_hand_is_refused_by_name_and_merges_nothing(tmp_path):
    """A usable entry whose median is text or negative (SQLite keeps whatever was written)
    is refused naming the file and the entry, by estimate and by merge, and a merge into
    another LUT leaves that one byte-identical."""
    from measure.lut.table import LutFile, merge_luts

    bad, _ = make_lut(tmp_path / "bad.sqlite")
    into, _ = make_lut(tmp_path / "into.sqlite", archs=ARCHS[:1])
    con = sqlite3.connect(bad)
    key = con.execute("SELECT key FROM entries WHERE ok = 1 LIMIT 1").fetchone()[0]
    con.execute("UPDATE entries SET median_ms = 'abc' WHERE key = ?", (key,))
    con.commit()
    con.close()
    before = Path(into).read_bytes()
    with pytest.raises(ModelFileError, match=r"bad.sqlite: entry .* has median_ms 'abc'"):
        LookupTable(bad).estimate(nb201.build_network(ARCHS[0]))
    with LutFile(into) as dst, LutFile(bad, readonly=True) as src:
        with pytest.raises(ModelFileError, match="bad.sqlite: entry"):
            merge_luts(dst, src, "replace")
    assert Path(into).read_bytes() == before


@pytest.mark.parametrize("cols, match", [
    ("cv", "the cv is negative"), ("p10_ms", "p10_ms is above p90_ms"), ("ops", "is not the key's")])
def test_lut_import_refuses_values_no_measurement_gives(tmp_path, cols, match):
    from measure.lut.table import read_csv

    net = nb201.build_network(ARCHS[0])
    k = kernels(net, load_rules("ort"))[0]
    row = {"key": k.text, "ops": "+".join(k.ops), "median_ms": "0.5", "p10_ms": "0.4",
           "p90_ms": "0.6", "cv": "0.01"}
    row[cols] = {"cv": "-0.5", "p10_ms": "0.9", "ops": "Bogus"}[cols]
    p = tmp_path / "in.csv"
    with open(p, "w", newline="") as fh:
        import csv

        w = csv.DictWriter(fh, list(row))
        w.writeheader()
        w.writerow(row)
    with pytest.raises(ModelFileError, match=f"in.csv:2: .*{match}"):
        read_csv(p)


def test_an_entry_with_a_negative_cv_edited_in_is_refused(tmp_path):
    """A negative CV would win every lower-cv merge: refused like a bad median."""
    from measure.lut.table import LutFile, export_csv

    bad, _ = make_lut(tmp_path / "bad.sqlite")
    con = sqlite3.connect(bad)
    con.execute("UPDATE entries SET cv = -1 WHERE ok = 1")
    con.commit()
    con.close()
    with LutFile(bad, readonly=True) as lut, pytest.raises(ModelFileError, match="cv -1"):
        export_csv(lut, tmp_path / "out.csv")
    assert not (tmp_path / "out.csv").exists()
    with pytest.raises(ModelFileError, match="cv -1"):  # estimate reads values() too
        LookupTable(bad).estimate(nb201.build_network(ARCHS[0]))


def test_merge_carries_the_points_kernel_lists(tmp_path):
    """A point's kernel list is what refit sums its LUT values over: a merge that moved the
    point without it left the point out of every refit (``lut merge --refit``)."""
    from measure.lut.calibrate import point_kernels, record_point_kernels, refit

    a, _ = make_lut(tmp_path / "a.sqlite", archs=ARCHS)
    b, _ = make_lut(tmp_path / "b.sqlite", archs=ARCHS)
    keys = [k.text for k in kernels(nb201.build_network(ARCHS[1]), load_rules("ort"))]
    with LutFile(b) as lut:
        for i in range(3):  # models of a folder: no NB201 cell to rebuild the list from
            lut.put_point(CalibrationPoint(f"m{i}", f"model{i}", "cifar10", 1.0 + i))
            record_point_kernels(lut, f"m{i}", keys[: 3 + i])
    with LutFile(a) as dst, LutFile(b, readonly=True) as src:
        assert merge_luts(dst, src)["points"] >= 3
    with LutFile(a) as lut:
        assert {f"m{i}" for i in range(3)} <= set(point_kernels(lut))
        assert refit(lut, terms=("intercept",))["n_points"] >= 3


@pytest.mark.parametrize("edit, match", [
    ("UPDATE entries SET cv = 'x'", "has cv 'x', not a number"),
    ("UPDATE entries SET count = 'many'", "has count 'many', not a number"),
    ("UPDATE entries SET key = CAST(X'436F6E76FF7C' AS TEXT) WHERE rowid = "
     "(SELECT min(rowid) FROM entries)", "corrupt .*decode"),
    ("UPDATE meta SET value = '{\"intercept_ms\": \"x\"}' WHERE key = 'calibration'",
     "calibration .*intercept_ms 'x', not a number"),
])
def test_a_stored_value_that_is_not_what_costmodels_writes_is_named(tmp_path, edit, match):
    """Fields SQLite kept whatever was written into (found by mutation fuzzing: each had been
    an internal error in `lut show` or `estimate lut:`)."""
    import sqlite3

    path, _ = make_lut(tmp_path / "a.sqlite", archs=ARCHS[:1])
    con = sqlite3.connect(path)
    con.execute("INSERT OR REPLACE INTO meta VALUES ('calibration', '{\"intercept_ms\": 0.1}')")
    con.execute(edit)
    con.commit()
    con.close()
    before = open(path, "rb").read()
    with pytest.raises(ModelFileError, match=match):
        with LutFile(path, readonly=True) as lut:
            list(lut.entries())
            lut.calibration  # noqa: B018 - reading it is the check
    assert open(path, "rb").read() == before


def test_a_corrupt_page_is_named_not_an_internal_error(tmp_path):
    path, _ = make_lut(tmp_path / "a.sqlite")
    data = bytearray(open(path, "rb").read())
    page = int.from_bytes(data[16:18], "big")
    assert len(data) > 3 * page
    data[page:] = b"\xff" * (len(data) - page)  # every page after the schema's: garbage
    open(path, "wb").write(bytes(data))
    with pytest.raises(ModelFileError, match="corrupt|cannot be read"):
        with LutFile(path, readonly=True) as lut:
            list(lut.entries())
            lut.points()


def test_bound_outputs_take_only_the_empty_call_off(tmp_path):
    """A LUT whose one-kernel models were timed with bound outputs (every ONNX Runtime
    build now) takes the one-element empty run off each entry; one timed with returned
    outputs (LUTs built before) the empty run at the kernel's output shape."""
    from measure.lut.keys import BOUND, NULL_KEY, OUTPUTS_META, null_key
    from measure.lut.model import kernel_values

    rules = load_rules("ort")
    net = nb201.build_network(ARCHS[0])
    k = kernels(net, rules)[0]
    shaped = null_key(k.key.output_shape, k.key.dtype)
    raw = {k.text: 1.0, NULL_KEY: 0.01, shaped: 0.4}
    assert kernel_values(raw, rules)[k.text] == pytest.approx(0.6)
    assert kernel_values(raw, rules, bound=True)[k.text] == pytest.approx(0.99)
    path, _ = make_lut(tmp_path / "a.sqlite")
    with LutFile(path) as lut:
        for key, v in ((NULL_KEY, 0.01), (shaped, 0.4)):
            lut.put(Entry(key, "Null", median_ms=v, cv=0.01, count=100))
        lut.put(Entry(k.text, "+".join(k.ops), median_ms=1.0, cv=0.01, count=100))
    assert LookupTable(path).values_[k.text] == pytest.approx(0.6, abs=1e-3)  # less wrappers
    with LutFile(path) as lut:
        lut.set_meta(OUTPUTS_META, BOUND)
    model = LookupTable(path)
    assert model.outputs_bound_ and model.values_[k.text] == pytest.approx(0.99, abs=1e-3)


def test_luts_timed_two_ways_do_not_mix(tmp_path, capsys):
    """merge and import refuse entries timed with the other output protocol, naming it,
    and leave the file byte-identical; an export of a bound LUT imports as one."""
    import argparse
    from dataclasses import replace

    from measure import lut_cli
    from measure.lut.keys import BOUND, OUTPUTS_META, entries_protocol

    a, _ = make_lut(tmp_path / "a.sqlite")
    b, _ = make_lut(tmp_path / "b.sqlite")
    with LutFile(b) as lut:
        lut.set_meta(OUTPUTS_META, BOUND)
        for e in list(lut.entries()):
            lut.put(replace(e, source="measured:ort:rounds=10:bound"))
    before = Path(a).read_bytes()
    with LutFile(a) as dst, LutFile(b, readonly=True) as src:
        with pytest.raises(ModelFileError, match="kernel_outputs differs.*bound outputs"):
            merge_luts(dst, src)
    assert Path(a).read_bytes() == before
    with LutFile(b, readonly=True) as lut:
        export_csv(lut, tmp_path / "b.csv")
    parser = argparse.ArgumentParser()
    lut_cli.register(parser.add_subparsers())

    def run(*argv):
        args = parser.parse_args(list(argv))
        return args.func(args)

    with LutFile(a) as lut:  # a's entries say how they were timed: returned outputs
        for e in list(lut.entries()):
            lut.put(replace(e, source="measured:ort:rounds=10"))
    before = Path(a).read_bytes()
    with pytest.raises(ModelFileError, match="b.csv: its entries were timed with bound"):
        run("lut", "import", str(tmp_path / "b.csv"), "--db", a)
    assert Path(a).read_bytes() == before
    assert run("lut", "import", str(tmp_path / "b.csv"), "--db", str(tmp_path / "c.sqlite")) == 0
    with LutFile(tmp_path / "c.sqlite", readonly=True) as lut:
        assert lut.get_meta(OUTPUTS_META) == BOUND
    assert entries_protocol(["", "from another tool"]) is None
    with pytest.raises(ValueError, match="two ways"):
        entries_protocol(["measured:ort:rounds=10", "measured:ort:rounds=10:bound"])


def test_a_lut_of_another_device_is_not_extended_by_a_build(tmp_path):
    """`lut build --db` on a LUT another device measured is refused, left as it is (it was
    extended with this machine's kernels under the other device's name); merge refuses the
    same LUT."""
    from measure.config import MeasureConfig
    from measure.lut.build import open_or_create

    path, _ = make_lut(tmp_path / "other.sqlite", cpu="Intel Xeon Platinum")
    before = Path(path).read_bytes()
    with pytest.raises(ModelFileError, match="measured on another device"):
        open_or_create(path, load_rules("ort"), MeasureConfig())
    assert Path(path).read_bytes() == before


def test_lut_import_refuses_another_runtimes_entries_and_an_empty_table(tmp_path):
    """A CSV whose source column says tvm is not imported into an ORT LUT (nor a new file
    made for it), and a header-only CSV imports nothing rather than an empty LUT."""
    import argparse

    from measure import lut_cli

    parser = argparse.ArgumentParser()
    lut_cli.register(parser.add_subparsers())

    def run(*argv):
        args = parser.parse_args(list(argv))
        return args.func(args)

    net = nb201.build_network(ARCHS[0])
    k = kernels(net, load_rules("ort"))[0]
    (tmp_path / "tvm.csv").write_text(f"key,median_ms,source\n{k.text},0.5,measured:tvm:x\n")
    with pytest.raises(ModelFileError, match="measured with tvm .*, not ort"):
        run("lut", "import", str(tmp_path / "tvm.csv"), "--db", str(tmp_path / "n.sqlite"))
    assert not (tmp_path / "n.sqlite").exists()
    (tmp_path / "empty.csv").write_text("key,median_ms\n")
    with pytest.raises(ModelFileError, match="holds no entries"):
        run("lut", "import", str(tmp_path / "empty.csv"), "--db", str(tmp_path / "e.sqlite"))
    assert not (tmp_path / "e.sqlite").exists()


@pytest.mark.parametrize("terms", ["foo", "", "intercept,intercept"])
def test_refit_checks_its_terms_before_anything(tmp_path, terms):
    """`lut refit --terms` was checked only where the LUT held enough points: on one without
    them a bad list was taken and the file rewritten."""
    import argparse

    from costmodels.errors import InputError
    from measure import lut_cli

    parser = argparse.ArgumentParser()
    lut_cli.register(parser.add_subparsers())
    path, _ = make_lut(tmp_path / "a.sqlite")
    before = Path(path).read_bytes()
    args = parser.parse_args(["lut", "refit", "--terms", terms, path])
    with pytest.raises(InputError, match="--terms"):
        args.func(args)
    assert Path(path).read_bytes() == before


def test_a_noisy_flag_that_is_no_flag_and_a_damaged_space_index_are_named(tmp_path):
    """lut import took a noisy value of 7; a LUT whose space index blob or keys were damaged
    said 'Error -3 while decompressing data' (or a JSONDecodeError) without naming either."""
    net = nb201.build_network(ARCHS[0])
    k = kernels(net, load_rules("ort"))[0]
    (tmp_path / "n.csv").write_text(f"key,median_ms,noisy\n{k.text},0.5,7\n")
    with pytest.raises(ModelFileError, match=r"n.csv:2: field 'noisy' is 7"):
        read_csv(tmp_path / "n.csv")
    path, keys = make_lut(tmp_path / "a.sqlite")
    rules = load_rules("ort")
    with LutFile(path) as lut:
        lut.put_index("nb201", "cifar10", 1, rules.hash, sorted(keys),
                      np.ones((2, len(keys)), np.uint16))
    for column, value, field in (("counts", b"not zlib", "counts"), ("keys", "{", "keys")):
        con = sqlite3.connect(path)
        con.execute(f"UPDATE space_index SET {column}=?", (value,))
        con.commit()
        con.close()
        with LutFile(path, readonly=True) as lut, pytest.raises(
                ModelFileError, match=f"space_index row .*field '{field}' is not what"):
            lut.get_index("nb201", "cifar10", 1, rules.hash)


def test_import_refuses_a_kernel_of_an_unknown_op(tmp_path):
    """A key whose op no ONNX domain defines and costmodels does not build (a typo, a
    lower-case op type) could never match a network's kernel: refused, naming its line."""
    from measure.lut.table import known_op, read_csv

    assert known_op("Conv") and known_op("QuickGelu") and known_op("Null")
    assert not known_op("conv") and not known_op("Addd")
    good = "Relu|in=1x8x4x4|out=1x8x4x4|dt=float32"
    path = tmp_path / "l.csv"
    path.write_text(f"key,median_ms\n{good},0.01\nrelu{good[4:]},0.02\n")
    with pytest.raises(ModelFileError, match=r"l\.csv:3: .*'relu' is no ONNX operator"):
        read_csv(path)
