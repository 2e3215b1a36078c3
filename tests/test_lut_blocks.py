"""FBNet block-level LUT: unique parts, a tiny real build, sums of stored entries, refusals."""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
import sqlite3
from pathlib import Path

import numpy as np
import pytest

from costmodels.errors import CostModelError, MissingKernel, ModelFileError
from costmodels.spaces import fbnet, get_space
from measure.config import MeasureConfig
from measure.lut import blocks

SPACE = get_space("fbnet")
# A few runs, one round: settings the measurement layer may not have yet are left out.
_FIELDS = {f.name for f in dataclasses.fields(MeasureConfig)}
TINY = MeasureConfig(**{k: v for k, v in dict(warmup=1, repeat=6, max_retries=0, rounds=1,
                                                round_warmup=0, min_round_s=0.0).items()
                        if k in _FIELDS})
SUBSET = ("k3_e1", "skip")
# only k3_e1 and skip blocks: identity skips, shape-changing skips and bottlenecks
ARCH = [0, 8, 0, 8, 0, 0, 8, 0, 8, 8, 0, 0, 8, 0, 0, 8, 0, 0, 8, 8, 0, 8]


@pytest.fixture(scope="module")
def tiny_lut(tmp_path_factory):
    path = tmp_path_factory.mktemp("blocklut") / "fbnet.sqlite"
    seen = []
    report = blocks.build_block_lut(path, "cifar100", TINY, blocks=SUBSET, calibrate=3,
                                    progress=lambda stage, done, total: seen.append(stage))
    return path, report, seen


def test_unique_parts_deduplicate_positions():
    parts = blocks.unique_parts("cifar100")
    grid = blocks.network_parts("cifar100")[1]
    assert len(grid) == 22 and all(len(row) == 9 for row in grid)
    # places with the same (input shape, C_out, stride) share entries: 12 distinct places
    places = {(p.in_shape, p.cout, p.stride) for p in fbnet.positions("cifar100")}
    assert len(places) == 12
    block_keys = {k for k, p in parts.items() if p.part == "block"}
    assert len(block_keys) == 12 * 9
    # the 6 places that keep the shape make skip an identity (no operators)
    assert sum(p.is_identity for p in parts.values()) == 6
    assert {p.part for p in parts.values()} == {"stem", "block", "header", "classifier", "null"}
    # ImageNet shares no block (other resolutions): its own 108
    assert not block_keys & set(blocks.unique_parts("ImageNet"))


def test_tiny_build_stores_every_part(tiny_lut):
    path, report, seen = tiny_lut
    want = blocks.unique_parts("cifar100", blocks=SUBSET)
    assert report.parts == len(want) and not report.failed
    assert report.measured + report.identity == len(want)
    assert "measure" in seen and seen[-1] == "calibrate"
    with blocks.BlockLutFile(path, readonly=True) as lut:
        rows = lut.rows()
        assert set(rows) == set(want)
        assert all(r["ok"] for r in rows.values())
        ident = [r for r in rows.values() if r["source"] == "identity"]
        assert len(ident) == 6 and all(r["median_ms"] == 0.0 for r in ident)
        assert all(r["median_ms"] > 0 and r["count"] >= TINY.repeat for r in rows.values()
                   if r["source"] == "measured")
        assert lut.meta()["datasets"] == '["cifar100@1"]'


def test_resume_measures_nothing_again(tiny_lut):
    path, _, _ = tiny_lut
    again = blocks.build_block_lut(path, "cifar100", TINY, blocks=SUBSET[:1])
    assert again.measured == 0 and again.reused == again.parts


def test_estimate_is_the_hand_sum_of_stored_entries(tiny_lut):
    path, _, _ = tiny_lut
    con = sqlite3.connect(path)
    med = dict(con.execute("SELECT key, median_ms FROM entries").fetchall())
    con.close()
    net = SPACE.build_network(SPACE.parse(ARCH), "cifar100")

    def key(part, block, shape, cout, stride):
        return f"{part}:{block}:{'x'.join(map(str, shape))}:c{cout}:s{stride}"

    def net_ms(k, out_shape):
        return max(med[k] - med[key("null", "-", out_shape, out_shape[1], 1)], 0.0)

    want = net_ms(key("stem", "-", (1, 3, 32, 32), 16, 1), (1, 16, 32, 32))
    raw = med[key("stem", "-", (1, 3, 32, 32), 16, 1)]
    for pos, o in zip(fbnet.positions("cifar100"), ARCH, strict=True):
        k = key("block", fbnet.BLOCKS[o], pos.in_shape, pos.cout, pos.stride)
        h = pos.in_shape[2] // pos.stride
        if o == 8 and pos.stride == 1 and pos.in_shape[1] == pos.cout:
            assert med[k] == 0.0
            continue
        want += net_ms(k, (1, pos.cout, h, h))
        raw += med[k]
    want += net_ms(key("header", "-", (1, 352, 4, 4), 1504, 1), (1, 1504, 4, 4))
    want += net_ms(key("classifier", "-", (1, 1504, 4, 4), 100, 1), (1, 100))
    want += med[key("null", "-", (1, 100), 100, 1)]
    raw += med[key("header", "-", (1, 352, 4, 4), 1504, 1)]
    raw += med[key("classifier", "-", (1, 1504, 4, 4), 100, 1)]
    est = blocks.from_spec(f"{path}?uncalibrated").estimate(net)
    assert not est.meta["calibrated"]
    assert est.latency_ms == pytest.approx(want, rel=1e-12)
    assert est.meta["raw_sum_ms"] == pytest.approx(raw, rel=1e-12)
    assert len(est.per_layer) == 1 + 22 + 3 and est.meta["missing"] == 0


def test_missing_blocks_raise_or_are_counted(tiny_lut):
    path, _, _ = tiny_lut
    net = SPACE.build_network(SPACE.parse([7] + ARCH[1:]), "cifar100")
    with pytest.raises(MissingKernel, match="block:k5_e6:1x16x32x32:c16:s1"):
        blocks.from_spec(str(path)).estimate(net)
    est = blocks.from_spec(f"{path}?best-effort").estimate(net)
    assert est.meta["missing"] == 1 and est.meta["missing_keys"] == (
        "block:k5_e6:1x16x32x32:c16:s1",)
    with pytest.raises(MissingKernel):  # ImageNet was not built
        blocks.from_spec(str(path)).estimate(SPACE.build_network(SPACE.parse(ARCH), "ImageNet"))


def test_refuses_foreign_networks_files_and_options(tiny_lut, tmp_path):
    path, _, _ = tiny_lut
    model = blocks.from_spec(str(path))
    from costmodels.spaces import nb201

    with pytest.raises(CostModelError, match="not an FBNet network"):
        model.estimate(nb201.build_network(0))
    text = tmp_path / "notes.sqlite"
    text.write_text("hello")
    other = tmp_path / "other.sqlite"
    con = sqlite3.connect(other)
    con.execute("CREATE TABLE meta (name TEXT, value TEXT)")
    con.execute("INSERT INTO meta VALUES ('format', 'costmodels-lut')")
    con.commit()
    con.close()
    before = other.read_bytes()
    for bad, reason in ((text, "not a SQLite"), (other, "another kind.*not a block LUT"),
                        (tmp_path / "absent.sqlite", "no such block LUT")):
        with pytest.raises(ModelFileError, match=reason):
            blocks.from_spec(str(bad))
    assert other.read_bytes() == before
    with pytest.raises(CostModelError, match="needs a block LUT file"):
        blocks.from_spec(None)
    with pytest.raises(CostModelError, match="unknown blocklut option"):
        blocks.from_spec(f"{path}?fast")
    with pytest.raises(ModelFileError, match="other settings"):
        blocks.build_block_lut(path, "cifar100", MeasureConfig(repeat=7), blocks=SUBSET)
    with pytest.raises(CostModelError, match="unknown FBNet block"):
        blocks.unique_parts("cifar100", blocks=("k7_e6",))


def test_calibration_is_fitted_on_stored_points_and_applied(tiny_lut):
    path, report, _ = tiny_lut
    with blocks.BlockLutFile(path, readonly=True) as lut:
        points = lut.points("cifar100", 1)
        fit = lut.calibration()["cifar100@1"]
    assert len(points) == 3 and fit == report.calibration and fit["n_points"] == 3
    raw = blocks.from_spec(f"{path}?uncalibrated")
    cal = blocks.from_spec(str(path))
    sums, meas = [], []
    for arch, latency_ms, sum_ms in points:
        net = SPACE.build_network(arch, "cifar100")
        assert set(fbnet.parse_arch(arch)) <= {0, 8}  # drawn from the built blocks only
        assert raw.estimate(net).latency_ms == pytest.approx(sum_ms, rel=1e-12)
        est = cal.estimate(net)
        assert est.meta["calibrated"] and est.meta["sum_ms"] == pytest.approx(sum_ms, rel=1e-12)
        assert est.latency_ms == pytest.approx(fit["scale"] * sum_ms + fit["intercept_ms"])
        sums.append(sum_ms)
        meas.append(latency_ms)
    s, y = np.array(sums), np.array(meas)
    # least squares over a family that contains (scale 1, intercept 0): never worse
    assert ((fit["scale"] * s + fit["intercept_ms"] - y) ** 2).sum() <= ((s - y) ** 2).sum()


def test_fit_calibration_recovers_a_line_and_drops_a_negative_intercept():
    x = np.array([1.0, 2.0, 3.0, 5.0])
    fit = blocks.fit_calibration(x, 1.2 * x + 0.3)
    assert fit["scale"] == pytest.approx(1.2) and fit["intercept_ms"] == pytest.approx(0.3)
    assert fit["mape_fit"] == pytest.approx(0.0, abs=1e-12)
    fit = blocks.fit_calibration(x, 1.2 * x - 0.5)
    assert fit["intercept_ms"] == 0.0 and fit["scale"] == pytest.approx((x @ (1.2 * x - 0.5)) / (x @ x))
    two = blocks.fit_calibration(x[:2], 2 * x[:2])
    assert two["intercept_ms"] == 0.0 and two["scale"] == pytest.approx(2.0)


COMMITTED = Path(__file__).resolve().parents[1] / "datasets/fbnet/epyc-2c-ort-fbnet-blocklut.sqlite"
# (dataset, arch, calibrated latency_ms, uncalibrated latency_ms): what the block LUT code
# before the port onto measure.sqlite (commit 1cbd135) estimated from the committed file
BEFORE = [
    ("cifar100", [i % 9 for i in range(22)], 2.3102420914813857, 1.90638775),
    ("cifar100", [(5 * i + 3) % 9 for i in range(22)], 1.9494152068352637, 1.5822214999999995),
    ("ImageNet", [i % 9 for i in range(22)], 13.766832265679376, 5.69960925),
    ("ImageNet", [8] * 22, 2.7679020846603755, 1.1459397500000002),
]


def _digest(folder: Path) -> dict[str, str]:
    """sha256 of every file in the folder (so an extra -wal/-shm shows up too)."""
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir())}


def _estimates(path: Path) -> list[tuple[float, float]]:
    cal, raw = blocks.from_spec(str(path)), blocks.from_spec(f"{path}?uncalibrated")
    nets = [SPACE.build_network(SPACE.parse(a), ds) for ds, a, _, _ in BEFORE]
    return [(cal.estimate(n).latency_ms, raw.estimate(n).latency_ms) for n in nets]


def test_committed_schema1_file_loads_read_only_and_migrates_on_first_write(tmp_path):
    before = _digest(COMMITTED.parent)
    got = _estimates(COMMITTED)
    assert _digest(COMMITTED.parent) == before  # read in place: same bytes, no -wal/-shm
    for (cal, raw), (_, _, want_cal, want_raw) in zip(got, BEFORE, strict=True):
        assert cal == pytest.approx(want_cal, rel=1e-12)
        assert raw == pytest.approx(want_raw, rel=1e-12)
    with blocks.BlockLutFile(COMMITTED, readonly=True) as lut:
        old_meta, old_rows = lut.meta(), lut.rows()
    assert old_meta["schema"] == blocks.SCHEMA_NAME and old_meta["version"] == "1"
    copy = tmp_path / "blocklut.sqlite"
    shutil.copyfile(COMMITTED, copy)
    with blocks.BlockLutFile(copy) as lut:  # opened to write: nothing changes until a write
        assert _digest(tmp_path) == {copy.name: before[COMMITTED.name]}
        lut.set_meta("note", "migrated")
    assert sorted(p.name for p in tmp_path.iterdir()) == [copy.name]  # no -wal/-shm at rest
    con = sqlite3.connect(f"{copy.as_uri()}?mode=ro", uri=True)
    meta = dict(con.execute("SELECT key, value FROM meta"))
    stamps = {r[0] for r in con.execute("SELECT measured_at FROM entries UNION "
                                        "SELECT measured_at FROM calibration_points")}
    con.close()
    assert meta["schema"] == blocks.SCHEMA_NAME and meta["version"] == "2"
    assert "format" not in meta and "schema_version" not in meta
    assert meta["created_at"] == "2026-12-01T20:04:12+00:00"  # was ...+0000 (local offset)
    assert all(t.endswith("+00:00") for t in stamps)
    assert _estimates(copy) == got
    with blocks.BlockLutFile(copy, readonly=True) as lut:
        new_meta, new_rows = lut.meta(), lut.rows()
    assert new_rows.keys() == old_rows.keys()
    assert all(new_rows[k]["median_ms"] == r["median_ms"] for k, r in old_rows.items())
    kept = set(old_meta) - {"version", "created_at"}
    assert {k: new_meta[k] for k in kept} == {k: old_meta[k] for k in kept}
    assert new_meta["note"] == "migrated"


def _foreign(path: Path, kind: str) -> None:
    if kind == "empty":
        path.write_bytes(b"")
    elif kind == "kernel-lut":
        from measure.lut.table import LutFile

        LutFile.create(path, "ort", "{}", "h").close()
    else:
        con = sqlite3.connect(path)
        con.execute("CREATE TABLE people (name TEXT)")
        con.execute("INSERT INTO people VALUES ('ada')")
        con.commit()
        con.close()


OPENERS = {"model": lambda p: blocks.from_spec(str(p)),
           "file": lambda p: blocks.BlockLutFile(p).close(),
           "file-ro": lambda p: blocks.BlockLutFile(p, readonly=True).close(),
           "build": lambda p: blocks.build_block_lut(p, "cifar100", TINY, blocks=("skip",))}
REASONS = {"empty": "empty file", "kernel-lut": "another kind \\('costmodels.lut'\\)",
           "foreign": "another program.*tables: people"}


@pytest.mark.parametrize("kind", sorted(REASONS))
@pytest.mark.parametrize("opener", sorted(OPENERS))
def test_refusals_leave_files_byte_identical_without_journals(tmp_path, kind, opener):
    path = tmp_path / "other.sqlite"
    _foreign(path, kind)
    before = _digest(tmp_path)
    with pytest.raises(ModelFileError, match=f"other.sqlite: .*{REASONS[kind]}"):
        OPENERS[opener](path)
    assert _digest(tmp_path) == before


def test_a_block_lut_is_refused_by_the_kernel_lut(tiny_lut, tmp_path):
    from measure.lut.table import LutFile

    path, _, _ = tiny_lut
    before = _digest(path.parent)
    with pytest.raises(ModelFileError, match="another kind \\('costmodels.blocklut'\\)"):
        LutFile(path)
    assert _digest(path.parent) == before
