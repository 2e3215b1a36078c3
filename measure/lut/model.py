"""``LookupTable``: a CostModel that sums measured kernels, fusion-aware, plus overhead terms.

    latency_ms = intercept_ms + scale * sum(entry of each kernel) + per_kernel_ms * n_kernels

Kernels come from the runtime's fusion rules stored in the LUT itself (so a LUT
keeps estimating as it was built even if the shipped rules change). A kernel
without an entry raises :class:`MissingKernel` listing the keys; with
``best_effort=True`` the estimate leaves them out and lists them in
``Estimate.meta['missing_kernels']`` (never a silent zero).

Never negative; with kernels missing, the figure is the calibration applied to the
known sum with every missing kernel at 0 and negative terms left out (``scale * sum +
max(intercept, 0) + max(per_kernel, 0) * n``: a fitted negative intercept is not taken
off a partial sum, and a scale below 1 is not left off it, which made a partial sum
exceed the complete estimate), so it is a lower bound of the complete figure wherever
the terms are non-negative, as in every LUT calibrated now (``meta['lower_bound']``
says so); a complete network whose calibrated figure would fall below
``MIN_KERNEL_MS`` per kernel is clamped there (``meta['clamped']``). Overhead fits made now never have negative terms
(:func:`measure.lut.calibrate.fit`); LUTs calibrated before may.

NAS-Bench-201 cells are estimated from the LUT's space index (per-cell kernel
counts) when it has one for the cell's dataset and batch: all 15,625 cells in
one matrix product. Other networks go through the rules, cached by the
network's content (equal content, one planning).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any, Self

import numpy as np

from costmodels.errors import InputError, MissingKernel
from costmodels.fusion import FusionRules, Kernel, kernels, parse_key, rules_from_json
from costmodels.interface import BaseCostModel, Estimate, LayerCost
from costmodels.network import Network
from measure.lut.keys import NULL_KEY, null_key, outputs_bound
from measure.lut.table import LutFile

MIN_KERNEL_MS = 1e-4  # 0.1 us: the floor of a kernel's time once the overheads are taken off
INDEX_DATASETS = ("cifar10", "cifar100", "ImageNet16-120")  # NB201 space indexes looked up


def kernel_values(raw: dict[str, float], rules: FusionRules,
                  bound: bool = False) -> dict[str, float]:
    """Per-kernel times (ms) from one-kernel measurements (ms).

    Each measurement carried one empty run and its wrappers
    (:func:`measure.lut.kernel_onnx.wrappers`), so ``value(k) = raw(k) - null -
    sum(value(w) for w in wrappers(k))`` (wrappers resolved the same way), floored at
    ``MIN_KERNEL_MS``. The empty run is ``NULL_KEY`` (the call alone) when the outputs
    were ``bound`` (:data:`measure.lut.keys.OUTPUTS_META`), else the one at the kernel's
    output shape (``null_key``, else ``NULL_KEY``). Without a null entry (an imported
    table of kernel times) the values are used as they are; a key no one-kernel model
    can be built for (imported from elsewhere) has no wrappers to take off.
    """
    from measure.lut.kernel_onnx import KernelBuildError, wrappers

    if NULL_KEY not in raw:
        return dict(raw)
    out: dict[str, float] = {}

    def value(text: str, depth: int = 0) -> float:
        if text not in out:
            key = parse_key(text)
            extra = 0.0
            if depth < 4:
                try:
                    extra = sum(value(w, depth + 1) for w in wrappers(key, rules) if w in raw)
                except KernelBuildError:
                    extra = 0.0
            null = raw[NULL_KEY] if bound else raw.get(null_key(key.output_shape, key.dtype),
                                                        raw[NULL_KEY])
            out[text] = max(raw[text] - null - extra, MIN_KERNEL_MS)
        return out[text]

    for text in raw:
        if not text.startswith("Null|"):
            value(text)
    return out


def _content_key(net: Network) -> tuple:
    """A cache key made of the network's content (hashing it is cheaper than the SHA-256
    fingerprint; names included, so it only ever under-shares)."""
    return (net.inputs, net.layers, net.outputs)


class FileModel(BaseCostModel):
    """A cost model read from one LUT file (kernel or FBNet block LUT).

    ``file_class`` opens the file (``file_class(path, readonly=True)``, a context
    manager); subclasses read it in ``_load(lut)``. ``best_effort``: report what is
    missing instead of raising; ``calibrated``: apply the stored calibration.
    """

    file_class: type = LutFile

    def __init__(self, path: str | Path, best_effort: bool = False,
                 calibrated: bool = True) -> None:
        self.path = str(path)
        self.best_effort = best_effort
        self.calibrated = calibrated
        with self.file_class(self.path, readonly=True) as lut:
            self._load(lut)

    @classmethod
    def from_file(cls, lut: Any, best_effort: bool = False, calibrated: bool = True) -> Self:
        """A model over an already open file (used while building)."""
        self = cls.__new__(cls)
        self.path, self.best_effort, self.calibrated = str(lut.path), best_effort, calibrated
        self._load(lut)
        return self

    def _load(self, lut: Any) -> None:
        raise NotImplementedError


class LookupTable(FileModel):
    """Sum of per-kernel latencies from a LUT file (``lut:PATH``).

    ``best_effort``: report missing kernels in ``meta`` instead of raising.
    ``calibrated``: add the fitted overhead terms (False: the bare sum). The
    naive baseline (one kernel per IR layer, nothing fused or removed, no
    overhead) is a LUT built with the ``naive`` rules, used uncalibrated.
    """

    file_class = LutFile

    def _load(self, lut: LutFile) -> None:
        meta = lut.meta()
        self.runtime_ = meta.get("runtime", "")
        self.rules_ = rules_from_json(meta.get("rules", ""), f"{self.path} (stored rules)")
        self.raw_values_ = lut.values()
        self.outputs_bound_ = outputs_bound(meta)
        self.values_ = kernel_values(self.raw_values_, self.rules_, self.outputs_bound_)
        cal = lut.calibration if self.calibrated else {}
        if self.calibrated and not cal and self.rules_.name != "naive" \
                and str(self.path) not in _WARNED_UNCALIBRATED:
            import sys

            _WARNED_UNCALIBRATED.add(str(self.path))
            print(f"warning: {self.path}: this LUT holds no calibration (no end-to-end "
                  "networks were measured for it, or it came from `lut import`, which carries "
                  "kernels only): its estimates are bare kernel sums, without the per-kernel "
                  "overhead, and can be several times low for small networks. Build it with "
                  f"`costmodels lut build` to calibrate, or say so with {self.path}?uncalibrated",
                  file=sys.stderr)
        self.intercept_ms_ = float(cal.get("intercept_ms", 0.0))
        self.per_kernel_ms_ = float(cal.get("per_kernel_ms", 0.0))
        self.scale_ = float(cal.get("scale", 1.0))
        self.calibration_ = cal
        # what it cost to build: one measurement per stored kernel entry, plus the
        # end-to-end networks its overhead terms were fitted on (read by the harness)
        points = lut.points() if cal else []
        self.n_measurements_ = len(self.raw_values_) + len(points)
        # the networks the overhead terms were fitted on (compare notes scored ones)
        self.calibrated_on_ = frozenset((p.arch_str, p.dataset) for p in points)
        self.fingerprint_ = lut.fingerprint
        self._index: dict[tuple[str, int], tuple[np.ndarray, np.ndarray, list[list[str]]]] = {}
        self._raw_index: dict[tuple[str, int], tuple[list[str], np.ndarray] | None] = {}
        for ds in INDEX_DATASETS:
            self._raw_index[(ds, 1)] = lut.get_index("nb201", ds, 1, self.rules_.hash)
        self._cache: dict[tuple, tuple[float, int, tuple[str, ...]]] = {}
        self._kernels: dict[tuple, list[Kernel]] = {}
        self.name = f"lut:{Path(self.path).stem}"

    # ------------------------------------------------------------------ kernels
    def kernels(self, net: Network) -> list[Kernel]:
        """The kernels this LUT sums for ``net`` (after the stored fusion rules), cached by
        the network's content (its inputs, layers and outputs: equal content, one planning)."""
        ck = _content_key(net)
        ks = self._kernels.get(ck)
        if ks is None:
            ks = self._kernels[ck] = kernels(net, self.rules_)
        return ks

    def _sum(self, net: Network) -> tuple[float, int, tuple[str, ...]]:
        """(sum of entries in ms, number of kernels, missing keys), cached by structure."""
        ck = _content_key(net)
        hit = self._cache.get(ck)
        if hit is None:
            total, missing = 0.0, []
            ks = self.kernels(net)
            for k in ks:
                v = self.values_.get(k.text)
                if v is None:
                    missing.append(k.text)
                else:
                    total += v
            hit = (total, len(ks), tuple(dict.fromkeys(missing)))
            self._cache[ck] = hit
        return hit

    def _space_index(self, dataset: str, batch: int):
        """(per-cell sums, per-cell kernel counts, per-cell missing) from the stored index."""
        key = (dataset, batch)
        if key in self._index:
            return self._index[key]
        raw = self._raw_index.get(key)
        if raw is None:
            return None
        keys, counts = raw
        vec = np.array([self.values_.get(k, np.nan) for k in keys])
        miss_cols = np.flatnonzero(np.isnan(vec))
        sums = counts @ np.nan_to_num(vec)
        nk = counts.sum(axis=1).astype(np.int64)
        missing: list[list[str]] = [[] for _ in range(len(counts))]
        if len(miss_cols):
            for r, c in zip(*np.nonzero(counts[:, miss_cols]), strict=True):
                missing[r].append(keys[miss_cols[c]])
        self._index[key] = (sums, nk, missing)
        return self._index[key]

    def raw_sums(self, nets: Sequence[Network]) -> tuple[list[float], list[int], list[tuple]]:
        """Bare sums (ms), kernel counts and missing keys of each network, vectorised for NB201."""
        from costmodels.spaces import nb201

        sums, counts, missing = [], [], []
        for net in nets:
            m = net.meta
            idx = (self._space_index(m.get("dataset", ""), int(m.get("batch", 1)))
                   if m.get("space") == "nb201" and m.get("arch_index") is not None else None)
            if idx is not None and 0 <= int(m["arch_index"]) < nb201.NUM_ARCHS:
                r = int(m["arch_index"])
                sums.append(float(idx[0][r]))
                counts.append(int(idx[1][r]))
                missing.append(tuple(idx[2][r]))
            else:
                s, n, miss = self._sum(net)
                sums.append(s)
                counts.append(n)
                missing.append(miss)
        return sums, counts, missing

    # ------------------------------------------------------------------ CostModel
    def _latency(self, s: float, n: int, missing: bool) -> tuple[float, dict]:
        """(latency in ms, flags) of a network with kernel sum ``s`` over ``n`` kernels.

        Complete: the calibrated figure, clamped at ``MIN_KERNEL_MS * n``. With
        kernels missing: the calibrated figure with each missing kernel at 0 and no
        negative term, a lower bound of the complete one.
        """
        if missing:
            return (max(self.scale_, 0.0) * s + max(self.intercept_ms_, 0.0)
                    + max(self.per_kernel_ms_, 0.0) * n), {"lower_bound": True}
        lat = self.intercept_ms_ + self.scale_ * s + self.per_kernel_ms_ * n
        floor = MIN_KERNEL_MS * max(n, 1)
        if lat < floor:
            return floor, {"clamped": True}
        return lat, {}

    def _finish(self, net: Network, s: float, n: int, missing: tuple[str, ...],
                per_layer: tuple[LayerCost, ...] = ()) -> Estimate:
        if missing and not self.best_effort:
            raise MissingKernel(list(missing), net.name)
        lat, flags = self._latency(s, n, bool(missing))
        meta = {"backend": self.name, "runtime": self.runtime_, "rules": self.rules_.name,
                "kernels": n, "kernel_sum_ms": s, "overhead_ms": lat - s,
                "missing_kernels": tuple(missing), **flags}
        return Estimate(lat, per_layer=per_layer, meta=meta)

    def estimate(self, net: Network) -> Estimate:
        """Estimate with a per-kernel breakdown (``per_layer``: one LayerCost per kernel)."""
        ks = self.kernels(net)
        per, s, missing = [], 0.0, []
        for k in ks:
            v = self.values_.get(k.text)
            if v is None:
                missing.append(k.text)
                continue
            per.append(LayerCost("+".join(k.names) or k.ops[0], "+".join(k.ops),
                                 self.scale_ * v + self.per_kernel_ms_,
                                 meta={"key": k.text, "layout": k.layout}))
            s += v
        return self._finish(net, s, len(ks), tuple(dict.fromkeys(missing)), tuple(per))

    def estimate_many(self, nets: Sequence[Network]) -> list[Estimate]:
        """Vectorised: NB201 cells from the space index, others cached by structure."""
        sums, counts, missing = self.raw_sums(nets)
        return [self._finish(net, s, n, miss) for net, s, n, miss in
                zip(nets, sums, counts, missing, strict=True)]


# LUT paths already warned about in this process (the backend may be opened many times)
_WARNED_UNCALIBRATED: set[str] = set()


def from_spec(arg: str | None) -> LookupTable:
    """Registry factory: ``lut:PATH`` (append ``?best-effort`` to report missing kernels)."""
    if not arg:
        raise InputError("the lut backend needs a LUT file: lut:PATH.sqlite "
                         "(build one with `costmodels lut build`)")
    path, best_effort, calibrated = spec_options(arg, "lut", InputError)
    return LookupTable(path, best_effort=best_effort, calibrated=calibrated)


def spec_options(arg: str, backend: str, error: type[Exception]) -> tuple[str, bool, bool]:
    """``PATH[?best-effort][&uncalibrated]`` -> (path, best_effort, calibrated); an unknown
    option raises ``error`` (one line naming ``backend`` and the options it takes)."""
    path, _, opts = arg.partition("?")
    flags = {o.strip() for o in opts.split("&") if o.strip()}
    unknown = flags - {"best-effort", "uncalibrated"}
    if unknown:
        raise error(f"unknown {backend} option(s) {sorted(unknown)}; use {backend}:PATH?"
                    f"best-effort or {backend}:PATH?uncalibrated (both: "
                    "?best-effort&uncalibrated)")
    return path, "best-effort" in flags, "uncalibrated" not in flags
