"""Benchmark: a device farm on loopback, 1 board against 2, the same networks (issue 16).

A TVM RPC tracker and N servers on 127.0.0.1 (:func:`measure.farm.loopback`), then
:func:`measure.farm.run_farm` over the same NAS-Bench-201 cells (12; quick: 4) into a
fresh store: wall seconds, networks per minute, records per board, per-board reference
medians, and whether anything was lost. On this 2-core machine the boards share the
CPU with the compile pool, so the point is that both boards are used and nothing is
lost, not the speed-up.

    python bench/bench_farm.py [--quick]
"""

from __future__ import annotations

import argparse
import collections
import os
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def _run(servers: int, cells: int) -> dict:
    from costmodels.spaces import get_space
    from measure.campaign import space_jobs
    from measure.config import MeasureConfig
    from measure.farm import loopback, run_farm
    from measure.store import MeasureStore

    space = get_space("nb201")
    jobs = space_jobs(space, space.sample(cells, seed=0), "cifar10", 1)
    with loopback(servers=servers) as farm, tempfile.TemporaryDirectory() as tmp:
        cfg = MeasureConfig(runtime="tvm", warmup=5, repeat=30, max_retries=0,
                            rpc_tracker=farm.tracker, rpc_key=farm.key, timeout_s=120,
                            tvm_target='{"kind": "llvm"}')
        with MeasureStore(Path(tmp) / "runs.sqlite") as store:
            s = run_farm(jobs, store, cfg, show_progress=False)
    per_board = collections.Counter(r.result.fingerprint.get("board") for r in s.records)
    return {"servers": servers, "cells": cells, "seconds": s.seconds, "measured": s.measured,
            "failed": s.failed, "ok": sum(r.result.ok for r in s.records),
            "per_board": dict(per_board), "boards": s.boards, "spread": s.board_spread,
            "requeued": s.requeued}


def markdown(runs: list[dict]) -> str:
    base = runs[0]["seconds"]
    lines = ["## Device farm on loopback (`bench/bench_farm.py`)", "",
             f"{runs[0]['cells']} NAS-Bench-201 cells compiled here (one build process) and "
             "timed over TVM RPC on loopback servers (generic llvm target, 30 runs each); "
             f"1-min load average {os.getloadavg()[0]:.1f} on a shared 2-core machine.", "",
             "| boards | wall s | cells/min | x 1 board | ok / cells | records per board | "
             "reference median per board (ms) |", "|---:|---:|---:|---:|---|---|---|"]
    for r in runs:
        refs = ", ".join(f"{b.rsplit(':', 1)[-1]}: {v['reference_ms']:.3f}"
                         for b, v in r["boards"].items() if v.get("reference_ms"))
        counts = ", ".join(f"{b.rsplit(':', 1)[-1]}: {n}" for b, n in r["per_board"].items())
        lines.append(f"| {r['servers']} | {r['seconds']:.1f} | {60 * r['cells'] / r['seconds']:.1f}"
                     f" | {base / r['seconds']:.2f} | {r['ok']}/{r['cells']} | {counts} | {refs} |")
    return "\n".join(lines) + "\n"


def section(quick: bool = False) -> str:
    cells = 4 if quick else 12
    return markdown([_run(1, cells), _run(2, cells)])


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--quick", action="store_true")
    print(section(p.parse_args().quick))
    return 0


if __name__ == "__main__":
    sys.exit(main())
