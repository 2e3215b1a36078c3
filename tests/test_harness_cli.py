"""`costmodels compare` and `costmodels gen-models` end to end, including bad truth tables."""

from __future__ import annotations

import csv

import pytest
from test_harness_compare import make_truth

from costmodels.cli import main
from costmodels.spaces import nb201

A0, A1 = nb201.SPACE[0], nb201.SPACE[1]


def _write(path, header, rows):
    with open(path, "w", newline="") as fh:
        w = csv.writer(fh)
        w.writerow(header)
        w.writerows(rows)
    return str(path)


def test_compare_writes_report(tmp_path, capsys):
    truth = make_truth(tmp_path / "nb201_fake.csv", n=50)
    out = tmp_path / "report"
    rc = main(["compare", "--truth", truth.source, "flops", "params", "--train-samples", "10",
               "--fingerprint", "fake machine", "-o", str(out)])
    assert rc == 0
    for name in ("report.md", "metrics.csv", "predictions.csv", "scatter.png",
                 "rank_correlation.png"):
        assert (out / name).stat().st_size > 0, name
    text = capsys.readouterr().out
    assert "flops (fit on 10)" in text and "40/40" in text
    assert "fake machine" in (out / "report.md").read_text()


def test_compare_partial_coverage_table_backend(tmp_path, capsys):
    truth = make_truth(tmp_path / "nb201_fake.csv", n=40)
    part = _write(tmp_path / "part.csv", ["arch_index", "arch_str", "latency_ms"],
                  [[int(truth.arch_index[i]), truth.arch_str[i], 1.0 + i] for i in range(10)])
    rc = main(["compare", "--truth", truth.source, part, "flops", "-o", str(tmp_path / "r")])
    assert rc == 0
    out = capsys.readouterr().out
    assert "10/40" in out and "first error" in out
    rows = {r["backend"]: r for r in csv.DictReader(open(tmp_path / "r" / "metrics.csv"))}
    assert rows["part.csv"]["n_covered"] == "10"


@pytest.mark.parametrize("header,rows,expect", [
    (["arch_index", "latency_ms"], [[0, 1.0]], "missing column(s) arch_str"),
    (["arch_index", "arch_str", "latency_ms"], [[0, A0, 1.0], [0, A0, 2.0]], "appears twice"),
    (["arch_index", "arch_str", "latency_ms"], [[0, A0, "nan"], [1, A1, 1.0]], "finite"),
    (["arch_index", "arch_str", "latency_ms"], [[0, A0, -1.0], [1, A1, 1.0]], "> 0"),
    (["arch_index", "arch_str", "latency_ms"], [[0, A0, 0], [1, A1, 1.0]], "> 0"),
    (["arch_index", "arch_str", "latency_ms"], [[0, "", 1.0]], "arch_str"),
    (["arch_index", "arch_str", "latency_ms"], [[1, A0, 1.0]], "does not match"),
    (["arch_index", "arch_str", "latency_ms"], [], "no rows"),
])
def test_bad_truth_table_is_a_clear_error(tmp_path, capsys, header, rows, expect):
    path = _write(tmp_path / "truth.csv", header, rows)
    rc = main(["compare", "--truth", path, "flops", "-o", str(tmp_path / "r")])
    err = capsys.readouterr().err
    assert rc == 2
    assert "truth.csv" in err and expect in err
    assert not (tmp_path / "r").exists()


def test_duplicates_mean_policy(tmp_path, capsys):
    rows = [[i, nb201.SPACE[i], 1.0 + i] for i in range(6)] + [[0, A0, 3.0]]
    path = _write(tmp_path / "truth.csv", ["arch_index", "arch_str", "latency_ms"], rows)
    rc = main(["compare", "--truth", path, "flops", "--duplicates", "mean",
               "-o", str(tmp_path / "r")])
    assert rc == 0
    preds = list(csv.DictReader(open(tmp_path / "r" / "predictions.csv")))
    assert len(preds) == 6 and float(preds[0]["latency_ms"]) == pytest.approx(2.0)


def test_unknown_backend_is_a_clear_error(tmp_path, capsys):
    truth = make_truth(tmp_path / "nb201_fake.csv", n=10)
    rc = main(["compare", "--truth", truth.source, "nosuch", "-o", str(tmp_path / "r")])
    assert rc == 2 and "unknown backend 'nosuch'" in capsys.readouterr().err


def test_a_missing_table_backend_or_prior_is_a_clear_error(tmp_path, capsys):
    """A table given as a backend that does not exist was a 0-coverage row and exit 0."""
    truth = make_truth(tmp_path / "nb201_fake.csv", n=10)
    for extra in (["nope.csv"], ["hybrid", "--prior", "table:nope.csv", "--train-samples", "5"]):
        rc = main(["compare", "--truth", truth.source, "flops", *extra,
                   "-o", str(tmp_path / "r")])
        assert rc == 2 and "nope.csv: cannot read latency table" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()


def test_a_missing_backend_file_or_spec_is_a_clear_error(tmp_path, capsys):
    """lut:/gbdt: paths that are not there and a spec that does not load were a 0-coverage
    row and exit 0 (or a report and exit 1), where `fit` refused the same input."""
    truth = make_truth(tmp_path / "nb201_fake.csv", n=10)
    for extra, said in ((["lut:nope.sqlite"], "nope.sqlite does not exist"),
                        ([f"gbdt:{tmp_path / 'nodir'}"], "nodir does not exist"),
                        (["hybrid", "--prior", "roofline:nosuchspec", "--train-samples", "5"],
                         "unknown spec 'nosuchspec'")):
        rc = main(["compare", "--truth", truth.source, "flops", *extra,
                   "-o", str(tmp_path / "r")])
        err = capsys.readouterr().err
        assert rc == 2 and err.startswith("error: backend") and said in err, err
    assert not (tmp_path / "r").exists()


def test_gen_models(tmp_path):
    from costmodels.harness.models import ZOO
    from costmodels.onnx_import import import_onnx

    assert main(["gen-models", "-o", str(tmp_path / "zoo")]) == 0
    paths = sorted((tmp_path / "zoo").glob("*.onnx"))
    assert len(paths) == len(ZOO)
    ops = set()
    for p in paths:
        net = import_onnx(str(p))
        assert net.macs > 0
        ops |= {layer.op for layer in net.layers}
    assert {"Conv", "HardSwish", "MatMul", "Softmax", "Transpose", "Reshape",
            "LayerNormalization", "Add"} <= ops
    assert any(layer.groups > 1 for p in paths for layer in import_onnx(str(p)).layers)


def test_generated_models_run_in_onnxruntime(tmp_path):
    import numpy as np
    import onnxruntime as ort

    from costmodels.harness.models import generate_models

    for p in generate_models(tmp_path, names=["mobilenet_w050_r96", "attention_d64_t64"]):
        sess = ort.InferenceSession(str(p), providers=["CPUExecutionProvider"])
        x = np.random.default_rng(0).random(sess.get_inputs()[0].shape, dtype=np.float32)
        (y,) = sess.run(None, {"input": x})
        assert y.shape == (1, 10) and np.isfinite(y).all()


def test_a_failed_report_leaves_the_folder_as_it_was(tmp_path, capsys, monkeypatch):
    """The report's files are written into a staging folder and moved in whole: a run that
    fails while writing (a full disk, Ctrl-C) leaves the older run's files, byte-identical,
    and no new file beside them (it had left a new metrics.csv beside the old report.md);
    a finished run replaces them all, and a report file it does not write (an older run's
    models.png here) is not left behind."""
    from costmodels.harness import report

    truth = make_truth(tmp_path / "nb201_fake.csv", n=30)
    out = tmp_path / "rep"
    assert main(["compare", "--truth", truth.source, "flops", "-o", str(out)]) == 0
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert "predictions.csv" in before

    def full(*_a, **_k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(report, "plot_scatter", full)
    assert main(["compare", "--truth", truth.source, "flops", "params", "-o", str(out)]) == 2
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    monkeypatch.undo()
    (out / "models.png").write_bytes((out / "scatter.png").read_bytes())  # an older run's
    assert main(["compare", "--truth", truth.source, "flops", "params", "-o", str(out)]) == 0
    assert not (out / "models.png").exists() and (out / "predictions.csv").is_file()
    assert "params" in (out / "report.md").read_text()


def _user_plot(path):
    """A PNG as a user's own matplotlib script saves it (Software: Matplotlib ...)."""
    from costmodels.harness.report import pyplot

    plt = pyplot()
    fig, ax = plt.subplots(figsize=(2, 2))
    ax.plot([0, 1], [1, 0])
    fig.savefig(path)
    plt.close(fig)
    return path.read_bytes()


@pytest.mark.parametrize("name", ["scatter.png", "metrics.csv", "report.md"])
def test_compare_leaves_a_folder_of_someone_elses_files_alone(tmp_path, capsys, name):
    """-o DIR holding a file of the user's under a name the report writes (their own plot,
    table or notes) is refused, all of it byte-identical; other files there do not matter."""
    truth = make_truth(tmp_path / "nb201_fake.csv", n=30)
    out = tmp_path / "mine"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    if name.endswith(".png"):
        _user_plot(out / name)
    else:
        (out / name).write_text("backend,score\nmine,1\n" if name.endswith(".csv")
                                else "# my notes\n")
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert main(["compare", "--truth", truth.source, "flops", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: -o {out}: holds {name}") and "nothing was written" in err
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    (out / name).unlink()
    assert main(["compare", "--truth", truth.source, "flops", "-o", str(out)]) == 0
    assert (out / "notes.txt").read_text() == "mine"


def test_compare_replaces_a_report_written_before_the_mark(tmp_path, capsys):
    """A report folder of an earlier version (report.md without the mark line, figures
    saved as plain Matplotlib PNGs) is still ours: replaced, not refused."""
    from costmodels.harness.report import REPORT_MARK

    truth = make_truth(tmp_path / "nb201_fake.csv", n=30)
    out = tmp_path / "rep"
    assert main(["compare", "--truth", truth.source, "flops", "-o", str(out)]) == 0
    text = (out / "report.md").read_text()
    assert text.rstrip().endswith(REPORT_MARK)
    (out / "report.md").write_text(text.replace(REPORT_MARK, ""))
    _user_plot(out / "scatter.png")
    assert main(["compare", "--truth", truth.source, "flops", "-o", str(out)]) == 0
    (out / "report.md").write_text("# my notes\n")  # not a report: the plain figure is not ours
    _user_plot(out / "scatter.png")
    before = (out / "scatter.png").read_bytes()
    assert main(["compare", "--truth", truth.source, "flops", "-o", str(out)]) == 2
    assert (out / "scatter.png").read_bytes() == before


def test_gen_models_leaves_an_exported_model_alone(tmp_path, capsys):
    """`export` marks its models as its own; gen-models replaces only models it wrote, not
    an exported architecture saved under one of the zoo's names."""
    from costmodels.harness.models import ZOO

    zoo = tmp_path / "zoo"
    zoo.mkdir()
    mine = zoo / f"{next(iter(ZOO))}.onnx"
    assert main(["export", "0", "-o", str(mine)]) == 0
    before = mine.read_bytes()
    assert main(["gen-models", "-o", str(zoo)]) == 2
    assert "is not a model this command wrote" in capsys.readouterr().err
    assert mine.read_bytes() == before and [p.name for p in zoo.iterdir()] == [mine.name]


@pytest.mark.parametrize("case", ["table_as_predictions", "mark_not_last", "heading_only",
                                  "link_loop", "link_to_file"])
def test_compare_is_not_fooled_into_replacing_a_users_file(tmp_path, capsys, case):
    """A latency table saved as predictions.csv (its header starts like the report's), notes
    that quote the mark line or the report's heading, and links at a report name are the
    user's: refused, byte-identical, one error line (a link that loops was an internal
    error)."""
    from costmodels.harness.report import REPORT_MARK

    truth = make_truth(tmp_path / "nb201_fake.csv", n=30)
    out = tmp_path / "mine"
    out.mkdir()
    other = tmp_path / "elsewhere.csv"
    other.write_text("mine\n")
    if case == "table_as_predictions":
        (out / "predictions.csv").write_bytes(open(truth.source, "rb").read())
    elif case == "mark_not_last":
        (out / "report.md").write_text(f"# my notes\n{REPORT_MARK}\nmore of my notes\n")
    elif case == "heading_only":
        (out / "report.md").write_text("# my notes\n\n## Which estimator to use\n\nflops\n")
    elif case == "link_loop":
        (out / "metrics.csv").symlink_to("metrics.csv")
    else:
        (out / "metrics.csv").symlink_to(other)
    before = {p.name: (p.readlink() if p.is_symlink() else p.read_bytes())
              for p in out.iterdir()}
    assert main(["compare", "--truth", truth.source, "flops", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"error: -o {out}") and "internal error" not in err, err
    assert {p.name: (p.readlink() if p.is_symlink() else p.read_bytes())
            for p in out.iterdir()} == before
    assert other.read_text() == "mine\n"


def test_a_report_folder_given_as_a_link_is_written_where_it_points(tmp_path, capsys):
    """-o LINK to a folder: staged beside the folder the link names (one disk, so each
    file is renamed in), and the files land there."""
    truth = make_truth(tmp_path / "nb201_fake.csv", n=30)
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "link").symlink_to(real)
    assert main(["compare", "--truth", truth.source, "flops", "-o", str(tmp_path / "link")]) == 0
    assert (real / "report.md").is_file() and (tmp_path / "link").is_symlink()
    assert main(["compare", "--truth", truth.source, "flops", "-o", str(tmp_path / "link")]) == 0
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]
