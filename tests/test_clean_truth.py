"""bench/clean_truth.py: combining separate campaigns and choosing the figure that repeats."""

from __future__ import annotations

import csv
import importlib.util
from pathlib import Path

import numpy as np
import pytest

from costmodels.spaces import nb201

_spec = importlib.util.spec_from_file_location(
    "clean_truth", Path(__file__).resolve().parent.parent / "bench" / "clean_truth.py")
ct = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(ct)


def _passes(rng, n=400, m=6, slowdowns=0.0, sigma=0.03):
    true = rng.uniform(0.2, 3.0, n)
    lat = true[:, None] * np.exp(rng.normal(0, sigma, (n, m)))
    hit = rng.random((n, m)) < slowdowns  # a disturbed pass: only ever slower
    return lat * np.where(hit, 1 + rng.uniform(0.15, 0.6, (n, m)), 1.0)


def test_one_sided_disturbances_choose_the_minimum():
    lat = _passes(np.random.default_rng(0), slowdowns=0.25, sigma=0.01)
    assert ct.choose(lat) == "min"
    rep = ct.repeatability(lat)
    assert rep["min"][0] > rep["geomean"][0]


def test_symmetric_noise_does_not_choose_the_minimum():
    lat = _passes(np.random.default_rng(1), sigma=0.06)
    assert ct.choose(lat) in ("geomean", "median")
    rep = ct.repeatability(lat)
    assert rep["geomean"][0] > rep["min"][0] - 0.01


def _table(path: Path, cells, lat):
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["arch_index", "arch_str", "latency_ms"])
        for i, v in zip(cells, lat, strict=True):
            w.writerow([i, nb201.SPACE[i], v])


def test_main_keeps_every_pass_and_only_shared_cells(tmp_path, capsys):
    rng = np.random.default_rng(2)
    lat = _passes(rng, n=30, m=4, slowdowns=0.3, sigma=0.01)
    paths = []
    for j in range(4):
        p = tmp_path / f"p{j}.csv"
        cells = list(range(30)) + ([100] if j == 0 else [])  # cell 100: one pass only
        _table(p, cells, list(lat[:, j]) + ([1.0] if j == 0 else []))
        paths.append(str(p))
    out = tmp_path / "clean.csv"
    assert ct.main([*paths, "-o", str(out), "--figure", "median"]) == 0
    assert "1 not in every pass" in capsys.readouterr().err
    rows = list(csv.DictReader(open(out)))
    assert [int(r["arch_index"]) for r in rows] == list(range(30))
    got = np.array([[float(r[f"pass{j + 1}_ms"]) for j in range(4)] for r in rows])
    np.testing.assert_allclose(got, lat, rtol=1e-5)
    np.testing.assert_allclose([float(r["latency_ms"]) for r in rows], np.median(lat, axis=1),
                               rtol=1e-5)
    from costmodels.tables import read_table

    assert len(read_table(out)) == 30  # a latency table every tool reads


def test_auto_needs_four_passes(tmp_path):
    lat = _passes(np.random.default_rng(3), n=5, m=2)
    paths = []
    for j in range(2):
        paths.append(str(tmp_path / f"p{j}.csv"))
        _table(Path(paths[-1]), range(5), lat[:, j])
    with pytest.raises(SystemExit):
        ct.main([*paths, "-o", str(tmp_path / "o.csv")])
    assert not (tmp_path / "o.csv").exists()
