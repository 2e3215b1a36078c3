"""Backend specs -> CostModel, loaded lazily by name.

A spec is ``NAME`` or ``NAME:ARG`` (``"flops"``, ``"lut:lut.sqlite"``,
``"roofline:x86_generic"``, ``"gbdt:models/gbdt"``, ``"measure:ort"``). A path to
a ``.csv`` latency table is a backend too (it answers for the cells it lists).
Each entry names ``module:factory``; the factory takes the ARG string (or None)
and returns a CostModel. Nothing is imported until a spec is created.
"""

from __future__ import annotations

import importlib
import zlib
from collections.abc import Callable

from costmodels.errors import CostModelError, UnknownBackend
from costmodels.interface import CostModel


class BackendSpecError(CostModelError, ValueError):
    """A backend spec whose argument the backend cannot use (bad path, bad value)."""


BACKENDS: dict[str, tuple[str, str]] = {
    # name: (module:factory, one-line help)
    "flops": ("costmodels.baselines:flops_from_spec",
              "latency proportional to MACs (slope/intercept fitted when trained)"),
    "params": ("costmodels.baselines:params_from_spec", "latency proportional to parameters"),
    "table": ("costmodels.tables:table_from_spec", "a latency-table CSV measured elsewhere"),
    "measure": ("measure.backend:from_spec", "run it: measure:ort or measure:tvm"),
    "lut": ("measure.lut:from_spec", "sum of per-kernel latencies: lut:PATH.sqlite"),
    "blocklut": ("measure.lut.blocks:from_spec",
                 "FBNet block-level LUT (sum of per-block latencies): blocklut:PATH.sqlite"
                 "[?best-effort][&uncalibrated]"),
    "roofline": ("analytical.roofline:from_spec", "roofline from a device spec: roofline:SPEC"),
    "eyeriss": ("analytical.eyeriss:from_spec",
                "Eyeriss as HW-NAS-Bench costs it (DNN-Chip Predictor); eyeriss:eyeriss_rs = "
                "physical row-stationary model"),
    "fpga": ("analytical.fpga:from_spec",
             "ZC706 tiling model with HW-NAS-Bench's 7 W energy convention; fpga:zc706 = "
             "per-action energy"),
    # learned backends: each loads only a directory holding its own class
    "gbdt": ("predictors.learned:gbdt_from_spec", "XGBoost on IR features: gbdt:MODEL_DIR"),
    "hybrid": ("predictors.learned:hybrid_from_spec",
               "GBDT correcting analytical estimators: hybrid:MODEL_DIR"),
    "gnn": ("predictors.learned:gnn_from_spec", "graph network over the layer graph: gnn:MODEL_DIR"),
    "transfer": ("predictors.learned:transfer_from_spec",
                 "few-shot mix of source devices' tables: transfer:MODEL_DIR"),
    "fewshot": ("predictors.learned:fewshot_from_spec",
                "few-shot model selection over candidate families: fewshot:MODEL_DIR"),
}
#: backends that are fitted on measurements (``fit NAME``); the rest need no training
LEARNED_BACKENDS = ("gbdt", "hybrid", "gnn", "transfer", "fewshot")


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
    """Build the CostModel named by ``spec``.

    Every failure for a bad argument is a :class:`CostModelError`: errors a
    factory raises of another kind for its argument (a missing file, a bad
    value) are reported as :class:`BackendSpecError` naming the spec.
    """
    name, arg = split_spec(spec)
    factory = resolve(name)
    try:
        return factory(arg)
    except CostModelError:
        raise
    except (ValueError, KeyError, IndexError, OSError, RuntimeError, TypeError, AttributeError,
            zlib.error) as exc:  # a file edited by hand decodes into the wrong types
        text = str(exc).strip().splitlines()
        raise BackendSpecError(f"backend spec {spec!r}: {type(exc).__name__}: "
                               f"{text[0] if text else ''}; check the argument and the file it "
                               "names (see `costmodels backends`)") from None
