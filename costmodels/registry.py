"""Backend specs -> CostModel, loaded lazily by name.

A spec is ``NAME`` or ``NAME:ARG`` (``"flops"``, ``"lut:lut.sqlite"``,
``"roofline:x86_generic"``, ``"gbdt:models/gbdt"``, ``"measure:ort"``). A path to
a ``.csv`` latency table is a backend too (it answers for the cells it lists).
Each entry names ``module:factory``; the factory takes the ARG string (or None)
and returns a CostModel. Nothing is imported until a spec is created.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable

from costmodels.errors import UnknownBackend
from costmodels.interface import CostModel

BACKENDS: dict[str, tuple[str, str]] = {
    # name: (module:factory, one-line help)
    "flops": ("costmodels.baselines:flops_from_spec",
              "latency proportional to MACs (slope/intercept fitted when trained)"),
    "params": ("costmodels.baselines:params_from_spec", "latency proportional to parameters"),
    "table": ("costmodels.tables:table_from_spec", "a latency-table CSV measured elsewhere"),
    "measure": ("measure.backend:from_spec", "run it: measure:ort or measure:tvm"),
    "lut": ("measure.lut:from_spec", "sum of per-kernel latencies: lut:PATH.sqlite"),
    "roofline": ("analytical.roofline:from_spec", "roofline from a device spec: roofline:SPEC"),
    "eyeriss": ("analytical.eyeriss:from_spec", "Eyeriss-like row-stationary ASIC model"),
    "fpga": ("analytical.fpga:from_spec", "ZC706-class FPGA accelerator model"),
    "gbdt": ("predictors.gbdt:from_spec", "XGBoost predictor: gbdt:MODEL_DIR"),
    "gnn": ("predictors.gnn:from_spec", "graph neural network predictor: gnn:MODEL_DIR"),
}


def split_spec(spec: str) -> tuple[str, str | None]:
    """``"lut:a.sqlite"`` -> ``("lut", "a.sqlite")``; a ``.csv`` path -> ``("table", path)``."""
    spec = spec.strip()
    if spec.lower().endswith(".csv") and (":" not in spec or spec.split(":", 1)[0] not in BACKENDS):
        return "table", spec
    name, sep, arg = spec.partition(":")
    return name, (arg if sep else None)


def resolve(name: str) -> Callable[[str | None], CostModel]:
    if name not in BACKENDS:
        raise UnknownBackend(
            f"unknown backend {name!r}; expected one of: {', '.join(BACKENDS)} "
            "(or a path to a latency-table .csv). See `costmodels backends`.")
    target = BACKENDS[name][0]
    module, _, attr = target.partition(":")
    try:
        mod = importlib.import_module(module)
    except ImportError as exc:
        raise UnknownBackend(f"backend {name!r} needs {module!r}, which failed to import: {exc}. "
                             "Install the extras: pip install -e '.[tvm,gnn]'") from exc
    return getattr(mod, attr)


def create(spec: str) -> CostModel:
    """Build the CostModel named by ``spec``."""
    name, arg = split_spec(spec)
    model = resolve(name)(arg)
    return model
