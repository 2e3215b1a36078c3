"""The test zoo (tests/zoo): every model imports through the real CLI, MACs equal an
independent count (torch layer shapes, or the hand formula of an onnx.helper graph),
and the proxy backends estimate it; bad files fail with one clear error line."""

from __future__ import annotations

import hashlib
import json
import shutil

import onnx
import pytest

from costmodels import cli
from costmodels.errors import OnnxImportError, UnsupportedOperator
from costmodels.onnx_import import import_onnx, load_model_proto, parse_input_shapes
from costmodels.ops import VIEW_OPS, op_class
from costmodels.registry import create
from tests.zoo import build_zoo, helper_models, read_index


@pytest.fixture(scope="session")
def zoo(tmp_path_factory):
    d = tmp_path_factory.mktemp("zoo")
    build_zoo(d)
    return d, read_index(d)


def _info(capsys, path, input_shape=None) -> dict:
    argv = ["info", str(path), "--json"] + (["--input-shape", input_shape] if input_shape else [])
    rc = cli.main(argv)
    out = capsys.readouterr()
    assert rc == 0, out.err
    return json.loads(out.out)


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_zoo_has_every_form(zoo):
    d, index = zoo
    assert len(index) >= 14
    for name, entry in index.items():
        ops = {n.op_type for n in onnx.load(str(d / name), load_external_data=False).graph.node}
        missing = [o for o in entry["key_ops"] if o not in ops]
        assert not missing, f"{name} lacks the ops of its form: {missing}"
        assert (d / name).stat().st_size < 2_000_000


def test_every_zoo_model_imports_through_the_cli_with_independent_macs(zoo, capsys):
    d, index = zoo
    for name, entry in sorted(index.items()):
        before = _sha(d / name)
        doc = _info(capsys, d / name, entry["input_shape"])
        assert doc["macs"] == entry["macs"], name
        if "params" in entry:
            assert doc["params"] == entry["params"], name
        assert _sha(d / name) == before, f"{name} was modified"
        assert doc["meta"]["folding"].startswith("onnxslim"), name


def test_dynamo_exports_import_with_torchs_macs_and_parameters(tmp_path, capsys):
    """torch's default (dynamo) exporter: the same modules give torch's MACs, and torch's
    parameter count where no BatchNorm is folded (its optimizer reads one stored copy of
    equal-valued norm weights from every layer: each layer's own parameters)."""
    pytest.importorskip("onnxscript", reason="the dynamo exporter needs onnxscript (dev extra)")
    from tests.zoo.export import write_torch_dynamo

    entries = write_torch_dynamo(tmp_path)
    assert len(entries) >= 9
    for name, entry in sorted(entries.items()):
        doc = _info(capsys, tmp_path / name)
        assert doc["macs"] == entry["macs"], name
        if "params" in entry:
            assert doc["params"] == entry["params"], name


def test_proxy_backends_estimate_every_zoo_model(zoo):
    d, index = zoo
    flops, params = create("flops"), create("params")
    for name, entry in sorted(index.items()):
        shapes = parse_input_shapes([entry["input_shape"]]) if entry["input_shape"] else None
        net = import_onnx(d / name, input_shapes=shapes)
        assert flops.estimate(net).meta["proxy"] == entry["macs"]
        assert params.estimate(net).meta["proxy"] == net.params > 0
        for layer in net.layers:  # no activation is a 1-D weight in disguise
            assert op_class(layer) != "other", (name, layer.op)
            if layer.op in VIEW_OPS:
                assert layer.inputs, (name, layer.name)


def test_identity_shared_biases_are_weights(zoo):
    d, _ = zoo
    net = import_onnx(d / "shared_initializers.onnx")
    assert [x.op for x in net.layers] == ["Conv", "Relu", "Conv", "Conv", "Add"]
    a, _, b, dw, _ = net.layers
    assert a.inputs == ("x",) and a.weight_shapes == ((8, 8, 3, 3), (8,))
    assert b.inputs == ("ra",) and dw.weight_shapes == ((8, 1, 3, 3),) and dw.is_depthwise
    assert net.meta["constant_nodes"] == 3  # two Identity, one Reshape
    torch_net = import_onnx(d / "resnet_static.onnx")
    assert all(x.op != "Identity" for x in torch_net.layers)
    convs = [x for x in torch_net.layers if x.op == "Conv"]
    assert all(len(x.inputs) == 1 and len(x.weight_shapes) == 2 for x in convs)


def test_paddle_pattern_folds_and_counts_each_layers_parameters(zoo):
    d, index = zoo
    net = import_onnx(d / "paddle_like.onnx", input_shapes=[(2, 3, 8, 8)])
    ops = [x.op for x in net.layers]
    assert "Shape" not in ops and "Gather" not in ops and "Concat" not in ops
    fc = next(x for x in net.layers if x.op == "MatMul")
    assert fc.input_shapes == ((2, 8),) and fc.weight_shapes == ((8, 10),)
    assert fc.macs == 2 * 8 * 10
    scale = next(x for x in net.layers if x.op == "Mul")
    assert scale.params == 8  # the (1,8,1,1) scale, not its Expand to (2,8,8,8)
    # conv1, its bias, conv2, its bias (an Identity alias of the same zero initializer: a
    # parameter of each layer, as torch counts the equal-valued biases an exporter merges),
    # the scale, fc weight and bias
    assert net.params == 8 * 27 + 8 + 64 + 8 + 8 + 80 + 10


def test_quantized_ops_count_int8_bytes(zoo):
    d, index = zoo
    net = import_onnx(d / "quantized_qlinear.onnx")
    by = {x.name: x for x in net.layers}
    for name, nbytes in index["quantized_qlinear.onnx"]["weight_bytes"].items():
        assert by[name].bytes_weights == nbytes, name
    assert by["qconv"].dtype == "uint8" and by["qconv"].params == 8 * 27 + 8
    assert by["matmul_integer"].bytes_out == 4 * 4  # int32 output
    assert op_class(by["quant_x"]) == "quant" and by["quant_x"].bytes_out == 3 * 64
    qdq = import_onnx(d / "resnet_qdq.onnx")
    convs = [x for x in qdq.layers if x.op == "Conv"]
    assert all(x.bytes_weights < 4 * sum(map(_numel, x.weight_shapes)) for x in convs)


def _numel(shape) -> int:
    n = 1
    for s in shape:
        n *= s
    return n


def test_external_data_stays_inside_the_model_folder(zoo, tmp_path):
    d, index = zoo
    net = import_onnx(d / "resnet_external.onnx")
    assert net.macs == index["resnet_external.onnx"]["macs"]
    assert load_model_proto(d / "resnet_external.onnx").graph.initializer[0].raw_data
    (tmp_path / "in").mkdir()
    shutil.copy(d / "resnet_external.onnx", tmp_path / "in" / "m.onnx")
    with pytest.raises(OnnxImportError, match="resnet_external.onnx.data"):
        import_onnx(tmp_path / "in" / "m.onnx")  # weight file missing
    m = onnx.load(str(d / "resnet_external.onnx"), load_external_data=False)
    for t in m.graph.initializer:
        for e in t.external_data:
            if e.key == "location":
                e.value = "../outside.data"
    (tmp_path / "outside.data").write_bytes((d / "resnet_external.onnx.data").read_bytes())
    onnx.save(m, str(tmp_path / "in" / "evil.onnx"))
    with pytest.raises(OnnxImportError, match="outside the model's folder"):
        import_onnx(tmp_path / "in" / "evil.onnx")


@pytest.mark.parametrize("op", ["If", "Loop"])
def test_control_flow_names_the_node(tmp_path, capsys, op):
    path = tmp_path / f"{op}.onnx"
    onnx.save(helper_models.control_flow_model(op), str(path))
    with pytest.raises(UnsupportedOperator, match=f"'flow'.*'{op}'"):
        import_onnx(path)
    assert cli.main(["info", str(path), "--json"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("error: ") and "flow" in err and "Traceback" not in err


def test_an_if_on_a_constant_condition_is_its_branch():
    """An If whose condition is known before anything runs (a constant, or the input's
    shape: TorchScript's LocalResponseNorm tests the rank so) is the branch it takes, as
    ONNX Runtime folds it; one on a runtime value is refused (the test above)."""
    net = import_onnx(helper_models.control_flow_model("If", constant=True))
    assert [la.op for la in net.layers if la.op != "Identity"] == ["Relu"]


def test_contradicting_input_shape_is_an_error(zoo, capsys):
    d, _ = zoo
    with pytest.raises(OnnxImportError, match="contradicts.*static dimension 2 of input 'input'"):
        import_onnx(d / "resnet_static.onnx", input_shapes=[(1, 3, 64, 64)])
    assert cli.main(["info", str(d / "resnet_static.onnx"), "--input-shape",
                     "input=1x3x64x64"]) == 2
    assert "contradicts" in capsys.readouterr().err
    # a dynamic dimension may be set; a static one may be restated
    net = import_onnx(d / "resnet_dynamic.onnx", input_shapes=[(3, 3, 32, 32)])
    assert net.meta["input_shapes"] == {"input": [3, 3, 32, 32]}
    assert net.macs == 3 * read_index(d)["resnet_static.onnx"]["macs"]


def test_truncated_files_are_refused_by_name(zoo, tmp_path, capsys):
    d, _ = zoo
    data = (d / "vit_opset17.onnx").read_bytes()
    for cut in (len(data) // 3, len(data) // 2, len(data) - 7):
        path = tmp_path / f"cut{cut}.onnx"
        path.write_bytes(data[:cut])
        with pytest.raises(OnnxImportError, match=f"cut{cut}.onnx"):
            import_onnx(path)
        assert cli.main(["info", str(path), "--json"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: ") and "Traceback" not in err


def test_meta_records_source_and_input_shapes(zoo):
    d, _ = zoo
    net = import_onnx(d / "mobilenetv2_dynamic.onnx", input_shapes={"input": (1, 3, 32, 32)})
    assert net.meta["source"] == str((d / "mobilenetv2_dynamic.onnx").resolve())
    assert net.meta["input_shapes"] == {"input": [1, 3, 32, 32]}
    assert load_model_proto(net.meta["source"]).graph.node
