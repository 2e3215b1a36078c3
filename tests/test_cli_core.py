"""The core CLI commands and the registry, run in-process."""

from __future__ import annotations

import csv
import json

import pytest

from costmodels import registry
from costmodels.baselines import ProxyModel
from costmodels.cli import main
from costmodels.errors import UnknownBackend
from costmodels.spaces import nb201


def test_archs_lists_all_cells(capsys):
    assert main(["archs", "--space", "nb201"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == "arch_index,arch_str" and len(lines) == 15626
    assert lines[1463] == f"1462,{nb201.SPACE[1462]}"


def test_info_json_reproduces_published_figures(capsys):
    assert main(["info", nb201.SPACE[1462], "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert round(doc["macs"] / 1e6, 1) == 220.1 and round(doc["params"] / 1e6, 2) == 1.53
    assert doc["bytes"] > 0 and len(doc["layers"]) == 340


def test_info_onnx_and_export(tmp_path, capsys, tiny_onnx):
    assert main(["info", str(tiny_onnx), "--totals-only"]) == 0
    assert "M MACs" in capsys.readouterr().out
    out = tmp_path / "n.onnx"
    assert main(["export", "1835", "-o", str(out)]) == 0
    assert main(["info", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["macs"] == nb201.build_network(1835).macs


def test_info_bad_input_is_an_error_not_a_traceback(tmp_path, capsys):
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"garbage")
    assert main(["info", str(bad)]) == 2
    assert "bad.onnx" in capsys.readouterr().err
    assert main(["info", "|nope~0|"]) == 2


def test_estimate_flops_subset(tmp_path):
    arch_file = tmp_path / "a.csv"
    arch_file.write_text(f"arch_index,arch_str\n1462,{nb201.SPACE[1462]}\n1835,{nb201.SPACE[1835]}\n")
    out = tmp_path / "f.csv"
    assert main(["estimate", "flops", "--archs", str(arch_file), "-o", str(out)]) == 0
    rows = list(csv.DictReader(open(out)))
    assert [int(r["arch_index"]) for r in rows] == [1462, 1835]
    assert float(rows[0]["latency_ms"]) > float(rows[1]["latency_ms"])


def test_registry_errors_and_specs():
    with pytest.raises(UnknownBackend, match="unknown backend 'nope'"):
        registry.create("nope")
    assert registry.split_spec("lut:a.sqlite") == ("lut", "a.sqlite")
    assert registry.split_spec("x/y.csv") == ("table", "x/y.csv")
    assert registry.create("flops").name == "flops"


def test_flops_fit_recovers_a_line():
    nets = [nb201.build_network(i) for i in (1, 2, 3, 1462)]
    y = [2.0 * n.macs / 1e6 + 0.5 for n in nets]
    m = ProxyModel("macs").fit(nets, y)
    assert m.slope_ == pytest.approx(2.0) and m.intercept_ == pytest.approx(0.5)
    assert m.estimate(nets[0]).latency_ms == pytest.approx(y[0])


def _all_parsers(parser):
    import argparse

    yield parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _all_parsers(sub)


def test_help_shows_only_meaningful_defaults():
    from costmodels.cli import build_parser

    parsers = list(_all_parsers(build_parser()))
    assert len(parsers) > 20
    for p in parsers:
        text = " ".join(p.format_help().split())
        assert "(default: None)" not in text and "(default: [])" not in text, p.prog
        assert "(default: )" not in text and "(default: [" not in text, p.prog
        assert "(default: False)" not in text, p.prog
    import re

    for p in parsers:  # an example continued with a lone backslash in the source is joined
        joined = [ln for ln in (p.epilog or "").splitlines() if re.search(r"\S {4,}--?\w", ln)]
        assert not joined, (p.prog, joined)
    helps = " ".join(" ".join(p.format_help().split()) for p in parsers)
    assert "(default: fewshot)" in helps and "(default: 5)" in helps


def _text_model(vocab: int = 10):
    """An embedding of a dynamic-length id sequence ('ids': 1 x n) into 16 features."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    emb = numpy_helper.from_array(np.ones((vocab, 16), np.float32), "emb")
    g = helper.make_graph([helper.make_node("Gather", ["emb", "ids"], ["y"])], "text",
                          [helper.make_tensor_value_info("ids", TensorProto.INT64, [1, "n"])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], [emb])
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


def test_named_input_shape_fixes_only_the_models_of_a_folder_that_have_that_input(
        tmp_path, capsys):
    """A folder of a fixed-shape CNN and a dynamic-length text model: ``--input-shape
    ids=1x20`` fixes the text model and leaves the CNN as it is (it used to refuse the CNN:
    "names ['ids'], but the model's inputs are ['x']"); a name no model has is reported on
    the model that needed a shape."""
    import onnx

    from measure.testing import tiny_model

    d = tmp_path / "mix"
    d.mkdir()
    onnx.save(tiny_model(), d / "cnn.onnx")
    onnx.save(_text_model(), d / "text.onnx")
    out = tmp_path / "o.csv"
    assert main(["estimate", "flops", "--space", f"models:{d}", "--input-shape", "ids=1x20",
                 "-o", str(out)]) == 0
    rows = {r["arch_str"]: r for r in csv.DictReader(out.open())}
    assert rows["cnn"].get("error", "") == "" and float(rows["cnn"]["latency_ms"]) > 0
    assert rows["text"].get("error", "") == "" and rows["text"]["latency_ms"] != ""
    capsys.readouterr()
    main(["estimate", "flops", "--space", f"models:{d}", "--input-shape", "idz=1x20",
          "-o", str(out)])  # writes the CNN's row and the text model's error row
    rows = {r["arch_str"]: r for r in csv.DictReader(out.open())}
    assert rows["cnn"]["error"] == ""
    assert "'idz'" in rows["text"]["error"] and "'ids'" in rows["text"]["error"]


def test_named_input_shape_no_model_of_a_folder_has_is_warned_about(tmp_path, capsys):
    """A typo in a named ``--input-shape`` over a folder of static models used to be
    ignored without a word; once every model is imported, a warning names it (once)."""
    import onnx

    from measure.testing import tiny_model

    d = tmp_path / "static"
    d.mkdir()
    onnx.save(tiny_model(), d / "a.onnx")
    onnx.save(tiny_model(), d / "b.onnx")
    out = tmp_path / "o.csv"
    capsys.readouterr()
    assert main(["estimate", "flops", "--space", f"models:{d}", "--input-shape", "inptu=1x3x8x8",
                 "-o", str(out)]) == 0
    err = capsys.readouterr().err
    assert err.count("warning: --input-shape inptu: no model") == 1, err
    assert main(["estimate", "flops", "--space", f"models:{d}", "--input-shape",
                 "x=1x3x16x16", "-o", str(out)]) == 0  # the models' own input and shape
    assert "warning: --input-shape" not in capsys.readouterr().err


def test_batch_sets_a_single_onnx_files_dynamic_batch_and_warns_when_ignored(tmp_path, capsys):
    """``--batch`` on one ONNX file does what it does in a ``models:DIR`` folder: a dynamic
    leading dimension takes it; a fixed one keeps its size, and a warning says so (it used
    to be ignored without a word)."""
    import onnx

    from measure.testing import tiny_model

    static = tmp_path / "static.onnx"
    onnx.save(tiny_model(), static)
    dyn = tmp_path / "dyn.onnx"
    onnx.save(_dynamic_batch(tiny_model()), dyn)

    def macs(path, *extra):
        assert main(["info", str(path), "--json", *extra]) == 0
        out = capsys.readouterr()
        return json.loads(out.out)["macs"], out.err

    one, err1 = macs(static)
    four, err4 = macs(dyn, "--batch", "4")
    assert four == 4 * one and "warning" not in err1 + err4
    same, err = macs(static, "--batch", "4")
    assert same == one and "--batch 4 ignored" in err and "'x'" in err


def _dynamic_batch(m):
    """``m`` (a measure.testing.tiny_model) with its batch dimension left open ("N")."""
    del m.graph.value_info[:]
    for vi in (m.graph.input[0], m.graph.output[0]):
        dim = vi.type.tensor_type.shape.dim[0]
        dim.Clear()
        dim.dim_param = "N"
    return m


def test_an_unnamed_input_shape_fixes_a_folders_open_models_only(tmp_path, capsys):
    """README: an unnamed --input-shape fixes the models that leave a dimension open; a
    static model of another size keeps its own (it was an error row)."""
    import onnx

    from costmodels.tables import read_table
    from measure.testing import tiny_model

    d = tmp_path / "m"
    d.mkdir()
    onnx.save(tiny_model(size=32), d / "big.onnx")
    onnx.save(tiny_model(size=16), d / "small.onnx")
    onnx.save(_dynamic_batch(tiny_model(size=16)), d / "dyn.onnx")
    out = tmp_path / "f.csv"
    assert main(["estimate", "flops", "--space", f"models:{d}", "--input-shape", "4x3x16x16",
                 "-o", str(out)]) == 0
    t = read_table(out, space=f"models:{d}")
    mm = dict(zip(t.arch_str, t.latency_ms, strict=True))
    assert not t.failed and mm["big"] == pytest.approx(4 * mm["small"])  # 32² vs 16²
    assert mm["dyn"] == pytest.approx(4 * mm["small"])                     # batch 4
    assert main(["info", str(d / "small.onnx"), "--input-shape", "4x3x16x16"]) == 2  # one file
    assert "contradicts" in capsys.readouterr().err
    # in a folder a shape fixes only what a model leaves open: a 32-pixel model with a
    # dynamic batch takes the batch and keeps its size (it was a contradiction error)
    onnx.save(_dynamic_batch(tiny_model(size=32)), d / "dyn32.onnx")
    for shape in ("4x3x16x16", "x=4x3x16x16"):
        assert main(["estimate", "flops", "--space", f"models:{d}", "--input-shape", shape,
                     "-o", str(out)]) == 0
        t = read_table(out, space=f"models:{d}")
        mm = dict(zip(t.arch_str, t.latency_ms, strict=True))
        assert not t.failed and mm["dyn32"] == pytest.approx(4 * mm["big"])


def test_a_folder_model_with_a_fixed_batch_is_named_when_batch_is_given(tmp_path, capsys):
    import onnx
    from badinput import tiny_model

    from costmodels.cli import main

    folder2 = tmp_path / "n"
    folder2.mkdir()
    onnx.save(tiny_model(), folder2 / "fixed.onnx")
    assert main(["estimate", "flops", "--space", f"models:{folder2}", "--batch", "4",
                 "-o", str(tmp_path / "f.csv")]) == 0
    err = capsys.readouterr().err
    assert "fixed.onnx" in err and "keeps its own batch 1" in err
    # an unnamed --input-shape of another batch leaves it too (a probe's folder mixed
    # batches in one CSV without a word); one of its batch says nothing
    from costmodels.spaces import models as M

    for shape, said in (("1x3x16x16", False), ("2x3x16x16", True)):
        M._WARNED_BATCH.clear()
        assert main(["estimate", "flops", "--space", f"models:{folder2}", "--input-shape",
                     shape, "-o", str(tmp_path / "f.csv")]) == 0
        err = capsys.readouterr().err
        assert ("--input-shape 2x3x16x16: fixed.onnx" in err and "keeps its own batch 1" in err
                ) == said, err


def test_outputs_that_are_not_files_are_refused_before_any_work(tmp_path, capsys):
    """A pipe or a device at -o: the atomic rename would replace it (it replaced /dev/null
    when run as root), and reading it to check for a binary file hung on a FIFO."""
    import os

    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    for target in (str(fifo), "-"):
        assert main(["estimate", "flops", "--sample", "2", "-o", target]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error: -o ") and err.count("\n") == 1
    assert fifo.exists() and not fifo.is_file() and not (tmp_path / "-").exists()


def test_an_output_through_a_symlink_writes_its_target_and_keeps_the_link(tmp_path):
    target = tmp_path / "real.csv"
    target.write_text("old\n")
    link = tmp_path / "link.csv"
    link.symlink_to(target)
    assert main(["estimate", "flops", "--sample", "2", "-o", str(link)]) == 0
    assert link.is_symlink() and target.read_text().startswith("arch_index,arch_str")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.csv", "real.csv"]


def test_an_atomic_output_leaves_the_old_file_when_writing_fails(tmp_path):
    from costmodels.tables import atomic_output

    out = tmp_path / "o.csv"
    out.write_text("old\n")
    with pytest.raises(OSError), atomic_output(out) as fh:
        fh.write("half")
        raise OSError(28, "No space left on device")
    assert out.read_text() == "old\n" and [p.name for p in tmp_path.iterdir()] == ["o.csv"]


def test_a_csv_cut_short_is_refused_as_truncated(tmp_path):
    from costmodels.errors import TableError
    from costmodels.tables import iter_csv

    p = tmp_path / "t.csv"
    p.write_text("key,median_ms,p10_ms,p90_ms\nA,0.5,0.4,0.6\nB,0.01")  # cut mid-row
    with pytest.raises(TableError, match=r"t.csv:3: the last line is cut short"):
        iter_csv(str(p))
    p.write_text("key,median_ms\nA,0.5\nB,0.25")  # complete, no line end: fine
    assert len(iter_csv(str(p))[1]) == 2


def test_sigterm_closes_the_store_and_says_what_was_kept(tmp_path):
    """SIGTERM mid-campaign: exit 143, one line, the store closed (no -wal/-shm left) and
    resumable."""
    import signal
    import subprocess
    import sys
    import time

    db = tmp_path / "s.sqlite"
    cmd = [sys.executable, "-m", "costmodels.cli", "measure-space", "--sample", "40", "--db",
           str(db), "-o", str(tmp_path / "t.csv"), "--repeat", "4", "--rounds", "2"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not db.exists() and time.time() < deadline:
        time.sleep(0.1)
    time.sleep(1.0)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    if proc.returncode == 0:
        pytest.skip("the campaign finished before the signal")
    assert proc.returncode == 143, err
    assert err.strip().splitlines()[-1].startswith("terminated (SIGTERM)")
    assert "Traceback" not in err
    assert not (tmp_path / "s.sqlite-wal").exists()


def test_a_closed_pipe_ends_a_table_command_quietly(tmp_path):
    """`costmodels info ... | head -0`: exit 0 and nothing on stderr, as `archs` (rich's own
    handling exited 1)."""
    import subprocess
    import sys

    arch = nb201.SPACE[0]
    cmd = f"{sys.executable} -m costmodels.cli info '{arch}' | head -c 0; exit ${{PIPESTATUS[0]}}"
    res = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and res.stderr == "", res.stderr


def test_a_network_costed_zero_ms_is_noted(tmp_path, capsys):
    """A model whose graph folds to nothing but an Identity costs 0 ms on the roofline: the
    row stays 0, and a note says why and that a runtime still spends its overhead there."""
    import onnx
    from onnx import TensorProto, helper

    from measure.testing import tiny_model

    d = tmp_path / "m"
    d.mkdir()
    onnx.save(tiny_model(), d / "cnn.onnx")
    g = helper.make_graph([helper.make_node("Identity", ["x"], ["y"], name="id")], "g",
                          [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])])
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)]), d / "id.onnx")
    out = tmp_path / "o.csv"
    assert main(["estimate", "roofline:x86_generic", "--space", f"models:{d}",
                 "-o", str(out)]) == 0
    rows = {r["arch_str"]: float(r["latency_ms"]) for r in csv.DictReader(out.open())}
    assert rows["id"] == 0 and rows["cnn"] > 0
    assert "note: 1 network(s) were costed 0 ms (first: id)" in capsys.readouterr().err
    assert main(["estimate", "flops", "--space", f"models:{d}", "-o", str(out)]) == 0
    assert "costed 0 ms" not in capsys.readouterr().err  # a proxy's column is not ms


def test_bad_inputs_of_the_second_probe_are_one_error_line(tmp_path, capsys, monkeypatch):
    """From a bad-input probe: each is exit 2 with one `error:` line naming the file or
    field (they were internal errors, a hang, a wrong alias or a file named like a folder)."""
    import json
    import os
    import re

    import numpy as np
    import onnx
    from onnx import TensorProto

    from costmodels.fusion import load_rules
    from measure.testing import tiny_model

    def refused(argv, *names):
        capsys.readouterr()
        assert main(argv) == 2, argv
        err = capsys.readouterr().err
        assert err.startswith("error:") and "Traceback" not in err, err
        for n in names:
            assert n in err, (n, err)

    rules = json.loads(load_rules("ort").doc)
    rules["layout"]["block"] = 0
    (tmp_path / "block0.json").write_text(json.dumps(rules))
    from analytical.specs import spec_dir

    spec = (spec_dir() / "x86_generic.toml").read_text()
    (tmp_path / "s.toml").write_text(spec.replace('fusion = "ort"', 'fusion = "block0.json"'))
    refused(["estimate", f"roofline:{tmp_path / 's.toml'}", "--sample", "2",
             "-o", str(tmp_path / "o.csv")], "layout.block")
    os.symlink("loop.csv", tmp_path / "loop.csv")
    refused(["estimate", "flops", "--sample", "2", "-o", str(tmp_path / "loop.csv")], "loops")
    refused(["export", "1", "-o", f"{tmp_path / 'newdir'}/"], "names a folder")
    assert not (tmp_path / "newdir").exists()
    refused(["info", str(tmp_path / "none.onnx"), "--input-shape", "1x3x99999999999x99999"],
            "elements")
    # external data that is a pipe (the read blocked forever)
    m = tiny_model()
    w = m.graph.initializer[0]
    w.ClearField("raw_data")
    del w.float_data[:]
    w.data_location = TensorProto.EXTERNAL
    w.external_data.add(key="location", value="fifo.bin")
    d = tmp_path / "ext"
    d.mkdir()
    os.mkfifo(d / "fifo.bin")
    onnx.save(m, d / "m.onnx")
    refused(["info", str(d / "m.onnx")], "fifo.bin", "not a regular file")
    # a constant sub-graph whose folding is minutes of work (a 215-byte file)
    from onnx import helper, numpy_helper

    h = helper
    bomb = h.make_model(h.make_graph(
        [h.make_node("ConstantOfShape", ["s"], ["c"],
                     value=numpy_helper.from_array(np.ones(1, np.float32))),
         h.make_node("MatMul", ["c", "c"], ["c2"]),
         h.make_node("ReduceSum", ["c2"], ["r"], keepdims=0),
         h.make_node("Add", ["x", "r"], ["y"])], "g",
        [h.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [h.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
        [numpy_helper.from_array(np.array([16384, 16384], np.int64), "s")]),
        opset_imports=[h.make_opsetid("", 17)])
    onnx.save(bomb, tmp_path / "bomb.onnx")
    refused(["info", str(tmp_path / "bomb.onnx")], "computes a constant of 16384x16384")
    bomb.graph.initializer[0].CopyFrom(numpy_helper.from_array(np.array([8192, 8192], np.int64),
                                                               "s"))
    onnx.save(bomb, tmp_path / "bomb.onnx")  # each tensor within bounds, the product is not
    refused(["info", str(tmp_path / "bomb.onnx")], "'c2' (MatMul) multiplies constants")
    # integers of hundreds or thousands of digits (OverflowError, ValueError inside)
    (tmp_path / "big.toml").write_text(spec.replace("peak_gflops = ", "peak_gflops = "
                                                    + "9" * 400 + " # ", 1))
    refused(["estimate", f"roofline:{tmp_path / 'big.toml'}", "--sample", "2",
             "-o", str(tmp_path / "o.csv")], "peak_gflops", "400 digits")
    (tmp_path / "idx.csv").write_text("arch_index,arch_str,latency_ms\n" + "9" * 30
                                      + f",{nb201.SPACE[1]},1.0\n")
    refused(["estimate", f"table:{tmp_path / 'idx.csv'}", "--sample", "2",
             "-o", str(tmp_path / "o.csv")], "idx.csv:2", "30 digits")
    refused(["info", "9" * 5000], "index out of range")
    refused(["info", "[" + "9" * 5000 + "]", "--space", "fbnet"], "too long")
    # a spec that is not UTF-8 (a byte offset), a clock of 1e-300 MHz (1e302 ms)
    (tmp_path / "l1.toml").write_bytes(spec.encode() + b"\n# caf\xe9\n")
    refused(["estimate", f"roofline:{tmp_path / 'l1.toml'}", "--sample", "2",
             "-o", str(tmp_path / "o.csv")], "not UTF-8", f"line {spec.count(chr(10)) + 2}")
    fpga = (spec_dir() / "zc706.toml").read_text()
    (tmp_path / "slow.toml").write_text(re.sub(r"(?m)^clock_mhz = .*$", "clock_mhz = 1e-300",
                                               fpga))
    refused(["estimate", f"fpga:{tmp_path / 'slow.toml'}", "--sample", "2",
             "-o", str(tmp_path / "o.csv")], "clock_mhz", "at least")
    # a conv whose kernel_shape is not its weight's (ORT refuses it; MACs were the attribute's)
    k = tiny_model()
    next(a for a in k.graph.node[0].attribute if a.name == "pads").ints[:] = [2, 2, 2, 2]
    k.graph.node[0].attribute.append(onnx.helper.make_attribute("kernel_shape", [5, 5]))
    onnx.save(k, tmp_path / "k.onnx")
    refused(["info", str(tmp_path / "k.onnx")], "kernel_shape 5x5 is not its weight's 3x3")
    # mistakes said before any work: a report folder that is a loop of links (the report
    # was computed first), a misspelt --models-truth (models built first), a space without
    # an isomorphism rule for --representatives space (the --db was created first)
    os.symlink("lp", tmp_path / "lp")
    truth = tmp_path / "truth.csv"
    truth.write_text("arch_index,arch_str,latency_ms\n" + "".join(
        f"{i},{nb201.SPACE[i]},{1 + i / 10}\n" for i in range(1, 6)))
    refused(["compare", "flops", "--truth", str(truth), "-o", str(tmp_path / "lp")], "loop")
    mods = tmp_path / "mods"
    mods.mkdir()
    onnx.save(tiny_model(), mods / "t.onnx")
    refused(["compare", "flops", "--truth", str(truth), "--models", str(mods),
             "--models-truth", "nope", "-o", str(tmp_path / "rr")], "unknown backend 'nope'")
    assert not (tmp_path / "rr").exists()
    refused(["measure-space", "--space", f"models:{mods}", "--representatives", "space",
             "--db", str(tmp_path / "r.sqlite"), "-o", str(tmp_path / "r.csv")],
            "no isomorphism rule")
    assert not (tmp_path / "r.sqlite").exists()
    # an anchor file that is a pipe (the measurement blocked on it), refused untouched
    os.mkfifo(tmp_path / "anchors")
    monkeypatch.setenv("COSTMODELS_ANCHORS", str(tmp_path / "anchors"))
    refused(["measure", "1", "--repeat", "2", "--rounds", "2", "--min-round-s", "0"],
            "not a regular file")
    assert not (tmp_path / "anchors.active").exists()
    # measure-quality reads tables with the shared reader: a repeated row is refused
    t = tmp_path / "t.csv"
    t.write_text("arch_index,arch_str,latency_ms\n,a,1.0\n,a,3.0\n,b,2.0\n")
    refused(["measure-quality", str(t), str(t)], "appears twice; measure-quality compares one figure")
    # a folder holding x.onnx and x.onnx.onnx: two models, not one listed twice
    f = tmp_path / "dbl"
    f.mkdir()
    onnx.save(tiny_model(size=8), f / "x.onnx")
    onnx.save(tiny_model(size=16), f / "x.onnx.onnx")
    assert main(["estimate", "flops", "--space", f"models:{f}", "-o", str(tmp_path / "d.csv")]) == 0
    rows = (tmp_path / "d.csv").read_text().splitlines()[1:]
    assert [r.split(",")[1] for r in rows] == ["x", "x.onnx"] and rows[0][-5:] != rows[1][-5:]


def test_input_shape_on_a_generated_space_is_noted(tmp_path, capsys):
    """--input-shape does not size NB201 networks: a note says so (it was ignored)."""
    assert main(["estimate", "flops", "--sample", "2", "--input-shape", "1x3x64x64",
                 "-o", str(tmp_path / "o.csv")]) == 0
    assert "note: --input-shape applies to ONNX models" in capsys.readouterr().err


def test_sample_with_archs_samples_the_listed_ones(tmp_path, capsys):
    """--sample N with --archs FILE: N of the listed architectures (it used all of them
    without a word); more than listed is an error."""
    listing = tmp_path / "a.csv"
    assert main(["archs", "--sample", "6", "--seed", "1"]) == 0
    listing.write_text(capsys.readouterr().out)
    out = tmp_path / "o.csv"
    assert main(["estimate", "flops", "--archs", str(listing), "--sample", "3",
                 "-o", str(out)]) == 0
    got = [r["arch_str"] for r in csv.DictReader(out.open())]
    listed = [r["arch_str"] for r in csv.DictReader(listing.open())]
    assert len(got) == 3 and set(got) <= set(listed)
    assert main(["estimate", "flops", "--archs", str(listing), "--sample", "7",
                 "-o", str(out)]) == 2
    assert "lists 6 architectures" in capsys.readouterr().err


def test_seed_without_sample_is_noted(capsys):
    """--seed without --sample changes nothing: said in a note (it was ignored silently)."""
    assert main(["archs", "--seed", "3", "--sample", "2"]) == 0
    assert "note: --seed" not in capsys.readouterr().err
    assert main(["archs", "--seed", "3"]) == 0
    assert "note: --seed 3 seeds --sample only" in capsys.readouterr().err


def test_closed_or_full_standard_streams(tmp_path):
    """Streams the CLI cannot write: a usage error with stderr closed exits 2 (an
    AttributeError had made it 1); `--help` or a table to a full disk is one error line
    naming standard output (help exited 0 having written nothing; a table named the
    input store); a closed stderr pipe silences compare's progress lines, and the report is
    still written (it had exited 1 with none)."""
    import subprocess
    import sys

    from test_harness_compare import make_truth

    def sh(cmd):
        return subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, timeout=300)

    cli = f"{sys.executable} -m costmodels.cli"
    assert sh(f"{cli} estimate 2>&-").returncode == 2
    for cmd in (f"{cli} --help", f"{cli} archs --sample 3"):
        res = sh(f"{cmd} > /dev/full")
        assert res.returncode == 2 and res.stderr.startswith("error: standard output: No space"), \
            res.stderr
    truth = make_truth(tmp_path / "nb201_fake.csv", n=30)
    out = tmp_path / "rep"
    res = sh(f"{cli} compare --truth {truth.source} flops params -o {out} 2>&1 | head -c 0; "
             "exit ${PIPESTATUS[0]}")
    assert res.returncode == 0 and (out / "report.md").is_file()


def test_outputs_in_missing_folders_and_bad_anchor_files(tmp_path, monkeypatch, capsys):
    """An output in a folder that does not exist yet is created (select and lut export had
    failed after their work, naming a hidden temporary file); a measure-space refused over
    its anchor file creates no store."""
    from costmodels.tables import atomic_output

    with atomic_output(tmp_path / "a" / "b" / "x.csv") as fh:
        fh.write("x\n")
    assert (tmp_path / "a" / "b" / "x.csv").read_text() == "x\n"
    (tmp_path / "f").write_text("a file")
    with pytest.raises(OSError) as exc, atomic_output(tmp_path / "f" / "x.csv") as fh:
        fh.write("x")
    assert exc.value.filename == str(tmp_path / "f" / "x.csv")
    monkeypatch.setenv("COSTMODELS_ANCHORS", str(tmp_path))  # a folder
    db = tmp_path / "s.sqlite"
    assert main(["measure-space", "--sample", "2", "--db", str(db), "-o",
                 str(tmp_path / "t.csv"), "--repeat", "2", "--rounds", "2"]) == 2
    assert "anchor file is a folder" in capsys.readouterr().err and not db.exists()


def test_export_overwrites_its_own_model_not_a_database(tmp_path, capsys):
    """`export -o x.onnx` twice: the second overwrites the first (it was refused as "a
    binary file"); a database, a table or a model it did not write at -o is refused and left
    byte-identical, and so is a user's model under one of gen-models' names."""
    import onnx

    from measure.testing import tiny_model

    out = tmp_path / "x.onnx"
    assert main(["export", "1462", "-o", str(out)]) == 0
    assert main(["export", "1462", "-o", str(out)]) == 0
    mine, table = tmp_path / "mine.onnx", tmp_path / "t.csv"
    onnx.save(tiny_model(), mine)
    table.write_text("arch_index,latency_ms\n1,2.0\n")
    (tmp_path / "zoo").mkdir()
    theirs = tmp_path / "zoo" / "resnet_w16_r32.onnx"
    onnx.save(tiny_model(), theirs)
    for path, argv in ((mine, ["export", "1462", "-o", str(mine)]),
                       (table, ["export", "1462", "-o", str(table)]),
                       (theirs, ["gen-models", "-o", str(tmp_path / "zoo")])):
        before = path.read_bytes()
        capsys.readouterr()
        assert main(argv) == 2
        assert "is not a model this command wrote" in capsys.readouterr().err
        assert path.read_bytes() == before
    assert sorted(p.name for p in (tmp_path / "zoo").iterdir()) == ["resnet_w16_r32.onnx"]
    db = tmp_path / "d.sqlite"
    db.write_bytes(b"SQLite format 3\x00" + b"\x01" * 100)
    assert main(["export", "1462", "-o", str(db)]) == 2
    assert "is not a model this command wrote" in capsys.readouterr().err
    assert db.read_bytes() == b"SQLite format 3\x00" + b"\x01" * 100


def test_a_table_is_not_written_over_a_json_document(tmp_path, capsys):
    """`estimate -o DIR/manifest.json` wrote a CSV over a fitted model's manifest: a JSON
    document at a table's -o is refused and left byte-identical; a table is overwritten."""
    manifest = tmp_path / "manifest.json"
    manifest.write_text('\n  {"schema": "costmodels.model"}\n')
    argv = ["estimate", "flops", "--space", "nb201", "--sample", "2", "-o"]
    assert main([*argv, str(manifest)]) == 2
    assert "holds a JSON document" in capsys.readouterr().err
    assert manifest.read_text() == '\n  {"schema": "costmodels.model"}\n'
    out = tmp_path / "e.csv"
    assert main([*argv, str(out)]) == 0 and main([*argv, str(out)]) == 0


@pytest.mark.parametrize("argv", [
    ["fit", "gbdt", "--train", "t.csv", "--device", "x\x1b[2J", "-o", "m"],
    ["compare", "--truth", "t.csv", "flops", "--fingerprint", "a\nb", "-o", "r"]])
def test_free_text_flags_refuse_control_characters(argv, tmp_path, capsys, monkeypatch):
    """Text a command prints back (the manifest's device, the report's machine line) holds
    no newline or terminal escape: refused by the argument parser, before any work."""
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    assert "holds control characters" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_a_plot_is_not_written_over_a_file_that_is_no_png(tmp_path, capsys):
    """fewshot -o X.csv writes X.png beside it: a X.png holding something else is refused and
    left as it is (it was replaced by the plot)."""
    precious = tmp_path / "curve.png"
    precious.write_text("precious")
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    assert main(["fewshot", "--target", str(root / "datasets/nb201/xeon-2c-ort-cifar10.csv"),
                 "--model", "flops", "--samples", "5", "--seeds", "1",
                 "-o", str(tmp_path / "curve.csv")]) == 2
    assert "is not a PNG image" in capsys.readouterr().err
    assert precious.read_text() == "precious" and not (tmp_path / "curve.csv").exists()


def test_a_plot_is_written_over_its_own_figure_only(tmp_path, capsys):
    """fewshot -o X.csv names X.png itself: an image there that costmodels did not write
    (a PNG of the user's) is refused, byte-identical; its own figure is replaced."""
    from pathlib import Path

    from test_harness_cli import _user_plot

    root = Path(__file__).resolve().parents[1]
    argv = ["fewshot", "--target", str(root / "datasets/nb201/xeon-2c-ort-cifar10.csv"),
            "--model", "flops", "--samples", "5", "--seeds", "1",
            "-o", str(tmp_path / "curve.csv")]
    before = _user_plot(tmp_path / "curve.png")
    assert main(argv) == 2
    assert "an image costmodels did not write" in capsys.readouterr().err
    assert (tmp_path / "curve.png").read_bytes() == before
    assert not (tmp_path / "curve.csv").exists()
    (tmp_path / "curve.png").unlink()
    assert main(argv) == 0 and main(argv) == 0  # the second run replaces its own figure


def test_fewshot_refuses_sources_a_model_does_not_use(tmp_path, capsys):
    """`fewshot --model gbdt --source T` ignored the sources (fit refuses the same)."""
    from pathlib import Path

    table = str(Path(__file__).resolve().parents[1] / "datasets/nb201/xeon-2c-ort-cifar10.csv")
    assert main(["fewshot", "--target", table, "--model", "gbdt", "--source", table,
                 "--samples", "5", "--seeds", "1", "-o", str(tmp_path / "c.csv")]) == 2
    assert "--source is for --model fewshot or transfer" in capsys.readouterr().err


def test_a_huge_arch_index_and_an_empty_roofline_spec_are_user_errors(tmp_path, capsys):
    """A 5,000-digit arch_index was an internal error (int() refuses that many digits);
    `roofline:` with nothing after the colon fell back to the default spec silently."""
    archs = tmp_path / "a.csv"
    archs.write_text("arch_index\n" + "9" * 5000 + "\n")
    assert main(["archs", "--archs", str(archs)]) == 2
    assert "is 5000 digits long" in capsys.readouterr().err
    assert main(["estimate", "roofline:", "--space", "nb201", "--sample", "2",
                 "-o", str(tmp_path / "e.csv")]) == 2
    assert "names no spec after the colon" in capsys.readouterr().err
