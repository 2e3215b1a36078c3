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
to a free one, so a campaign can be spread over a farm by running several
clients.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import numpy as np

from measure.config import MeasureConfig, MeasureResult


def parse_tracker(spec: str) -> tuple[str, int]:
    """``"HOST:PORT"`` -> (host, port), with a clear error."""
    host, sep, port = spec.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ValueError(f"--rpc-tracker must be HOST:PORT (e.g. 127.0.0.1:9190), not {spec!r}")
    return host, int(port)


def request_remote(config: MeasureConfig, session_timeout: float | None = None):
    """Ask the tracker for a device registered under ``config.rpc_key``."""
    from tvm import rpc

    if not config.rpc_key:
        raise ValueError("--rpc-tracker needs --rpc-key: the key the device registered with")
    host, port = parse_tracker(config.rpc_tracker)
    tracker = rpc.connect_tracker(host, port)
    timeout = session_timeout if session_timeout is not None else config.timeout_s
    return tracker.request(config.rpc_key, priority=0, session_timeout=int(max(timeout, 1)))


def run_remote(lib_path: str, inputs: list[np.ndarray], config: MeasureConfig) -> MeasureResult:
    """Upload the exported library, load it on the remote device and time it there."""
    from tvm import relax
    from tvm.runtime import tensor

    from measure.tvm import time_vm

    if not lib_path or not os.path.isfile(lib_path):
        raise ValueError("RPC needs an exported library (build with export=True)")
    remote = request_remote(config)
    remote.upload(lib_path)
    lib = remote.load_module(Path(lib_path).name)
    dev = remote.cpu(0)
    vm = relax.VirtualMachine(lib, dev)
    args = [tensor(np.ascontiguousarray(a), dev) for a in inputs]
    res = time_vm(vm, dev, args, config, local=False)
    return replace(res, meta={**res.meta, "remote": config.rpc_key, "tracker": config.rpc_tracker})
