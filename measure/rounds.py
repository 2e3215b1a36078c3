"""The interleaved-rounds scheduler: one measurement protocol for campaigns, LUTs, calibration.

The machine's speed wanders by several percent over seconds, so one burst of runs
per network catches whatever moment it lands in. Instead, a *window* of networks is
built once and timed in ``config.rounds`` rounds; in each round every network runs a
short burst (``config.round_warmup`` untimed runs, then its share of
``config.repeat``), the networks in a new shuffled order each round. A network's
latency is the median of its round medians, all of which are kept. A single network
is timed the same way, its rounds spread over at least ``rounds * min_round_s``
seconds.

With ``config.drift_ref`` a fixed *reference panel* (:func:`reference_panel`: three
small CNNs of different character, the same everywhere) is measured in every round as
well. The geometric mean of the members' round medians is the round's reference time;
over its *anchor* it gives each round's drift factor, and every network also gets
``corrected_ms``, the median of its round medians divided by the factors. The anchor is
the machine's (:func:`machine_anchor`: set once per device and timing setting in a small
JSON file, then shared by every process, store, LUT build and campaign on that machine),
so corrected figures of different processes are on one level. Without a reference the
window still reports its drift: the geometric mean, over the networks, of each round
median over the network's median.

Entry points:

* :func:`measure_many` -- ONNX models (proto, bytes or path) -> results, in windows;
  this is what the LUT builder and roofline calibration call.
* :func:`measure_window` -- the same for one window of already prepared networks.
* :class:`Prepared` / :func:`prepare` -- a built network that can run bursts (ONNX
  Runtime); a runtime without a burst timer (TVM today) is measured whole, once per call,
  by its own runner, and marked ``rounds=1``.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from measure.config import MeasureConfig, MeasureResult
from measure.timing import Sample, error_text, pinned

Burst = Callable[[int, int], Sample]  # (untimed runs, timed runs) -> Sample
PROTOCOL = "rounds-v1"
#: what the reference time of a round is; part of every anchor key (a new panel: new anchors)
PANEL_VERSION = "panel-v1"
#: the NAS-Bench-201 cells of the panel (built by costmodels.spaces.nb201; CIFAR-10, batch 1):
#: one of 3x3 convolutions only, one of 1x1 convolutions, pooling and skips
PANEL_CELLS = (
    "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|"
    "nor_conv_3x3~2|",
    "|nor_conv_1x1~0|+|skip_connect~0|avg_pool_3x3~1|+|nor_conv_1x1~0|none~1|nor_conv_1x1~2|",
)
ANCHORS_ENV = "COSTMODELS_ANCHORS"
ANCHORS_SCHEMA = "costmodels.anchors"
ANCHORS_VERSION = 1
#: the anchors a file may hold (ms): the panel takes about a millisecond on one core, so a
#: value outside this range (0, -1, 1e300, 1e-300) was edited by hand or is corrupt
ANCHOR_RANGE_MS = (1e-3, 1e4)
DEFAULT_WINDOW = 20


@dataclass
class Prepared:
    """A network ready to time: ``burst`` (None when it failed to build, or for a runtime
    measured whole by ``whole``), its build ``failure``, ``close`` to free it."""

    name: str
    burst: Burst | None = None
    failure: MeasureResult | None = None
    whole: Callable[[], MeasureResult] | None = None
    close: Callable[[], None] = lambda: None
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class WindowReport:
    """What one window saw: per-round drift factors (geometric mean over networks of round
    median / network median), the reference's round medians (ms) and anchor, seconds."""

    networks: int
    rounds: int
    round_factors: tuple[float, ...]
    reference_ms: tuple[float, ...] = ()
    anchor_ms: float = math.nan
    seconds: float = 0.0

    @property
    def drift(self) -> float:
        """Spread of the round factors, (max - min): the machine's drift over the window."""
        return float(max(self.round_factors) - min(self.round_factors)) if self.round_factors \
            else 0.0

    @property
    def reference_drift(self) -> float:
        """(max - min) / median of the reference's round medians (NaN without one)."""
        if len(self.reference_ms) < 2:
            return math.nan
        r = np.asarray(self.reference_ms)
        return float((r.max() - r.min()) / np.median(r))

    def as_dict(self) -> dict[str, Any]:
        return {"networks": self.networks, "rounds": self.rounds,
                "round_factors": [round(f, 5) for f in self.round_factors],
                "drift": round(self.drift, 5), "reference_ms": list(self.reference_ms),
                "reference_drift": None if math.isnan(self.reference_drift)
                else round(self.reference_drift, 5),
                "anchor_ms": None if math.isnan(self.anchor_ms) else self.anchor_ms,
                "seconds": round(self.seconds, 2)}


def prepare(model, config: MeasureConfig, name: str = "",
            bind_outputs: bool = False) -> Prepared:
    """Build ``model`` for ``config.runtime``; never raises (a failure is data).
    ``bind_outputs``: ONNX Runtime's runs write into buffers allocated once
    (:func:`measure.ort.burst_timer`); other runtimes keep their outputs anyway."""
    if config.runtime == "ort":
        from measure.ort import prepare as prepare_ort

        return prepare_ort(model, config, name=name, bind_outputs=bind_outputs)

    def whole() -> MeasureResult:
        from measure import measure

        return measure(model, config)

    if config.runtime in ("tvm",):
        return Prepared(name, whole=whole)
    return Prepared(name, failure=MeasureResult.failure(
        f"unknown runtime {config.runtime!r}; expected ort or tvm", config.runtime))


def reference_model():
    """The drift reference: a fixed small CNN (3x32x32 input; 3x3 convolutions of 32, 64 and
    64 channels with ReLU, 67 M MACs; global pool; 10-way classifier; weights from seed 0),
    about a millisecond on one core, independent of any search space, the same everywhere."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    inits, nodes, x, c = [], [], "x", 3
    for i, cout in enumerate((32, 64, 64)):
        w = rng.normal(0, (2 / (9 * c)) ** 0.5, (cout, c, 3, 3)).astype(np.float32)
        inits.append(numpy_helper.from_array(w, f"w{i}"))
        nodes += [helper.make_node("Conv", [x, f"w{i}"], [f"c{i}"], pads=[1, 1, 1, 1]),
                  helper.make_node("Relu", [f"c{i}"], [f"r{i}"])]
        x, c = f"r{i}", cout
    inits.append(numpy_helper.from_array(rng.normal(0, 0.1, (c, 10)).astype(np.float32), "fc"))
    nodes += [helper.make_node("GlobalAveragePool", [x], ["g"]),
              helper.make_node("Flatten", ["g"], ["f"]),
              helper.make_node("MatMul", ["f", "fc"], ["y"])]
    graph = helper.make_graph(
        nodes, "costmodels_reference",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 3, 32, 32])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 10])], inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)],
                              producer_name="costmodels")
    model.ir_version = 8
    return model


def panel_models() -> list[tuple[str, Any]]:
    """The reference panel as (name, ONNX model): :func:`reference_model` and the
    NAS-Bench-201 cells of :data:`PANEL_CELLS` (CIFAR-10, batch 1, weights from seed 0)."""
    from costmodels.spaces import nb201

    return [("reference", reference_model())] + [
        (f"panel{i}", nb201.build_onnx(cell, "cifar10", 1, 0))
        for i, cell in enumerate(PANEL_CELLS, start=1)]


def reference_panel(config: MeasureConfig) -> list[Prepared]:
    """The panel built for ``config`` (empty without ``drift_ref``, or for a runtime that
    cannot run bursts: its figures are measured whole, no rounds to correct)."""
    if not config.drift_ref or config.runtime != "ort":
        return []
    return [prepare(m, config, name) for name, m in panel_models()]


def anchor_key(config: MeasureConfig) -> str:
    """Key of the machine anchor: panel version, device (hardware + runtime version) and the
    settings that change the panel's times (threads, optimisation level, burst length)."""
    from measure.fingerprint import _hash, device_hash, fingerprint

    timing = {"runtime": config.runtime, "threads": config.threads,
              "graph_opt": config.graph_opt, "provider": config.provider,
              "round_warmup": config.round_warmup, "runs": config.round_runs()[0],
              "pin": config.pin_cpu >= 0}
    return f"{PANEL_VERSION}:{device_hash(fingerprint(config))}:{_hash(timing)}"


def anchors_path() -> Path | None:
    """The machine's anchor file: ``$COSTMODELS_ANCHORS`` ('' = none: every call sets its
    own anchor), else ``$XDG_CACHE_HOME/costmodels/anchors.json`` (``~/.cache/...``)."""
    env = os.environ.get(ANCHORS_ENV)
    if env is not None:
        return Path(env).expanduser() if env.strip() else None
    base = os.environ.get("XDG_CACHE_HOME", "").strip() or os.path.join(
        os.path.expanduser("~"), ".cache")
    return Path(base) / "costmodels" / "anchors.json"


def _read_anchors(path: Path) -> dict[str, Any]:
    from costmodels.errors import InputError

    if path.is_dir():
        raise InputError(f"{path}: the machine anchor file is a folder; point ${ANCHORS_ENV} "
                         "at a file (e.g. .../anchors.json), or set it to '' for per-call "
                         "anchors")
    if path.exists() and not path.is_file():  # a pipe blocked the read forever
        raise InputError(f"{path}: the machine anchor file is not a regular file (a pipe or "
                         f"a device); point ${ANCHORS_ENV} at a file, or set it to '' for "
                         "per-call anchors")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: not a readable costmodels anchor file ({exc}); it was "
                         f"left as it is: delete it (the next measurement sets new anchors) "
                         f"or point ${ANCHORS_ENV} elsewhere") from None
    if not isinstance(doc, dict) or doc.get("schema") != ANCHORS_SCHEMA or \
            not isinstance(doc.get("anchors"), dict):
        raise InputError(f"{path}: not a costmodels anchor file (no \"schema\": "
                         f"\"{ANCHORS_SCHEMA}\"); it was left as it is: delete it or point "
                         f"${ANCHORS_ENV} elsewhere")
    _check_anchor_doc(path, doc)
    return doc["anchors"]


def _check_anchor_doc(path: Path, doc: dict[str, Any]) -> None:
    """Refuse an anchor file of an unknown version or with an entry that holds no usable
    anchor: it would be silently replaced (a new level for every later corrected figure) and
    the file rewritten. Raises InputError naming the file and the entry's field."""
    from costmodels.errors import InputError, short_repr

    keep = (f"it was left as it is: delete it (the next measurement sets new anchors) or "
            f"point ${ANCHORS_ENV} elsewhere")
    version = doc.get("version", ANCHORS_VERSION)
    if version != ANCHORS_VERSION or isinstance(version, bool):
        newer = isinstance(version, int) and not isinstance(version, bool) \
            and version > ANCHORS_VERSION
        what = (f"written by a newer costmodels; it was left as it is: measure with that "
                f"one, or point ${ANCHORS_ENV} elsewhere for this one" if newer
                else f"edited by hand or corrupt; {keep}")
        raise InputError(f"{path}: \"version\" is {short_repr(version)}, not "
                         f"{ANCHORS_VERSION} (the anchor file version this costmodels reads): "
                         f"{what}")
    lo, hi = ANCHOR_RANGE_MS
    for key, entry in doc["anchors"].items():
        if not isinstance(entry, dict):
            raise InputError(f"{path}: anchor {short_repr(key)} is {short_repr(entry)}, not an "
                             f"object with \"anchor_ms\"; edited by hand or corrupt: {keep}")
        if _anchor_of(entry) is None:
            value = entry.get("anchor_ms")
            raise InputError(f"{path}: anchor {short_repr(key)}: anchor_ms is "
                             f"{short_repr(value)}, not a time in ms (the reference panel's "
                             f"time, between {lo:g} and {hi:g} ms); edited by hand or corrupt: "
                             f"{keep}")


def check_anchors(config: MeasureConfig) -> None:
    """Refuse a bad machine anchor file (a folder, a pipe, a foreign or corrupt file) now,
    before a command creates its store or LUT: it would be refused at the first
    measurement, leaving a new, empty file behind."""
    path = anchors_path()
    if path is not None and config.drift_ref:
        _read_anchors(path)


def machine_anchor(config: MeasureConfig, candidate_ms: float | None = None) -> float | None:
    """The machine's anchor (ms) of the reference panel for ``config``, None if unset.

    With ``candidate_ms`` an unset anchor is set to it (the first writer wins, also between
    concurrent processes: the file is updated under a lock and replaced atomically). The
    level of every corrected figure on this machine is then that first measurement's; a
    corrupt or foreign file raises an InputError and is left byte-identical.
    """
    path = anchors_path()
    if path is None:
        return None
    key = anchor_key(config)
    anchors = _read_anchors(path)  # a bad file is refused before anything is created beside it
    _mark_active(path)
    found = _anchor_of(anchors.get(key))
    if found is not None:
        return found
    if candidate_ms is None or _anchor_of({"anchor_ms": candidate_ms}) is None:
        return None  # no panel level, or none a later read would accept: not recorded
    try:
        return _set_anchor(path, key, config, float(candidate_ms))
    except OSError as exc:  # a read-only cache must not cost the measurement
        import sys

        print(f"warning: {path}: cannot record the machine anchor ({exc.strerror or exc}); "
              f"this figure is on its own level. Set ${ANCHORS_ENV} to a writable file",
              file=sys.stderr)
        return float(candidate_ms)


# Runs that measure on this machine: each holds an exclusive lock on a file named by its
# run id in ``<anchors>.active/`` while it lives (its isolated worker processes inherit the
# id and hold nothing of their own). A new anchor is not recorded while another run holds
# one: two campaigns started together would record the level of each other's contention.
RUN_ID_ENV = "COSTMODELS_RUN_ID"
_HELD: dict[str, Any] = {}


def _run_id() -> str:
    rid = os.environ.get(RUN_ID_ENV, "")
    if not rid or "/" in rid or rid.startswith("."):
        import secrets

        rid = os.environ[RUN_ID_ENV] = f"{os.getpid()}-{secrets.token_hex(4)}"
    return rid


def _active_dir(path: Path) -> Path:
    """The folder of the running runs' locks beside the anchor file."""
    return path.with_name(path.name + ".active")


def _mark_active(path: Path) -> None:
    """Hold this run's lock in ``<anchors>.active/`` (once per process; nothing on a
    read-only cache)."""
    import fcntl

    if str(path) in _HELD:
        return
    mine = _active_dir(path) / _run_id()
    try:
        mine.parent.mkdir(parents=True, exist_ok=True)
        fh = open(mine, "a")  # noqa: SIM115 - held for the life of the process
    except OSError:
        return
    try:
        fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:  # the parent run that started this worker holds it
        fh.close()
        _HELD[str(path)] = None
        return
    _HELD[str(path)] = fh
    import atexit

    atexit.register(mine.unlink, missing_ok=True)


def _others_active(path: Path) -> bool:
    """Whether another run holds its lock in ``<anchors>.active/`` (stale files of runs
    that ended are removed on the way)."""
    import fcntl

    me = os.environ.get(RUN_ID_ENV, "")
    try:
        entries = [p for p in _active_dir(path).iterdir() if p.name != me and p.is_file()]
    except OSError:
        return False
    for p in entries:
        try:
            with open(p, "a") as fh:
                fcntl.flock(fh, fcntl.LOCK_SH | fcntl.LOCK_NB)
            p.unlink(missing_ok=True)  # nobody holds it: a run that ended
        except BlockingIOError:
            return True
        except OSError:
            continue
    return False


def _anchor_of(entry: Any) -> float | None:
    """The anchor (ms) an anchor-file entry holds, None for a missing or unusable one."""
    lo, hi = ANCHOR_RANGE_MS
    if isinstance(entry, dict) and isinstance(entry.get("anchor_ms"), (int, float)) \
            and not isinstance(entry["anchor_ms"], bool) and lo <= entry["anchor_ms"] <= hi:
        return float(entry["anchor_ms"])  # a panel's time: not 1e300 or 1e-300 (hand-edited)
    return None


def adopt_anchor(config: MeasureConfig, results: Sequence[MeasureResult],
                 report: WindowReport) -> tuple[list[MeasureResult], float | None]:
    """After a window measured without an anchor: make its panel level the machine's
    anchor (or take the one another process set meanwhile) and move the window's
    corrected figures onto it. Returns (results, anchor); anchor None without a panel."""
    if math.isnan(report.anchor_ms):
        return list(results), None
    anchor = machine_anchor(config, report.anchor_ms)
    if anchor is None:  # no anchor file ($COSTMODELS_ANCHORS=''): the call's own level
        return list(results), report.anchor_ms
    return rescale(results, anchor / report.anchor_ms), anchor


def _set_anchor(path: Path, key: str, config: MeasureConfig, candidate_ms: float) -> float:
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_name(path.name + ".lock"), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        anchors = _read_anchors(path)
        found = _anchor_of(anchors.get(key))
        if found is not None:
            return found
        if _others_active(path):
            import sys

            print("warning: another costmodels measurement is running on this machine, so "
                  "the machine anchor (the level every later corrected figure here is put on) "
                  f"was not recorded from this contended run ({path}); this run's figures are "
                  "on its own level. Measure once alone to record it", file=sys.stderr)
            return float(candidate_ms)
        from measure.fingerprint import fingerprint
        from measure.sqlite import utc_now

        fp = fingerprint(config)
        anchors[key] = {"anchor_ms": float(candidate_ms), "set_at": utc_now(),
                        "cpu_model": fp.get("cpu_model"), "runtime": config.runtime,
                        "runtime_version": fp.get("runtime_version"),
                        "threads": config.threads, "panel": PANEL_VERSION}
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps({"schema": ANCHORS_SCHEMA, "version": ANCHORS_VERSION,
                                   "anchors": anchors}, indent=1, sort_keys=True) + "\n",
                       encoding="utf-8")
        os.replace(tmp, path)
    return float(candidate_ms)


def _panel_rounds(members: Sequence[list[np.ndarray]]) -> list[np.ndarray]:
    """Per round, the panel's reference time: the geometric mean of the members' round
    medians (as a one-element array, the form :func:`_drift` reads)."""
    n = min(len(m) for m in members)
    meds = np.array([[float(np.median(m[k])) for k in range(n)] for m in members])
    return [np.array([float(np.exp(np.log(meds[:, k]).mean()))]) for k in range(n)]


def measure_window(items: Sequence[Prepared], config: MeasureConfig,
                   reference: Prepared | Sequence[Prepared] | None = None,
                   anchor_ms: float | None = None,
                   progress: Callable[[int, int], None] | None = None
                   ) -> tuple[list[MeasureResult], WindowReport]:
    """Time prepared networks in interleaved rounds (the caller pins the process).

    Returns one result per item (failures as they are) and the window's report.
    ``reference``: one reference network or a panel (:func:`reference_panel`; its round
    time is the geometric mean of the members'). ``anchor_ms``: the reference's anchor;
    None = the median of its rounds here.
    ``progress(done, total)`` is called after each round.
    """
    t0 = time.perf_counter()
    live = [i for i, p in enumerate(items) if p.burst is not None]
    out: list[MeasureResult | None] = [p.failure for p in items]
    for i, p in enumerate(items):
        if p.burst is None and p.failure is None and p.whole is not None:
            out[i] = p.whole()
    refs = [reference] if isinstance(reference, Prepared) else list(reference or ())
    ref_ids = [-1 - j for j, r in enumerate(refs) if r.burst is not None]
    timed = live + ref_ids
    times: dict[int, list[np.ndarray]] = {i: [] for i in timed}
    cpu: dict[int, list[np.ndarray]] = {i: [] for i in timed}
    dropped = {i: 0 for i in timed}
    errors: dict[int, str] = {}
    runs = config.round_runs()

    def item(i: int) -> Prepared:
        return refs[-1 - i] if i < 0 else items[i]

    for i in timed:  # warm-up once, in order: build-time effects settle before round 1
        try:
            item(i).burst(config.warmup, 0)
        except Exception as exc:  # noqa: BLE001 - a network that cannot run is data
            errors[i] = f"run failed: {error_text(exc)}"
    rng = np.random.default_rng(config.seed)
    for k, n_runs in enumerate(runs if timed else []):
        start = time.perf_counter()
        for i in rng.permutation(np.array(timed, dtype=int)).tolist():
            if i in errors:
                continue
            try:
                s = item(i).burst(config.round_warmup, n_runs)
            except Exception as exc:  # noqa: BLE001
                errors[i] = f"run failed: {error_text(exc)}"
                continue
            times[i].append(s.times_ms)
            cpu[i].append(s.cpu_ms)
            dropped[i] += s.dropped
        rest = config.min_round_s - (time.perf_counter() - start)
        if rest > 0 and k < len(runs) - 1:
            time.sleep(rest)
        if progress:
            progress(k + 1, len(runs))
    members = [times[i] for i in ref_ids if i not in errors and times[i]]
    factors, ref_ms, anchor = _drift(_panel_rounds(members) if members else None, anchor_ms)
    for i in live:
        if i in errors:
            out[i] = MeasureResult.failure(errors[i], config.runtime, meta=dict(items[i].meta))
            continue
        res = MeasureResult.from_rounds(times[i], config.runtime, config.max_cv,
                                        factors=factors)
        meta = {**items[i].meta, "protocol": PROTOCOL, "dropped_preempted": dropped[i]}
        c = [x for x in cpu[i] if len(x)]
        if c:
            meta["cpu_median_ms"] = float(np.median(np.concatenate(c)))
        out[i] = replace(res, meta=meta)
    report = WindowReport(len(items), len(runs), _round_factors(out, live), tuple(ref_ms),
                          anchor, time.perf_counter() - t0)
    return [r if r is not None else MeasureResult.failure("not measured", config.runtime)
            for r in out], report


def _drift(ref_rounds: list[np.ndarray] | None, anchor_ms: float | None
           ) -> tuple[np.ndarray | None, list[float], float]:
    if not ref_rounds:
        return None, [], math.nan
    ref = [float(np.median(t)) for t in ref_rounds]
    anchor = float(np.median(ref)) if anchor_ms is None or not anchor_ms > 0 else anchor_ms
    return np.asarray(ref) / anchor, ref, anchor


def _round_factors(results: Sequence[MeasureResult | None], live: Sequence[int]
                   ) -> tuple[float, ...]:
    """Per round: geometric mean over networks of round median / the network's median."""
    rows = [np.asarray(results[i].round_medians_ms) / results[i].median_ms for i in live
            if results[i] is not None and results[i].ok and results[i].median_ms > 0]
    n = min((len(r) for r in rows), default=0)
    if not rows or n == 0:
        return ()
    logs = np.log(np.stack([r[:n] for r in rows]))
    return tuple(float(x) for x in np.exp(logs.mean(axis=0)))


def measure_many(models: Sequence[Any], config: MeasureConfig, names: Sequence[str] | None = None,
                 window: int = DEFAULT_WINDOW, anchor_ms: float | None = None,
                 on_window: Callable[[list[MeasureResult], WindowReport], None] | None = None,
                 bind_outputs: bool = False) -> list[MeasureResult]:
    """Time ONNX models (proto, bytes or path) with the interleaved scheduler.

    Windows of ``window`` models are built, timed in ``config.rounds`` rounds and freed;
    the process is pinned to ``config.pin_cpu`` throughout. Never raises for a bad model
    (its result has ``ok=False``). ``anchor_ms``: the drift reference's anchor (None: the
    machine's, :func:`machine_anchor`, or set by the first window); ``on_window(results,
    report)`` is called after each window. ``bind_outputs``: see :func:`prepare`.
    """
    from measure.fingerprint import fingerprint

    names = list(names) if names is not None else [f"model{i}" for i in range(len(models))]
    fp = fingerprint(config)
    results: list[MeasureResult] = []
    if anchor_ms is None and config.drift_ref:
        anchor_ms = machine_anchor(config)
    with pinned(config.pin_cpu, config.threads) as cpus:
        panel = reference_panel(config)
        try:
            for lo in range(0, len(models), max(1, window)):
                chunk = [prepare(m, config, n, bind_outputs) for m, n in
                         zip(models[lo:lo + window], names[lo:lo + window], strict=True)]
                try:
                    res, report = measure_window(chunk, config, panel, anchor_ms)
                finally:
                    for p in chunk:
                        p.close()
                if anchor_ms is None:
                    res, anchor_ms = adopt_anchor(config, res, report)
                res = [replace(r, fingerprint=r.fingerprint or fp,
                               meta={**r.meta, "pinned_cpus": sorted(cpus or [])}) for r in res]
                results.extend(res)
                if on_window:
                    on_window(res, report)
        finally:
            for p in panel:
                p.close()
    return results


def rescale(results: Sequence[MeasureResult], scale: float) -> list[MeasureResult]:
    """Corrected figures moved to another anchor (``scale`` = new anchor / old anchor)."""
    return [replace(r, corrected_ms=r.corrected_ms * scale)
            if r.ok and not math.isnan(r.corrected_ms) and scale != 1.0 else r for r in results]


__all__ = ["Prepared", "WindowReport", "adopt_anchor", "machine_anchor", "measure_many",
           "measure_window", "panel_models", "prepare", "reference_panel", "rescale",
           "reference_model", "PROTOCOL", "DEFAULT_WINDOW"]
