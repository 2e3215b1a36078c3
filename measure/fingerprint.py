"""Device fingerprint: what machine and software a number was measured with.

:func:`fingerprint` goes into every record; :func:`device_hash` keys the store
(hardware plus the runtime's version: a new ORT release is a new device for
timing purposes); :func:`device_slug` names files (``xeon-2c``).
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import re
from functools import cache
from importlib import metadata
from typing import Any

from measure.config import MeasureConfig

# Words of a CPU model name that say nothing about the chip.
_NOISE = {"intel", "amd", "(r)", "(tm)", "processor", "cpu", "core(tm)", "with", "radeon",
          "graphics", "genuine", "authentic"}
# Fields of the fingerprint that identify the device (others describe the settings).
DEVICE_KEYS = ("cpu_model", "cores", "machine", "os_kernel", "runtime_version", "remote")


@cache
def cpu_model() -> str:
    """CPU model name from /proc/cpuinfo (or the platform's best guess)."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                key, _, value = line.partition(":")
                if key.strip() in ("model name", "Model", "Hardware", "cpu model"):
                    return value.strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def governor() -> str:
    """cpufreq scaling governor of CPU 0, or '' when the kernel does not expose it."""
    try:
        with open("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor") as fh:
            return fh.read().strip()
    except OSError:
        return ""


def _version(dist: str) -> str:
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return ""


def runtime_version(runtime: str) -> str:
    return _version("onnxruntime") if runtime == "ort" else _version("apache-tvm")


def host_mcpu() -> str:
    """LLVM name of the host CPU (``skylake-avx512``, ``znver4``), '' when unknown."""
    try:
        from tvm.target.codegen import llvm_get_system_cpu

        name = llvm_get_system_cpu()
        return "" if name in ("generic", "") else str(name)
    except Exception:  # noqa: BLE001 - TVM missing or too old: no mcpu
        return ""


def fingerprint(config: MeasureConfig | None = None) -> dict[str, Any]:
    """CPU, cores, governor, OS, Python, runtime versions and the thread/target settings."""
    config = config or MeasureConfig()
    affinity = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None
    fp: dict[str, Any] = {
        "cpu_model": cpu_model(),
        "cores": os.cpu_count(),
        "cores_allowed": affinity,
        "governor": governor(),
        "machine": platform.machine(),
        "os": platform.system(),
        "os_kernel": platform.release(),
        "python": platform.python_version(),
        "runtime": config.runtime,
        "runtime_version": runtime_version(config.runtime),
        "onnxruntime": _version("onnxruntime"),
        "tvm": _version("apache-tvm"),
        "numpy": _version("numpy"),
        "threads": config.threads,
        "inter_op_threads": 1,
        "pin_cpu": config.pin_cpu,
        "remote": "",
        # Not part of the device: how busy the machine was (1, 5, 15 min load averages).
        "loadavg": [round(x, 2) for x in os.getloadavg()] if hasattr(os, "getloadavg") else None,
    }
    if config.runtime == "ort":
        fp["provider"] = config.provider
        fp["graph_opt"] = config.graph_opt
    else:
        fp["target"] = config.tvm_target or f"llvm mcpu={host_mcpu() or 'generic'}"
    if config.rpc_tracker:
        # The timed device is the one behind the tracker, not this host.
        fp["remote"] = f"rpc://{config.rpc_tracker}/{config.rpc_key}"
        for k in ("cpu_model", "cores", "cores_allowed", "governor", "machine", "os_kernel"):
            fp[f"host_{k}"] = fp.pop(k)
        fp["cpu_model"] = f"remote:{config.rpc_key}"
        fp["cores"] = None
        fp["machine"] = ""
        fp["os_kernel"] = ""
    return fp


def _hash(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def device_hash(fp: dict[str, Any]) -> str:
    """16-hex hash of the device part of a fingerprint (hardware + runtime version)."""
    return _hash({k: fp.get(k) for k in DEVICE_KEYS} | {"runtime": fp.get("runtime")})


def config_hash(config: MeasureConfig) -> str:
    """16-hex hash of the settings that change a measured number.

    ``isolate``/``timeout_s`` are left out: they decide how a network is run, not
    what its timing protocol is, so an isolated rerun resumes a plain campaign.
    """
    d = config.to_dict()
    work_dir = d.pop("tvm_work_dir", "")
    for k in ("isolate", "timeout_s"):
        d.pop(k, None)
    if config.runtime == "tvm" and work_dir and config.tvm_trials == 0:
        # figures compiled from a tuning database are keyed by that database, so tuned
        # and untuned figures never share a store key
        from measure.tune import database_dir, database_id
        from measure.tvm import target_dict
        d["tuning_db"] = database_id(database_dir(work_dir, target_dict(config)))
    return _hash(d)


def device_slug(model: str | None = None, cores: int | None = None) -> str:
    """Short, file-name-safe device name: meaningful words of the CPU model + core count.

    ``"Intel(R) Xeon(R) Processor"`` on 2 cores -> ``"xeon-2c"``;
    ``"Intel(R) Xeon(R) Gold 6240 CPU @ 2.60GHz"`` on 36 -> ``"xeon-gold-6240-36c"``.
    """
    model = cpu_model() if model is None else model
    cores = os.cpu_count() if cores is None else cores
    text = re.sub(r"@.*$", "", model.lower())              # clock speed
    text = re.sub(r"\(r\)|\(tm\)", " ", text)
    words = [w for w in re.split(r"[^a-z0-9.+-]+", text)
             if w and w not in _NOISE and not re.fullmatch(r"\d+-core", w)]
    words = [re.sub(r"[^a-z0-9]+", "-", w).strip("-") for w in words]
    slug = "-".join(w for w in words if w) or "cpu"
    return f"{slug}-{cores}c"
