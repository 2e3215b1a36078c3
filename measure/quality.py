"""Measurement quality: how reproducible is a median, within a run and between processes?

:func:`between_process_spread` measures a fixed set of NAS-Bench-201 cells in
``n_proc`` rounds; in every round each cell is measured in a fresh worker
process (:mod:`measure.worker`), rounds interleaved so slow drifts of the
machine hit every cell alike. Per cell it reports the within-run coefficient
of variation and the relative spread of the medians across processes,
``(max - min) / median``. ``make bench`` calls it; so can you::

    python -m measure.quality --runtime ort --cells 0,11,1462,5000,15624
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from collections.abc import Sequence
from dataclasses import replace
from typing import Any

from measure.config import MeasureConfig


def between_process_spread(indices: Sequence[int], runtime: str = "ort", n_proc: int = 5,
                           config: MeasureConfig | None = None, dataset: str = "cifar10"
                           ) -> dict[str, Any]:
    """Within-run CV and between-process spread of medians for NAS-Bench-201 cells.

    Returns ``{"runtime", "n_proc", "dataset", "config", "seconds", "cells": [{"arch_index",
    "arch_str", "medians_ms", "cv_within" (median over processes), "cv_within_max",
    "spread" ((max-min)/median of the medians), "p10s_ms", "spread_p10" (the same for
    the 10th percentiles), "off_cpu_frac", "failures"}], "median_spread", "max_spread",
    "median_cv", "median_spread_p10", "loadavg"}``. Times in ms; spreads and CVs are
    fractions; ``loadavg`` (1, 5, 15 min) says how busy the machine was.
    """
    from costmodels.spaces import nb201
    from measure.worker import measure_isolated

    config = replace(config or MeasureConfig(), runtime=runtime, isolate=False)
    models = {i: nb201.build_onnx(int(i), dataset).SerializeToString() for i in indices}
    runs: dict[int, list] = {i: [] for i in indices}
    t0 = time.perf_counter()
    for _ in range(n_proc):
        for i in indices:
            runs[i].append(measure_isolated(models[i], config))
    cells = []
    for i in indices:
        ok = [r for r in runs[i] if r.ok]
        medians = [r.median_ms for r in ok]
        p10s = [r.p10_ms for r in ok]
        cvs = [r.cv for r in ok]
        cells.append({
            "arch_index": int(i), "arch_str": nb201.SPACE[int(i)],
            "medians_ms": medians,
            "cv_within": statistics.median(cvs) if cvs else None,
            "cv_within_max": max(cvs) if cvs else None,
            "spread": _spread(medians),
            "p10s_ms": p10s,
            "spread_p10": _spread(p10s),
            "off_cpu_frac": [r.meta.get("off_cpu_frac") for r in ok],
            "failures": [r.error for r in runs[i] if not r.ok],
        })
    spreads = [c["spread"] for c in cells if c["spread"] is not None]
    spreads_p10 = [c["spread_p10"] for c in cells if c["spread_p10"] is not None]
    cvs = [c["cv_within"] for c in cells if c["cv_within"] is not None]
    return {
        "runtime": runtime, "n_proc": n_proc, "dataset": dataset, "config": config.to_dict(),
        "seconds": round(time.perf_counter() - t0, 1), "cells": cells,
        "median_spread": statistics.median(spreads) if spreads else None,
        "max_spread": max(spreads) if spreads else None,
        "median_cv": statistics.median(cvs) if cvs else None,
        "median_spread_p10": statistics.median(spreads_p10) if spreads_p10 else None,
        "loadavg": [round(x, 2) for x in os.getloadavg()],
    }


def _spread(values: Sequence[float]) -> float | None:
    """(max - min) / median, or None with fewer than two values."""
    if len(values) < 2:
        return None
    return (max(values) - min(values)) / statistics.median(values)


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m measure.quality",
                                description="Within-run CV and between-process spread.")
    p.add_argument("--runtime", choices=["ort", "tvm"], default="ort")
    p.add_argument("--cells", default="0,11,1462,5000,15624",
                   help="comma-separated NAS-Bench-201 indices")
    p.add_argument("--n-proc", type=int, default=5)
    p.add_argument("--warmup", type=int, default=MeasureConfig.warmup)
    p.add_argument("--repeat", type=int, default=MeasureConfig.repeat)
    p.add_argument("--pin-cpu", type=int, default=MeasureConfig.pin_cpu)
    args = p.parse_args(argv)
    cfg = MeasureConfig(runtime=args.runtime, warmup=args.warmup, repeat=args.repeat,
                        pin_cpu=args.pin_cpu)
    cells = [int(c) for c in args.cells.split(",") if c.strip()]
    json.dump(between_process_spread(cells, args.runtime, args.n_proc, cfg), sys.stdout,
              indent=1)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
