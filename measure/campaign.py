"""Campaigns: measure many networks into a store, in interleaved rounds, resumably.

A campaign is a list of :class:`Job` (networks of any search space, or ONNX files), one
:class:`~measure.config.MeasureConfig` and a :class:`~measure.store.MeasureStore`.
Jobs are measured in windows (:mod:`measure.rounds`: each window built once and timed
in shuffled rounds), and each window's rows are committed when it ends. Networks
already stored for this config on this device are skipped -- checked again before
every window, and each process walks the windows in an order of its own, so two
campaigns on one store split the work -- and rerunning the same
command after a crash or a SIGKILL continues with what is missing. A network that
fails (cannot be built, crashes its worker, times out) is stored as failed with its
error and the campaign goes on; ``retry_failed`` measures stored failures again.

For a farm of devices (or any other driver) the pieces are: :func:`space_jobs` /
:func:`file_jobs` (what to measure, keyed for the store), :func:`pending` (what a store
still lacks), :func:`measure_jobs` (one window -> results and its report) and
:func:`store_window` (commit them, with the campaign's drift); :func:`run_campaign`
is those four in a loop. :func:`representatives` groups jobs whose networks compute
the same graph, so that one of each is measured and its figure mapped to all.
"""

from __future__ import annotations

import hashlib
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from measure.config import MeasureConfig, MeasureResult
from measure.fingerprint import config_hash, device_hash, fingerprint
from measure.rounds import DEFAULT_WINDOW, PROTOCOL, WindowReport, machine_anchor, rescale
from measure.store import MeasureStore, NetKey, StoredMeasurement
from measure.timing import error_text


@dataclass(frozen=True)
class Job:
    """One network to measure: its store key and how to make its ONNX model.

    ``network``: the built IR (its ONNX comes from :func:`costmodels.spaces.onnx_for`);
    ``source``: an ONNX path; ``arch``: a NAS-Bench-201 arch string (older form);
    ``error``: why the network could not even be built (measured as a failure).
    """

    net: NetKey
    arch: str | None = None       # NAS-Bench-201 arch string
    batch: int = 1
    source: str | None = None     # ONNX path
    network: Any = field(default=None, compare=False, repr=False)
    error: str = ""

    def model_bytes(self) -> bytes:
        from measure.inputs import as_bytes

        if self.error:
            raise ValueError(self.error)
        if self.network is not None:
            from costmodels.spaces import onnx_for

            return as_bytes(onnx_for(self.network))
        if self.source is not None:
            return Path(self.source).read_bytes()
        from costmodels.spaces import nb201

        return nb201.build_onnx(self.arch, self.net.dataset or "cifar10",
                                self.batch).SerializeToString()


def space_jobs(space, archs: Sequence[str], dataset: str | None = None,
               batch: int = 1) -> list[Job]:
    """Jobs for architectures of a search space, keyed by the IR fingerprint.

    An architecture whose network cannot be built is a job that fails (an error row).
    """
    from costmodels.errors import CostModelError

    jobs = []
    for a in archs:
        try:
            net = space.build_network(a, dataset, batch)
        except (CostModelError, OSError, ValueError) as exc:
            digest = hashlib.sha256(f"{space.spec}|{a}|{dataset}|{batch}".encode()).hexdigest()
            key = NetKey(f"unbuilt:{digest[:16]}", str(a), str(a), _index(space, a), dataset)
            jobs.append(Job(key, batch=batch, error=f"build failed: {error_text(exc)}"))
            continue
        key = NetKey(job_key(net), net.name, net.meta.get("arch_str"),
                     net.meta.get("arch_index"), net.meta.get("dataset", dataset))
        jobs.append(Job(key, batch=batch, network=net))
    return jobs


def job_key(net) -> str:
    """The store key of a space's network: its IR fingerprint; for a network read from a
    file (``models:DIR``) also the file's bytes. Two exports of one network can run at
    different speeds although their IR is the same (weights listed as graph inputs, which
    a runtime cannot fold): each file is measured as itself."""
    src = net.meta.get("source")
    if not src:
        return net.fingerprint
    try:
        data = Path(src).read_bytes()
        h = hashlib.sha256(net.fingerprint.encode() + data)
        for loc in _external_files(data):  # weights kept beside the model are its bytes too
            h.update(loc.encode() + (Path(src).parent / loc).read_bytes())
    except OSError:
        return net.fingerprint
    return h.hexdigest()[:16]


def _external_files(data: bytes) -> list[str]:
    """The external-data files an ONNX model's bytes name (sorted, distinct)."""
    import onnx

    try:
        proto = onnx.ModelProto.FromString(data)
    except Exception:  # noqa: BLE001 - not ONNX: the import names that
        return []
    tensors = list(proto.graph.initializer) + [a.t for n in proto.graph.node
                                               for a in n.attribute if a.HasField("t")]
    return sorted({e.value for t in tensors for e in t.external_data if e.key == "location"})


def _index(space, arch: str) -> int | None:
    try:
        return space.index(arch) if space.has_index else None
    except Exception:  # noqa: BLE001 - an unknown arch has no index
        return None


def nb201_jobs(indices: Sequence[int], dataset: str = "cifar10", batch: int = 1) -> list[Job]:
    """Jobs for NAS-Bench-201 cells (standard indices); keyed by the IR fingerprint."""
    from costmodels.spaces import get_space

    space = get_space("nb201")
    return space_jobs(space, [space.parse(int(i)) for i in indices], dataset, batch)


def file_jobs(paths: Sequence[str | Path]) -> list[Job]:
    """Jobs for ONNX files; keyed by the SHA-256 of the file (a changed file is a new network)."""
    jobs = []
    for p in paths:
        p = Path(p)
        try:
            digest = hashlib.sha256(p.read_bytes()).hexdigest()[:16]
        except OSError:
            digest = "missing-" + hashlib.sha256(str(p.resolve()).encode()).hexdigest()[:8]
        jobs.append(Job(NetKey(f"onnx:{digest}", p.name), source=str(p)))
    return jobs


# ----------------------------------------------------------------------------- representatives
_COMMUTATIVE = frozenset({"Add", "Sum"})


def compute_class(net) -> str:
    """A key equal for networks that run the same computation (16 hex).

    Every layer is named by what it computes -- op, attributes, shapes and the names of
    its inputs -- with chains of additions flattened and their terms sorted (a sum's order
    changes nothing), and the key is the graph outputs' names plus the multiset of all
    layers (so a layer computed twice, or computed and not used, counts). Weights' values
    are ignored: they do not change the time of a dense network.
    """
    name: dict[str, str] = {t: f"in{i}:{shape}" for i, (t, shape) in enumerate(net.inputs)}
    terms: dict[str, tuple[str, ...]] = {}
    layers = []
    for layer in net.layers:
        if layer.op in _COMMUTATIVE:
            flat: list[str] = []
            for t in layer.inputs:
                flat.extend(terms.get(t, (name.get(t, "?"),)))
            desc = (layer.op, tuple(sorted(flat)), layer.output_shape, layer.dtype)
        else:
            desc = (layer.op, tuple(name.get(t, "?") for t in layer.inputs), layer.input_shapes,
                    layer.output_shape, layer.weight_shapes, layer.kernel, layer.stride,
                    layer.pads, layer.dilation, layer.groups, layer.dtype)
        h = hashlib.sha256(repr(desc).encode()).hexdigest()[:20]
        layers.append(repr((layer.op, layer.output_shape)) if layer.op in _COMMUTATIVE else h)
        for t in layer.outputs:
            name[t] = h
            if layer.op in _COMMUTATIVE:
                terms[t] = desc[1]
    outs = tuple(name.get(t, "?") for t in net.outputs)
    return hashlib.sha256(repr((outs, sorted(layers))).encode()).hexdigest()[:16]


def representatives(jobs: Sequence[Job], rule: str = "graph", space=None
                    ) -> dict[str, list[Job]]:
    """Group jobs: representative's key -> every job it stands for (itself first).

    ``rule="graph"``: :func:`compute_class` (exact: same computation, same time).
    ``rule="space"``: the space's own isomorphism (``space.canonical(arch)``; for
    NAS-Bench-201 its paper's rule, 6,466 classes), which also merges cells that compute
    different layers (e.g. a convolution of a zero node): faster, less exact.
    Jobs without a network stand for themselves. The first job of a group is its
    representative (jobs' order decides).
    """
    if rule not in ("graph", "space"):
        raise ValueError(f"unknown representatives rule {rule!r}; use graph or space")
    canon = space_canonical(space) if rule == "space" else None
    groups: dict[str, list[Job]] = {}
    for job in jobs:
        if job.network is None:
            cls = f"job:{job.net.key}"
        elif canon is not None:
            cls = canon(job.net.arch_str)
        else:
            cls = compute_class(job.network)
        groups.setdefault(cls, []).append(job)
    return {members[0].net.key: members for members in groups.values()}


def space_canonical(space) -> Callable[[str], str]:
    from costmodels.errors import UnknownSpace

    if space is not None and hasattr(space, "canonical"):
        return space.canonical
    if space is not None and space.spec == "nb201":  # until the protocol has canonical()
        from costmodels.spaces import nb201

        return lambda a: nb201.canonical(nb201.parse_arch(a), rule="nb201")
    raise UnknownSpace(f"space {getattr(space, 'spec', space)!r} has no isomorphism rule; "
                       "use --representatives graph")


def expand(records: Sequence[StoredMeasurement], groups: dict[str, list[Job]]
           ) -> list[StoredMeasurement]:
    """Each representative's stored row copied to every job of its group (with that job's
    name, arch string and index); groups whose representative has no row are left out."""
    by_key = {r.net.key: r for r in records}
    out = []
    for rep, members in groups.items():
        rec = by_key.get(rep)
        if rec is None:
            continue
        for job in members:
            out.append(rec if job.net == rec.net else replace(
                rec, net=replace(job.net), result=replace(
                    rec.result, meta={**rec.result.meta, "represented_by": rec.net.name})))
    return out


# ----------------------------------------------------------------------------- campaigns
def campaign_state(jobs: Sequence[Job], store: Any, config: MeasureConfig,
                   retry_failed: bool = False) -> tuple:
    """Where a campaign over ``jobs`` starts: ``(fingerprint, config_hash, device_hash,
    job keys, jobs still to measure, keys already stored)`` -- for local campaigns and farms."""
    fp = fingerprint(config)
    ch, dh = config_hash(config), device_hash(fp)
    keys = {j.net.key for j in jobs}
    return (fp, ch, dh, keys, pending(jobs, store, ch, dh, retry_failed),
            store.done_keys(ch, dh))


@dataclass(frozen=True)
class CampaignSummary:
    """What a campaign did. ``records`` are the stored rows of its jobs (all of them).
    ``drift``: median over its windows of the round-factor spread; ``campaign_id`` its row."""

    total: int
    skipped: int
    measured: int
    failed: int
    seconds: float
    config_hash: str
    device_hash: str
    records: tuple[StoredMeasurement, ...]
    campaign_id: int | None = None
    drift: float | None = None
    reference_drift: float | None = None


def measure_job(job: Job, config: MeasureConfig) -> MeasureResult:
    """Measure one job on its own (the dispatcher); a model that cannot be made is a failure."""
    from measure import measure

    try:
        data = job.model_bytes()
    except Exception as exc:  # noqa: BLE001 - errors are data
        return MeasureResult.failure(_build_error(exc), config.runtime)
    return measure(data, config)


def _build_error(exc: BaseException) -> str:
    text = str(exc) if isinstance(exc, ValueError) and str(exc).startswith("build failed") \
        else f"build failed: {error_text(exc)}"
    return text


def pending(jobs: Sequence[Job], store: MeasureStore, config_hash_: str, device_hash_: str,
            retry_failed: bool = False) -> list[Job]:
    """Jobs (first of each key) that ``store`` has no row for (or only a failed one, with
    ``retry_failed``) for this config and device."""
    done = store.done_keys(config_hash_, device_hash_, include_failed=not retry_failed)
    seen: set[str] = set()
    out = []
    for job in jobs:
        if job.net.key not in done and job.net.key not in seen:
            out.append(job)
        seen.add(job.net.key)
    return out


def measure_jobs(jobs: Sequence[Job], config: MeasureConfig, anchor_ms: float | None = None
                 ) -> tuple[list[MeasureResult], WindowReport]:
    """One window of jobs timed in interleaved rounds: in this process, or with
    ``config.isolate`` in a fresh worker (a crash there re-measures each job alone)."""
    models: list[bytes | MeasureResult] = []
    for job in jobs:
        try:
            models.append(job.model_bytes())
        except Exception as exc:  # noqa: BLE001 - errors are data
            models.append(MeasureResult.failure(_build_error(exc), config.runtime))
    names = [j.net.name for j in jobs]
    if config.isolate:
        from measure.worker import measure_window_isolated

        return measure_window_isolated(models, config, names, anchor_ms)
    return measure_models(models, config, names, anchor_ms)


def measure_models(models: Sequence[Any], config: MeasureConfig, names: Sequence[str],
                   anchor_ms: float | None = None, bind_outputs: bool = False
                   ) -> tuple[list[MeasureResult], WindowReport]:
    """Prepare and time one window in this process, pinned (a model given as a failure
    result stays one). Results carry the fingerprint. ``bind_outputs``: see
    :func:`measure.ort.burst_timer`."""
    from measure.rounds import measure_window, prepare, reference_panel
    from measure.timing import pinned

    fp = fingerprint(config)
    with pinned(config.pin_cpu, config.threads) as cpus:
        items = []
        for m, n in zip(models, names, strict=True):
            if isinstance(m, MeasureResult):
                from measure.rounds import Prepared

                items.append(Prepared(n, failure=m))
            else:
                items.append(prepare(m, config, n, bind_outputs))
        panel = reference_panel(config)
        try:
            results, report = measure_window(items, config, panel, anchor_ms)
        finally:
            for p in items + panel:
                p.close()
    pinned_cpus = sorted(cpus or [])
    return [replace(r, fingerprint=r.fingerprint or fp,
                    meta={**r.meta, "pinned_cpus": pinned_cpus}) for r in results], report


def store_window(store: MeasureStore, jobs: Sequence[Job], results: Sequence[MeasureResult],
                 report: WindowReport, config: MeasureConfig, config_hash_: str,
                 device_hash_: str, campaign_id: int | None, replace_keys: set[str]) -> int:
    """Commit one window: its rows (kept once under concurrency) and its report; with a
    drift reference, corrected figures are rescaled to the store's anchor. Returns the
    number of rows written."""
    if config.drift_ref and not math.isnan(report.anchor_ms):
        anchor = store.reference_anchor(config_hash_, device_hash_, report.anchor_ms)
        if anchor:
            results = rescale(results, anchor / report.anchor_ms)
    written = 0
    for job, res in zip(jobs, results, strict=True):
        written += store.put(job.net, config, config_hash_, device_hash_, res,
                             replace_existing=job.net.key in replace_keys,
                             campaign_id=campaign_id)
    if campaign_id is not None:
        store.add_window(campaign_id, report.as_dict(), written,
                         sum(not r.ok for r in results))
    return written


def _anchor(store: MeasureStore, config: MeasureConfig, ch: str, dh: str) -> float | None:
    """The drift anchor of a campaign: the store's (its corrected figures stay on one level),
    else the machine's (a new store starts on the level of every other on this machine)."""
    if not config.drift_ref:
        return None
    anchor = store.reference_anchor(ch, dh)
    if anchor is None:
        machine = machine_anchor(config)
        if machine is not None:
            anchor = store.reference_anchor(ch, dh, machine)
    return anchor


def _note_structure_keyed(todo: Sequence[Job], store: MeasureStore, ch: str, dh: str) -> None:
    """Say so when files of a folder are measured again because the store holds them under
    their IR alone (a store written before files were keyed by their bytes too)."""
    by_ir = [j.network.fingerprint for j in todo
             if j.network is not None and j.network.meta.get("source")
             and j.net.key != j.network.fingerprint]
    if not by_ir:
        return
    done = store.done_keys(ch, dh)
    files = sum(fp in done for fp in by_ir)  # files, not structures: two may share one IR
    if files:
        print(f"note: {store.path} holds {files} of these model files under their network "
              "structure alone (written before each file was keyed by its bytes too); they "
              "are measured again, and the old records stay", file=sys.stderr)


def run_campaign(jobs: Sequence[Job], config: MeasureConfig, store: MeasureStore,
                 retry_failed: bool = False, show_progress: bool = True,
                 on_result: Callable[[Job, MeasureResult], None] | None = None,
                 window: int = DEFAULT_WINDOW) -> CampaignSummary:
    """Measure every job not yet in ``store`` for this config and device, ``window`` jobs at
    a time in interleaved rounds; commit each window."""
    t0 = time.perf_counter()
    fp, ch, dh, keys, todo, stored_any = campaign_state(jobs, store, config, retry_failed)
    skipped = len(keys) - len(todo)
    measured = failed = 0
    _note_structure_keyed(todo, store, ch, dh)
    campaign_id = None
    if todo:
        campaign_id = store.start_campaign(ch, dh, len(todo), {
            "protocol": PROTOCOL, "window": window, "rounds": config.rounds,
            "drift_ref": config.drift_ref, "loadavg": fp.get("loadavg")})
    anchor = _anchor(store, config, ch, dh)
    bar = _Progress(show_progress, config, len(keys), skipped)
    try:
        for lo in _window_order(len(todo), window):
            chunk = pending(todo[lo:lo + window], store, ch, dh, retry_failed)
            skipped += len(todo[lo:lo + window]) - len(chunk)  # stored meanwhile by another
            if not chunk:
                bar.step(len(todo[lo:lo + window]), failed)
                continue
            results, report = measure_jobs(chunk, config, anchor)
            store_window(store, chunk, results, report, config, ch, dh, campaign_id,
                         stored_any)
            if config.drift_ref and anchor is None:
                anchor = store.reference_anchor(ch, dh)
                if anchor is not None:
                    machine_anchor(config, anchor)
            measured += len(chunk)
            failed += sum(not r.ok for r in results)
            if on_result:
                for job, res in zip(chunk, results, strict=True):
                    on_result(job, res)
            bar.step(len(todo[lo:lo + window]), failed)
    finally:
        bar.close()
    records = tuple(store.records(ch, dh, keys=keys))
    camp = next((c for c in store.campaigns() if c["id"] == campaign_id), None)
    return CampaignSummary(len(keys), skipped, measured, failed, time.perf_counter() - t0, ch,
                           dh, records, campaign_id, camp and camp["drift"],
                           camp and camp["reference_drift"])


def _window_order(n: int, window: int) -> list[int]:
    """The first job of each window, in an order of this process's own (seeded by its pid):
    a second campaign on the same store walks the windows in another order and skips what
    the first stored meanwhile, so the two split the work (walking them in one order, both
    measured every window, each at the other's pace). A window is the same jobs whatever
    the order, and its figures are corrected for drift."""
    import os

    import numpy as np

    starts = list(range(0, n, max(1, window)))
    if len(starts) < 2:
        return starts
    return [starts[i] for i in np.random.default_rng(os.getpid()).permutation(len(starts))]


class _Progress:
    """A rich progress bar (done / total, ETA) from costmodels.progress, or nothing."""

    def __init__(self, show: bool, config: MeasureConfig, total: int, done: int) -> None:
        self.bar = None
        if show:
            from costmodels.progress import progress

            self.label = f"measure {config.runtime}"
            self.bar = progress(self.label)
            self.bar.start()
            self.task = self.bar.add_task(self.label, total=total, completed=done)

    def step(self, n: int, failed: int) -> None:
        if self.bar is not None:
            desc = f"{self.label} ({failed} failed)" if failed else self.label
            self.bar.update(self.task, advance=n, description=desc)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
