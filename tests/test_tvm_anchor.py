"""Anchor-block tasks, trials by estimated time, covering sets (issue 17)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from measure.tune import (
    LEDGER_NAME,
    LEDGER_SCHEMA,
    SpaceTask,
    TuningError,
    allocate_trials,
    covering_archs,
    read_ledger,
)

SHORT = os.environ.get("COSTMODELS_SHORT", "") not in ("", "0")
TARGET = {"kind": "llvm", "num-cores": 1}   # generic llvm: the same on every x86 host


def _task(key: str, flop_calls: float) -> SpaceTask:
    return SpaceTask(key=key, name=key, weight=1, networks=("n",), flop=flop_calls,
                     flop_calls=flop_calls)


# ---------------------------------------------------------------------------- allocation
def test_trials_follow_estimated_time_above_a_floor():
    tasks = [_task("big", 900.0), _task("mid", 90.0), _task("tiny", 9.0), _task("zero", 0.0)]
    alloc = allocate_trials(tasks, 1000, floor=16)
    assert sum(alloc.values()) == 1000
    assert alloc["tiny"] == alloc["zero"] == 16            # below the floor: the floor
    assert alloc["big"] > alloc["mid"] > 16
    # above the floor, trials are proportional to FLOP x calls (to rounding)
    assert alloc["big"] / alloc["mid"] == pytest.approx(10.0, rel=0.02)


def test_trials_never_exceed_the_budget_and_the_floor_shrinks_to_fit():
    tasks = [_task(f"t{i}", float(i)) for i in range(10)]
    alloc = allocate_trials(tasks, 50, floor=16)          # 10 x 16 > 50: floor becomes 5
    assert sum(alloc.values()) <= 50 and min(alloc.values()) == 5
    uniform = allocate_trials([_task("a", 0.0), _task("b", 0.0)], 33, floor=1)
    assert sorted(uniform.values()) == [16, 17]            # no FLOP known: an even split


def test_a_budget_below_one_trial_per_task_is_refused():
    with pytest.raises(TuningError, match="less than one trial for each of the 3 tasks"):
        allocate_trials([_task("a", 1.0), _task("b", 1.0), _task("c", 1.0)], 2)


# ---------------------------------------------------------------------------- covering sets
def test_nb201_cover_holds_every_layer_signature_of_a_random_sample():
    from costmodels.spaces import get_space
    from measure.tune import _network_signatures

    space = get_space("nb201")
    cover, how = covering_archs(space)
    assert how["candidates"] == 15625 and 1 <= len(cover) <= 5
    covered = set().union(*(_network_signatures(space.build_network(a)) for a in cover))
    assert len(covered) == how["signatures"]
    for arch in space.sample(300, seed=11):
        assert _network_signatures(space.build_network(arch)) <= covered, arch


def test_fbnet_cover_is_the_spaces_own():
    from costmodels.spaces import get_space

    space = get_space("fbnet")
    cover, how = covering_archs(space)
    assert cover == space.covering_archs() and "own" in how["how"]


# ---------------------------------------------------------------------------- old ledgers
def test_a_version_1_ledger_is_refused_for_tuning_but_readable(tmp_path):
    (tmp_path / LEDGER_NAME).write_text(json.dumps(
        {"schema": LEDGER_SCHEMA, "version": 1, "tasks": {"abc": {"trials": 8}}}))
    assert read_ledger(tmp_path) == {"abc": {"trials": 8}}
    with pytest.raises(TuningError, match="version-1 ledger.*new --work-dir"):
        read_ledger(tmp_path, for_tuning=True)


# ---------------------------------------------------------------------------- anchor tasks
def _conv_net(epilogues: list[str], seed: int):
    """x (1x8x8x8) -> per entry: Conv3x3(8->8) then 'relu' / 'add' (residual x) /
    'add_relu': every conv has the same shapes, so one anchor block."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    nodes, inits, cur = [], [], "x"
    for i, epi in enumerate(epilogues):
        w = f"w{i}"
        inits.append(numpy_helper.from_array(rng.normal(0, 0.2, (8, 8, 3, 3)).astype(np.float32),
                                             w))
        nodes.append(helper.make_node("Conv", [cur, w], [f"c{i}"], pads=[1, 1, 1, 1]))
        cur = f"c{i}"
        for part in epi.split("_"):
            out = f"{cur}_{part}"
            nodes.append(helper.make_node("Add", [cur, "x"], [out]) if part == "add"
                         else helper.make_node("Relu", [cur], [out]))
            cur = out
    nodes.append(helper.make_node("Identity", [cur], ["y"]))
    vi = helper.make_tensor_value_info
    graph = helper.make_graph(nodes, "anchors", [vi("x", TensorProto.FLOAT, [1, 8, 8, 8])],
                              [vi("y", TensorProto.FLOAT, [1, 8, 8, 8])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
    model.ir_version = 8
    return model


def _prim_funcs(mod) -> dict[str, object]:
    return {gv.name_hint: f for gv, f in mod.functions.items()
            if type(f).__name__ == "PrimFunc"}


@pytest.mark.tvm
@pytest.mark.slow
def test_a_fused_variant_never_tuned_gets_its_anchors_schedule(tmp_path):
    """Tune the one anchor task of network a (conv+relu, conv+add); network b holds a
    third variant (conv+add+relu) that no trial ever ran: compiled from the database it
    is scheduled by the anchor's trace, computes the same as untuned TVM, and measuring
    both networks adds no record."""
    pytest.importorskip("tvm")
    import tvm
    from tvm import relax

    from measure import MeasureConfig, measure, tune

    a, b = _conv_net(["relu", "add"], 0), _conv_net(["add_relu"], 1)
    tasks = tune.extract_space_tasks([("a", a), ("b", b)], TARGET, show_progress=False)
    convs = [t for t in tasks if "conv2d" in t.name]
    assert len(convs) == 1 and convs[0].networks == ("a", "b") and convs[0].weight == 3
    tuned = [t for t in tasks if t.networks == ("a", "b")]
    summary = tune.tune_space(tuned, tmp_path, TARGET, trials_per_task=2 if SHORT else 8,
                              show_progress=False, population=16 if SHORT else 64)
    assert summary.tuned == len(tuned) and summary.records_after > 0
    db_dir = tune.database_dir(tmp_path, TARGET)
    files = {p.name: p.read_bytes() for p in db_dir.glob("database_*.json")}
    n_workloads = len(files["database_workload.json"].splitlines())
    assert n_workloads == len(tuned)       # only the first variant of each task was tuned

    lowered = tune.lower(b, TARGET)
    variant = next(n for n in _prim_funcs(lowered) if "conv2d" in n)
    assert "relu" in variant and "add" in variant      # b's variant: conv + add + relu
    applied, meta = tune.apply_database(lowered, TARGET, tmp_path)
    assert meta["tuning_tasks_found"] == meta["tuning_tasks"] == len(
        tune.network_tasks(lowered, TARGET, lowered=True))
    assert meta["tvm_tuned"] is True
    before = _prim_funcs(lowered)[variant].attrs
    after = _prim_funcs(applied)[variant].attrs
    assert not (before and "tirx.is_scheduled" in before)
    assert after is not None and bool(after["tirx.is_scheduled"])

    x = np.random.default_rng(2).normal(size=(1, 8, 8, 8)).astype(np.float32)
    tgt = tvm.target.Target(TARGET)

    def run(mod):
        vm = relax.VirtualMachine(tvm.compile(mod, target=tgt), tvm.cpu())
        return vm["main"](tvm.runtime.tensor(x)).numpy()

    np.testing.assert_allclose(run(applied), run(lowered), rtol=1e-4, atol=1e-4)

    cfg = MeasureConfig(runtime="tvm", repeat=3, warmup=1, max_retries=0,
                        tvm_work_dir=str(tmp_path), tvm_target=json.dumps(TARGET))
    for model in (a, b):
        res = measure(model, cfg)
        assert res.ok, res.error
        assert res.meta["tvm_tuned"] is True and res.fingerprint["tvm_tuned"] is True
        assert res.meta["tuning_tasks_found"] == res.meta["tuning_tasks"]
    assert {p.name: p.read_bytes() for p in db_dir.glob("database_*.json")} == files


def test_an_unnamed_handler_on_metaschedules_logger_does_not_stop_tuning(tmp_path):
    """MetaSchedule's create_loggers formats the names of the handlers already on its
    logger; a handler someone else added without a name made every task fail (seen in the
    full suite). captured_output sets such handlers aside while tuning."""
    import logging

    from measure.tune import MS_LOGGER, captured_output

    logger = logging.getLogger(MS_LOGGER)
    h = logging.NullHandler()
    logger.addHandler(h)
    try:
        with captured_output(tmp_path / "log.txt"):
            from tvm.s_tir.meta_schedule.logging import get_loggers_from_work_dir

            assert get_loggers_from_work_dir(str(tmp_path), ["task_a"])  # raised before
            assert h not in logger.handlers
        assert h in logger.handlers  # put back
    finally:
        logger.removeHandler(h)
