"""Build a LUT: collect the unique kernels of a set of networks, measure each once, calibrate.

Steps (each resumable: what is in the file is not measured again):

1. index: split every network into kernels (:func:`costmodels.fusion.kernels`),
   count each kernel's uses, and for a whole NAS-Bench-201 space store the
   per-cell kernel counts (what makes estimating all 15,625 cells a matrix product);
2. measure: one one-kernel model per unique key (:mod:`measure.lut.models`) with
   the runtime's ``measure_model`` and one :class:`MeasureConfig`; one commit per entry.
   Also measured: the empty run (``NULL_KEY``) and the extra kernels each
   one-kernel model carries (reorders), which :func:`measure.lut.model.kernel_values`
   takes off;
3. calibrate: measure a handful of whole networks end to end and fit the
   per-network overhead terms (:func:`measure.lut.calibrate.fit`).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from costmodels.errors import ModelFileError
from costmodels.fusion import (
    FusionRules,
    KernelKey,
    kernels,
    load_rules,
    parse_key,
    rules_from_json,
)
from measure.config import MeasureConfig, MeasureResult
from measure.lut.keys import NULL_KEY, null_key
from measure.lut.table import CalibrationPoint, Entry, LutFile, now

Progress = Callable[[str, int, int], None]  # (stage, done, total)


@dataclass
class BuildReport:
    """What a build did: counts and seconds per stage."""

    path: str
    networks: int = 0
    unique_kernels: int = 0
    measured: int = 0
    reused: int = 0
    failed: list[str] = field(default_factory=list)
    noisy: list[str] = field(default_factory=list)
    calibration: dict = field(default_factory=dict)
    seconds: dict = field(default_factory=dict)


def measurer(config: MeasureConfig) -> Callable[[object], MeasureResult]:
    """The measurement layer's dispatcher for ``config`` (runtime, isolation, RPC)."""
    from measure import measure

    return lambda model: measure(model, config)


def index_nb201(indices: Sequence[int], dataset: str, batch: int, rules: FusionRules,
                progress: Progress | None = None
                ) -> tuple[list[str], dict[str, KernelKey], np.ndarray]:
    """Kernel keys of the given NAS-Bench-201 cells: (key list, key -> KernelKey, counts).

    ``counts[r, j]`` is how many times cell ``indices[r]`` runs kernel ``keys[j]``.
    """
    from costmodels.spaces import nb201

    ids: dict[str, int] = {}
    parsed: dict[str, KernelKey] = {}
    rows: list[Counter] = []
    for r, i in enumerate(indices):
        c: Counter = Counter()
        for k in kernels(nb201.build_network(int(i), dataset, batch), rules):
            t = k.text
            if t not in ids:
                ids[t] = len(ids)
                parsed[t] = k.key
            c[ids[t]] += 1
        rows.append(c)
        if progress and (r % 256 == 0 or r == len(indices) - 1):
            progress("index", r + 1, len(indices))
    counts = np.zeros((len(rows), len(ids)), dtype=np.uint16)
    for r, c in enumerate(rows):
        for j, n in c.items():
            counts[r, j] = n
    return list(ids), parsed, counts


def open_or_create(path: str, rules: FusionRules, config: MeasureConfig) -> LutFile:
    """Resume the LUT at ``path`` or create it; refuses one built with other rules/settings."""
    from pathlib import Path

    from measure.fingerprint import fingerprint

    cfg = config.to_dict()
    if Path(path).exists():
        lut = LutFile(path)
        stored = json.loads(lut.get_meta("config", "{}") or "{}")
        if lut.runtime != config.runtime or lut.get_meta("rules_hash") != rules.hash:
            lut.close()
            raise ModelFileError(f"{path}: built for runtime {lut.runtime!r} with rules "
                                 f"{lut.get_meta('rules_hash')}; this build uses "
                                 f"{config.runtime!r} with rules {rules.hash}. Use another --db")
        diff = {k for k in cfg if stored and stored.get(k) != cfg[k] and k not in
                ("isolate", "timeout_s")}
        if diff:
            lut.close()
            raise ModelFileError(f"{path}: measured with other settings ({', '.join(sorted(diff))}"
                                 "); resume with the same MeasureConfig or use another --db")
        return lut
    return LutFile.create(path, config.runtime, rules.doc, rules.hash, fingerprint(config), cfg)


def combine(results: Sequence[MeasureResult], max_cv: float) -> MeasureResult:
    """Rounds of one measurement -> the round with the lowest median.

    Rounds are taken apart in time (round-robin over all keys), and load from
    other processes only ever adds time, so the quietest round is the best
    estimate of the kernel itself; its p10/p90/CV are kept with it, ``count``
    is the number of timed runs over all rounds.
    """
    ok = [r for r in results if r.ok]
    if not ok:
        return results[-1]
    best = min(ok, key=lambda r: r.median_ms)
    return MeasureResult(ok=True, median_ms=best.median_ms, mean_ms=best.mean_ms,
                         p10_ms=best.p10_ms, p90_ms=best.p90_ms, std_ms=best.std_ms,
                         cv=best.cv, repeat=sum(r.repeat for r in ok), runtime=best.runtime,
                         noisy=best.cv > max_cv, meta={"rounds": len(ok)})


def measure_keys(lut: LutFile, keys: dict[str, KernelKey], uses: dict[str, int],
                 config: MeasureConfig, report: BuildReport, rounds: int = 5,
                 progress: Progress | None = None) -> None:
    """Measure every key not yet usable in ``lut`` in ``rounds`` rounds; one commit per entry.

    Adds the keys the measurements need besides the kernels themselves: each
    one-kernel model's wrappers and the empty run at each output shape.
    """
    from measure.lut.model import wrappers
    from measure.lut.models import kernel_model

    keys = dict(keys)
    rules = rules_from_json(lut.get_meta("rules"), str(lut.path))
    for text in list(keys):
        for w in wrappers(text, rules) or ():
            keys.setdefault(w, parse_key(w))
    for text in list(keys) + [NULL_KEY]:
        key = parse_key(text)
        keys.setdefault(null_key(key.output_shape, key.dtype),
                        parse_key(null_key(key.output_shape, key.dtype)))
    have = lut.keys(ok_only=True)
    todo = [k for k in keys if k not in have]
    report.reused = len(keys) - len(todo)
    run = measurer(config)
    models = {}
    for text in todo:
        try:
            models[text] = kernel_model(keys[text], seed=config.seed)
        except ValueError as exc:
            models[text] = MeasureResult.failure(f"model: {exc}", config.runtime)
    results: dict[str, list[MeasureResult]] = {t: [] for t in todo}
    rounds = max(1, rounds)
    for r in range(rounds):
        for n, text in enumerate(todo):
            model = models[text]
            if isinstance(model, MeasureResult):  # failed before: not retried this build
                res = model
            else:
                res = run(model)
                if not res.ok:
                    models[text] = res
            results[text].append(res)
            if r == rounds - 1:
                _store(lut, text, keys[text], combine(results[text], config.max_cv), uses,
                       config, report)
            if progress:
                progress("measure", r * len(todo) + n + 1, rounds * len(todo))


def _store(lut: LutFile, text: str, key: KernelKey, res: MeasureResult, uses: dict[str, int],
           config: MeasureConfig, report: BuildReport) -> None:
    rounds = res.meta.get("rounds", 1) if res.ok else 0
    lut.put(Entry(key=text, ops="+".join(key.ops), ok=res.ok, median_ms=res.median_ms,
                  p10_ms=res.p10_ms, p90_ms=res.p90_ms, cv=res.cv, count=res.repeat,
                  noisy=res.noisy, uses=uses.get(text, 0), error=res.error,
                  source=f"measured:{config.runtime}:rounds={rounds}", measured_at=now()))
    report.measured += 1
    if not res.ok:
        report.failed.append(f"{text}: {res.error}")
    elif res.noisy:
        report.noisy.append(text)


def calibration_cells(indices: Sequence[int], sums: np.ndarray, n: int) -> list[int]:
    """``n`` cells spread over the range of kernel sums (quantiles), for a well-posed fit."""
    order = np.argsort(sums, kind="stable")
    picks = np.unique(np.round(np.linspace(0, len(order) - 1, n)).astype(int))
    return [int(indices[order[p]]) for p in picks]


def measure_points(lut: LutFile, cells: Sequence[int], dataset: str, batch: int,
                   config: MeasureConfig, rounds: int = 5,
                   progress: Progress | None = None) -> None:
    """Measure whole networks end to end (``rounds`` rounds); stored as calibration points."""
    from costmodels.spaces import nb201

    have = {p.name for p in lut.points()}
    todo = [(f"nb201-{dataset}-b{batch}-{i}", i) for i in cells]
    todo = [(name, i) for name, i in todo if name not in have]
    run = measurer(config)
    models = {name: nb201.build_onnx(i, dataset, batch, seed=config.seed) for name, i in todo}
    results: dict[str, list[MeasureResult]] = {name: [] for name, _ in todo}
    rounds = max(1, rounds)
    for r in range(rounds):
        for n, (name, i) in enumerate(todo):
            results[name].append(run(models[name]))
            if r == rounds - 1:
                res = combine(results[name], config.max_cv)
                if res.ok:
                    lut.put_point(CalibrationPoint(name, nb201.SPACE[i], dataset, res.median_ms,
                                                   res.p10_ms, res.p90_ms, res.cv,
                                                   measured_at=now()))
            if progress:
                progress("calibrate", r * len(todo) + n + 1, rounds * len(todo))


def build_nb201(path: str, indices: Sequence[int], dataset: str = "cifar10", batch: int = 1,
                config: MeasureConfig | None = None, calibrate: int = 30,
                rounds: int = 5, rules: FusionRules | None = None,
                remeasure: bool = False, progress: Progress | None = None) -> BuildReport:
    """Build (or resume) the LUT at ``path`` for NAS-Bench-201 cells ``indices``.

    ``rounds``: each kernel (and calibration network) is measured that many
    times, round-robin, and the quietest round kept (:func:`combine`). ``calibrate``: how many networks
    to measure end to end for the overhead fit (0: none). ``remeasure``: drop
    the stored measurements first (keeps the space index).
    """
    from costmodels.spaces import nb201
    from measure.lut.calibrate import refit

    config = config or MeasureConfig()
    rules = rules or load_rules(config.runtime)
    report = BuildReport(path=path, networks=len(indices))
    t0 = time.perf_counter()
    whole = sorted(int(i) for i in indices) == list(range(nb201.NUM_ARCHS))
    with open_or_create(path, rules, config) as lut:
        if remeasure:
            lut.clear_measurements()
        stored = lut.get_index("nb201", dataset, batch, rules.hash) if whole else None
        if stored is not None:  # resuming a whole-space build: the index is there
            keys, counts = stored
            parsed = {k: parse_key(k) for k in keys}
            counts = counts[np.asarray(indices)]
        else:
            keys, parsed, counts = index_nb201(indices, dataset, batch, rules, progress)
            if whole:
                order = np.argsort(np.asarray(indices))
                lut.put_index("nb201", dataset, batch, rules.hash, keys, counts[order])
        report.seconds["index"] = time.perf_counter() - t0
        report.unique_kernels = len(keys)
        uses = dict(zip(keys, (counts > 0).sum(axis=0).tolist(), strict=True))
        t1 = time.perf_counter()
        measure_keys(lut, parsed, uses, config, report, rounds, progress)
        report.seconds["measure"] = time.perf_counter() - t1
        t2 = time.perf_counter()
        if calibrate > 0:
            values = lut.values()
            vec = np.array([values.get(k, np.nan) for k in keys])
            sums = np.nan_to_num(counts @ np.nan_to_num(vec))
            cells = calibration_cells(indices, sums, calibrate)
            measure_points(lut, cells, dataset, batch, config, rounds, progress)
            report.calibration = refit(lut)
        report.seconds["calibrate"] = time.perf_counter() - t2
    report.seconds["total"] = time.perf_counter() - t0
    return report


def build_networks(path: str, nets: Sequence, config: MeasureConfig | None = None,
                   rounds: int = 5, rules: FusionRules | None = None,
                   progress: Progress | None = None) -> BuildReport:
    """Build (or extend) the LUT at ``path`` with the kernels of any networks (IR).

    No calibration: add calibration points with :func:`measure_points` for
    NAS-Bench-201 cells, or use the LUT uncalibrated (the bare sum).
    """
    config = config or MeasureConfig()
    rules = rules or load_rules(config.runtime)
    report = BuildReport(path=path, networks=len(nets))
    t0 = time.perf_counter()
    parsed: dict[str, KernelKey] = {}
    uses: Counter = Counter()
    for net in nets:
        seen = set()
        for k in kernels(net, rules):
            parsed.setdefault(k.text, k.key)
            seen.add(k.text)
        uses.update(seen)
    report.unique_kernels = len(parsed)
    report.seconds["index"] = time.perf_counter() - t0
    with open_or_create(path, rules, config) as lut:
        t1 = time.perf_counter()
        measure_keys(lut, parsed, dict(uses), config, report, rounds, progress)
        report.seconds["measure"] = time.perf_counter() - t1
    report.seconds["total"] = time.perf_counter() - t0
    return report
