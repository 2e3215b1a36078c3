"""Block-level LUT for FBNet: each unique block measured once as its own model, summed.

The method FBNet's own search used and HW-NAS-Bench repeated: a network's latency
is the sum of the latencies of its 22 blocks (each measured alone at its place's
input shape, output channels and stride) plus the stem, the 1x1 header and the
classifier. Blocks at different places with the same (input shape, C_out,
stride, block) are one entry, so a file holds about a hundred entries per dataset
(:func:`unique_parts`) and is built without enumerating the 9**22 networks.

Each measured model also pays the cost of one inference call. The empty run
(an ``Identity`` model at the part's output shape, ``null`` entries) is measured
too; a part's value is its median minus that, clipped at zero, and the network's
estimate adds one empty run at its output shape back. ``meta["raw_sum_ms"]`` is
the plain sum of medians (HW-NAS-Bench's way). The identity ``skip`` has no
operators: it is stored as a 0 ms entry with ``source = 'identity'``, not measured.

Blocks measured alone run with their weights and activations hot in cache; in a
network they do not, so the sum is low by a roughly constant factor. With
``calibrate=N`` a build also measures N random networks end to end and fits
``latency = scale * sum + intercept_ms`` (intercept >= 0, else scale only) per
dataset; estimates use it unless ``uncalibrated`` (``meta["sum_ms"]`` is the
bare sum either way).

File (SQLite, schema 2; the file layer is :mod:`measure.sqlite`, shared with the kernel
LUT and the measurement store: a file that is not a block LUT of a known schema is refused
with :class:`ModelFileError` and left byte-identical)::

    meta(key PRIMARY KEY, value)    schema='costmodels.blocklut', version, space='fbnet',
                                    runtime, fingerprint (JSON), device_hash, config (JSON),
                                    datasets (JSON list of "dataset@batch"), created_at,
                                    calibration (JSON: "dataset@batch" -> fit)
    entries(key PRIMARY KEY, part, block, in_shape, cout, stride, out_shape, ok,
            median_ms, p10_ms, p90_ms, cv, count, noisy, error, source, measured_at)
    calibration_points(name PRIMARY KEY, dataset, batch, arch_str, latency_ms, p10_ms,
                       p90_ms, cv, sum_ms, measured_at)

Schema 1 files (``meta(name, value)`` with ``format='costmodels-blocklut'``, local-offset
timestamps) are read as they are and migrated at their first write (common meta layout,
UTC timestamps); timestamps are UTC ISO 8601.

Keys: ``PART:BLOCK:NxCxHxW:cCOUT:sSTRIDE`` (``block:k3_e6:1x16x32x32:c24:s1``,
``stem:-:1x3x32x32:c16:s1``, ``null:-:1x24x32x32:c24:s1``). Times in milliseconds.

    >>> build_block_lut("fbnet-lut.sqlite", "cifar100")          # doctest: +SKIP
    >>> from_spec("fbnet-lut.sqlite").estimate(net).latency_ms    # doctest: +SKIP
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np

from costmodels.errors import CostModelError, MissingKernel, ModelFileError
from costmodels.interface import Estimate, LayerCost
from costmodels.network import Network, Shape
from costmodels.spaces import fbnet
from measure.config import MeasureConfig, MeasureResult
from measure.lut import table
from measure.lut.build import BuildCounts
from measure.lut.model import FileModel, spec_options
from measure.sqlite import (
    Database,
    Schema,
    SchemaFile,
    inspect,
    migrate_legacy_meta,
    real_or_null,
    utc_now,
)

SCHEMA_NAME = "costmodels.blocklut"
SCHEMA_VERSION = 2
FORMAT = "costmodels-blocklut"  # schema 1's meta 'format' value
Progress = Callable[[str, int, int], None]  # (stage, done, total)
FALLBACK_ROUNDS = 3  # round-robin passes when measure.rounds (interleaved rounds) is absent

_DDL = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS entries (
    key TEXT PRIMARY KEY, part TEXT NOT NULL, block TEXT NOT NULL, in_shape TEXT NOT NULL,
    cout INTEGER NOT NULL, stride INTEGER NOT NULL, out_shape TEXT NOT NULL, ok INTEGER NOT NULL,
    median_ms REAL, p10_ms REAL, p90_ms REAL, cv REAL, count INTEGER NOT NULL DEFAULT 0,
    noisy INTEGER NOT NULL DEFAULT 0, error TEXT NOT NULL DEFAULT '',
    source TEXT NOT NULL DEFAULT '', measured_at TEXT NOT NULL DEFAULT '');
CREATE TABLE IF NOT EXISTS calibration_points (
    name TEXT PRIMARY KEY, dataset TEXT NOT NULL, batch INTEGER NOT NULL, arch_str TEXT NOT NULL,
    latency_ms REAL NOT NULL, p10_ms REAL, p90_ms REAL, cv REAL, sum_ms REAL NOT NULL,
    measured_at TEXT NOT NULL DEFAULT '');
"""
_COLUMNS = ("key", "part", "block", "in_shape", "cout", "stride", "out_shape", "ok", "median_ms",
            "p10_ms", "p90_ms", "cv", "count", "noisy", "error", "source", "measured_at")


def _legacy(tables: set[str], raw: dict[str, str]) -> tuple[str, int] | None:
    """Schema 1: meta(name, value) with format='costmodels-blocklut' and schema_version; a
    kernel LUT of schema 1 is named as such (refused as a costmodels file of another kind)."""
    if raw.get("format") == FORMAT:
        try:
            return SCHEMA_NAME, int(raw.get("schema_version", "0"))
        except ValueError:
            return SCHEMA_NAME, 0
    if raw.get("format") == table.FORMAT:
        return table.SCHEMA_NAME, 1
    return None


def _migrate_1(con: sqlite3.Connection) -> None:
    """Schema 1 -> 2: the common meta layout and UTC timestamps."""
    migrate_legacy_meta(con, SCHEMA_NAME, (("entries", "measured_at", "key"),
                                           ("calibration_points", "measured_at", "name")))


SCHEMA = Schema(SCHEMA_NAME, SCHEMA_VERSION, _DDL, what="block LUT",
                hint="build an FBNet block LUT with measure.lut.blocks.build_block_lut (a "
                     "kernel LUT is read with lut:PATH), or pass another path",
                migrations={1: _migrate_1}, legacy=_legacy, readable=frozenset({1}))


class BlockLutError(CostModelError, ValueError):
    """A network or request the block LUT cannot serve (not FBNet, other dataset...)."""


# --------------------------------------------------------------------- parts and keys
@dataclass(frozen=True)
class Part:
    """One measurable piece of an FBNet network: a block at a place, or stem/header/classifier.

    ``part`` is ``block``, ``stem``, ``header``, ``classifier`` or ``null`` (the empty run).
    The key leaves ``dataset`` out: shapes and channels already tell the datasets apart.
    """

    part: str
    block: str
    in_shape: Shape
    cout: int
    stride: int
    out_shape: Shape
    dataset: str = ""   # stem/header/classifier: the dataset whose skeleton builds them

    @property
    def key(self) -> str:
        return (f"{self.part}:{self.block}:{'x'.join(map(str, self.in_shape))}:c{self.cout}"
                f":s{self.stride}")

    @property
    def is_identity(self) -> bool:
        return self.part == "block" and not self.nodes()

    def nodes(self) -> tuple:
        """The part's operators as :class:`~costmodels.spaces.nb201.NodeSpec` reading ``input``."""
        if self.part == "block":
            return fbnet.block_nodes("out", "input", self.in_shape, self.cout, self.stride,
                                     self.block)
        if self.part == "null":
            return ()
        return _aux_nodes(self.part, self.dataset, self.in_shape[0])


def _aux_nodes(part: str, dataset: str, batch: int) -> tuple:
    if part == "stem":
        return fbnet.stem_nodes(dataset, batch)
    if part == "header":
        return fbnet.header_nodes("input", dataset, batch)
    return fbnet.classifier_nodes("input", dataset, batch)


def _block_part(pos: fbnet.Position, block: str) -> Part:
    frag = fbnet.block_nodes("out", "input", pos.in_shape, pos.cout, pos.stride, block)
    out = frag[-1].out_shape if frag else pos.in_shape
    return Part("block", block, pos.in_shape, pos.cout, pos.stride, out)


@cache
def network_parts(dataset: str, batch: int = 1) -> tuple[Part, tuple[tuple[Part, ...], ...],
                                                         Part, Part, Part]:
    """(stem, parts[position][block index], header, classifier, null at the output)."""
    ds = fbnet.dataset_spec(dataset)
    stem = fbnet.stem_nodes(dataset, batch)
    header = fbnet.header_nodes("input", dataset, batch)
    cls = fbnet.classifier_nodes("input", dataset, batch)
    blocks = tuple(tuple(_block_part(pos, b) for b in fbnet.BLOCKS)
                   for pos in fbnet.positions(dataset, batch))
    return (Part("stem", "-", stem[0].in_shapes[0], fbnet.STEM_CHANNELS, ds.stem_stride,
                 stem[-1].out_shape, dataset),
            blocks,
            Part("header", "-", header[0].in_shapes[0], ds.header_channels, 1,
                 header[-1].out_shape, dataset),
            Part("classifier", "-", cls[0].in_shapes[0], ds.num_classes, 1, cls[-1].out_shape,
                 dataset),
            null_part(cls[-1].out_shape))


def null_part(shape: Shape) -> Part:
    """The empty run (one Identity) at output ``shape``: what any one inference call costs."""
    return Part("null", "-", tuple(shape), shape[1] if len(shape) > 1 else 1, 1, tuple(shape))


def unique_parts(dataset: str, batch: int = 1,
                 blocks: Sequence[str] = fbnet.BLOCKS) -> dict[str, Part]:
    """Every distinct part of the space on ``dataset`` (only ``blocks``), plus the empty
    runs their values are taken net of: key -> Part, in build order."""
    for b in blocks:
        if b not in fbnet.BLOCK_INDEX:
            raise BlockLutError(f"unknown FBNet block {b!r}; expected some of "
                                f"{', '.join(fbnet.BLOCKS)}")
    stem, grid, header, cls, out_null = network_parts(dataset, batch)
    parts: dict[str, Part] = {}
    for p in (stem, *(row[fbnet.BLOCK_INDEX[b]] for row in grid for b in blocks), header, cls):
        parts.setdefault(p.key, p)
    nulls = {null_part(p.out_shape) for p in parts.values() if not p.is_identity}
    for p in sorted(nulls | {out_null}, key=lambda n: n.key):
        parts.setdefault(p.key, p)
    return parts


def part_model(part: Part, seed: int = 0):
    """An ONNX model that runs just ``part`` (its input random at measurement time)."""
    from onnx import TensorProto, helper

    if part.part == "null":
        graph = helper.make_graph(
            [helper.make_node("Identity", ["input"], ["out"], name="null")], "null",
            [helper.make_tensor_value_info("input", TensorProto.FLOAT, list(part.in_shape))],
            [helper.make_tensor_value_info("out", TensorProto.FLOAT, list(part.out_shape))])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)])
        model.ir_version = min(model.ir_version, 8)
        return model
    nodes = part.nodes()
    return fbnet.onnx_graph_model(nodes, [("input", part.in_shape)],
                                  [(nodes[-1].name, part.out_shape)],
                                  part.key.replace(":", "_"), seed=seed, doc=part.key)


# --------------------------------------------------------------------- the file
def check_file(path: Path) -> None:
    """Refuse (``ModelFileError``) what is not a block LUT of a known schema; never writes."""
    if not Path(path).exists():
        raise ModelFileError(f"{path}: no such block LUT; {SCHEMA.hint}")
    inspect(path, SCHEMA)


class BlockLutFile(SchemaFile):
    """An open block LUT: ``BlockLutFile.create(...)`` or ``BlockLutFile(path)``.

    Writes commit at once (one transaction each, WAL journal while open); opening for
    writing changes nothing until the first write, and the last writer to close leaves
    the file self-contained (no ``-wal``/``-shm``). The meta is read at open.
    """

    schema = SCHEMA
    _check = staticmethod(check_file)

    @classmethod
    def create(cls, path: str | Path, config: MeasureConfig) -> BlockLutFile:
        from measure.fingerprint import device_hash, fingerprint

        path = Path(path)
        if path.exists():
            raise ModelFileError(f"{path}: already exists; open it to resume")
        fp = fingerprint(config)
        meta = {"space": "fbnet", "runtime": config.runtime,
                "fingerprint": json.dumps(fp, sort_keys=True), "device_hash": device_hash(fp),
                "config": json.dumps(config.to_dict(), sort_keys=True), "datasets": "[]",
                "calibration": "{}"}
        Database(path, SCHEMA, create_meta=meta).close()
        return cls(path)

    def put(self, part: Part, res: MeasureResult | None, source: str = "measured") -> None:
        """Store one part's measurement (``res=None``: the 0 ms identity block)."""
        if res is None:
            res = MeasureResult(ok=True, median_ms=0.0, p10_ms=0.0, p90_ms=0.0, cv=0.0)
        row = (part.key, part.part, part.block, json.dumps(part.in_shape), part.cout,
               part.stride, json.dumps(part.out_shape), int(res.ok), real_or_null(res.median_ms),
               real_or_null(res.p10_ms), real_or_null(res.p90_ms), real_or_null(res.cv),
               int(res.repeat), int(res.noisy), res.error, source, utc_now())
        with self._db.transaction() as con:
            con.execute(f"INSERT OR REPLACE INTO entries VALUES ({','.join('?' * 17)})", row)

    def rows(self) -> dict[str, dict[str, Any]]:
        """key -> the stored row (column -> value)."""
        cur = self._con.execute(f"SELECT {', '.join(_COLUMNS)} FROM entries")
        return {r[0]: dict(zip(_COLUMNS, r, strict=True)) for r in cur}

    def medians(self) -> dict[str, float]:
        """key -> median_ms of the usable (ok) entries."""
        return {k: float(v) for k, v in self._con.execute(
            "SELECT key, median_ms FROM entries WHERE ok = 1 AND median_ms IS NOT NULL")}

    def put_point(self, dataset: str, batch: int, arch: str, res: MeasureResult,
                  sum_ms: float) -> None:
        """Store one network measured end to end (``sum_ms``: its uncalibrated sum)."""
        with self._db.transaction() as con:
            con.execute("INSERT OR REPLACE INTO calibration_points VALUES (?,?,?,?,?,?,?,?,?,?)",
                        (f"{dataset}@{batch}:{arch}", dataset, batch, arch, res.median_ms,
                         real_or_null(res.p10_ms), real_or_null(res.p90_ms),
                         real_or_null(res.cv), sum_ms, utc_now()))

    def points(self, dataset: str, batch: int) -> list[tuple[str, float, float]]:
        """(arch_str, latency_ms, sum_ms) of the networks measured on ``dataset`` at ``batch``."""
        return [tuple(r) for r in self._con.execute(
            "SELECT arch_str, latency_ms, sum_ms FROM calibration_points WHERE dataset = ? AND "
            "batch = ? ORDER BY name", (dataset, batch))]

    def calibration(self) -> dict[str, dict[str, float]]:
        return json.loads(self.meta().get("calibration") or "{}")



# --------------------------------------------------------------------- build
@dataclass
class BlockBuildReport(BuildCounts):
    """What a block-LUT build did (:class:`~measure.lut.build.BuildCounts`), plus the
    parts in the set, the identity blocks stored as 0 ms and the seconds it took."""

    parts: int = 0
    identity: int = 0
    seconds: float = 0.0


def _open_or_create(path: str | Path, config: MeasureConfig) -> BlockLutFile:
    from measure.fingerprint import device_hash, fingerprint

    if not Path(path).exists():
        return BlockLutFile.create(path, config)
    lut = BlockLutFile(path)
    meta = lut.meta()
    stored = json.loads(meta.get("config") or "{}")
    mine = config.to_dict()
    diff = sorted(k for k in mine if k not in ("isolate", "timeout_s") and stored.get(k) != mine[k])
    here = device_hash(fingerprint(config))
    if diff or meta.get("device_hash") != here:
        lut.close()
        why = (f"other settings ({', '.join(diff)})" if diff
               else f"another device ({meta.get('device_hash')}, this one is {here})")
        raise ModelFileError(f"{path}: measured with {why}; resume with the same MeasureConfig "
                             "on the same device, or use another file")
    return lut


def measure_models(models: Sequence[Any], names: Sequence[str], config: MeasureConfig,
                   progress: Progress | None = None) -> list[MeasureResult]:
    """Time ONNX models in interleaved rounds: :func:`measure.rounds.measure_many` where the
    measurement layer has it; otherwise :data:`FALLBACK_ROUNDS` round-robin passes of
    :func:`measure.measure`, keeping each model's round with the lowest median (load from
    other processes only ever adds time)."""
    try:
        from measure.rounds import measure_many
    except ImportError:
        measure_many = None
    if measure_many is not None:
        done: list[int] = [0]

        def on_window(results: list, _report: Any) -> None:
            done[0] += len(results)
            if progress:
                progress("measure", done[0], len(models))

        return measure_many(list(models), config, names=list(names), on_window=on_window)
    from measure import measure

    rounds: list[list[MeasureResult]] = [[] for _ in models]
    for r in range(FALLBACK_ROUNDS):
        for i, model in enumerate(models):
            rounds[i].append(measure(model, config))
            if progress:
                progress("measure", r * len(models) + i + 1, FALLBACK_ROUNDS * len(models))
    out = []
    for results in rounds:
        ok = [r for r in results if r.ok]
        best = min(ok, key=lambda r: r.median_ms) if ok else results[-1]
        out.append(replace(best, repeat=sum(r.repeat for r in ok) if ok else 0,
                           noisy=best.ok and best.cv > config.max_cv, times_ms=(),
                           meta={**best.meta, "rounds": len(ok)}))
    return out


def build_block_lut(path: str | Path, dataset: str = "cifar100",
                    config: MeasureConfig | None = None, *, batch: int = 1,
                    blocks: Sequence[str] = fbnet.BLOCKS, seed: int = 0, calibrate: int = 0, progress: Progress | None = None) -> BlockBuildReport:
    """Measure every unique part of FBNet on ``dataset`` into the block LUT at ``path``.

    Resumable: parts already stored (ok) are not measured again; a file measured
    with another config or on another device is refused. ``blocks`` limits the
    set (short builds, tests). Parts are timed together in interleaved rounds
    (:func:`measure_models`). ``progress(stage, done, total)`` reports the work done. ``calibrate``: measure that many
    random networks (built from ``blocks`` only, drawn with ``seed``) end to end and
    fit the dataset's calibration on all its stored points.
    """
    config = config or MeasureConfig()
    fbnet.dataset_spec(dataset)
    t0 = time.perf_counter()
    report = BlockBuildReport(str(path))
    parts = unique_parts(dataset, batch, blocks)
    report.parts = len(parts)
    lut = _open_or_create(path, config)
    try:
        have = lut.medians()
        todo = []
        for key, part in parts.items():
            if key in have:
                report.reused += 1
            elif part.is_identity:
                lut.put(part, None, source="identity")
                report.identity += 1
            else:
                todo.append(part)
        measured = measure_models([part_model(p, seed) for p in todo], [p.key for p in todo],
                                  config, progress)
        for p, res in zip(todo, measured, strict=True):
            lut.put(p, res)
            report.measured += 1
            if not res.ok:
                report.failed.append(f"{p.key}: {res.error}")
            elif res.noisy:
                report.noisy.append(p.key)
        sets = set(json.loads(lut.meta().get("datasets") or "[]")) | {f"{dataset}@{batch}"}
        lut.set_meta("datasets", json.dumps(sorted(sets)))
        if calibrate:
            report.calibration = _calibrate(lut, dataset, batch, config, blocks, calibrate, seed,
                                            progress)
    finally:
        lut.close()
    report.seconds = time.perf_counter() - t0
    return report


def calibration_archs(n: int, seed: int, blocks: Sequence[str] = fbnet.BLOCKS) -> list[str]:
    """``n`` distinct architectures drawn with ``seed`` from ``blocks`` only."""
    rng = np.random.default_rng(seed)
    allowed = np.array([fbnet.BLOCK_INDEX[b] for b in blocks])
    seen: dict[str, None] = {}
    limit = len(allowed) ** fbnet.NUM_LAYERS
    while len(seen) < min(n, limit):
        seen.setdefault(fbnet.arch_str(rng.choice(allowed, fbnet.NUM_LAYERS).tolist()), None)
    return list(seen)


def fit_calibration(sums_ms: Sequence[float], latency_ms: Sequence[float]) -> dict[str, float]:
    """Least squares ``latency = scale * sum + intercept_ms``; the intercept is dropped
    (scale only) when it comes out negative or with fewer than 3 points."""
    x, y = np.asarray(sums_ms, dtype=float), np.asarray(latency_ms, dtype=float)
    scale, intercept = float(x @ y / (x @ x)), 0.0
    if len(x) >= 3:
        (a, b), *_ = np.linalg.lstsq(np.column_stack([x, np.ones_like(x)]), y, rcond=None)
        if b >= 0 and a > 0:
            scale, intercept = float(a), float(b)
    pred = scale * x + intercept
    return {"scale": scale, "intercept_ms": intercept, "n_points": int(len(x)),
            "mape_fit": float(np.mean(np.abs(pred - y) / y))}


def _calibrate(lut: BlockLutFile, dataset: str, batch: int, config: MeasureConfig,
               blocks: Sequence[str], n: int, seed: int,
               progress: Progress | None) -> dict[str, float]:
    model = BlockLookupTable.from_file(lut, calibrated=False)
    have = {p[0] for p in lut.points(dataset, batch)}
    archs = [a for a in calibration_archs(n, seed, blocks) if a not in have]
    results = measure_models([fbnet.build_onnx(a, dataset, batch, seed=seed) for a in archs],
                             archs, config,
                             lambda _, done, total: progress and progress("calibrate", done, total))
    for arch, res in zip(archs, results, strict=True):
        if res.ok:
            net = fbnet.build_network(arch, dataset, batch)
            lut.put_point(dataset, batch, arch, res, model.estimate(net).latency_ms)
    points = lut.points(dataset, batch)
    if not points:
        return {}
    fit = fit_calibration([p[2] for p in points], [p[1] for p in points])
    cal = lut.calibration() | {f"{dataset}@{batch}": fit}
    lut.set_meta("calibration", json.dumps(cal, sort_keys=True))
    return fit


# --------------------------------------------------------------------- the cost model
class BlockLookupTable(FileModel):
    """Sum of per-block latencies of an FBNet network (``blocklut:PATH``).

    ``best_effort``: count missing parts in ``meta["missing"]`` instead of raising
    :class:`MissingKernel`. ``calibrated``: apply the dataset's stored calibration
    (when the file has one; ``meta["calibrated"]`` says whether it did).
    """

    file_class = BlockLutFile

    def _load(self, lut: BlockLutFile) -> None:
        meta = lut.meta()
        self.medians_ = lut.medians()
        self.calibration_ = json.loads(meta.get("calibration") or "{}") if self.calibrated else {}
        self.fingerprint_ = json.loads(meta.get("fingerprint") or "{}")
        self.runtime_ = meta.get("runtime", "")
        self.datasets_ = tuple(json.loads(meta.get("datasets") or "[]"))
        self.n_measurements_ = len(self.medians_) + sum(
            int(c.get("n_points", 0)) for c in self.calibration_.values())
        self.name = f"blocklut:{Path(self.path).stem}"

    def _net_ms(self, part: Part) -> float | None:
        """The part's median less the empty run at its output shape (>= 0), or None."""
        raw = self.medians_.get(part.key)
        if raw is None:
            return None
        if part.part == "null" or part.is_identity:
            return raw
        null = self.medians_.get(null_part(part.out_shape).key)
        return None if null is None else max(raw - null, 0.0)

    def estimate(self, net: Network) -> Estimate:
        ops = _fbnet_ops(net)
        dataset, batch = net.meta["dataset"], int(net.meta.get("batch", 1))
        stem, grid, header, cls, out_null = network_parts(dataset, batch)
        named = [("stem", stem), *((f"l{i}", grid[i][o]) for i, o in enumerate(ops)),
                 ("header", header), ("classifier", cls), ("call", out_null)]
        per_layer, missing, raw_sum = [], [], 0.0
        for name, part in named:
            ms = self._net_ms(part)
            if ms is None:
                missing.append(part.key)
                continue
            if part.part != "null":
                raw_sum += self.medians_[part.key]
            per_layer.append(LayerCost(name, part.block if part.part == "block" else part.part,
                                       ms, meta={"key": part.key}))
        if missing and not self.best_effort:
            raise MissingKernel(sorted(set(missing)), net.name)
        sum_ms = sum(c.latency_ms for c in per_layer)
        cal = self.calibration_.get(f"{dataset}@{batch}")
        latency = cal["scale"] * sum_ms + cal["intercept_ms"] if cal else sum_ms
        flags = {"lower_bound": True} if missing else {}  # each missing part at 0
        return Estimate(latency_ms=max(latency, 0.0), per_layer=tuple(per_layer),
                        meta={"backend": "blocklut", "path": self.path, "sum_ms": sum_ms,
                              "calibrated": bool(cal), **flags,
                              "runtime": self.runtime_, "raw_sum_ms": raw_sum,
                              "missing": len(missing), "missing_keys": tuple(sorted(missing)),
                              "device": self.fingerprint_.get("cpu_model", "")})


def _fbnet_ops(net: Network) -> tuple[int, ...]:
    meta = net.meta
    if meta.get("space") != "fbnet":
        raise BlockLutError(f"network {net.name!r} is not an FBNet network (space "
                            f"{meta.get('space')!r}); the block LUT only sums FBNet blocks: use "
                            "lut:PATH for other networks")
    if meta.get("dataset") not in fbnet.DATASETS:
        raise BlockLutError(f"network {net.name!r} has dataset {meta.get('dataset')!r}; expected "
                            f"one of {', '.join(fbnet.DATASETS)}")
    return fbnet.parse_arch(list(meta["ops"]) if "ops" in meta else meta.get("arch_str", ""))


def from_spec(arg: str | None) -> BlockLookupTable:
    """Registry factory: ``blocklut:PATH[?best-effort][&uncalibrated]``."""
    if not arg:
        raise BlockLutError("the blocklut backend needs a block LUT file: blocklut:PATH.sqlite "
                            "(build one with measure.lut.blocks.build_block_lut)")
    path, best_effort, calibrated = spec_options(arg, "blocklut", BlockLutError)
    return BlockLookupTable(path, best_effort=best_effort, calibrated=calibrated)
