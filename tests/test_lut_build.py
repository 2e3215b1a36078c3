"""Building a LUT with real ORT measurements (slow; short with COSTMODELS_SHORT=1)."""

from __future__ import annotations

import argparse
import json
import math

import pytest

from measure.config import MeasureConfig
from measure.lut.build import build_space
from tests.conftest import SHORT

pytestmark = pytest.mark.slow

CELLS = [1462, 5000] if not SHORT else [1462]
CONFIG = MeasureConfig(warmup=2, repeat=10 if SHORT else 30, max_retries=0, rounds=2,
                       min_round_s=0.0)


def test_kernel_models_run_under_ort():
    from costmodels.fusion import kernels, load_rules
    from costmodels.spaces import nb201
    from measure.lut.kernel_onnx import kernel_model
    from measure.ort import measure_model

    rules = load_rules("ort")
    net = nb201.build_network(CELLS[0])
    seen = {}
    for k in kernels(net, rules):
        seen.setdefault(k.ops, k.key)
    for key in seen.values():
        res = measure_model(kernel_model(key), MeasureConfig(warmup=1, repeat=3, rounds=1,
                                                             min_round_s=0.0))
        assert res.ok, (key.text, res.error)


def build_nb201(db, cells, config, calibrate):
    from costmodels.spaces import get_space, nb201

    return build_space(db, get_space("nb201"), [nb201.SPACE[i] for i in cells], "cifar10", 1,
                       config, calibrate=calibrate)


def test_build_resume_and_estimate(tmp_path):
    from costmodels.errors import ModelFileError
    from costmodels.spaces import nb201
    from measure.lut.model import LookupTable
    from measure.lut.table import LutFile

    db = str(tmp_path / "lut.sqlite")
    rep = build_nb201(db, CELLS, config=CONFIG, calibrate=3)
    assert rep.unique_kernels > 10 and not rep.failed
    assert rep.measured > rep.unique_kernels  # + reorders around one-kernel models + empty runs
    with LutFile(db, readonly=True) as lut:
        assert len(lut.points()) == len(CELLS)  # as many as there are distinct cells
        e = next(iter(lut.entries()))
        assert e.count == CONFIG.repeat and e.p10_ms <= e.median_ms <= e.p90_ms
        assert lut.calibration["n_points"] == len(CELLS)
        # too few points for more than one term: the intercept, or the scale where the
        # intercept would come out negative (which depends on the timing noise)
        assert lut.calibration["terms"] in (["intercept"], ["scale"])
    again = build_nb201(db, CELLS, config=CONFIG, calibrate=3)
    assert again.measured == 0 and again.reused == rep.measured
    est = LookupTable(db).estimate(nb201.build_network(CELLS[0]))
    assert math.isfinite(est.latency_ms) and est.latency_ms > 0
    with pytest.raises(ModelFileError, match="other settings"):
        build_nb201(db, CELLS, config=MeasureConfig(repeat=7), calibrate=0)


def test_cli_build_show_export_import_merge(tmp_path, capsys):
    from measure import lut_cli
    from measure.lut.keys import NULL_KEY

    parser = argparse.ArgumentParser()
    lut_cli.register(parser.add_subparsers())

    def run(*argv):
        args = parser.parse_args(list(argv))
        return args.func(args)

    db = str(tmp_path / "lut.sqlite")
    assert run("lut", "build", "--archs", str(_arch_csv(tmp_path)), "--db", db, "--repeat",
               str(CONFIG.repeat), "--warmup", "2", "--max-retries", "0", "--calibrate", "0",
               "--rounds", "2", "--min-round-s", "0") == 0
    unique = json.loads((tmp_path / "lut.fingerprint.json").read_text())["unique_kernels"]
    assert unique > 10
    capsys.readouterr()
    assert run("lut", "show", db, "--json") == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["runtime"] == "ort" and shown["ok"] == shown["entries"] > 10
    assert shown["kernels_used"] == unique <= shown["entries"]  # build's count, helpers apart
    # outputs bound: one empty run, the call itself, not one per output shape
    assert shown["kernel_outputs"].startswith("bound")
    assert run("lut", "show", db, "--json", "--entries") == 0
    listed = json.loads(capsys.readouterr().out)["entries_list"]
    assert [e["key"] for e in listed if e["key"].startswith("Null|")] == [NULL_KEY]
    assert all(e["source"].endswith(":bound") for e in listed)
    assert run("lut", "export", db, "-o", str(tmp_path / "lut.csv")) == 0
    assert run("lut", "import", str(tmp_path / "lut.csv"), "--db", str(tmp_path / "b.sqlite")) == 0
    assert run("lut", "merge", "--into", str(tmp_path / "b.sqlite"), db) == 0


def _arch_csv(tmp_path):
    from costmodels.spaces import nb201

    p = tmp_path / "cells.csv"
    p.write_text("arch_index,arch_str\n" + "".join(f"{i},{nb201.SPACE[i]}\n" for i in CELLS))
    return p


def test_committed_lut_estimates_the_whole_space():
    """The shipped NAS-Bench-201 CIFAR-10 LUT: complete, calibrated, every cell positive
    (timing is bench/bench_lut.py's job, not a test's)."""
    import numpy as np

    from costmodels.spaces import nb201
    from measure.lut.model import from_spec
    from tests.conftest import ROOT

    path = ROOT / "datasets" / "nb201" / "xeon-2c-ort-cifar10-lut.sqlite"
    if not path.exists():
        pytest.skip(f"{path} not built")
    n = 2000 if SHORT else nb201.NUM_ARCHS
    model = from_spec(str(path))
    nets = [nb201.build_network(i, "cifar10") for i in range(n)]
    lat = np.array([e.latency_ms for e in model.estimate_many(nets)])
    assert np.isfinite(lat).all() and (lat > 0).all()
    assert model.calibration_["n_points"] >= 5


def test_any_onnx_network(tmp_path, tiny_onnx):
    from costmodels.errors import MissingKernel
    from costmodels.onnx_import import import_onnx
    from costmodels.spaces import nb201
    from measure.lut.build import build_lut
    from measure.lut.model import LookupTable

    net = import_onnx(str(tiny_onnx))
    db = str(tmp_path / "lut.sqlite")
    rep = build_lut(db, [net], CONFIG, calibrate=0)
    assert rep.unique_kernels >= 2 and not rep.failed
    est = LookupTable(db).estimate(net)
    assert est.latency_ms > 0 and est.meta["kernels"] == rep.unique_kernels
    with pytest.raises(MissingKernel):  # it knows nothing of NAS-Bench-201's kernels
        LookupTable(db).estimate(nb201.build_network(1462))


def test_interrupted_remeasure_keeps_a_usable_lut_and_is_carried_on(tmp_path, monkeypatch):
    """--remeasure drops an old figure only once its new one is in: a build interrupted
    (Ctrl-C) after a few kernels keeps every entry and calibration point (it had wiped the
    LUT at the start, 74 entries and 20 points to 0 and 0), and the next build, even
    without --remeasure, measures again what predates the remeasure and replaces the
    calibration points; the kernels of a network outside the build keep their figures
    (a resumed remeasure of fewer networks had dropped them)."""
    from costmodels.spaces import get_space, nb201
    from measure.lut import build as B
    from measure.lut.model import LookupTable
    from measure.lut.table import LutFile

    db = str(tmp_path / "lut.sqlite")
    other = 0  # avg_pool / conv_1x1 / skip: kernels the remeasured cells do not have
    build_nb201(db, [other], config=CONFIG, calibrate=0)
    with LutFile(db, readonly=True) as lut:
        others = {e.key: e.measured_at for e in lut.entries()}
    build_nb201(db, CELLS, config=CONFIG, calibrate=2)
    with LutFile(db, readonly=True) as lut:
        before = {e.key: e.measured_at for e in lut.entries()}
        points = len(lut.points())
    mine = set(before) - set(others)
    real = B._store
    stored = []

    def interrupted(lut, text, *args, **kw):
        if len(stored) == 3:
            raise KeyboardInterrupt
        stored.append(text)
        return real(lut, text, *args, **kw)

    monkeypatch.setattr(B, "_store", interrupted)
    with pytest.raises(KeyboardInterrupt):
        B.build_space(db, get_space("nb201"), [nb201.SPACE[i] for i in CELLS], "cifar10", 1,
                      CONFIG, calibrate=2, remeasure=True)
    monkeypatch.setattr(B, "_store", real)
    with LutFile(db, readonly=True) as lut:
        assert {e.key for e in lut.entries()} == set(before)  # nothing lost
        assert len(lut.points()) == points and lut.get_meta(B.REMEASURE_META)
        since = lut.get_meta(B.REMEASURE_META)
    assert LookupTable(db).estimate(nb201.build_network(CELLS[0])).latency_ms > 0
    rep = build_nb201(db, CELLS, config=CONFIG, calibrate=2)  # no --remeasure: carried on
    assert rep.remeasure_since == since
    with LutFile(db, readonly=True) as lut:
        assert not lut.get_meta(B.REMEASURE_META)
        after = {e.key: e.measured_at for e in lut.entries()}
        assert set(after) == set(before)
        assert all(after[k] >= since for k in mine)  # this build's kernels: all measured anew
        kept = [k for k in others if after[k] < since]  # the other cell's own kernels
        assert kept and all(after[k] == others[k] for k in kept)
        assert all(p.measured_at >= since for p in lut.points()) and len(lut.points()) == points


@pytest.mark.parametrize("outputs", ["bound", "returned"])
def test_outputs_flag_is_for_onnx_runtime_only(tmp_path, capsys, outputs):
    """`--outputs` picks how ONNX Runtime's one-kernel models are timed; with TVM it meant
    nothing and `returned` was accepted silently: refused, before any file is made."""
    from costmodels.cli import main

    db = tmp_path / "lut.sqlite"
    assert main(["lut", "build", "--archs", str(_arch_csv(tmp_path)), "--db", str(db),
                 "--runtime", "tvm", "--outputs", outputs]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: --outputs {outputs} is for ONNX Runtime LUTs"), err
    assert not db.exists()
