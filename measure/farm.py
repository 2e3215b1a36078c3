"""Device farms: one campaign spread over every board a TVM RPC tracker holds under a key.

:func:`run_farm` keeps up to N boards busy (default: as many as the tracker
reports free under the key), compiling the networks locally in a pool of worker
processes while the boards time them, the way MetaSchedule's RPC runner works.
Each board thread asks the tracker for a free board per network, uploads the
library, times it there and hands the result to the main thread, which alone
writes the store (the same resumable store and record format as
:func:`measure.campaign.run_campaign`; a SIGKILL loses at most what was in
flight).

- Every record names its board (``fingerprint["board"]`` = the server's
  ``host:port`` as the tracker reports it); boards of one key are one device for
  the store's device hash, so a resumed campaign may land on any of them.
- A board that disappears mid-run (server killed, session timeout) gives an
  error record for that network only; the network goes back to the queue for
  another board (up to ``max_attempts`` boards) and the campaign goes on.
- Quality: each board times a shared reference network the first time it is
  used; the summary gives per-board reference medians and flags boards more than
  ``outlier_frac`` off the median board, so boards that disagree are reported,
  not silently mixed.

The tracker address comes from ``config.rpc_tracker``; nothing here listens on a
port. Commands to start a farm: ``measure/FARM.md``.
"""

from __future__ import annotations

import queue
import shutil
import statistics
import threading
import time
from collections.abc import Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from costmodels.errors import CostModelError
from measure.campaign import CampaignSummary, campaign_state
from measure.config import MeasureConfig, MeasureResult
from measure.timing import error_text

DEFAULT_WAIT_S = 60.0
MAX_REQUEST_FAILURES = 5
# Words of a TVM RPC error that mean the connection, not the network, failed.
_LOST = ("kShutdown", "connection", "Connection", "socket", "Socket", "closed", "Broken pipe",
         "timed out", "Timeout", "timeout")


class FarmError(CostModelError):
    """A farm that cannot start: no tracker, no free board under the key."""


@dataclass(frozen=True)
class FarmSummary(CampaignSummary):
    """What a farm campaign did: a ``CampaignSummary`` (its drift fields left empty) plus
    the boards.

    ``boards``: board -> {"jobs", "failed", "lost", "reference_ms"} (reference median, ms);
    ``board_spread``: (max - min) / median of the boards' reference medians;
    ``outliers``: boards whose reference median is more than ``outlier_frac`` off the median.
    """

    devices: int = 0
    requeued: int = 0
    boards: dict[str, dict[str, Any]] = field(default_factory=dict)
    board_spread: float | None = None
    outliers: tuple[str, ...] = ()

    def quality(self) -> dict[str, Any]:
        """JSON-friendly board figures (for a fingerprint side file or a report)."""
        return {"devices": self.devices, "requeued": self.requeued, "boards": self.boards,
                "board_spread": self.board_spread, "outliers": list(self.outliers)}


# ---------------------------------------------------------------------------- the tracker
def tracker_summary(tracker: str) -> dict[str, Any]:
    """The tracker's summary (``queue_info``: key -> {"free", "pending"}, ``server_info``)."""
    import socket

    from tvm import rpc

    from measure.rpc import parse_tracker

    host, port = parse_tracker(tracker)
    try:
        socket.create_connection((host, port), timeout=5).close()  # TVM retries for 60 s
        return rpc.connect_tracker(host, port).summary()
    except Exception as exc:  # noqa: BLE001 - TVM raises RuntimeError/OSError variants
        raise FarmError(f"cannot reach the TVM RPC tracker at {tracker} ({error_text(exc)}); "
                        "start it (measure/FARM.md) or fix --rpc-tracker") from None


def free_devices(tracker: str, key: str) -> int:
    """How many boards the tracker reports free under ``key``."""
    info = tracker_summary(tracker).get("queue_info", {}).get(key, {})
    return int(info.get("free", 0))


def request_board(tracker: str, key: str, session_timeout_s: float, wait_s: float
                  ) -> tuple[Any, str]:
    """A session on a free board of ``key`` and the board's ``host:port``.

    TVM's ``TrackerSession.request`` without its unbounded wait: gives up after
    ``wait_s`` seconds with :class:`TimeoutError`.
    """
    import socket

    from tvm.rpc import base, client

    from measure.rpc import parse_tracker

    host, port = parse_tracker(tracker)
    sock = socket.create_connection((host, port), timeout=wait_s)
    try:
        sock.sendall(base.struct.pack("<i", base.RPC_TRACKER_MAGIC))
        magic = base.struct.unpack("<i", base.recvall(sock, 4))[0]
        if magic != base.RPC_TRACKER_MAGIC:
            raise FarmError(f"{tracker} is not a TVM RPC tracker; check --rpc-tracker")
        base.sendjson(sock, [base.TrackerCode.REQUEST, key, "", 0])
        try:
            value = base.recvjson(sock)
        except TimeoutError:
            raise TimeoutError(f"no free board under key {key!r} at {tracker} within "
                               f"{wait_s:g} s") from None
    finally:
        sock.close()
    if value[0] != base.TrackerCode.SUCCESS:
        raise FarmError(f"tracker {tracker} refused the request for {key!r}: {value}")
    url, bport, matchkey = value[1]
    sess = client.connect(url, bport, matchkey, int(max(1, session_timeout_s)))
    return sess, f"{url}:{bport}"


def _alive(sess) -> bool:
    """Does the board still answer? (a network's own error leaves it answering)."""
    try:
        sess.cpu(0).exist  # noqa: B018 - one round trip to the server
        return True
    except Exception:  # noqa: BLE001
        return False


# ---------------------------------------------------------------------------- building
def _build_in_worker(data: bytes, config_dict: dict[str, Any]) -> tuple[str, float, dict, str]:
    """Worker process: compile and export one model; (lib path, build s, meta, error)."""
    from measure.tvm import build

    built = build(data, MeasureConfig(**config_dict), export=True)
    return built.artifact_path, built.build_s, dict(built.meta), built.error


@dataclass
class _Item:
    """A network on its way through the farm: built library, attempts, boards tried."""

    job: Any
    data: bytes = b""
    lib: str = ""
    build_s: float = 0.0
    meta: dict[str, Any] = field(default_factory=dict)
    inputs: list[Any] = field(default_factory=list)
    attempts: int = 0
    boards: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------- the farm
def run_farm(jobs: Sequence[Any], store, config: MeasureConfig, devices: int | None = None,
             build_workers: int = 1, reference: Any | None = None, retry_failed: bool = False,
             wait_s: float = DEFAULT_WAIT_S, max_attempts: int = 3, outlier_frac: float = 0.10,
             show_progress: bool = True) -> FarmSummary:
    """Measure ``jobs`` (:class:`measure.campaign.Job`) on the boards of ``config.rpc_key``.

    ``devices``: boards kept busy (None: as many as the tracker reports free);
    ``build_workers``: local compile processes; ``reference``: the job every board times
    once for the quality figures (default: the first job); ``wait_s``: how long a board
    thread waits for a free board before giving up.
    """

    if not config.rpc_tracker or not config.rpc_key:
        raise FarmError("a farm needs --rpc-tracker HOST:PORT and --rpc-key KEY")
    config = replace(config, runtime="tvm", isolate=False)
    t0 = time.perf_counter()
    fp, ch, dh, keys, todo, stored_any = campaign_state(jobs, store, config, retry_failed)
    n_dev = devices if devices else free_devices(config.rpc_tracker, config.rpc_key)
    if todo and n_dev < 1:
        raise FarmError(f"no free board under key {config.rpc_key!r} at {config.rpc_tracker}; "
                        "start servers with that --key (measure/FARM.md) or pass --devices")
    farm = _Farm(config, fp, n_dev, build_workers, wait_s, max_attempts, show_progress)
    stats = farm.run(todo, reference or (jobs[0] if jobs else None),
                     lambda job, res: store.put(job.net, config, ch, dh, res,
                                                replace_existing=job.net.key in stored_any
                                                or job.net.key in farm.written))
    records = tuple(store.records(ch, dh, keys=keys))
    refs = {b: s["reference_ms"] for b, s in stats.items() if s.get("reference_ms")}
    spread, outliers = _board_quality(refs, outlier_frac)
    return FarmSummary(total=len(keys), skipped=len(keys) - len(todo), measured=farm.measured,
                       failed=farm.failed, seconds=time.perf_counter() - t0, config_hash=ch,
                       device_hash=dh, records=records, devices=n_dev,
                       requeued=farm.requeued, boards=stats, board_spread=spread,
                       outliers=outliers)


def _board_quality(refs: dict[str, float], frac: float) -> tuple[float | None, tuple[str, ...]]:
    if not refs:
        return None, ()
    mid = statistics.median(refs.values())
    spread = (max(refs.values()) - min(refs.values())) / mid if len(refs) > 1 else 0.0
    return spread, tuple(sorted(b for b, v in refs.items() if abs(v - mid) > frac * mid))


class _Farm:
    """The moving parts of one farm run: build pool, board threads, the main loop."""

    def __init__(self, config: MeasureConfig, fp: dict[str, Any], devices: int,
                 build_workers: int, wait_s: float, max_attempts: int, show: bool) -> None:
        self.config, self.fp, self.devices = config, fp, devices
        self.build_workers, self.wait_s, self.max_attempts = build_workers, wait_s, max_attempts
        self.show = show
        self.ready: queue.Queue = queue.Queue()
        self.results: queue.Queue = queue.Queue()
        self.boards: dict[str, dict[str, Any]] = {}
        self.lock = threading.Lock()
        self.reference: _Item | None = None
        self.written: set[str] = set()
        self.measured = self.failed = self.requeued = 0

    # --------------------------------------------------------------- main thread
    def run(self, todo: list, reference_job, put) -> dict[str, dict[str, Any]]:
        if not todo:
            return {}
        import multiprocessing

        pool = ProcessPoolExecutor(max_workers=max(1, self.build_workers),
                                   mp_context=multiprocessing.get_context("spawn"))
        threads = [threading.Thread(target=self._board_loop, daemon=True, name=f"board-{i}")
                   for i in range(self.devices)]
        try:
            ref = self._item(reference_job)
            self.reference = self._built(pool.submit(*self._build_args(ref)), ref) \
                if ref.data else None
            waiting = list(todo)
            builds: dict[Future, _Item] = {}
            for t in threads:
                t.start()
            outstanding = len(todo)
            with _bar(self.show, f"farm ({self.devices} boards)", len(todo)) as step:
                while outstanding:
                    while waiting and len(builds) + self.ready.qsize() < self.devices + 1:
                        item = self._item(waiting.pop(0))
                        if item.data:
                            builds[pool.submit(*self._build_args(item))] = item
                        else:
                            outstanding -= self._finish(item, self._build_failure(item), put,
                                                        step)
                    for fut in [f for f in builds if f.done()]:
                        item = self._built(fut, builds.pop(fut))
                        if item.lib:
                            self.ready.put(item)
                        else:
                            outstanding -= self._finish(item, self._build_failure(item), put,
                                                        step)
                    outstanding -= self._drain(put, step)
                    if not any(t.is_alive() for t in threads):
                        outstanding -= self._no_board_left(waiting, builds, put, step)
        finally:
            for _ in threads:
                self.ready.put(None)
            for t in threads:
                if t.ident is not None:
                    t.join(timeout=self.config.timeout_s + self.wait_s)
            pool.shutdown(wait=True, cancel_futures=True)
            for item in [self.reference]:
                if item and item.lib:
                    shutil.rmtree(Path(item.lib).parent, ignore_errors=True)
        return self.boards

    def _item(self, job) -> _Item:
        """A job with its ONNX bytes (or the error that stopped making them)."""
        item = _Item(job)
        try:
            item.data = job.model_bytes()
        except Exception as exc:  # noqa: BLE001 - a model that cannot be made is data
            text = str(exc)
            item.meta["error"] = text if text.startswith("build failed") \
                else f"build failed: {error_text(exc)}"
        return item

    def _build_args(self, item: _Item) -> tuple:
        return _build_in_worker, item.data, self.config.to_dict()

    def _built(self, fut: Future, item: _Item) -> _Item:
        from measure.inputs import as_proto, index_bounds, input_specs, random_inputs

        try:
            item.lib, item.build_s, item.meta, err = fut.result()
        except Exception as exc:  # noqa: BLE001 - a crashed worker is a build error
            item.lib, err = "", f"build failed: worker crashed: {error_text(exc)}"
        if err:
            item.meta["error"] = err
            item.lib = ""
        if item.lib:
            try:
                proto = as_proto(item.data)
                item.inputs = list(random_inputs(input_specs(proto), self.config.seed,
                                                  index_bounds(proto)).values())
            except Exception as exc:  # noqa: BLE001
                item.meta["error"], item.lib = f"build failed: {error_text(exc)}", ""
        return item

    def _build_failure(self, item: _Item) -> MeasureResult:
        return MeasureResult.failure(item.meta.get("error", "build failed"), "tvm",
                                     fingerprint=self.fp, meta={"build_s": item.build_s})

    def _drain(self, put, step) -> int:
        """Store the results the boards sent; requeue networks whose board was lost."""
        done = 0
        try:
            item, res, lost = self.results.get(timeout=0.05)
        except queue.Empty:
            return 0
        if lost and item.attempts < self.max_attempts:
            put(item.job, res)                   # the error record names the lost board
            self.written.add(item.job.net.key)
            self.requeued += 1
            self.ready.put(item)
            return 0
        done += self._finish(item, res, put, step)
        return done

    def _finish(self, item: _Item, res: MeasureResult, put, step) -> int:
        put(item.job, res)
        self.written.add(item.job.net.key)
        self.measured += 1
        self.failed += not res.ok
        if item.lib:
            shutil.rmtree(Path(item.lib).parent, ignore_errors=True)
        item.data = b""
        step()
        return 1

    def _no_board_left(self, waiting: list, builds: dict, put, step) -> int:
        """Every board thread gave up: the rest are error records (rerun to resume)."""
        n = 0
        for fut, item in list(builds.items()):
            builds[fut] = self._built(fut, item)
            self.ready.put(builds.pop(fut))
        leftovers = [self._item(j) for j in waiting]
        waiting.clear()
        while True:
            try:
                item = self.ready.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                leftovers.append(item)
        while True:
            try:
                item, res, _ = self.results.get_nowait()
            except queue.Empty:
                break
            n += self._finish(item, res, put, step)
        why = (f"no board left: none free under key {self.config.rpc_key!r} at "
               f"{self.config.rpc_tracker} for {self.wait_s:g} s; rerun to resume")
        for item in leftovers:
            n += self._finish(item, MeasureResult.failure(why, "tvm", fingerprint=self.fp), put,
                              step)
        return n

    # --------------------------------------------------------------- board threads
    def _board_loop(self) -> None:
        """Take built networks, get a free board for each, time it there.

        Stops when told (None), when no board came within ``wait_s``, or after
        ``MAX_REQUEST_FAILURES`` failed requests in a row (a tracker that went away).
        """
        failures = 0
        while True:
            item = self.ready.get()
            if item is None:
                return
            try:
                sess, board = request_board(self.config.rpc_tracker, self.config.rpc_key,
                                            self.config.timeout_s, self.wait_s)
            except Exception as exc:  # noqa: BLE001 - e.g. the tracker handed out a dead board
                self.ready.put(item)
                self._note_error(exc)
                failures += 1
                if isinstance(exc, TimeoutError) or failures >= MAX_REQUEST_FAILURES:
                    return
                time.sleep(0.2 * failures)
                continue
            failures = 0
            item.attempts += 1
            self._reference_on(sess, board)
            res, lost = self._time_on(sess, board, item)
            del sess  # closes the session: the board is free for the next request
            self.results.put((item, res, lost))

    def _note_error(self, exc: BaseException) -> None:
        with self.lock:
            self.boards.setdefault("(tracker)", {})["last_error"] = error_text(exc)

    def _reference_on(self, sess, board: str) -> None:
        """Time the reference network the first time a board is seen."""
        with self.lock:
            if board in self.boards:
                return
            self.boards[board] = {"jobs": 0, "failed": 0, "lost": False, "reference_ms": None}
        ref = self.reference
        if ref is None or not ref.lib:
            return
        res, _ = self._time_on(sess, board, ref, count=False)
        with self.lock:
            self.boards[board]["reference_ms"] = res.median_ms if res.ok else None

    def _time_on(self, sess, board: str, item: _Item, count: bool = True
                 ) -> tuple[MeasureResult, bool]:
        """Time one built network on an open session; (result, board lost)."""
        from measure.config import BuildResult
        from measure.rpc import time_on_session
        from measure.tvm import tuning_flags

        fp = {**self.fp, "board": board,
              **tuning_flags(BuildResult(meta=item.meta))}
        meta = {"board": board, "build_s": item.build_s, "attempt": item.attempts,
                "boards_tried": [*item.boards, board], **item.meta}
        item.boards.append(board)
        lost = False
        try:
            res = time_on_session(sess, item.lib, item.inputs, self.config)
            res = replace(res, fingerprint=fp, meta={**res.meta, **meta})
        except Exception as exc:  # noqa: BLE001 - errors are data
            lost = any(w in str(exc) for w in _LOST) or not _alive(sess)
            why = "board lost" if lost else "run failed"
            res = MeasureResult.failure(f"{why} on {board}: {error_text(exc)}", "tvm",
                                        fingerprint=fp, meta=meta)
        if count:
            with self.lock:
                b = self.boards[board]
                b["jobs"] += 1
                b["failed"] += not res.ok
                b["lost"] = b["lost"] or lost
        return res, lost


# ---------------------------------------------------------------------------- progress
class _bar:  # noqa: N801 - used like a function
    """A progress bar over networks (costmodels.progress) or nothing; ``with`` gives step()."""

    def __init__(self, show: bool, label: str, total: int) -> None:
        self.show, self.label, self.total = show, label, total
        self.bar = None

    def __enter__(self):
        if not self.show:
            return lambda: None
        from costmodels.progress import progress

        self.bar = progress(self.label)
        self.bar.start()
        task = self.bar.add_task(self.label, total=self.total)
        return lambda: self.bar.update(task, advance=1)

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()


# ---------------------------------------------------------------------------- loopback farm
@dataclass
class LoopbackFarm:
    """A tracker and servers on 127.0.0.1 started by :func:`loopback` (for tests, benches,
    trying a farm out). ``servers``: board ``host:port`` -> its process."""

    tracker: str
    key: str
    tracker_proc: Any
    servers: dict[str, Any]

    def kill(self, board: str) -> None:
        """SIGKILL one server's process group (a board that disappears)."""
        _stop(self.servers[board])


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _start(args: list[str]):
    import subprocess
    import sys

    # Own process group: tracker and server fork workers that keep the ports.
    return subprocess.Popen([sys.executable, "-m", *args], start_new_session=True,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _stop(proc) -> None:
    import os
    import signal

    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    proc.wait(timeout=10)


def _wait_port(port: int, proc, timeout_s: float) -> None:
    import socket

    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise FarmError(f"the process for port {port} exited with {proc.returncode}")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.1)
    raise FarmError(f"nothing listens on 127.0.0.1:{port} after {timeout_s:g} s")


class loopback:  # noqa: N801 - a context manager used like a function
    """Start a TVM RPC tracker and ``servers`` servers on 127.0.0.1 (``with loopback(2) as f``).

    Each runs in its own process group and is killed (group and all) on exit.
    Waits until the tracker reports every server free under ``key``.
    """

    def __init__(self, servers: int = 2, key: str = "loopback", timeout_s: float = 60.0) -> None:
        self.n, self.key, self.timeout_s = servers, key, timeout_s
        self.procs: list[Any] = []

    def __enter__(self) -> LoopbackFarm:
        try:
            return self._start()
        except BaseException:
            self.__exit__()
            raise

    def _start(self) -> LoopbackFarm:
        tport = _free_port()
        tracker = _start(["tvm.exec.rpc_tracker", "--host", "127.0.0.1", "--port", str(tport),
                          "--port-end", str(tport + 1)])
        self.procs.append(tracker)
        _wait_port(tport, tracker, self.timeout_s)
        servers = {}
        for _ in range(self.n):
            sport = _free_port()
            proc = _start(["tvm.exec.rpc_server", "--tracker", f"127.0.0.1:{tport}",
                           "--key", self.key, "--host", "127.0.0.1", "--port", str(sport),
                           "--port-end", str(sport + 1)])
            self.procs.append(proc)
            servers[f"127.0.0.1:{sport}"] = proc
        address = f"127.0.0.1:{tport}"
        deadline = time.monotonic() + self.timeout_s
        while free_devices(address, self.key) < self.n:
            if time.monotonic() > deadline:
                raise FarmError(f"{self.n} RPC servers did not register with the tracker in "
                                f"{self.timeout_s:g} s")
            time.sleep(0.2)
        return LoopbackFarm(address, self.key, tracker, servers)

    def __exit__(self, *exc: object) -> None:
        for p in reversed(self.procs):
            _stop(p)
        self.procs.clear()
