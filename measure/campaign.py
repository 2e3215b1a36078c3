"""Campaigns: measure many networks into a store, resumably.

A campaign is a list of :class:`Job` (NAS-Bench-201 cells or ONNX files), one
:class:`~measure.config.MeasureConfig` and a :class:`~measure.store.MeasureStore`.
Networks already stored for this config on this device are skipped, so
rerunning the same command after a crash or a SIGKILL continues with what is
missing. A network that fails (cannot be built, crashes its worker, times out)
is stored as failed with its error and the campaign goes on; ``retry_failed``
measures stored failures again.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from measure.config import MeasureConfig, MeasureResult
from measure.fingerprint import config_hash, device_hash, fingerprint
from measure.store import MeasureStore, NetKey, StoredMeasurement
from measure.timing import error_text


@dataclass(frozen=True)
class Job:
    """One network to measure: its store key and how to make its ONNX model."""

    net: NetKey
    arch: str | None = None       # NAS-Bench-201 arch string
    batch: int = 1
    source: str | None = None     # ONNX path

    def model_bytes(self) -> bytes:
        if self.source is not None:
            return Path(self.source).read_bytes()
        from costmodels.spaces import nb201

        return nb201.build_onnx(self.arch, self.net.dataset or "cifar10",
                                self.batch).SerializeToString()


def nb201_jobs(indices: Sequence[int], dataset: str = "cifar10", batch: int = 1) -> list[Job]:
    """Jobs for NAS-Bench-201 cells (standard indices); keyed by the IR fingerprint."""
    from costmodels.spaces import nb201

    jobs = []
    for i in indices:
        net = nb201.build_network(int(i), dataset, batch)
        key = NetKey(net.fingerprint, net.name, net.meta["arch_str"], net.meta["arch_index"],
                     dataset)
        jobs.append(Job(key, arch=net.meta["arch_str"], batch=batch))
    return jobs


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


@dataclass(frozen=True)
class CampaignSummary:
    """What a campaign did. ``records`` are the stored rows of its jobs (all of them)."""

    total: int
    skipped: int
    measured: int
    failed: int
    seconds: float
    config_hash: str
    device_hash: str
    records: tuple[StoredMeasurement, ...]


def measure_job(job: Job, config: MeasureConfig) -> MeasureResult:
    """Measure one job with the dispatcher; a model that cannot even be made is a failure."""
    from measure import measure

    try:
        data = job.model_bytes()
    except Exception as exc:  # noqa: BLE001 - errors are data
        return MeasureResult.failure(f"build failed: {error_text(exc)}", config.runtime)
    return measure(data, config)


def run_campaign(jobs: Sequence[Job], config: MeasureConfig, store: MeasureStore,
                 retry_failed: bool = False, show_progress: bool = True,
                 on_result: Callable[[Job, MeasureResult], None] | None = None
                 ) -> CampaignSummary:
    """Measure every job not yet in ``store`` for this config and device; commit each one."""
    t0 = time.perf_counter()
    fp = fingerprint(config)
    ch, dh = config_hash(config), device_hash(fp)
    done = store.done_keys(ch, dh, include_failed=not retry_failed)
    stored_any = store.done_keys(ch, dh)
    seen: set[str] = set()
    todo = []
    for job in jobs:
        if job.net.key not in done and job.net.key not in seen:
            todo.append(job)
        seen.add(job.net.key)
    skipped = len(seen) - len(todo)
    measured = failed = 0
    bar = _Progress(show_progress, config, len(seen), skipped)
    try:
        for job in todo:
            res = measure_job(job, config)
            if not res.fingerprint:
                res = replace(res, fingerprint=fp)
            store.put(job.net, config, ch, dh, res, replace_existing=job.net.key in stored_any)
            measured += 1
            failed += not res.ok
            if on_result:
                on_result(job, res)
            bar.step(job, res, failed)
    finally:
        bar.close()
    records = tuple(store.records(ch, dh, keys=seen))
    return CampaignSummary(len(seen), skipped, measured, failed, time.perf_counter() - t0, ch, dh,
                           records)


class _Progress:
    """The rich progress bar of costmodels.cli (done / total, ETA), or nothing."""

    def __init__(self, show: bool, config: MeasureConfig, total: int, done: int) -> None:
        self.bar = None
        if show:
            from costmodels.cli import progress

            self.label = f"measure {config.runtime}"
            self.bar = progress(self.label)
            self.bar.start()
            self.task = self.bar.add_task(self.label, total=total, completed=done)

    def step(self, job: Job, res: MeasureResult, failed: int) -> None:
        if self.bar is not None:
            desc = f"{self.label} ({failed} failed)" if failed else self.label
            self.bar.update(self.task, advance=1, description=desc)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()
