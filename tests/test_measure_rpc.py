"""TVM RPC end to end on loopback: a tracker and a server started here, stopped here."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time

import pytest

from measure import MeasureConfig, measure
from measure.testing import tiny_model

pytestmark = pytest.mark.tvm


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_port(port: int, proc: subprocess.Popen, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"process exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise TimeoutError(f"nothing listens on 127.0.0.1:{port}")


def _start(args: list[str]) -> subprocess.Popen:
    # Own process group: tracker and server fork workers that keep the ports.
    return subprocess.Popen([sys.executable, "-m", *args], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _stop(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=10)


@pytest.fixture
def tracker():
    pytest.importorskip("tvm")
    pytest.importorskip("tornado")
    from tvm import rpc

    tport, sport = _free_port(), _free_port()
    procs = [_start(["tvm.exec.rpc_tracker", "--host", "127.0.0.1", "--port", str(tport),
                     "--port-end", str(tport + 1)])]
    try:
        _wait_port(tport, procs[0])
        procs.append(_start(["tvm.exec.rpc_server", "--tracker", f"127.0.0.1:{tport}",
                             "--key", "loopback", "--host", "127.0.0.1", "--port", str(sport),
                             "--port-end", str(sport + 1)]))
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            queue = rpc.connect_tracker("127.0.0.1", tport).summary()["queue_info"]
            if queue.get("loopback", {}).get("free", 0) > 0:
                break
            time.sleep(0.2)
        else:
            pytest.fail("the RPC server did not register with the tracker in 30 s")
        yield f"127.0.0.1:{tport}"
    finally:
        for p in reversed(procs):
            _stop(p)


def test_rpc_loopback_measures_on_the_remote(tracker):
    cfg = MeasureConfig(runtime="tvm", warmup=2, repeat=10, rpc_tracker=tracker,
                        rpc_key="loopback", timeout_s=60)
    res = measure(tiny_model(), cfg)
    assert res.ok, res.error
    assert res.repeat == 10 and res.median_ms > 0
    assert res.meta["remote"] == "loopback" and res.meta["tracker"] == tracker
    assert res.fingerprint["remote"] == f"rpc://{tracker}/loopback"


def test_rpc_unknown_tracker_is_a_failure_record():
    pytest.importorskip("tvm")
    cfg = MeasureConfig(runtime="tvm", repeat=3, rpc_tracker="127.0.0.1:notaport",
                        rpc_key="x")
    res = measure(tiny_model(), cfg)
    assert not res.ok and "HOST:PORT" in res.error


def test_bad_tracker_address_is_a_costmodels_error():
    from costmodels.errors import CostModelError
    from measure.rpc import parse_tracker

    assert parse_tracker("127.0.0.1:9190") == ("127.0.0.1", 9190)
    for bad in ("127.0.0.1", ":9190", "host:port"):
        with pytest.raises(CostModelError, match="HOST:PORT"):
            parse_tracker(bad)
