"""Tune the space once, then measure networks from the database with no new trials."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from measure import MeasureConfig, measure
from measure.testing import tiny_model

pytestmark = pytest.mark.tvm
SHORT = os.environ.get("COSTMODELS_SHORT", "") not in ("", "0")
TARGET = {"kind": "llvm", "num-cores": 1}   # generic llvm: the same on every x86 host


def _reweighted(seed: int):
    """tiny_model with other weights: another network with the same tuning tasks."""
    from onnx import numpy_helper

    m = tiny_model()
    rng = np.random.default_rng(seed)
    for init in m.graph.initializer:
        w = numpy_helper.to_array(init)
        init.CopyFrom(numpy_helper.from_array(rng.normal(0, 0.2, w.shape).astype(w.dtype),
                                              init.name))
    return m


def test_captured_output_keeps_stdout_clean(tmp_path, capfd):
    from measure.tune import captured_output

    log = tmp_path / "logs" / "out.log"
    with captured_output(log):
        print("python print", flush=True)
        os.write(1, b"fd one\n")
    print("after")
    out, _ = capfd.readouterr()
    assert out == "after\n"
    assert log.read_text() == "python print\nfd one\n"


def test_target_key_names_the_target():
    from measure.tune import target_key

    a = target_key({"kind": "llvm", "mcpu": "znver4", "num-cores": 1})
    b = target_key({"kind": "llvm", "mcpu": "skylake-avx512", "num-cores": 1})
    assert a.startswith("llvm-znver4-1c-") and b.startswith("llvm-skylake-avx512-1c-")
    assert a != b


def test_missing_database_is_a_build_error_record(tmp_path):
    pytest.importorskip("tvm")
    cfg = MeasureConfig(runtime="tvm", repeat=3, warmup=1, tvm_work_dir=str(tmp_path / "none"),
                        tvm_target=json.dumps(TARGET))
    res = measure(tiny_model(), cfg)
    assert not res.ok and "no tuning database" in res.error and "costmodels tvm tune" in res.error


@pytest.mark.slow
def test_tune_the_space_once_then_measure_two_networks_with_zero_trials(tmp_path):
    """`costmodels tvm tune --json` over a model folder (both files: ``--sample 2``; without it
    a covering set, here one file), then two networks from its database."""
    pytest.importorskip("tvm")
    import onnx

    from measure import tune

    nets = [("a", tiny_model()), ("b", _reweighted(1))]
    tasks = tune.extract_space_tasks(nets, TARGET, show_progress=False)
    one = tune.extract_space_tasks(nets[:1], TARGET, show_progress=False)
    # Same kernels in both networks: one task each, used by both, weights summed.
    assert [t.key for t in tasks] == [t.key for t in one]
    assert all(t.networks == ("a", "b") for t in tasks)
    assert [t.weight for t in tasks] == [2 * t.weight for t in one]

    models = tmp_path / "models"
    models.mkdir()
    for name, m in nets:
        onnx.save(m, models / f"{name}.onnx")
    work = tmp_path / "db"
    n_tune = min(2, len(tasks))
    cmd = [sys.executable, "-m", "costmodels.cli", "tvm", "tune", "--space", f"models:{models}", "--sample", "2",
           "--work-dir", str(work), "--trials-per-task", "2" if SHORT else "8",
           "--max-tasks", str(n_tune), "--population", "16" if SHORT else "64",
           "--target", json.dumps(TARGET), "--json", "--quiet"]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-2000:]
    doc = json.loads(proc.stdout)            # nothing but JSON on stdout
    assert doc["networks"] == 2 and doc["tasks"] == n_tune and doc["tuned"] == n_tune
    assert doc["records_after"] > 0
    db_dir = tune.database_dir(work, TARGET)
    files = {p.name: p.read_bytes() for p in db_dir.glob("database_*.json")}
    # Resumable: a second run tunes nothing and adds no record.
    again = tune.tune_space(tasks[:n_tune], work, TARGET, 2 if SHORT else 8,
                            show_progress=False)
    assert again.tuned == 0 and again.skipped == n_tune
    assert again.records_after == doc["records_after"]

    cfg = MeasureConfig(runtime="tvm", repeat=5, warmup=1, max_retries=0,
                        tvm_work_dir=str(work), tvm_target=json.dumps(TARGET))
    for _, model in nets:
        res = measure(model, cfg)
        assert res.ok, res.error
        assert res.meta["tuning_tasks"] == len(tasks)
        assert res.meta["tuning_tasks_found"] == n_tune
        assert res.meta["tvm_tuned"] == (n_tune == len(tasks))
        assert res.fingerprint["tuning_db"] == tune.database_id(db_dir) != ""
    # Measuring ran no trial: the database is byte-for-byte what tuning left.
    assert {p.name: p.read_bytes() for p in db_dir.glob("database_*.json")} == files

    untuned = measure(nets[0][1], MeasureConfig(runtime="tvm", repeat=5, warmup=1,
                                                max_retries=0, tvm_target=json.dumps(TARGET)))
    assert untuned.ok and untuned.fingerprint["tvm_tuned"] is False
    assert untuned.fingerprint["tuning_db"] == ""


def test_string_targets_type_their_options():
    """List options (-mattr, -keys) become lists, integers ints; num-cores only for llvm;
    what TVM refuses is an InputError before any work."""
    from costmodels.errors import InputError
    from measure.tvm import target_dict

    d = target_dict(MeasureConfig(runtime="tvm", tvm_target="llvm -mtriple=aarch64-linux-gnu "
                                  "-mcpu=cortex-a72 -mattr=+neon,+v8.2a -num-cores=4"))
    assert d["mattr"] == ["+neon", "+v8.2a"] and d["num-cores"] == 4
    assert target_dict(MeasureConfig(runtime="tvm", tvm_target="c")) == {"kind": "c"}
    for bad in ("llvm -num-cores=-4", "llvm -bogus=1"):
        with pytest.raises(InputError, match="--target"):
            target_dict(MeasureConfig(runtime="tvm", tvm_target=bad))


def test_a_cross_compiled_target_is_not_run_here():
    """A target for another architecture, measured without --rpc-tracker, fails naming
    the target and the way to measure it (not TVM's 'architecture mismatch')."""
    res = measure(tiny_model(), MeasureConfig(
        runtime="tvm", repeat=2, warmup=0, rounds=1,
        tvm_target="llvm -mtriple=aarch64-linux-gnu -mcpu=cortex-a72"))
    assert not res.ok and "--rpc-tracker" in res.error and "aarch64" in res.error
