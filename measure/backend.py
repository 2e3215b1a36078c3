"""``measure:ort`` / ``measure:tvm`` as a CostModel: the ground truth, by running the network.

Spec: ``measure:RUNTIME[,key=value...]`` where the keys are
:class:`~measure.config.MeasureConfig` fields (``measure:ort,threads=2,repeat=50``,
``measure:tvm,tvm_trials=64``) plus ``db=PATH`` to read and write a measurement
store (a network already stored for this config and device is not run again).

A network is built as ONNX from ``net.meta``: NAS-Bench-201 networks from
``arch_str``/``dataset``/``batch``, imported ones from ``meta['source']`` (the
ONNX path). A failed measurement gives ``latency_ms = nan`` with ``meta['error']``
(errors are data: one bad network does not stop ``costmodels estimate``).
"""

from __future__ import annotations

import math
from dataclasses import fields, replace
from typing import Any

from costmodels.interface import BaseCostModel, Estimate
from costmodels.network import Network
from measure.config import MeasureConfig, MeasureResult, MeasureSettingsError


def onnx_for(net: Network) -> Any:
    """The ONNX model (proto or path) a Network came from (any search space, or a file)."""
    from costmodels.spaces import onnx_for as space_onnx

    if net.meta.get("space") or net.meta.get("source"):
        return space_onnx(net)
    raise MeasureSettingsError(f"{net.name}: cannot measure a network without an ONNX "
                               "source, network meta; build it from a search space or import "
                               "it from an ONNX file")


class MeasureModel(BaseCostModel):
    """Runs each network with ONNX Runtime or TVM; ``latency_ms`` is the figure ``measure``
    reports: the drift-corrected median where the rounds carry the reference (the default
    for ONNX Runtime through :func:`from_spec`), else the median."""

    def __init__(self, runtime: str = "ort", config: MeasureConfig | None = None,
                 db: str | None = None) -> None:
        self.runtime = runtime
        self.config = replace(config or MeasureConfig(), runtime=runtime)
        self.db = db
        self.name = f"measure:{runtime}"

    def estimate(self, net: Network) -> Estimate:
        return self._estimate(self._measure(net))

    def estimate_many(self, nets) -> list[Estimate]:
        """Networks are measured together, in interleaved rounds
        (:func:`measure.rounds.measure_many`); with a store, ``isolate`` or TVM one by one."""
        if self.db or self.config.isolate or self.runtime != "ort":
            return [self.estimate(n) for n in nets]
        from measure.rounds import measure_many

        results: list[MeasureResult | None] = [None] * len(nets)
        models, where = [], []
        for i, net in enumerate(nets):
            try:
                models.append(onnx_for(net))
                where.append(i)
            except Exception as exc:  # noqa: BLE001 - a network that cannot be built is data
                results[i] = MeasureResult.failure(f"build failed: {exc}", self.runtime)
        for i, res in zip(where, measure_many(models, self.config,
                                              [nets[i].name for i in where]), strict=True):
            results[i] = res
        return [self._estimate(r) for r in results]

    def _estimate(self, res: MeasureResult) -> Estimate:
        meta: dict[str, Any] = {
            "backend": self.name, "runtime": res.runtime, "ok": res.ok,
            "p10_ms": res.p10_ms, "p90_ms": res.p90_ms, "mean_ms": res.mean_ms, "cv": res.cv,
            "repeat": res.repeat, "noisy": res.noisy, "fingerprint": res.fingerprint,
            "rounds": res.rounds, "round_cv": res.round_cv, "corrected_ms": res.corrected_ms,
            "raw_median_ms": res.median_ms, "figure": res.figure_name,
        }
        if not res.ok:
            meta["error"] = res.error
        # the figure `measure` and `measure-space` report: drift-corrected where there is one
        return Estimate(res.figure("auto") if res.ok else math.nan, meta=meta)

    def _measure(self, net: Network) -> MeasureResult:
        from measure import measure

        try:
            model = onnx_for(net)
        except Exception as exc:  # noqa: BLE001 - a network that cannot be built is data
            return MeasureResult.failure(f"build failed: {exc}", self.runtime)
        if not self.db:
            return measure(model, self.config)
        return self._measure_stored(net, model)

    def _measure_stored(self, net: Network, model: Any) -> MeasureResult:
        from measure import measure
        from measure.campaign import job_key
        from measure.fingerprint import config_hash, device_hash, fingerprint
        from measure.store import MeasureStore, NetKey

        ch, dh = config_hash(self.config), device_hash(fingerprint(self.config))
        key = NetKey(job_key(net), net.name, net.meta.get("arch_str"),
                     net.meta.get("arch_index"), net.meta.get("dataset"))
        with MeasureStore(self.db) as store:
            for rec in store.records(ch, dh, keys=[key.key]):
                return rec.result
            res = measure(model, self.config)
            if not store.put(key, self.config, ch, dh, res):  # stored meanwhile by another
                return store.records(ch, dh, keys=[key.key])[0].result
        return res


def parse_options(arg: str | None) -> tuple[str, MeasureConfig, str | None]:
    """``"tvm,repeat=50,db=runs.sqlite"`` -> ("tvm", MeasureConfig(repeat=50), "runs.sqlite")."""
    parts = [p.strip() for p in (arg or "ort").split(",") if p.strip()]
    runtime = parts[0] if parts and "=" not in parts[0] else "ort"
    types = {f.name: f.type for f in fields(MeasureConfig)}
    kw: dict[str, Any] = {}
    db = None
    for part in parts[1 if parts and "=" not in parts[0] else 0:]:
        key, sep, value = part.partition("=")
        key = key.strip().replace("-", "_")
        if key == "db":
            db = value
            continue
        if not sep or key not in types:
            raise MeasureSettingsError(f"measure spec option {part!r} is unknown, backend spec "
                                       f"measure:{arg}; use KEY=VALUE with KEY one of db, "
                                       f"{', '.join(types)}")
        try:
            kw[key] = _convert(value, types[key])
        except ValueError:
            raise MeasureSettingsError(f"measure spec option {part!r} is not a valid "
                                       f"{types[key]}, backend spec measure:{arg}; fix its "
                                       "value") from None
    if runtime not in ("ort", "tvm"):
        raise MeasureSettingsError(f"measure backend runtime {runtime!r} is unknown, backend "
                                   f"spec measure:{arg}; use ort or tvm (e.g. measure:ort)")
    # as `measure` and `measure-space` do by default: ONNX Runtime rounds carry the drift
    # reference, so the figure (drift-corrected) and the store key are theirs
    kw.setdefault("drift_ref", runtime == "ort")
    return runtime, MeasureConfig(**kw, runtime=runtime), db


def _convert(value: str, typ: Any) -> Any:
    name = typ if isinstance(typ, str) else getattr(typ, "__name__", str(typ))
    if name == "bool":
        return value.lower() in ("1", "true", "yes", "on")
    if name == "int":
        return int(value)
    if name == "float":
        return float(value)
    return value


def from_spec(arg: str | None) -> MeasureModel:
    """Registry factory: ``measure:ort``, ``measure:tvm``, with ``,key=value`` options."""
    from measure.rounds import check_anchors

    runtime, config, db = parse_options(arg)
    check_anchors(config)  # a corrupt anchor file: refused now, not in every row
    if db:  # a store that is not ours (or holds triggers) is refused now, not per network
        from measure.sqlite import inspect
        from measure.store import SCHEMA

        inspect(db, SCHEMA)
    return MeasureModel(runtime, config, db)
