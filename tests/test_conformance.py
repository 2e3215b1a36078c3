"""One conformance suite over every registered backend (STYLE.md rule 10).

Each backend is created through the registry from its spec and must: satisfy the
CostModel protocol, return frozen Estimates with finite positive milliseconds,
agree between ``estimate`` and ``estimate_many``, be deterministic, and say that
the all-``nor_conv_3x3`` network costs more than the all-``skip_connect`` one.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import pytest

from costmodels import registry
from costmodels.interface import CostModel, Estimate
from costmodels.spaces import nb201

ROOT = Path(__file__).resolve().parents[1]
TRUTH = ROOT / "datasets" / "nb201" / "xeon-2c-ort-cifar10.csv"
LUT = ROOT / "datasets" / "nb201" / "xeon-2c-ort-cifar10-lut.sqlite"
BIG, SMALL = 1462, 1835  # all nor_conv_3x3, all skip_connect
NETS = [nb201.build_network(i) for i in (BIG, SMALL, 0, 4711, 10)]  # 10 is disconnected


@pytest.fixture(scope="module")
def fitted_dirs(tmp_path_factory):
    """GBDT and GNN fitted on the committed ground truth, saved as model directories."""
    from costmodels.tables import read_table
    from predictors import make

    truth = read_table(TRUTH)
    nets = [nb201.build_network(s) for s in truth.arch_str]
    out = {}
    for name, params in (("gbdt", {}), ("gnn", {"epochs": 20, "min_steps": 40})):
        d = tmp_path_factory.mktemp(name)
        make(name, **params).fit(nets, truth.latency_ms).save(d)
        out[name] = str(d)
    return out


@pytest.fixture(scope="module")
def table_csv(tmp_path_factory):
    from costmodels.tables import write_table

    p = tmp_path_factory.mktemp("table") / "t.csv"
    write_table(p, [n.meta["arch_index"] for n in NETS], [n.meta["arch_str"] for n in NETS],
                [float(n.macs) / 1e7 + 0.1 for n in NETS])
    return str(p)


SPECS = ["flops", "params", "table", f"lut:{LUT}", "roofline:x86_generic", "roofline:xeon_2c",
         "eyeriss", "fpga", "gbdt", "gnn", "measure:ort"]


def test_every_registered_backend_is_covered():
    assert {registry.split_spec(s)[0] for s in SPECS} == set(registry.BACKENDS)


@pytest.mark.parametrize("spec", SPECS)
def test_backend_conformance(spec, fitted_dirs, table_csv):
    if spec in fitted_dirs:
        spec = f"{spec}:{fitted_dirs[spec]}"
    elif spec == "table":
        spec = table_csv
    nets = NETS[:2] if spec.startswith("measure") else NETS
    model = registry.create(spec)
    assert isinstance(model, CostModel) and isinstance(model.name, str) and model.name

    many = model.estimate_many(nets)
    assert len(many) == len(nets)
    for est in many:
        assert isinstance(est, Estimate)
        assert math.isfinite(est.latency_ms) and est.latency_ms > 0, (spec, est)
        assert est.energy_mj is None or (math.isfinite(est.energy_mj) and est.energy_mj > 0)
        with pytest.raises(dataclasses.FrozenInstanceError):
            est.latency_ms = 0.0  # type: ignore[misc]
    assert many[0].latency_ms > many[1].latency_ms, f"{spec}: all-conv must cost more than all-skip"
    if many[0].energy_mj is not None:
        assert many[0].energy_mj > many[1].energy_mj

    if not spec.startswith("measure"):  # measurements are not bit-reproducible
        one = [model.estimate(n) for n in nets]
        assert [e.latency_ms for e in one] == pytest.approx([e.latency_ms for e in many],
                                                            rel=1e-6)  # float32 models
        assert [e.latency_ms for e in model.estimate_many(nets)] == [e.latency_ms for e in many]
