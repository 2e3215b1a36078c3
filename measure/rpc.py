"""Remote devices through TVM's RPC tracker: upload the compiled module, time it there.

``costmodels measure model.onnx --runtime tvm --rpc-tracker HOST:PORT --rpc-key KEY``
asks the tracker for a device registered under KEY, uploads the exported
library, loads it on the device and times it there with ``time_evaluator``
(the timing runs on the device; only the numbers travel back).

Setting up a device farm (the same recipe TVM users run theirs with)
---------------------------------------------------------------------

1. On a host every board can reach (your workstation), start the tracker::

       python -m tvm.exec.rpc_tracker --host 0.0.0.0 --port 9190

2. On each board, install the TVM *runtime* (on a Raspberry Pi or a Jetson:
   ``pip install apache-tvm`` where a wheel exists for the board, otherwise
   build ``libtvm_runtime.so`` from source with ``cmake -DUSE_LLVM=OFF`` and
   ``pip install -e python``; the compiler is not needed on the board), then
   register the board with the tracker under a key naming the device kind::

       python -m tvm.exec.rpc_server --tracker WORKSTATION:9190 --key rpi4

   An Android phone runs TVM's RPC app (``apps/android_rpc`` in the TVM
   sources): enter the tracker address and the key in the app and press
   "start RPC"; ``adb reverse tcp:9190 tcp:9190`` helps behind USB.

3. Check what registered: ``python -m tvm.exec.query_rpc_tracker --host
   WORKSTATION --port 9190``.

4. Measure, with a target for the board's CPU (cross-compiled here; set
   ``COSTMODELS_CROSS_CC`` to the cross compiler that links the shared library)::

       COSTMODELS_CROSS_CC=aarch64-linux-gnu-g++ costmodels measure model.onnx \\
           --runtime tvm --target "llvm -mtriple=aarch64-linux-gnu -mcpu=cortex-a72" \\
           --rpc-tracker WORKSTATION:9190 --rpc-key rpi4

   Raspberry Pi 4: ``-mcpu=cortex-a72``; Pi 5: ``cortex-a76``; Jetson Orin
   CPU: ``cortex-a78ae``; Pixel-class phones: ``-mtriple=aarch64-linux-android``
   with the NDK's clang as ``COSTMODELS_CROSS_CC``.

Several boards under the same key form a pool; the tracker hands each request
to a free one. ``measure-space ... --devices N`` keeps N of them busy at once
(:mod:`measure.farm`; commands in ``measure/FARM.md``).
"""

from __future__ import annotations

import os
import uuid
from dataclasses import replace
from pathlib import Path

import numpy as np

from costmodels.errors import CostModelError
from measure.config import MeasureConfig, MeasureResult


class RpcError(CostModelError, ValueError):
    """A tracker address or key that cannot be used."""


def parse_tracker(spec: str) -> tuple[str, int]:
    """``"HOST:PORT"`` -> (host, port), with a clear error."""
    host, sep, port = spec.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise RpcError(f"--rpc-tracker must be HOST:PORT with PORT 1-65535 (e.g. "
                       f"127.0.0.1:9190), not {spec[:80]!r}; "
                       "give the address the tracker was started with (--host/--port)")
    return host, int(port)


def request_remote(config: MeasureConfig, session_timeout: float | None = None):
    """Ask the tracker for a device registered under ``config.rpc_key``."""
    from tvm import rpc

    if not config.rpc_key:
        raise RpcError("--rpc-tracker needs --rpc-key: the key the device registered with "
                       "(python -m tvm.exec.rpc_server --key KEY)")
    host, port = parse_tracker(config.rpc_tracker)
    tracker = rpc.connect_tracker(host, port)
    timeout = session_timeout if session_timeout is not None else config.timeout_s
    return tracker.request(config.rpc_key, priority=0, session_timeout=int(max(timeout, 1)))


def run_remote(lib_path: str, inputs: list[np.ndarray], config: MeasureConfig) -> MeasureResult:
    """Upload the exported library, load it on a device from the tracker and time it there."""
    if not lib_path or not os.path.isfile(lib_path):
        raise RpcError("RPC needs an exported library (build with export=True)")
    res = time_on_session(request_remote(config), lib_path, inputs, config)
    return replace(res, meta={**res.meta, "remote": config.rpc_key, "tracker": config.rpc_tracker})


def time_on_session(remote, lib_path: str, inputs: list[np.ndarray],
                    config: MeasureConfig) -> MeasureResult:
    """Time an exported library on an open RPC session (upload, load, ``time_evaluator``)."""
    from tvm import relax
    from tvm.runtime import tensor

    from measure.tvm import time_vm

    # A unique remote name: a session that loads a second library under a name it has
    # loaded before gets the first one back from the dynamic loader (or crashes).
    name = f"{Path(lib_path).stem}-{uuid.uuid4().hex[:12]}.so"
    remote.upload(lib_path, target=name)
    lib = remote.load_module(name)
    dev = remote.cpu(0)
    vm = relax.VirtualMachine(lib, dev)
    args = [tensor(np.ascontiguousarray(a), dev) for a in inputs]
    return time_vm(vm, dev, args, config, local=False)
