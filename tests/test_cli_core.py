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
        assert "(default: False)" not in text, p.prog
    import re

    for p in parsers:  # an example continued with a lone backslash in the source is joined
        joined = [ln for ln in (p.epilog or "").splitlines() if re.search(r"\S {4,}--?\w", ln)]
        assert not joined, (p.prog, joined)
    helps = " ".join(" ".join(p.format_help().split()) for p in parsers)
    assert "(default: fewshot)" in helps and "(default: 5)" in helps
