"""A device farm on loopback: one tracker, two servers, started and stopped here."""

from __future__ import annotations

import os

import numpy as np
import pytest

from measure import MeasureConfig
from measure.testing import tiny_model

pytestmark = pytest.mark.tvm
SHORT = os.environ.get("COSTMODELS_SHORT", "") not in ("", "0")


def _jobs(tmp_path, n: int):
    """n tiny ONNX files with different weights (different networks, same shapes)."""
    import onnx
    from onnx import numpy_helper

    from measure.campaign import file_jobs

    paths = []
    for i in range(n):
        m = tiny_model()
        rng = np.random.default_rng(i)
        for init in m.graph.initializer:
            w = numpy_helper.to_array(init)
            init.CopyFrom(numpy_helper.from_array(rng.normal(0, 0.2, w.shape).astype(w.dtype),
                                                  init.name))
        p = tmp_path / f"net{i}.onnx"
        onnx.save(m, p)
        paths.append(p)
    return file_jobs(paths)


@pytest.fixture
def farm2():
    pytest.importorskip("tvm")
    pytest.importorskip("tornado")
    from measure.farm import FarmError, loopback

    try:
        with loopback(servers=2, key="loopback", timeout_s=90) as farm:
            yield farm
    except FarmError as exc:
        pytest.skip(f"could not start a loopback farm: {exc}")


def _config(tracker: str) -> MeasureConfig:
    return MeasureConfig(runtime="tvm", warmup=2, repeat=5 if SHORT else 20, max_retries=0,
                         rpc_tracker=tracker, rpc_key="loopback", timeout_s=60,
                         tvm_target='{"kind": "llvm"}')


@pytest.mark.slow
def test_farm_uses_both_boards_and_a_lost_board_loses_nothing(farm2, tmp_path, monkeypatch):
    from measure import farm
    from measure.store import MeasureStore

    jobs = _jobs(tmp_path, 4 if SHORT else 6)
    victim = sorted(farm2.servers)[1]
    original = farm._Farm._time_on
    killed = []

    def time_on(self, sess, board, item, count=True):
        # Kill the second board while it holds a network (after its reference run).
        if count and board == victim and not killed:
            farm2.kill(board)
            killed.append(item.job.net.key)
        return original(self, sess, board, item, count)

    monkeypatch.setattr(farm._Farm, "_time_on", time_on)
    with MeasureStore(tmp_path / "runs.sqlite") as store:
        summary = farm.run_farm(jobs, store, _config(farm2.tracker), show_progress=False)
        rows = store.records(summary.config_hash, summary.device_hash)
    assert summary.devices == 2                     # as many as the tracker reported free
    assert len(rows) == len(jobs) and all(r.result.ok for r in rows), \
        [r.result.error for r in rows if not r.result.ok]
    boards = {r.result.fingerprint["board"] for r in rows}
    assert boards <= set(farm2.servers)
    # Both boards served: the victim timed the reference network before it was killed.
    assert set(summary.boards) >= set(farm2.servers)
    assert summary.boards[sorted(farm2.servers)[0]]["reference_ms"] > 0
    if killed:                                      # the victim got a network: requeued
        assert summary.requeued >= 1 and summary.boards[victim]["lost"]
        redo = next(r for r in rows if r.net.key == killed[0])
        assert redo.result.fingerprint["board"] != victim
        assert redo.result.meta["boards_tried"][0] == victim


@pytest.mark.slow
def test_farm_resumes_from_the_store(farm2, tmp_path):
    from measure.farm import run_farm
    from measure.store import MeasureStore

    jobs = _jobs(tmp_path, 3)
    cfg = _config(farm2.tracker)
    with MeasureStore(tmp_path / "runs.sqlite") as store:
        first = run_farm(jobs[:2], store, cfg, devices=2, show_progress=False)
        second = run_farm(jobs, store, cfg, devices=2, show_progress=False)
    assert first.measured == 2 and second.skipped == 2 and second.measured == 1
    assert all(r.result.ok for r in second.records) and len(second.records) == 3


def test_farm_without_a_free_board_is_a_clear_error(tmp_path):
    pytest.importorskip("tvm")
    from measure.farm import FarmError, run_farm
    from measure.store import MeasureStore

    cfg = MeasureConfig(runtime="tvm", rpc_tracker="127.0.0.1:1", rpc_key="none")
    with MeasureStore(tmp_path / "runs.sqlite") as store, \
            pytest.raises(FarmError, match="cannot reach the TVM RPC tracker"):
        run_farm(_jobs(tmp_path, 1), store, cfg, show_progress=False)
