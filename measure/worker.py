"""Isolation: measure one network in a fresh Python process with a timeout.

A fresh process starts with a clean allocator, empty caches and no state left
by earlier networks; a crash (segfault, OOM kill) or a hang becomes a failure
record instead of ending the campaign. The parent writes the model to a
temporary file, runs ``python -m measure.worker JOB_JSON OUT_JSON`` in
its own session (so the whole process group can be killed on timeout) and
reads the result back as JSON.
"""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, fields, replace
from pathlib import Path

from measure.config import MeasureConfig, MeasureResult
from measure.inputs import as_bytes
from measure.rounds import WindowReport


def result_to_json(res: MeasureResult) -> dict:
    return asdict(res)


def result_from_json(doc: dict) -> MeasureResult:
    names = {f.name for f in fields(MeasureResult)}
    kw = {k: v for k, v in doc.items() if k in names}
    kw["times_ms"] = tuple(kw.get("times_ms", ()))
    kw["round_medians_ms"] = tuple(kw.get("round_medians_ms", ()))
    for k in ("median_ms", "mean_ms", "p10_ms", "p90_ms", "std_ms", "cv", "round_cv",
              "corrected_ms"):
        if k in kw and kw[k] is None:
            kw[k] = math.nan
    return MeasureResult(**kw)


def measure_isolated(model, config: MeasureConfig, bind_outputs: bool = False) -> MeasureResult:
    """Measure ``model`` in a fresh worker process; a timeout or crash is a failure record.
    ``bind_outputs``: see :func:`measure.ort.burst_timer`."""
    try:
        data = as_bytes(model)
    except Exception as exc:  # noqa: BLE001
        return MeasureResult.failure(f"build failed: {type(exc).__name__}: {exc}",
                                     config.runtime)
    [res], _ = _run_worker([data], replace(config, isolate=False), ["model"], None,
                           bind_outputs)
    return res


def measure_window_isolated(models: Sequence[bytes | MeasureResult], config: MeasureConfig,
                            names: Sequence[str], anchor_ms: float | None = None
                            ) -> tuple[list[MeasureResult], WindowReport]:
    """One window timed in interleaved rounds in a fresh worker process (killed after
    ``config.timeout_s`` per model). If the worker dies, each model of the window is
    measured alone in its own worker, so that only the culprit becomes a failure."""
    inner = replace(config, isolate=False)
    idx = [i for i, m in enumerate(models) if not isinstance(m, MeasureResult)]
    out: list[MeasureResult] = [m if isinstance(m, MeasureResult) else None  # type: ignore
                                for m in models]
    if not idx:
        return out, WindowReport(len(models), 0, ())
    results, report = _run_worker([models[i] for i in idx], inner, [names[i] for i in idx],
                                  anchor_ms)
    if len(idx) > 1 and all(not r.ok and r.meta.get("worker_failed") for r in results):
        results = [_run_worker([models[i]], inner, [names[i]], anchor_ms)[0][0] for i in idx]
    for i, r in zip(idx, results, strict=True):
        out[i] = r
    return out, report


def _run_worker(models: Sequence[bytes], config: MeasureConfig, names: Sequence[str],
                anchor_ms: float | None, bind_outputs: bool = False
                ) -> tuple[list[MeasureResult], WindowReport]:
    timeout = config.timeout_s * len(models)
    with tempfile.TemporaryDirectory(prefix="costmodels-worker-") as tmp:
        paths = []
        for k, data in enumerate(models):
            paths.append(str(Path(tmp) / f"model{k}.onnx"))
            Path(paths[-1]).write_bytes(data)
        job, out_path = Path(tmp) / "job.json", Path(tmp) / "result.json"
        job.write_text(json.dumps({"models": paths, "names": list(names),
                                   "config": config.to_dict(), "anchor_ms": anchor_ms,
                                   "bind_outputs": bind_outputs}))
        cmd = [sys.executable, "-m", "measure.worker", str(job), str(out_path)]
        roots = [str(Path(__file__).resolve().parent.parent), os.environ.get("PYTHONPATH", "")]
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in roots if p)}
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                start_new_session=True, env=env)
        try:
            _, err = proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill_group(proc)
            return _failed(len(models), config, f"timeout: the worker ran longer than "
                           f"{timeout:g} s and was killed")
        if proc.returncode != 0 or not out_path.is_file():
            tail = err.decode(errors="replace").strip().splitlines()[-5:]
            why = (f"killed by signal {-proc.returncode}" if proc.returncode < 0
                   else f"exit status {proc.returncode}")
            return _failed(len(models), config, f"worker crashed ({why}): " + " | ".join(tail))
        doc = json.loads(out_path.read_text())
    results = [replace(r, meta={**r.meta, "isolated": True})
               for r in map(result_from_json, doc["results"])]
    rep = doc["report"]
    report = WindowReport(rep["networks"], rep["rounds"], tuple(rep["round_factors"]),
                          tuple(rep["reference_ms"]),
                          math.nan if rep["anchor_ms"] is None else rep["anchor_ms"],
                          rep["seconds"])
    return results, report


def _failed(n: int, config: MeasureConfig, why: str) -> tuple[list[MeasureResult], WindowReport]:
    res = MeasureResult.failure(why, config.runtime, meta={"isolated": True,
                                                           "worker_failed": True})
    return [res] * n, WindowReport(n, 0, ())


def _kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait()


def main(argv: list[str]) -> int:
    """``python -m measure.worker JOB.json OUT.json``: time the job's models in one window."""
    job_path, out_path = argv
    job = json.loads(Path(job_path).read_text())
    config = MeasureConfig(**job["config"])
    if config.runtime == "ort":
        from measure.campaign import measure_models

        results, report = measure_models(job["models"], config, job["names"], job["anchor_ms"],
                                         bool(job.get("bind_outputs")))
    else:  # runtimes without a burst timer: each model measured whole by its runner
        from measure import measure

        results = [measure(m, config) for m in job["models"]]
        report = WindowReport(len(results), 1, ())
    doc = {"results": [result_to_json(r) for r in results], "report": report.as_dict()}
    Path(out_path).write_text(json.dumps(doc, default=_json_default))
    return 0


def _json_default(o):
    return None if o is None else str(o)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
