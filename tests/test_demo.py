"""``costmodels demo``'s step logic, with the commands it runs replaced by stand-ins."""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import pytest

from costmodels import demo
from costmodels.cli import read_arch_list
from costmodels.tables import write_table


def _folder(tmp_path, n):
    import onnx

    from measure.testing import tiny_model

    folder = tmp_path / "models"
    folder.mkdir()
    for i in range(n):
        onnx.save(tiny_model(), folder / f"m{i}.onnx")
    return folder


def _args(tmp_path, folder, train):
    return argparse.Namespace(out=str(tmp_path / "r"), space=f"models:{folder}", dataset=None,
                              input_shape=None, sample=None, train=train, seed=0, truth=None)


def _fake_main(ran, failing):
    """Step 1 writes a truth table in which ``failing`` models have an error row (exit 1,
    as measure-space does); the other steps only record their command line."""
    def main(argv):
        ran.append(list(argv))
        if argv[0] == "measure-space":
            names = [f"m{i}" for i in range(5)]
            write_table(argv[argv.index("-o") + 1], [None] * 5, names,
                        [math.nan if n in failing else 1.0 + i for i, n in enumerate(names)],
                        extra={"error": ["run failed" if n in failing else "" for n in names]})
            return 1 if failing else 0
        return 0
    return main


def test_demo_goes_on_without_the_models_that_failed_to_measure(tmp_path, monkeypatch):
    folder = _folder(tmp_path, 5)
    ran: list = []
    monkeypatch.setattr("costmodels.cli.main", _fake_main(ran, {"m3"}))
    assert demo.run(_args(tmp_path, folder, train=2)) == 0
    assert [a[0] for a in ran] == ["measure-space", "lut", "lut", "roofline", "compare"]
    lut = ran[1]
    archs = lut[lut.index("--archs") + 1]  # the LUT covers only the measured models
    assert archs.endswith("-measured.csv")
    from costmodels.spaces import get_space

    space = get_space(f"models:{folder}")
    assert read_arch_list(archs, space) == ["m0", "m1", "m2", "m4"]
    # ... calibrated on none of them, then on the 2 that compare fits on, never on the scored
    assert lut[lut.index("--calibrate") + 1] == "0"
    cal = ran[2]
    assert "--calibrate" not in cal
    train = read_arch_list(cal[cal.index("--archs") + 1], space)
    from costmodels.harness.compare import split_truth
    from costmodels.tables import read_table

    truth = read_table(ran[4][ran[4].index("--truth") + 1], space=space)
    _, _, rows, scored = split_truth(truth, space, None, 1, 2, 0)
    assert train == [truth.arch_str[r] for r in rows] and len(train) == 2
    assert not set(train) & {truth.arch_str[r] for r in scored}


@pytest.mark.parametrize("failing,train", [({"m0", "m1", "m2"}, 2), ({"m1"}, 4)])
def test_demo_stops_when_too_few_models_were_measured(tmp_path, monkeypatch, failing, train):
    folder = _folder(tmp_path, 5)
    ran: list = []
    monkeypatch.setattr("costmodels.cli.main", _fake_main(ran, failing))
    assert demo.run(_args(tmp_path, folder, train=train)) == 1
    assert [a[0] for a in ran] == ["measure-space"]


def test_demo_with_every_model_measured_uses_the_truth_table_for_the_lut(tmp_path,
                                                                          monkeypatch):
    folder = _folder(tmp_path, 5)
    ran: list = []
    monkeypatch.setattr("costmodels.cli.main", _fake_main(ran, set()))
    assert demo.run(_args(tmp_path, folder, train=2)) == 0
    truth = ran[0][ran[0].index("-o") + 1]
    assert ran[1][ran[1].index("--archs") + 1] == truth


def test_committed_lut_is_found_outside_the_source_tree(tmp_path, monkeypatch):
    """An installed wheel has no source tree: $COSTMODELS_DATASETS, then ./datasets/nb201."""
    from measure.fingerprint import device_slug

    monkeypatch.setattr(demo, "DATASETS", tmp_path / "no-source-tree")
    monkeypatch.setattr(demo, "_usable_lut", lambda path: True)  # the device check aside
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(demo.DATASETS_ENV, raising=False)
    assert demo.datasets_dirs() == [] and demo.committed_lut("cifar10") is None
    name = f"{device_slug()}-ort-cifar10-lut.sqlite"
    for where in (tmp_path / "datasets" / "nb201", tmp_path / "elsewhere" / "nb201"):
        where.mkdir(parents=True)
        (where / name).write_bytes(b"")
    assert demo.committed_lut("cifar10") == tmp_path / "datasets" / "nb201" / name
    monkeypatch.setenv(demo.DATASETS_ENV, str(tmp_path / "elsewhere"))
    assert demo.committed_lut("cifar10") == tmp_path / "elsewhere" / "nb201" / name


def test_a_rerun_with_another_split_drops_the_lut_points_of_networks_now_scored(tmp_path,
                                                                                monkeypatch):
    """The LUT is calibrated on compare's training networks; a rerun with another --train
    kept the first split's points, some of them networks the second run scores."""
    from costmodels.spaces import get_space
    from measure.lut.table import CalibrationPoint, LutFile

    folder = _folder(tmp_path, 5)
    ran: list = []
    monkeypatch.setattr("costmodels.cli.main", _fake_main(ran, set()))
    args = _args(tmp_path, folder, train=2)
    plan = demo.steps(tmp_path / "r", None, 2, 0, None, args.space)
    argv = demo.argv_of(plan, demo.CALIBRATE_LUT)
    lut = Path(argv[argv.index("--db") + 1])
    lut.parent.mkdir(parents=True)
    LutFile.create(lut, "ort", "{}", "h").close()
    with LutFile(lut) as f:
        for i in range(5):
            f.put_point(CalibrationPoint(f"p{i}", f"m{i}", "cifar10", 1.0 + i))
    assert demo.run(args) == 0
    cal = ran[2]
    train = set(read_arch_list(cal[cal.index("--archs") + 1], get_space(f"models:{folder}")))
    with LutFile(lut, readonly=True) as f:
        assert {p.arch_str for p in f.points()} == train and len(train) == 2


@pytest.mark.parametrize("reads,seeded", [(1.05, True), (0.69, False)])
def test_a_committed_lut_that_misreads_this_machine_is_not_used(tmp_path, monkeypatch,
                                                               reads, seeded):
    """A committed LUT of this CPU name, cores and runtime is copied in only when it reads
    a few cells here within 0.8-1.25x of their measured time: an "AMD EPYC" of another part
    read them at 0.69x (the LUT's MAPE 31% in the demo's report), and then the LUT step
    measures every kernel."""
    import shutil

    src = Path(__file__).resolve().parents[1] / "datasets" / "nb201" / \
        "epyc-2c-ort-cifar10-lut.sqlite"
    committed = tmp_path / "committed.sqlite"
    shutil.copyfile(src, committed)
    ran: list = []
    monkeypatch.setattr("costmodels.cli.main", lambda argv: ran.append(list(argv)) or 0)
    monkeypatch.setattr(demo, "committed_lut", lambda dataset: committed)
    monkeypatch.setattr(demo, "lut_reads_here", lambda path, dataset: reads)
    monkeypatch.setattr(demo, "_write_train_archs", lambda *a: None)
    args = argparse.Namespace(out=str(tmp_path / "r"), space="nb201", dataset="cifar10",
                              input_shape=None, sample=20, train=5, seed=0,
                              truth=str(_truth(tmp_path)))
    assert demo.run(args) == 0
    lut = tmp_path / "r" / "work" / "lut-nb201-cifar10.sqlite"
    assert lut.exists() == seeded


def _truth(tmp_path):
    from costmodels.spaces import nb201

    path = tmp_path / "truth.csv"
    write_table(str(path), list(range(20)), [nb201.SPACE[i] for i in range(20)],
                [1.0 + i / 10 for i in range(20)])
    return path


def test_a_committed_lut_reads_this_machine_within_a_sane_factor():
    """lut_reads_here measures the check cells here (a few seconds) and divides the LUT's
    estimates by them: whatever part this is, the committed LUT of an x86 server core reads
    them within 5x (a factor of 0 or nan is a broken check)."""
    path = Path(__file__).resolve().parents[1] / "datasets" / "nb201" / \
        "epyc-2c-ort-cifar10-lut.sqlite"
    if not path.exists():
        pytest.skip(f"{path} not committed")
    assert 0.2 < demo.lut_reads_here(path, "cifar10") < 5
