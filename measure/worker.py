"""Isolation: measure one network in a fresh Python process with a timeout.

A fresh process starts with a clean allocator, empty caches and no state left
by earlier networks; a crash (segfault, OOM kill) or a hang becomes a failure
record instead of ending the campaign. The parent writes the model to a
temporary file, runs ``python -m measure.worker MODEL CONFIG_JSON OUT_JSON`` in
its own session (so the whole process group can be killed on timeout) and
reads the result back as JSON.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
from dataclasses import asdict, fields, replace
from pathlib import Path

from measure.config import MeasureConfig, MeasureResult
from measure.inputs import as_bytes


def result_to_json(res: MeasureResult) -> dict:
    return asdict(res)


def result_from_json(doc: dict) -> MeasureResult:
    names = {f.name for f in fields(MeasureResult)}
    kw = {k: v for k, v in doc.items() if k in names}
    kw["times_ms"] = tuple(kw.get("times_ms", ()))
    return MeasureResult(**kw)


def measure_isolated(model, config: MeasureConfig) -> MeasureResult:
    """Measure ``model`` in a fresh worker process; a timeout or crash is a failure record."""
    try:
        data = as_bytes(model)
    except Exception as exc:  # noqa: BLE001
        return MeasureResult.failure(f"build failed: {type(exc).__name__}: {exc}",
                                     config.runtime)
    inner = replace(config, isolate=False)
    with tempfile.TemporaryDirectory(prefix="costmodels-worker-") as tmp:
        model_path, out_path = Path(tmp) / "model.onnx", Path(tmp) / "result.json"
        model_path.write_bytes(data)
        cmd = [sys.executable, "-m", "measure.worker", str(model_path),
               json.dumps(inner.to_dict()), str(out_path)]
        paths = [str(Path(__file__).resolve().parent.parent), os.environ.get("PYTHONPATH", "")]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in paths if p)}
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                start_new_session=True, env=env)
        try:
            _, err = proc.communicate(timeout=config.timeout_s)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            return MeasureResult.failure(
                f"timeout: the worker ran longer than {config.timeout_s:g} s and was killed",
                config.runtime, meta={"isolated": True})
        if proc.returncode != 0 or not out_path.is_file():
            tail = err.decode(errors="replace").strip().splitlines()[-5:]
            why = (f"killed by signal {-proc.returncode}" if proc.returncode < 0
                   else f"exit status {proc.returncode}")
            return MeasureResult.failure(f"worker crashed ({why}): " + " | ".join(tail),
                                         config.runtime, meta={"isolated": True})
        res = result_from_json(json.loads(out_path.read_text()))
    return replace(res, meta={**res.meta, "isolated": True})


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def main(argv: list[str]) -> int:
    model_path, config_json, out_path = argv
    config = MeasureConfig(**json.loads(config_json))
    from measure import measure

    res = measure(model_path, config)
    doc = result_to_json(res)
    Path(out_path).write_text(json.dumps(doc, default=lambda o: None if o is None else str(o)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
