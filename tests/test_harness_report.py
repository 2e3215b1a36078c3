"""costmodels.harness.report: files written, table contents, recommendation, figures."""

from __future__ import annotations

import csv
import io

import numpy as np
from rich.console import Console
from test_harness_compare import AlwaysFails, OddFails, make_truth

from costmodels.harness import report
from costmodels.harness.compare import compare


def _result(tmp_path, **kw):
    truth = make_truth(tmp_path / "nb201_fake.csv", n=60)
    return truth, compare(truth, ["flops", "params", OddFails(), AlwaysFails()], **kw)


def test_report_files_written(tmp_path):
    truth, res = _result(tmp_path, train_samples=15)
    curve = tmp_path / "curve.csv"
    with open(curve, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(["model", "k", "seed", "spearman", "kendall"])
        for model in ("gbdt", "gnn"):
            for k in (10, 20, 50):
                for seed in range(3):
                    w.writerow([model, k, seed, 0.5 + k / 200 + seed / 100, 0.4 + k / 200])
    files = report.write_report(res, tmp_path / "out", fingerprint="test CPU, 2 cores",
                                curve_csvs=[curve], truth_table=truth)
    for key in ("report", "metrics", "predictions", "scatter", "rank_correlation",
                "sample_efficiency"):
        assert files[key].exists() and files[key].stat().st_size > 0, key
    for png in ("scatter", "rank_correlation", "sample_efficiency"):
        assert files[png].read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    md = files["report"].read_text()
    assert "test CPU, 2 cores" in md and "nb201_fake.csv" in md
    assert "## Which estimator to use" in md and "![" in md
    assert "odd-fails" in md and "always-fails" in md and "first error" in md
    rows = list(csv.DictReader(open(files["metrics"])))
    assert [r["backend"] for r in rows][0].startswith("flops")  # ranked by Kendall
    by_name = {r["backend"]: r for r in rows}
    assert by_name["always-fails"]["n_covered"] == "0"
    assert 0 < float(by_name["odd-fails"]["coverage"]) < 1
    preds = list(csv.DictReader(open(files["predictions"])))
    assert len(preds) == len(res.test_rows)


def test_terminal_table_shows_coverage_and_errors(tmp_path):
    _, res = _result(tmp_path)
    buf = io.StringIO()
    report.print_table(res, Console(file=buf, width=200))
    text = buf.getvalue()
    assert "0/60" in text and "device unreachable" in text and "⚠" in text
    assert "—†" in text  # uncalibrated proxies: no absolute errors shown


def test_recommendation_follows_the_numbers(tmp_path):
    _, res = _result(tmp_path, train_samples=15)
    text = report.recommend(res)
    best = max((r for r in res.results if r.coverage >= 0.99), key=lambda r: r.metric("kendall"))
    assert f"**{best.name}** ranks networks best" in text
    assert "odd-fails covered only part" in text
    # flip the numbers: the recommendation flips with them
    for r in res.results:
        if r.spec == "params":
            r.metrics["kendall"] = 0.999
    assert "**params (fit on 15)** ranks networks best" in report.recommend(res)


def test_log_scale_factor():
    t = np.array([1.0, 2.0, 4.0])
    assert report.log_scale_factor(t, t / 5) == np.float64(5.0).item() or \
        abs(report.log_scale_factor(t, t / 5) - 5.0) < 1e-12


def test_curve_csv_as_fewshot_writes_it(tmp_path):
    """One row per k, averaged over seeds (costmodels fewshot's format)."""
    path = tmp_path / "curve.csv"
    path.write_text("model,target,select,k,seeds,spearman,spearman_std,kendall,mape,acc10\n"
                    "gbdt,dev,random,10,5,0.80,0.05,0.6,20,0.3\n"
                    "gbdt,dev,random,100,5,0.90,0.01,0.7,10,0.6\n"
                    "gbdt,dev,diverse,10,5,0.85,0.02,0.65,18,0.35\n")
    curves = report.read_curve(path)
    assert set(curves) == {"gbdt / random", "gbdt / diverse"}
    assert curves["gbdt / random"][10]["spearman"] == (0.80, 0.05, 5)
    assert curves["gbdt / random"][100]["kendall"][2] == 5
    png = report.plot_curves([path], tmp_path / "se.png", device="dev")
    assert png.read_bytes()[:4] == b"\x89PNG"


def test_curve_csv_needs_k_and_spearman(tmp_path):
    import pytest

    path = tmp_path / "bad.csv"
    path.write_text("k,seed\n10,0\n")
    with pytest.raises(ValueError, match="k and spearman"):
        report.read_curve(path)


def test_report_with_generated_models_section(tmp_path):
    from costmodels.harness.compare import compare_models
    from costmodels.harness.models import generate_models

    truth, res = _result(tmp_path, train_samples=15)
    generate_models(tmp_path / "zoo", names=["mobilenet_w050_r96", "resnet_w16_r32",
                                             "attention_d64_t64"])
    models = compare_models(tmp_path / "zoo", res.results, truth=_MacsTruth())
    files = report.write_report(res, tmp_path / "out", models=models)
    md = files["report"].read_text()
    assert "## A folder of ONNX models" in md and "resnet_w16_r32" in md
    assert "Off the space, **" in md
    assert files["models"].read_bytes()[:4] == b"\x89PNG"


class _MacsTruth:
    """A stand-in for measure:ort: 1 ms per 10 MMACs plus 0.1 ms."""

    name = "fake-measure"

    def estimate(self, net):
        from costmodels.interface import Estimate

        return Estimate(net.macs * 1e-7 + 0.1)

    def estimate_many(self, nets):
        return [self.estimate(n) for n in nets]


def test_recommendation_warns_on_few_cells_and_leaves_in_sample_models_out(tmp_path):
    """45 scored cells: no caution; 4: the advice says it is a first look. A backend whose
    model was fitted on the scored cells (a saved model scored on its own training table)
    is named and left out of the advice."""
    _, res = _result(tmp_path, train_samples=15)
    assert "cells were scored" not in report.recommend(res)
    best = next(r for r in res.results if r.spec == "flops")
    params = next(r for r in res.results if r.spec == "params")
    params.metrics["kendall"] = 0.999
    params.in_sample = 10
    text = report.recommend(res)
    assert "**params" not in text.split("ranks networks best")[0]
    assert "in-sample" in text and params.name in text
    best.metrics["n"] = 4.0
    for r in res.results:
        if r is not params and r.metrics:
            r.metrics["n"] = 4.0
    assert "**Only 4 cells were scored**" in report.recommend(res)


def test_terminal_names_truth_rows_that_could_not_be_built(tmp_path):
    _, res = _result(tmp_path)
    res.build_errors = {"resnet_wide": "input 'x' contradicts --input-shape"}
    buf = io.StringIO()
    report.print_table(res, Console(file=buf, width=200))
    assert "1 truth row(s) could not be built" in buf.getvalue()
    assert "resnet_wide" in buf.getvalue()


def test_advice_on_the_free_proxy_never_contradicts_itself(tmp_path):
    """A backend with a build cost that does not beat the free proxy is named as not worth
    it, a free one as no better, and the advice does not also say that every other
    estimator beats the proxy."""
    truth = make_truth(tmp_path / "nb201_fake.csv", n=60)
    res = compare(truth, ["flops", "eyeriss", "fpga"])
    flops = next(r for r in res.results if r.spec == "flops")
    eyeriss = next(r for r in res.results if r.spec == "eyeriss")
    fpga = next(r for r in res.results if r.spec == "fpga")
    eyeriss.metrics["kendall"] = flops.metric("kendall") - 0.1
    eyeriss.build_measurements = 50
    fpga.metrics["kendall"] = flops.metric("kendall") - 0.2
    text = report.recommend(res)
    assert "eyeriss, which is not worth its build cost" in text
    assert "fpga ranks no better than the free proxy" in text
    assert "Every other estimator beats" not in text
    # once fpga is recommended for absolute latency, it is not also dismissed below
    fpga.metrics.update(mape=5.0, acc10=0.95)
    text = report.recommend(res)
    assert "**fpga** is the most accurate" in text and "fpga ranks no better" not in text
    assert "Every other estimator beats" not in text


def test_in_sample_needs_the_same_cell_dataset_and_batch():
    from types import SimpleNamespace

    from costmodels.harness.compare import _in_sample
    from costmodels.spaces import nb201

    nets = [nb201.build_network(i, "cifar10") for i in (1, 2, 3)]
    seen = {"archs": [nb201.SPACE[1], nb201.SPACE[2]], "datasets": ["cifar10"],
            "batches": [1]}
    assert _in_sample(SimpleNamespace(trained_on_=seen), nets) == 2
    other = [nb201.build_network(i, "cifar100") for i in (1, 2)]
    assert _in_sample(SimpleNamespace(trained_on_=seen), other) == 0
    assert _in_sample(SimpleNamespace(), nets) == 0


def test_a_model_of_another_device_is_out_of_sample():
    from types import SimpleNamespace

    from costmodels.harness.compare import _in_sample
    from costmodels.spaces import nb201

    nets = [nb201.build_network(i, "cifar10") for i in (1, 2)]
    seen = {"archs": [nb201.SPACE[1], nb201.SPACE[2]], "datasets": ["cifar10"], "batches": [1]}
    model = SimpleNamespace(trained_on_=seen, device_="xeon-2c")
    assert _in_sample(model, nets, "xeon-2c") == 2
    assert _in_sample(model, nets, "epyc-2c") == 0


def test_rows_cut_from_the_truth_under_another_name_are_in_sample():
    """A model fitted on rows copied out of the truth table (another file name, no sidecar)
    is told by its training latencies: equal to every digit on those cells."""
    from types import SimpleNamespace

    import numpy as np

    from costmodels.harness.compare import _in_sample
    from costmodels.spaces import nb201

    nets = [nb201.build_network(i, "cifar10") for i in (1, 2, 3)]
    seen = {"archs": [nb201.SPACE[1], nb201.SPACE[2]], "datasets": ["cifar10"], "batches": [1],
            "latency_ms": [1.2345678, 2.5]}
    model = SimpleNamespace(trained_on_=seen, device_="train10")
    assert _in_sample(model, nets, "truth", "", np.array([1.2345678, 2.5, 3.0])) == 2
    assert _in_sample(model, nets, "truth", "", np.array([1.2345679, 2.6, 3.0])) == 0
    # the same rows saved with fewer digits: every shared network within 0.1%
    assert _in_sample(model, nets, "truth", "", np.array([1.2346, 2.5, 3.0])) == 2
    assert _in_sample(model, nets, "truth") == 0  # no truth figures given: names decide


def test_advice_on_one_cell_and_on_a_tie_with_the_proxy(tmp_path):
    truth = make_truth(tmp_path / "nb201_fake.csv", n=60)
    res = compare(truth, ["flops", "eyeriss"])
    for r in res.results:
        r.n_covered, r.metrics = 1, {}
    assert "Only 1 cell was scored" in report.recommend(res)
    res = compare(truth, ["eyeriss", "flops"])
    for r in res.results:
        r.metrics["kendall"] = 0.5
    text = report.recommend(res)
    best = text.split("**")[1]
    assert f"{best} ranks no better" not in text


def test_tables_of_one_machine_under_two_names_are_one_device(tmp_path):
    """Two tables measured on one machine (sidecars say so) are one device whatever their
    file names; without sidecars the names decide; sidecars of two machines, out of sample."""
    import json
    from types import SimpleNamespace

    from costmodels.harness.compare import _in_sample
    from costmodels.spaces import nb201
    from costmodels.tables import sidecar_device

    nets = [nb201.build_network(i, "cifar10") for i in (1, 2)]
    seen = {"archs": [nb201.SPACE[1], nb201.SPACE[2]], "datasets": ["cifar10"], "batches": [1],
            "measured_on": "epyc-2c"}
    model = SimpleNamespace(trained_on_=seen, device_="f_truth")
    (tmp_path / "f_truth100.fingerprint.json").write_text(json.dumps({"device": "epyc-2c"}))
    here = sidecar_device(tmp_path / "f_truth100.csv")
    assert here == "epyc-2c"
    assert _in_sample(model, nets, "f_truth100", here) == 2
    assert _in_sample(model, nets, "f_truth100", "") == 0      # no sidecar: names differ
    assert _in_sample(model, nets, "f_truth100", "xeon-2c") == 0
    (tmp_path / "bad.fingerprint.json").write_text("{ not json")
    assert sidecar_device(tmp_path / "bad.csv") == "" == sidecar_device(tmp_path / "none.csv")


def test_energy_metrics_reach_report_md(tmp_path):
    from costmodels.spaces import nb201
    from costmodels.tables import read_table, write_table

    idx = nb201.SPACE.sample(12, 1)
    nets = [nb201.build_network(i) for i in idx]
    write_table(tmp_path / "nb201_e.csv", idx, [nb201.SPACE[i] for i in idx],
                [n.macs * 1e-7 for n in nets], [n.macs * 2e-9 + 0.01 for n in nets])
    res = compare(read_table(tmp_path / "nb201_e.csv"), ["eyeriss", "flops"])
    report.write_report(res, tmp_path / "r")
    text = (tmp_path / "r" / "report.md").read_text()
    assert "Energy (the truth table has `energy_mj`" in text
    energy = text[text.index("Energy (the truth"):]
    assert "| eyeriss |" in energy and "| flops |" not in energy.split("\n\n")[1]


def test_advice_names_only_backends_that_covered_every_cell(tmp_path):
    """A table missing one of 100 cells (coverage 0.99) was recommended as the economical and
    most accurate choice; rank() puts it after every full one, and so does the advice now."""
    from costmodels.tables import write_table

    truth = make_truth(tmp_path / "nb201_fake.csv", n=100)
    near = tmp_path / "near.csv"  # another device close to the truth, missing one cell
    write_table(near, truth.arch_index[1:], truth.arch_str[1:], truth.latency_ms[1:] * 1.01)
    text = report.recommend(compare(truth, ["flops", str(near)]))
    assert "**near.csv**" not in text and "near.csv covered only part" in text
    assert "**flops** ranks networks best" in text


def test_advice_on_a_constant_truth_says_so(tmp_path):
    from costmodels.tables import write_table

    truth = make_truth(tmp_path / "nb201_fake.csv", n=20)
    flat = tmp_path / "flat.csv"
    write_table(flat, truth.arch_index, truth.arch_str, np.full(20, 5.0))
    from costmodels.tables import read_table

    text = report.recommend(compare(read_table(flat), ["flops", "eyeriss"]))
    assert text.startswith("Every scored cell has the same measured latency (5 ms)")


def test_report_carries_the_truths_dataset_caveat_and_a_fitted_proxy_is_not_free(tmp_path):
    import json

    from costmodels.harness import run

    truth = make_truth(tmp_path / "nb201_fake.csv", n=60)
    (tmp_path / "nb201_fake.fingerprint.json").write_text(
        json.dumps({"device": "x", "dataset": "ImageNet16-120", "batch": 1}))
    run(truth.source, ["flops", "eyeriss"], tmp_path / "rep", dataset="cifar10",
        train_samples=30, console=Console(file=io.StringIO()))
    text = (tmp_path / "rep" / "report.md").read_text()
    assert "**Caveat:**" in text and "dataset ImageNet16-120 (here cifar10)" in text
    assert "free proxy flops (fit on" not in text and "the proxy flops (fit on 30)" in text
