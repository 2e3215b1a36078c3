"""Specs: every shipped spec loads; a bad spec is refused naming the file and the field;
the registry builds every analytical backend."""

from __future__ import annotations

from pathlib import Path

import pytest

from analytical.specs import (
    EyerissSpec,
    FpgaSpec,
    PredictorSpec,
    RooflineSpec,
    SpecError,
    available_specs,
    load_spec,
    spec_dir,
)
from costmodels.registry import create
from costmodels.spaces import nb201

KINDS = {"roofline": RooflineSpec, "eyeriss": EyerissSpec, "fpga": FpgaSpec,
         "eyeriss_predictor": PredictorSpec}


def test_shipped_specs_load():
    names = set(available_specs())
    assert {"x86_generic", "cortex_a72", "desktop_gpu", "zc706", "eyeriss", "eyeriss_rs"} <= names
    for kind, cls in KINDS.items():
        for name in available_specs(kind):
            spec = load_spec(name, cls)
            assert spec.name == name


def _write_bad(tmp_path: Path, name: str, old: str, new: str) -> Path:
    text = (spec_dir() / f"{name}.toml").read_text()
    assert old in text, old
    p = tmp_path / f"bad_{name}.toml"
    p.write_text(text.replace(old, new, 1))
    return p


@pytest.mark.parametrize("name, cls, old, new, field", [
    ("eyeriss_rs", EyerissSpec, "glb_bytes = 131072", "glb_bytes = -4", "glb_bytes"),
    ("eyeriss_rs", EyerissSpec, "mac_pj = 0.2", "mac_pj = -0.2", "energy.mac_pj"),
    ("eyeriss_rs", EyerissSpec, "clock_mhz = 200.0", "clock_ghz = 0.2", "clock_ghz"),
    ("eyeriss_rs", EyerissSpec, 'pooling_on = "post_processing"', 'pooling_on = "gpu"',
     "pooling_on"),
    ("eyeriss", PredictorSpec, "pe_count = 168", "pe_count = 0", "pe_count"),
    ("eyeriss", PredictorSpec, "rf_pj = 2.0", "rf_pj = -2.0", "energy.rf_pj"),
    ("eyeriss", PredictorSpec, 'pool_mapping = "dense"', 'pool_mapping = "sparse"',
     "pool_mapping"),
    ("eyeriss", PredictorSpec, '"elementwise", "norm"', '"elementwise", "nrm"', "free_op_classes"),
    ("zc706", FpgaSpec, "dsp_count = 900", "", "dsp_count"),
    ("zc706", FpgaSpec, "dsp_count = 900", 'dsp_count = "900"', "dsp_count"),
    ("x86_generic", RooflineSpec, "peak_gflops = 96.0", "peak_tflops = 0.096", "peak_tflops"),
    ("x86_generic", RooflineSpec, "launch_us = 5.0", "launch_us = -1.0", "ops.conv.launch_us"),
    ("x86_generic", RooflineSpec, 'fusion = "ort"', 'fusion = "nosuch"', "fusion"),
    ("x86_generic", RooflineSpec, 'fusion = "ort"', 'fusion = "absent.json"', "fusion"),
])
def test_bad_spec_names_file_and_field(tmp_path, name, cls, old, new, field):
    p = _write_bad(tmp_path, name, old, new)
    with pytest.raises(SpecError) as err:
        load_spec(str(p), cls)
    msg = str(err.value)
    assert p.name in msg and repr(field) in msg, msg


def test_wrong_unit_suggests_the_right_field(tmp_path):
    p = _write_bad(tmp_path, "x86_generic", "peak_gflops = 96.0", "peak_tflops = 0.096")
    with pytest.raises(SpecError, match="did you mean 'peak_gflops'"):
        load_spec(str(p), RooflineSpec)


def test_wrong_kind_and_unknown_name(tmp_path):
    with pytest.raises(SpecError, match="'kind'"):
        load_spec("zc706", EyerissSpec)
    with pytest.raises(SpecError, match="unknown spec 'nope'"):
        load_spec("nope", RooflineSpec)
    with pytest.raises(SpecError, match="no such spec file"):
        load_spec(str(tmp_path / "missing.toml"), RooflineSpec)
    p = tmp_path / "broken.toml"
    p.write_text("kind = [")
    with pytest.raises(SpecError, match="broken.toml: not valid TOML"):
        load_spec(str(p), RooflineSpec)


def test_fpga_unroll_must_fit_the_dsps(tmp_path):
    p = _write_bad(tmp_path, "zc706", "unroll_out_channels = 32", "unroll_out_channels = 64")
    with pytest.raises(SpecError, match="DSPs"):
        load_spec(str(p), FpgaSpec)


@pytest.mark.parametrize("spec, has_energy", [("roofline:x86_generic", False),
                                              ("roofline:desktop_gpu", False),
                                              ("roofline:cortex_a72", False),
                                              ("eyeriss", True), ("fpga", True)])
def test_registry_backends(spec, has_energy):
    model = create(spec)
    net = nb201.build_network(1462)
    est = model.estimate(net)
    assert est.latency_ms > 0
    assert (est.energy_mj is not None and est.energy_mj > 0) == has_energy
    assert len(est.per_layer) > 0
    assert model.estimate_many([net])[0].latency_ms == pytest.approx(est.latency_ms)


def test_roofline_default_spec(monkeypatch, tmp_path):
    monkeypatch.setenv("COSTMODELS_ROOFLINE_SPEC", str(tmp_path / "absent.toml"))
    assert create("roofline").name == "roofline:x86_generic"
    local = tmp_path / "local.toml"
    local.write_text((spec_dir() / "cortex_a72.toml").read_text())
    monkeypatch.setenv("COSTMODELS_ROOFLINE_SPEC", str(local))
    assert create("roofline").name == "roofline:cortex_a72"


def test_a_name_with_a_terminal_escape_a_bom_and_deep_nesting(tmp_path):
    """A string field with a newline or an escape sequence (printed back, it rewrote the
    terminal) is refused; a UTF-8 BOM is read past, as tables do; a document nested
    thousands deep is named, not a RecursionError."""
    p = _write_bad(tmp_path, "x86_generic", 'name = "x86_generic"',
                   'name = "evil\\n\\u001b[31mred"')
    with pytest.raises(SpecError, match=r"field 'name' holds control characters"):
        load_spec(str(p), RooflineSpec)
    src = (spec_dir() / "x86_generic.toml").read_bytes()
    bom = tmp_path / "bom.toml"
    bom.write_bytes(b"\xef\xbb\xbf" + src)
    assert load_spec(str(bom), RooflineSpec).name == load_spec("x86_generic", RooflineSpec).name
    deep = tmp_path / "deep.toml"
    deep.write_text("x = " + "[" * 5000 + "]" * 5000 + "\n")
    with pytest.raises(SpecError, match="nested thousands deep"):
        load_spec(str(deep), RooflineSpec)
