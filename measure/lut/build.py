"""Build a LUT for any set of networks: collect their unique kernels, measure each once, calibrate.

:func:`build_lut` takes networks (IR) of any search space or imported files;
:func:`build_space` takes a space and architecture strings (``lut build --space S``).
Steps (each resumable: what is in the file is not measured again):

1. index: split every network into kernels (:func:`costmodels.fusion.kernels`),
   count each kernel's uses; for the whole NAS-Bench-201 space also store the
   per-cell kernel counts (what makes estimating all 15,625 cells a matrix product);
2. measure: one one-kernel model per unique key (:mod:`measure.lut.kernel_onnx`),
   timed with the measurement layer's interleaved rounds (:func:`time_models`) and
   one :class:`MeasureConfig`, committed window by window; a key that cannot be built or run is stored as a failed entry with
   its reason. Also measured: the empty run (``NULL_KEY``) and the wrappers each
   one-kernel model carries (reorders), which :func:`measure.lut.model.kernel_values`
   takes off. With ONNX Runtime a one-kernel model's outputs are bound to buffers
   allocated once (:func:`measure.ort.burst_timer`), as a kernel's outputs live in the
   runtime's reused arena inside a network (the LUT's ``kernel_outputs`` meta says so);
   LUTs built before, and other runtimes, take off the empty run at each output shape;
3. calibrate: measure networks of the same set end to end (``onnx_for(net)``:
   the space's ONNX or the imported file), spread over the range of kernel sums,
   and fit the per-network overhead terms (:func:`measure.lut.calibrate.fit`).
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from costmodels.errors import CostModelError, ModelFileError
from costmodels.fusion import (
    FusionRules,
    KernelKey,
    kernels,
    load_rules,
    parse_key,
    rules_from_json,
    with_block,
)
from costmodels.network import Network
from measure.config import MeasureConfig, MeasureResult
from measure.lut.keys import (
    BOUND,
    BOUND_SOURCE,
    NULL_KEY,
    OUTPUTS_META,
    null_key,
    outputs_bound,
)
from measure.lut.table import CalibrationPoint, Entry, LutFile, now

Progress = Callable[[str, int, int], None]  # (stage, done, total)


@dataclass
class BuildCounts:
    """What any LUT build (kernel or FBNet block) did with the file at ``path``: entries
    measured now, reused from the file, failed (``"key: error"``), noisy keys, and the
    calibration it fitted."""

    path: str
    measured: int = 0
    reused: int = 0
    failed: list[str] = field(default_factory=list)
    noisy: list[str] = field(default_factory=list)
    calibration: dict = field(default_factory=dict)


@dataclass
class BuildReport(BuildCounts):
    """What a kernel-LUT build did: counts and seconds per stage."""

    networks: int = 0
    unique_kernels: int = 0
    uncostable: list[str] = field(default_factory=list)  # "network: error" not planned at all
    seconds: dict = field(default_factory=dict)
    remeasure_since: str = ""  # the start of the remeasure this build did or carried on


# meta key: the UTC start of a --remeasure not finished yet ('' when none)
REMEASURE_META = "remeasure_since"


def host_rules(rules: FusionRules, config: MeasureConfig) -> FusionRules:
    """``rules`` with the channel block of their blocked layout set to the one this
    machine's ONNX Runtime uses (:func:`measure.ort.ort_nchwc_block`: 16 with AVX-512, 8
    with AVX2): a LUT times its kernels here, and a reorder planned at another block is a
    kernel ORT refuses to run (a 16-channel buffer for 8 channels), or one it never runs
    (a pool of 8 channels, blocked at 8, planned in NCHW at 16). The LUT stores the rules
    it was built with, so its estimates elsewhere plan with this block. Rules of another
    runtime, without a blocked layout, or of a remote device are returned as they are."""
    if config.runtime != "ort" or config.rpc_tracker or rules.layout is None:
        return rules
    from measure.ort import ort_nchwc_block

    block = ort_nchwc_block()
    if block is None:
        return rules
    return with_block(rules, block, "the NCHWc channel block of ONNX Runtime on the machine "
                      "this LUT was built on")


def measurer(config: MeasureConfig, bind_outputs: bool = False
             ) -> Callable[[object], MeasureResult]:
    """The measurement layer's dispatcher for ``config`` (runtime, isolation, RPC)."""
    from measure import measure

    return lambda model: measure(model, config, bind_outputs=bind_outputs)


def index_networks(nets: Sequence[Network], rules: FusionRules,
                   progress: Progress | None = None
                   ) -> tuple[list[str], dict[str, KernelKey], np.ndarray]:
    """Kernel keys of ``nets``: (key list, key -> KernelKey, counts).

    ``counts[r, j]`` is how many times network ``r`` runs kernel ``keys[j]``.
    """
    ids: dict[str, int] = {}
    parsed: dict[str, KernelKey] = {}
    rows: list[Counter] = []
    for r, net in enumerate(nets):
        c: Counter = Counter()
        for k in kernels(net, rules):
            t = k.text
            if t not in ids:
                ids[t] = len(ids)
                parsed[t] = k.key
            c[ids[t]] += 1
        rows.append(c)
        if progress and (r % 256 == 0 or r == len(nets) - 1):
            progress("index", r + 1, len(nets))
    counts = np.zeros((len(rows), len(ids)), dtype=np.uint16)
    for r, c in enumerate(rows):
        for j, n in c.items():
            counts[r, j] = n
    return list(ids), parsed, counts


def settings_differences(stored: dict[str, object], config: MeasureConfig) -> set[str]:
    """The measurement settings a LUT's stored config (its ``config`` meta) does not share
    with ``config`` -- leaving out ``isolate``/``timeout_s``, which decide how a kernel is
    run, not what its figure is."""
    return {k for k, v in config.to_dict().items()
            if k not in ("isolate", "timeout_s") and stored.get(k) != v}


def open_or_create(path: str, rules: FusionRules, config: MeasureConfig,
                   outputs: str | None = None) -> LutFile:
    """Resume the LUT at ``path`` or create it.

    The file is checked read-only first, so a refused file is left byte-identical.
    Refused: another runtime, other measurement settings, or fusion rules of
    another name (``naive`` into an ``ort`` LUT). Rules of the same name with
    another hash (a newer version of the shipped file) are taken over: the entries
    are measurements of one-kernel models named by their keys, true under any
    rules of that runtime; what depends on the rules (the stored rules, the space
    index, the calibration points' kernel lists, the fit) is redone by this build.

    ``outputs``: how a new ONNX Runtime LUT times its one-kernel models, ``"bound"`` (the
    default) or ``"returned"`` (:data:`measure.lut.keys.OUTPUTS_META`); a file asked for
    the other way than it was built is refused.
    """
    if outputs not in (None, BOUND, "returned"):
        raise ValueError(f"outputs must be 'bound' or 'returned', not {outputs!r}")
    from pathlib import Path

    from measure.fingerprint import fingerprint

    cfg = config.to_dict()
    if outputs is not None and config.runtime != "ort":
        raise ModelFileError(f"--outputs {outputs} is for ONNX Runtime LUTs; a "
                             f"{config.runtime} kernel keeps its outputs in place, timed one "
                             "way only (leave --outputs out)")
    if not Path(path).exists():
        lut = LutFile.create(path, config.runtime, rules.doc, rules.hash, fingerprint(config),
                             cfg)
        if config.runtime == "ort" and outputs != "returned":
            lut.set_meta(OUTPUTS_META, BOUND)
        return lut
    with LutFile(path, readonly=True) as ro:
        runtime, meta = ro.runtime, ro.meta()
    stored = json.loads(meta.get("config") or "{}")
    try:
        stored_name = rules_from_json(meta.get("rules", ""), f"{path} (stored rules)").name
    except ModelFileError:
        stored_name = ""
    if runtime != config.runtime or stored_name != rules.name:
        raise ModelFileError(f"{path}: built for runtime {runtime!r} with rules "
                             f"{stored_name or '?'!r}; this build uses {config.runtime!r} with "
                             f"rules {rules.name!r}. Use another --db")
    theirs, here = json.loads(meta.get("fingerprint") or "{}"), fingerprint(config)
    for name in ("cpu_model", "cores", "runtime_version"):  # what `lut merge` refuses too
        if theirs.get(name) and here.get(name) and theirs[name] != here[name]:
            raise ModelFileError(f"{path}: measured on another device ({name} "
                                 f"{theirs[name]!r}, here {here[name]!r}); its entries would "
                                 "mix with this machine's: build into another --db")
    way = BOUND if outputs_bound(meta) else "returned"
    if outputs is not None and outputs != way:
        raise ModelFileError(f"{path}: its one-kernel models were timed with {way} outputs "
                             f"(`lut show`, kernel_outputs), not {outputs}; build into another "
                             "--db")
    diff = settings_differences(stored, config) if stored else set()
    if diff:
        raise ModelFileError(f"{path}: measured with other settings ({', '.join(sorted(diff))}"
                             "); resume with the same MeasureConfig or use another --db")
    lut = LutFile(path)
    if meta.get("rules_hash") != rules.hash:  # a newer version of the same rules
        lut.set_meta("rules", rules.doc)
        lut.set_meta("rules_hash", rules.hash)
    return lut


def time_models(models: Sequence, names: Sequence[str], config: MeasureConfig,
                on_result: Callable[[str, MeasureResult], None], stage: str = "measure",
                progress: Progress | None = None, bind_outputs: bool = False) -> None:
    """Time ONNX models with the measurement layer's protocol; ``on_result`` as each lands.

    ONNX Runtime in-process: :func:`measure.rounds.measure_many` (windows of models
    interleaved over ``config.rounds`` rounds, results handed over after each window, so
    an interrupted build keeps them). Isolated or other runtimes: one by one through
    :func:`measure.measure`. A model given as a failed :class:`MeasureResult` is passed
    through. ``bind_outputs``: see :func:`measure.ort.burst_timer`.
    """
    todo = [(n, m) for n, m in zip(names, models, strict=True)
            if not isinstance(m, MeasureResult)]
    for n, m in zip(names, models, strict=True):
        if isinstance(m, MeasureResult):
            on_result(n, m)
    done = 0
    if config.isolate or config.runtime != "ort":
        run = measurer(config, bind_outputs)
        for n, m in todo:
            on_result(n, run(m))
            done += 1
            if progress:
                progress(stage, done, len(todo))
        return
    from measure.rounds import measure_many

    def window(results: list[MeasureResult], _report) -> None:
        nonlocal done
        for res in results:
            on_result(todo[done][0], res)
            done += 1
        if progress:
            progress(stage, done, len(todo))

    measure_many([m for _, m in todo], config, [n for n, _ in todo], on_window=window,
                 bind_outputs=bind_outputs)


def measure_keys(lut: LutFile, keys: dict[str, KernelKey], uses: dict[str, int],
                 config: MeasureConfig, report: BuildReport,
                 progress: Progress | None = None, since: str = "") -> None:
    """Measure every key not yet usable in ``lut`` (or measured before ``since``, a
    remeasure's start); committed window by window.

    Adds the keys the measurements need besides the kernels themselves: each
    one-kernel model's wrappers and the empty run (``NULL_KEY``; with outputs not bound,
    a LUT built before, also the one at each output shape). A key that no model can be
    built for is stored as a failed entry with the reason.
    """
    from measure.lut.kernel_onnx import KernelBuildError, kernel_model, wrappers

    keys = dict(keys)
    rules = rules_from_json(lut.get_meta("rules"), str(lut.path))
    unbuildable: dict[str, str] = {}
    for text in list(keys):
        try:
            for w in wrappers(keys[text], rules):
                keys.setdefault(w, parse_key(w))
        except KernelBuildError as exc:
            unbuildable[text] = str(exc)
    bound = outputs_bound(lut.meta())
    keys.setdefault(NULL_KEY, parse_key(NULL_KEY))
    for text in ([] if bound else list(keys)):
        key = parse_key(text)
        keys.setdefault(null_key(key.output_shape, key.dtype),
                        parse_key(null_key(key.output_shape, key.dtype)))
    have = lut.keys(ok_only=True, since=since)
    todo = [k for k in keys if k not in have]
    report.reused = len(keys) - len(todo)
    models: list = []
    for text in todo:
        try:
            if text in unbuildable:
                raise KernelBuildError(unbuildable[text])
            models.append(kernel_model(keys[text], seed=config.seed))
        except KernelBuildError as exc:
            models.append(MeasureResult.failure(f"model: {exc}", config.runtime))
    time_models(models, todo, config,
                lambda text, res: _store(lut, text, keys[text], res, uses, config, report,
                                         bound),
                "measure", progress, bind_outputs=bound)


def _figures(res: MeasureResult) -> tuple[float, float, float]:
    """(median, p10, p90) ms of a result on the machine's anchor level when it has a
    drift-corrected figure (p10/p90 scaled with the median), else as timed."""
    if not res.ok or not res.median_ms > 0:
        return res.median_ms, res.p10_ms, res.p90_ms
    scale = res.figure("auto") / res.median_ms
    return res.median_ms * scale, res.p10_ms * scale, res.p90_ms * scale


def _store(lut: LutFile, text: str, key: KernelKey, res: MeasureResult, uses: dict[str, int],
           config: MeasureConfig, report: BuildReport, bound: bool = False) -> None:
    rounds = res.meta.get("rounds", config.rounds) if res.ok else 0
    med, p10, p90 = _figures(res)
    fig = ":drift-corrected" if res.ok and res.figure_name != "raw" else ""
    fig += BOUND_SOURCE if bound else ""
    lut.put(Entry(key=text, ops="+".join(key.ops), ok=res.ok, median_ms=med,
                  p10_ms=p10, p90_ms=p90, cv=res.cv, count=res.repeat,
                  noisy=res.noisy, uses=uses.get(text, 0), error=res.error,
                  source=f"measured:{config.runtime}:rounds={rounds}{fig}", measured_at=now()))
    report.measured += 1
    if not res.ok:
        report.failed.append(f"{text}: {res.error}")
    elif res.noisy:
        report.noisy.append(text)


def calibration_picks(sums: np.ndarray, ok: np.ndarray, n: int) -> list[int]:
    """Positions of ``n`` networks spread over the range of kernel sums (quantiles).

    Only networks whose kernels are all measured (``ok``) are picked; fewer
    come back when there are fewer such networks.
    """
    cand = np.flatnonzero(ok)
    if not len(cand) or n <= 0:
        return []
    order = cand[np.argsort(sums[cand], kind="stable")]
    picks = np.unique(np.round(np.linspace(0, len(order) - 1, min(n, len(order)))).astype(int))
    return [int(order[p]) for p in picks]


def point_name(net: Network) -> str:
    """Name of a network's calibration point: ``<space>-<dataset>-b<batch>-<arch_str>``, or
    ``...-<fingerprint>`` for a network read from a file (``models:DIR``): a file's stem
    names no content (a model replaced under the same name is another network, one
    renamed is the same), so such a point is keyed by the network's structure.

    Only a name (a primary key): nothing is ever parsed back out of it.
    """
    m = net.meta
    space = str(m.get("space") or "net").split(":", 1)[0]
    arch = net.fingerprint if m.get("source") else (m.get("arch_str") or net.fingerprint)
    return f"{space}-{m.get('dataset')}-b{m.get('batch', 1)}-{arch}"


def _stem_name(net: Network) -> str | None:
    """The name LUTs built before gave a file-backed network's point (by its file stem), or
    None for a network of a generated space."""
    m = net.meta
    if not m.get("source"):
        return None
    space = str(m.get("space") or "net").split(":", 1)[0]
    return f"{space}-{m.get('dataset')}-b{m.get('batch', 1)}-{m.get('arch_str')}"


def _legacy_name(net: Network) -> str:
    """The name LUTs built before gave a NAS-Bench-201 cell's point (by its index)."""
    m = net.meta
    return f"nb201-{m.get('dataset')}-b{m.get('batch', 1)}-{m.get('arch_index')}"


def measure_points(lut: LutFile, nets: Sequence[Network], rules: FusionRules,
                   config: MeasureConfig, progress: Progress | None = None,
                   report: BuildReport | None = None, since: str = "") -> None:
    """Measure whole networks end to end; stored as calibration points with their kernels.

    The ONNX of each comes from :func:`costmodels.spaces.onnx_for`; its kernel
    list is stored with the point (:func:`measure.lut.calibrate.record_point_kernels`).
    A network that cannot be exported or run is reported, not stored.
    """
    from costmodels.spaces import onnx_for
    from measure.lut.calibrate import point_kernels, record_point_kernels

    have = {p.name for p in lut.points() if p.measured_at >= since}
    lists = point_kernels(lut)

    def stored(net: Network) -> bool:
        """Whether an older LUT holds this network's point under its old name: an NB201
        cell's by index; a file's by stem only while its stored kernels are this
        network's (the file may since hold another model)."""
        if net.meta.get("space") == "nb201":
            return _legacy_name(net) in have
        stem = _stem_name(net)
        return stem in have and lists.get(stem) == dict(Counter(k.text for k in
                                                                kernels(net, rules)))

    todo = [(point_name(net), net) for net in nets if not stored(net)]
    todo = [(name, net) for name, net in dict(todo).items() if name not in have]
    by_name = dict(todo)
    models: list = []
    for _, net in todo:
        try:
            models.append(onnx_for(net, seed=config.seed))
        except (CostModelError, OSError) as exc:
            models.append(MeasureResult.failure(f"onnx: {exc}", config.runtime))

    def store(name: str, res: MeasureResult) -> None:
        net = by_name[name]
        if not res.ok:
            if report is not None:
                report.failed.append(f"calibration {name}: {res.error}")
            return
        ks = [k.text for k in kernels(net, rules)]
        record_point_kernels(lut, name, ks)
        med, p10, p90 = _figures(res)
        lut.put_point(CalibrationPoint(name, str(net.meta.get("arch_str") or net.name),
                                       str(net.meta.get("dataset")), med, p10, p90, res.cv,
                                       n_kernels=len(ks), measured_at=now()))

    time_models(models, [n for n, _ in todo], config, store, "calibrate", progress)


def build_lut(path: str, nets: Sequence[Network], config: MeasureConfig | None = None, *,
              calibrate: int = 30, rules: FusionRules | None = None,
              remeasure: bool = False, space_index: tuple[str, str, int] | None = None,
              progress: Progress | None = None, outputs: str | None = None) -> BuildReport:
    """Build (or resume) the LUT at ``path`` with the kernels of ``nets`` (any IR networks).

    Timing follows ``config`` (its interleaved ``rounds``, :mod:`measure.rounds`).
    ``calibrate``: how many of ``nets`` to measure end to end for the overhead
    fit (0: none), spread over their kernel sums. ``remeasure``: drop the stored
    measurements first. ``space_index=(space, dataset, batch)``: ``nets`` are a
    whole space in its standard order; their kernel counts are stored so that
    the LUT estimates the space as one matrix product. ``outputs``: see
    :func:`open_or_create`.
    """
    config = config or MeasureConfig()
    rules = host_rules(rules or load_rules(config.runtime), config)
    report = BuildReport(path=path, networks=len(nets))
    t0 = time.perf_counter()
    with open_or_create(path, rules, config, outputs) as lut:
        # --remeasure: the kernels of these networks measured before this moment are
        # measured again, each old figure replaced only by its new one, so an interrupted
        # remeasure leaves a usable LUT that the next build (with or without --remeasure)
        # carries on; kernels of other networks keep theirs; the calibration points
        # measured before are dropped once this build has measured its own
        since = lut.get_meta(REMEASURE_META) or ""
        if remeasure and not since:
            since = now()
            for _ in range(30):  # timestamps are in seconds: start after the newest (at most
                if lut.latest() < since:  # 3 s: a timestamp from the future is not waited for)
                    break
                time.sleep(0.1)
                since = now()
            lut.set_meta(REMEASURE_META, since)
        report.remeasure_since = since
        keys, parsed, counts = index_networks(nets, rules, progress)
        if space_index is not None:
            lut.put_index(*space_index, rules.hash, keys, counts)
        report.seconds["index"] = time.perf_counter() - t0
        report.unique_kernels = len(keys)
        uses = dict(zip(keys, (counts > 0).sum(axis=0).tolist(), strict=True))
        t1 = time.perf_counter()
        measure_keys(lut, parsed, uses, config, report, progress, since=since)
        report.seconds["measure"] = time.perf_counter() - t1
        t2 = time.perf_counter()
        if calibrate > 0 and len(nets):
            _calibrate(lut, nets, keys, counts, rules, config, calibrate, progress, report,
                       since=since)
        elif since:
            lut.drop_points_older_than(since)
        if since:
            lut.set_meta(REMEASURE_META, "")
        report.seconds["calibrate"] = time.perf_counter() - t2
    report.seconds["total"] = time.perf_counter() - t0
    return report


def _calibrate(lut: LutFile, nets: Sequence[Network], keys: list[str], counts: np.ndarray,
               rules: FusionRules, config: MeasureConfig, n: int,
               progress: Progress | None, report: BuildReport, since: str = "") -> None:
    from measure.lut.calibrate import refit
    from measure.lut.model import LookupTable

    values = LookupTable.from_file(lut, best_effort=True, calibrated=False).values_
    vec = np.array([values.get(k, np.nan) for k in keys])
    ok = ~(counts[:, np.isnan(vec)] > 0).any(axis=1) if len(keys) else np.ones(len(nets), bool)
    sums = counts @ np.nan_to_num(vec) if len(keys) else np.zeros(len(nets))
    picks = calibration_picks(sums, ok, n)
    measure_points(lut, [nets[i] for i in picks], rules, config, progress, report, since)
    if since:  # a finished remeasure: end-to-end times of the kernels measured before go
        lut.drop_points_older_than(since)
    refresh_point_kernels(lut, nets, rules)
    report.calibration = refit(lut)


def refresh_point_kernels(lut: LutFile, nets: Sequence[Network], rules: FusionRules) -> int:
    """Rewrite the kernel lists of the stored points among ``nets`` under ``rules``; count."""
    from measure.lut.calibrate import point_kernels, record_point_kernels

    have = {p.name for p in lut.points()}
    lists = point_kernels(lut)
    n = 0
    for net in nets:
        # a file's stem-named point of an older LUT is not rewritten: the file may now hold
        # another model, and its point's latency is of the one measured then
        legacy = (_legacy_name(net),) if net.meta.get("space") == "nb201" else ()
        for name in (point_name(net), *legacy):
            if name in have:
                ks = [k.text for k in kernels(net, rules)]
                if lists.get(name) != dict(Counter(ks)):
                    record_point_kernels(lut, name, ks)
                    n += 1
                break
    return n


def build_space(path: str, space, archs: Sequence[str], dataset: str | None = None,
                batch: int = 1, config: MeasureConfig | None = None, **kw) -> BuildReport:
    """:func:`build_lut` over architectures ``archs`` of ``space`` (a :class:`SearchSpace`).

    A network that does not build is reported in ``BuildReport.uncostable`` and
    left out; the whole NAS-Bench-201 space also gets its space index.
    """
    from costmodels.spaces import nb201

    dataset = space.check_dataset(dataset)
    nets: list[Network] = []
    bad: list[str] = []
    for arch in archs:
        try:
            nets.append(space.build_network(arch, dataset, batch))
        except CostModelError as exc:
            bad.append(f"{arch}: {exc}")
    index = None
    if space.spec == "nb201" and len(nets) == nb201.NUM_ARCHS and [
            n.meta.get("arch_index") for n in nets] == list(range(nb201.NUM_ARCHS)):
        index = ("nb201", dataset, batch)
    report = build_lut(path, nets, config, space_index=index, **kw)
    report.uncostable = bad
    report.networks = len(archs)
    return report
