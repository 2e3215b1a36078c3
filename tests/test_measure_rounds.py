"""The interleaved-rounds scheduler, drift correction and representatives -- with fake
bursts whose times are known exactly (no timing assertion on real runs)."""

from __future__ import annotations

import math
from collections import Counter

import numpy as np
import pytest

from measure import MeasureConfig, MeasureResult
from measure.config import MeasureSettingsError
from measure.rounds import Prepared, measure_window
from measure.timing import Sample

DRIFT = [1.0, 1.1, 0.9, 1.2, 1.05]  # the machine's speed factor in each round


class FakeNet:
    """A network whose every run takes ``base_ms * DRIFT[round]``; records the call order."""

    def __init__(self, name: str, base_ms: float, log: list, fail_in_round: int | None = None):
        self.name, self.base_ms, self.log, self.fail = name, base_ms, log, fail_in_round
        self.calls = 0

    def burst(self, warmup: int, runs: int) -> Sample:
        rnd = self.calls - 1  # the first call is the warm-up (no timed runs)
        self.calls += 1
        if runs == 0:
            return Sample(np.empty(0))
        if rnd == self.fail:
            raise RuntimeError("device lost")
        self.log.append((rnd, self.name))
        return Sample(np.full(runs, self.base_ms * DRIFT[rnd]))

    def prepared(self) -> Prepared:
        return Prepared(self.name, burst=self.burst)


CFG = MeasureConfig(repeat=15, rounds=5, min_round_s=0, warmup=1)


def test_round_runs_split_repeat_over_rounds():
    assert MeasureConfig(repeat=20, rounds=3).round_runs() == [7, 7, 6]
    assert MeasureConfig(repeat=3, rounds=10).round_runs() == [1, 1, 1]
    assert sum(MeasureConfig().round_runs()) == MeasureConfig().repeat


@pytest.mark.parametrize("field,value", [("repeat", 0), ("warmup", -1), ("threads", 0),
                                         ("rounds", 0), ("pin_cpu", -2), ("graph_opt", "max")])
def test_settings_out_of_range_are_refused(field, value):
    with pytest.raises(MeasureSettingsError, match=field):
        MeasureConfig(**{field: value})


def test_every_round_runs_every_network_once_in_a_shuffled_order():
    log: list = []
    nets = [FakeNet(f"n{i}", 1.0 + i, log) for i in range(6)]
    results, report = measure_window([n.prepared() for n in nets], CFG)
    orders = [[name for r, name in log if r == k] for k in range(5)]
    assert all(sorted(o) == sorted(n.name for n in nets) for o in orders)
    assert len({tuple(o) for o in orders}) > 1  # shuffled, not the same order every round
    for net, res in zip(nets, results, strict=True):
        assert res.ok and res.rounds == 5 and res.repeat == 15
        assert res.round_medians_ms == pytest.approx([net.base_ms * f for f in DRIFT])
        assert res.median_ms == pytest.approx(net.base_ms * float(np.median(DRIFT)))
        meds = np.array(res.round_medians_ms)
        assert res.round_cv == pytest.approx(meds.std(ddof=1) / meds.mean())
        assert math.isnan(res.corrected_ms)  # no reference
    # The window's drift: every network saw the same factors, relative to its median.
    assert report.round_factors == pytest.approx(list(np.array(DRIFT) / np.median(DRIFT)))
    assert report.drift == pytest.approx((max(DRIFT) - min(DRIFT)) / np.median(DRIFT))


def test_drift_reference_scales_each_round_by_its_drift():
    log: list = []
    nets = [FakeNet("a", 2.0, log), FakeNet("b", 3.0, log)]
    ref = FakeNet("ref", 0.5, log)
    results, report = measure_window([n.prepared() for n in nets], CFG, ref.prepared())
    assert report.reference_ms == pytest.approx([0.5 * f for f in DRIFT])
    assert report.anchor_ms == pytest.approx(0.5 * float(np.median(DRIFT)))
    for net, res in zip(nets, results, strict=True):
        # Every round divided by its factor: the drift is gone, the level is the median's.
        assert res.corrected_ms == pytest.approx(net.base_ms * float(np.median(DRIFT)))
        assert res.median_ms == pytest.approx(net.base_ms * float(np.median(DRIFT)))
    # A stored anchor (from an earlier window) sets the level of the corrected figure.
    log.clear()
    nets = [FakeNet("a", 2.0, log)]
    ref = FakeNet("ref", 0.5, log)
    [res], _ = measure_window([nets[0].prepared()], CFG, ref.prepared(), anchor_ms=0.6)
    assert res.corrected_ms == pytest.approx(2.0 * 0.6 / 0.5)


def test_a_panel_reference_is_the_geometric_mean_of_its_members():
    log: list = []
    net = FakeNet("a", 2.0, log)
    panel = [FakeNet("r1", 0.5, log), FakeNet("r2", 2.0, log), FakeNet("broken", 1.0, log,
                                                                        fail_in_round=1)]
    [res], report = measure_window([net.prepared()], CFG, [p.prepared() for p in panel])
    # the member that failed is left out; the others' geometric mean is 1.0 ms x drift
    assert report.reference_ms == pytest.approx(list(DRIFT))
    assert res.corrected_ms == pytest.approx(2.0 * float(np.median(DRIFT)))
    # a machine anchor of 1.2 ms: the corrected figure is on that level
    [res], _ = measure_window([FakeNet("a", 2.0, []).prepared()], CFG,
                              [FakeNet("r1", 0.5, []).prepared(),
                               FakeNet("r2", 2.0, []).prepared()], anchor_ms=1.2)
    assert res.corrected_ms == pytest.approx(2.0 * 1.2)


def test_the_machine_anchor_is_set_once_and_shared(tmp_path, monkeypatch):
    from costmodels.errors import InputError
    from measure.rounds import anchors_path, machine_anchor

    cfg = MeasureConfig(drift_ref=True)
    path = tmp_path / "anchors.json"
    monkeypatch.setenv("COSTMODELS_ANCHORS", str(path))
    assert anchors_path() == path and machine_anchor(cfg) is None and not path.exists()
    assert machine_anchor(cfg, 1.5) == 1.5
    assert machine_anchor(cfg, 9.9) == 1.5 and machine_anchor(cfg) == 1.5  # first one wins
    # another timing setting has its own anchor
    assert machine_anchor(MeasureConfig(drift_ref=True, threads=2), 3.0) == 3.0
    assert machine_anchor(cfg) == 1.5
    # a corrupt or foreign file is reported, named, and left byte-identical
    for text in ("{not json", '{"schema": "other", "anchors": {}}', "\xff\xfe"):
        path.write_text(text, encoding="latin-1")
        before = path.read_bytes()
        with pytest.raises(InputError, match="anchors.json"):
            machine_anchor(cfg, 1.0)
        assert path.read_bytes() == before
    monkeypatch.setenv("COSTMODELS_ANCHORS", str(tmp_path))  # a folder: named, not touched
    with pytest.raises(InputError, match="is a folder"):
        machine_anchor(cfg, 1.0)
    monkeypatch.setenv("COSTMODELS_ANCHORS", "")  # '' = no machine anchor
    assert anchors_path() is None and machine_anchor(cfg, 1.0) is None


def test_no_anchor_is_recorded_while_another_run_measures(tmp_path, monkeypatch, capsys):
    """Two campaigns started together would record each other's contention as the
    machine's level: while another run holds its lock, the level is not recorded."""
    import fcntl

    from measure.rounds import machine_anchor

    path = tmp_path / "anchors.json"
    monkeypatch.setenv("COSTMODELS_ANCHORS", str(path))
    cfg = MeasureConfig(drift_ref=True)
    assert machine_anchor(cfg) is None  # this run marks itself active
    active = path.with_name(path.name + ".active")
    with open(active / "other-run", "a") as other:  # another run, alive
        fcntl.flock(other, fcntl.LOCK_EX)
        assert machine_anchor(cfg, 2.0) == 2.0  # its own level, not recorded
        assert machine_anchor(cfg) is None
    assert "another costmodels measurement is running" in capsys.readouterr().err
    assert machine_anchor(cfg, 1.5) == 1.5 and machine_anchor(cfg) == 1.5  # alone: recorded
    assert not (active / "other-run").exists()  # a run that ended: its file is removed


def test_processes_share_the_machine_anchor(tmp_path, monkeypatch):
    """Two calls (as two processes would) put corrected figures on one level: the second
    call uses the first call's anchor instead of its own panel median."""
    from measure.rounds import machine_anchor, measure_many
    from measure.testing import tiny_model

    monkeypatch.setenv("COSTMODELS_ANCHORS", str(tmp_path / "anchors.json"))
    cfg = MeasureConfig(repeat=4, rounds=2, min_round_s=0, warmup=1, drift_ref=True)
    seen: list = []
    measure_many([tiny_model()], cfg, on_window=lambda r, rep: seen.append(rep))
    first = machine_anchor(cfg)
    assert first == pytest.approx(seen[0].anchor_ms)
    measure_many([tiny_model()], cfg, on_window=lambda r, rep: seen.append(rep))
    assert seen[1].anchor_ms == first and len(seen[1].reference_ms) == 2


def test_a_network_that_fails_midway_is_a_failure_and_the_window_goes_on():
    log: list = []
    good, bad = FakeNet("good", 1.0, log), FakeNet("bad", 1.0, log, fail_in_round=2)
    broken = Prepared("broken", failure=MeasureResult.failure("build failed: x", "ort"))
    results, _ = measure_window([good.prepared(), bad.prepared(), broken], CFG)
    assert results[0].ok and results[0].rounds == 5
    assert not results[1].ok and "device lost" in results[1].error
    assert results[2].error == "build failed: x"


def test_rounds_of_a_small_window_are_spread_in_time(monkeypatch):
    slept: list[float] = []
    monkeypatch.setattr("measure.rounds.time.sleep", slept.append)
    log: list = []
    measure_window([FakeNet("a", 1.0, log).prepared()], MeasureConfig(
        repeat=5, rounds=5, min_round_s=0.3, warmup=0))
    assert len(slept) == 4 and all(0 < s <= 0.3 for s in slept)  # between rounds, not after


def test_real_onnx_runtime_window_and_measure_many():
    from measure.rounds import measure_many, reference_model
    from measure.testing import malformed_model, tiny_model

    cfg = MeasureConfig(repeat=8, rounds=4, min_round_s=0, warmup=1, drift_ref=True)
    seen = []
    res = measure_many([tiny_model(), malformed_model(), reference_model()], cfg,
                       window=2, on_window=lambda r, rep: seen.append(rep))
    assert [r.ok for r in res] == [True, False, True] and len(seen) == 2
    assert res[0].rounds == 4 and res[0].repeat == 8 and math.isfinite(res[0].corrected_ms)
    assert seen[0].anchor_ms == seen[1].anchor_ms  # one anchor for all windows of a call
    assert res[1].error.startswith("build failed")


# ----------------------------------------------------------------------------- representatives
def _layers(i: int) -> Counter:
    from costmodels.spaces import nb201

    return Counter((lay.op, lay.output_shape, lay.macs, lay.kernel)
                   for lay in nb201.build_network(i).layers)


def test_compute_class_merges_only_networks_that_compute_the_same_layers():
    from costmodels.spaces import get_space
    from measure.campaign import compute_class, representatives, space_jobs

    space = get_space("nb201")
    # 3 and 14483: the output is the input plus one unused avg-pool in both; 11 is not.
    c3, c14483, c11 = (compute_class(space.build_network(space.parse(i))) for i in
                       (3, 14483, 11))
    assert c3 == c14483 != c11
    jobs = space_jobs(space, [space.parse(i) for i in range(0, 15625, 13)][:600])
    groups = representatives(jobs)
    assert len(groups) < len(jobs)
    for members in groups.values():
        ref = _layers(members[0].net.arch_index)
        assert all(_layers(m.net.arch_index) == ref for m in members[1:])
    by_space = representatives(jobs, "space", space)
    assert len(by_space) < len(groups)  # NAS-Bench-201's rule merges more (and less exactly)


def test_two_exports_of_one_network_in_a_folder_are_measured_each(tmp_path):
    """The same IR from two files (one lists its weights as graph inputs, which a runtime
    cannot fold) runs at different speeds: each file is its own store key; a network of a
    generated space keeps its IR fingerprint."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    from costmodels.spaces import get_space
    from measure.campaign import space_jobs

    w = numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), "w")
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 6, 6])
    node = helper.make_node("Conv", ["x", "w"], ["y"], name="c")
    for name, inputs in (("plain", [x]), ("weights_as_inputs", [
            x, helper.make_tensor_value_info("w", TensorProto.FLOAT, [4, 3, 3, 3])])):
        m = helper.make_model(helper.make_graph([node], "g", inputs, [y], [w]),
                              opset_imports=[helper.make_opsetid("", 17)])
        m.ir_version = 8
        onnx.save(m, tmp_path / f"{name}.onnx")
    space = get_space(f"models:{tmp_path}")
    jobs = space_jobs(space, space.archs())
    assert jobs[0].network.fingerprint == jobs[1].network.fingerprint
    assert jobs[0].net.key != jobs[1].net.key
    nb = get_space("nb201")
    (job,) = space_jobs(nb, [nb.parse(7)])
    assert job.net.key == job.network.fingerprint
    _check_note_on_a_structure_keyed_store(jobs)


def _check_note_on_a_structure_keyed_store(jobs):
    """A store written before files were keyed by their bytes holds both files under their
    shared IR: the campaign says it measures both files again (files, not structures)."""
    import contextlib
    import io
    from types import SimpleNamespace

    from measure.campaign import _note_structure_keyed

    old = SimpleNamespace(path="old.sqlite",
                          done_keys=lambda ch, dh: {jobs[0].network.fingerprint})
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        _note_structure_keyed(jobs, old, "c", "d")
    assert "holds 2 of these model files" in err.getvalue()
    new = SimpleNamespace(path="new.sqlite", done_keys=lambda ch, dh: set())
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        _note_structure_keyed(jobs, new, "c", "d")
    assert err.getvalue() == ""


def test_a_models_file_key_covers_its_external_weights(tmp_path):
    """Editing the weight file beside a model makes it a new network for the store."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper
    from onnx.external_data_helper import convert_model_to_external_data

    from costmodels.spaces import get_space
    from measure.campaign import space_jobs

    w = numpy_helper.from_array(np.ones((4, 3, 3, 3), np.float32), "w")
    m = helper.make_model(helper.make_graph(
        [helper.make_node("Conv", ["x", "w"], ["y"], name="c")], "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 8, 8])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4, 6, 6])], [w]),
        opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    convert_model_to_external_data(m, location="w.bin", size_threshold=0)
    onnx.save(m, tmp_path / "m.onnx")

    def key():
        space = get_space(f"models:{tmp_path}")
        return space_jobs(space, space.archs())[0].net.key

    before = key()
    data = bytearray((tmp_path / "w.bin").read_bytes())
    data[:4] = bytes(4)
    (tmp_path / "w.bin").write_bytes(bytes(data))
    assert key() != before


def test_an_anchor_edited_to_an_absurd_time_is_not_used():
    """An anchor file entry of 1e300 or 1e-300 ms (edited by hand) put every corrected
    figure at 1e296 ms or 0; it is unusable, like a missing one."""
    from measure.rounds import _anchor_of

    assert _anchor_of({"anchor_ms": 0.25}) == 0.25
    for bad in (1e300, 1e-300, True, "0.25", -1.0):
        assert _anchor_of({"anchor_ms": bad}) is None
