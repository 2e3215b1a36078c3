"""Runners: ONNX Runtime and TVM measure a tiny network; bad models come back as data."""

from __future__ import annotations

import math
import os
import time
from dataclasses import replace

import numpy as np
import pytest

from measure import MeasureConfig, MeasureResult, measure
from measure.fingerprint import config_hash, device_hash, device_slug, fingerprint
from measure.testing import malformed_model, tiny_model
from measure.timing import pin_set, pinned, with_retries

FAST = MeasureConfig(warmup=2, repeat=20, rounds=4, min_round_s=0)


def _check_stats(res: MeasureResult, repeat: int, config: MeasureConfig = FAST) -> None:
    assert res.ok, res.error
    assert res.repeat == repeat == len(res.times_ms)
    assert 0 < res.p10_ms <= res.p90_ms
    assert res.mean_ms > 0 and res.cv >= 0 and math.isfinite(res.std_ms)
    if not res.rounds:  # one burst (TVM): the median of the runs
        assert res.median_ms == pytest.approx(float(np.median(res.times_ms)))
        return
    # Interleaved rounds: the times are the rounds' runs in order; latency = median of
    # the round medians, all of which are kept.
    runs = replace(config, repeat=repeat).round_runs()
    assert res.rounds == len(runs) == len(res.round_medians_ms)
    bounds = np.cumsum([0] + runs)
    meds = [float(np.median(res.times_ms[a:b])) for a, b in zip(bounds[:-1], bounds[1:], strict=True)]
    assert list(res.round_medians_ms) == pytest.approx(meds)
    assert res.median_ms == pytest.approx(float(np.median(meds)))
    assert res.round_cv == pytest.approx(float(np.std(meds, ddof=1) / np.mean(meds)))


def test_ort_measures_tiny_network_and_restores_affinity():
    before = os.sched_getaffinity(0)
    res = measure(tiny_model(), FAST)
    _check_stats(res, 20)
    assert res.runtime == "ort"
    assert os.sched_getaffinity(0) == before
    assert res.meta["pinned_cpus"] == [min(before)]  # CPU 0, or the first one allowed
    for key in ("cpu_model", "cores", "os", "python", "onnxruntime", "threads", "provider"):
        assert key in res.fingerprint


def test_ort_accepts_path_bytes_and_explicit_inputs(tmp_path):
    import onnx

    from measure.ort import measure_model

    path = tmp_path / "tiny.onnx"
    onnx.save(tiny_model(), path)
    x = {"x": np.ones((1, 3, 16, 16), np.float32)}
    for model in (str(path), path.read_bytes()):
        _check_stats(measure_model(model, FAST, inputs=x), 20)


@pytest.mark.parametrize("runtime", ["ort", "tvm"])
def test_malformed_model_is_a_failure_record_not_an_exception(runtime):
    if runtime == "tvm":
        pytest.importorskip("tvm")
    res = measure(malformed_model(), MeasureConfig(runtime=runtime, repeat=3))
    assert not res.ok and res.error.startswith("build failed")
    assert math.isnan(res.median_ms) and res.runtime == runtime


def test_unknown_runtime_is_a_failure():
    res = measure(tiny_model(), MeasureConfig(runtime="tflite"))
    assert not res.ok and "unknown runtime" in res.error


@pytest.mark.tvm
def test_tvm_measures_tiny_network():
    pytest.importorskip("tvm")
    from measure.tvm import measure_model_tvm

    res = measure_model_tvm(tiny_model(), MeasureConfig(runtime="tvm", warmup=2, repeat=10))
    _check_stats(res, 10)
    assert res.runtime == "tvm" and res.meta["tuned"] is False
    assert res.meta["target"]["kind"] == "llvm"
    assert "target" in res.fingerprint and res.fingerprint["tvm"]


@pytest.mark.tvm
def test_tvm_unsupported_operator_is_recorded_as_build_failure():
    pytest.importorskip("tvm")
    res = measure(tiny_model("Celu"), MeasureConfig(runtime="tvm", repeat=3))
    assert not res.ok and "Celu" in res.error and res.error.startswith("build failed")
    assert measure(tiny_model("Celu"), FAST).ok  # ONNX Runtime runs it


def test_bound_outputs_run_the_same_model_into_buffers_allocated_once():
    """With ``bind_outputs`` every run writes the same output arrays (no new array per run):
    the values are what ``sess.run`` returns, and the protocol reaches the isolated worker."""
    from measure.ort import bound_run, build, prepare, session_inputs

    built = build(tiny_model(), FAST)
    sess = built.artifact
    feed = session_inputs(sess, 0)
    names = [o.name for o in sess.get_outputs()]
    want = sess.run(names, feed)
    call = bound_run(sess, feed, names, want)
    first = call()
    outs = [a for a in first if a.shape == want[0].shape and a.dtype == want[0].dtype]
    assert outs and np.array_equal(outs[-1], want[0])
    assert all(x is y for x, y in zip(call(), first, strict=True))  # the same buffers
    item = prepare(tiny_model(), FAST, bind_outputs=True)
    assert item.burst is not None and len(item.burst(1, 3).times_ms) == 3
    cfg = MeasureConfig(warmup=1, repeat=5, isolate=True, min_round_s=0)
    _check_stats(measure(tiny_model(), cfg, bind_outputs=True), 5, cfg)


def test_isolated_worker_and_timeout():
    cfg = MeasureConfig(warmup=1, repeat=5, isolate=True, min_round_s=0)
    res = measure(tiny_model(), cfg)
    _check_stats(res, 5, cfg)
    assert res.meta["isolated"] is True
    slow = measure(tiny_model(), MeasureConfig(repeat=5, isolate=True, timeout_s=0.05))
    assert not slow.ok and slow.error.startswith("timeout")


def test_retries_keep_the_quietest_attempt():
    noisy = np.array([1.0, 1.0, 5.0, 1.0])
    quiet = np.array([1.0, 1.01, 0.99, 1.0])
    seq = iter([noisy, quiet])
    res = with_retries(lambda a: next(seq), MeasureConfig(max_cv=0.1, max_retries=3), "ort")
    assert res.meta["attempts"] == 2 and not res.noisy and res.median_ms == 1.0
    res = with_retries(lambda a: noisy, MeasureConfig(max_cv=0.1, max_retries=2), "ort")
    assert res.meta["attempts"] == 3 and res.noisy


def test_pinning_helpers():
    assert pin_set(-1) is None
    cpus = pin_set(0, threads=99)
    assert cpus == os.sched_getaffinity(0)
    with pinned(0) as got:
        assert os.sched_getaffinity(0) == got and len(got) == 1


def test_fingerprint_hashes_and_slug():
    assert device_slug("Intel(R) Xeon(R) Processor", 2) == "xeon-2c"
    assert device_slug("Intel(R) Xeon(R) Gold 6240 CPU @ 2.60GHz", 36) == "xeon-gold-6240-36c"
    assert device_slug("AMD EPYC 7B13 64-Core Processor", 8) == "epyc-7b13-8c"
    fp = fingerprint(MeasureConfig())
    assert device_hash(fp) == device_hash(fingerprint(MeasureConfig(threads=4)))
    assert config_hash(MeasureConfig()) != config_hash(MeasureConfig(threads=4))
    assert config_hash(MeasureConfig()) == config_hash(MeasureConfig(isolate=True))
    remote = fingerprint(MeasureConfig(runtime="tvm", rpc_tracker="h:1", rpc_key="rpi"))
    assert device_hash(remote) != device_hash(fingerprint(MeasureConfig(runtime="tvm")))


def test_preempted_runs_are_dropped_and_replaced():
    from measure.timing import timed_runs

    calls = iter(range(10_000))

    def run_once():  # every third run is "preempted": off the CPU (asleep) for 3 ms
        if next(calls) % 3 == 2:
            time.sleep(0.003)
        t = time.thread_time_ns()
        while time.thread_time_ns() - t < 200_000:
            pass

    kept = timed_runs(run_once, 0, 12, drop=True)
    assert len(kept.times_ms) == 12 and kept.dropped >= 5
    assert kept.times_ms.max() < 2.0 and kept.off_cpu_frac > 0.3
    raw = timed_runs(run_once, 0, 12, drop=False)
    assert raw.dropped == 0 and raw.times_ms.max() > 3.0


@pytest.mark.slow
@pytest.mark.tvm
def test_tvm_tuning_records_are_reused_on_rerun(tmp_path):
    pytest.importorskip("tvm")
    # MetaSchedule takes ~50 s per tuned task here (builder and runner pools): short = 1 task.
    trials = 1 if os.environ.get("COSTMODELS_SHORT", "") not in ("", "0") else 8
    cfg = MeasureConfig(runtime="tvm", warmup=1, repeat=5, tvm_trials=trials,
                        tvm_work_dir=str(tmp_path / "tuning"))
    first = measure(tiny_model(size=8), cfg)
    assert first.ok, first.error
    assert first.meta["tuned"] is True and first.meta["tuning_reused"] is False
    assert first.meta["tune_s"] > 0
    again = measure(tiny_model(size=8), cfg)
    assert again.ok and again.meta["tuning_reused"] is True
    # the rerun tunes nothing: it only applies the stored records
    assert again.meta["tune_s"] < first.meta["tune_s"]
