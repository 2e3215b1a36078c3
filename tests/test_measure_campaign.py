"""A campaign killed with SIGKILL and rerun ends with every network measured exactly once."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from costmodels.cli import main
from costmodels.tables import read_table

ROOT = Path(__file__).resolve().parents[1]
N = 8


def _rows(db: Path) -> list[tuple]:
    if not db.exists():
        return []
    try:
        con = sqlite3.connect(f"{db.as_uri()}?mode=ro", uri=True, timeout=5)
        try:
            return con.execute("SELECT id, net_key, created_at, ok FROM measurements "
                               "ORDER BY id").fetchall()
        finally:
            con.close()
    except sqlite3.OperationalError:  # table not created yet
        return []


def test_sigkill_midway_then_rerun_measures_each_network_once(tmp_path):
    db, out = tmp_path / "runs.sqlite", tmp_path / "truth.csv"
    cmd = [sys.executable, "-m", "costmodels.cli", "measure-space", "--sample", str(N),
           "--seed", "3", "--warmup", "0", "--repeat", "150", "--rounds", "4", "--window", "2",
           "--min-round-s", "0",
           "--db", str(db), "-o", str(out)]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while len(_rows(db)) < 2 and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    first = _rows(db)
    assert 2 <= len(first) < N, "the campaign should have been killed midway"
    assert not out.exists()

    done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert f"{N - len(first)} measured, 0 failed, {len(first)} already in" in done.stderr
    rows = _rows(db)
    assert len(rows) == N and len({r[1] for r in rows}) == N and all(r[3] for r in rows)
    assert rows[:len(first)] == first  # committed rows were kept as they were
    assert len(read_table(out)) == N
    side = json.loads(out.with_suffix(".fingerprint.json").read_text())
    assert side["cells"] == N and side["fingerprint"]["runtime"] == "ort"


def test_cli_measure_json_and_errors(tmp_path, capsys, tiny_onnx):
    assert main(["measure", str(tiny_onnx), "--repeat", "5", "--warmup", "1", "--json",
                 "--min-round-s", "0"]) == 0
    doc = json.loads(capsys.readouterr().out)
    for key in ("median_ms", "mean_ms", "p10_ms", "p90_ms", "cv", "repeat", "runtime",
                "fingerprint"):
        assert key in doc
    assert doc["repeat"] == 5 and doc["runtime"] == "ort" and doc["rounds"] == 5
    # The drift reference is on by default: latency_ms holds the corrected figure.
    assert len(doc["round_medians_ms"]) == 5 and doc["corrected_ms"] > 0
    assert doc["figure"] == "drift-corrected" and doc["latency_ms"] == doc["corrected_ms"]
    assert main(["measure", str(tiny_onnx), "--repeat", "5", "--warmup", "1", "--json",
                 "--min-round-s", "0", "--no-drift-correct"]) == 0
    doc = json.loads(capsys.readouterr().out)
    assert doc["corrected_ms"] is None and doc["figure"] == "raw"
    assert doc["latency_ms"] == doc["median_ms"]
    assert main(["measure", "3", "--repeat", "3", "--warmup", "0", "--min-round-s", "0"]) == 0
    assert "median" in capsys.readouterr().out
    capsys.readouterr()
    # A file that cannot be read is a user mistake: one error line naming it, before any work.
    assert main(["measure", str(tmp_path / "missing.onnx"), "--json"]) == 2
    cap = capsys.readouterr()
    assert cap.out == "" and cap.err.startswith("error: ") and "missing.onnx" in cap.err


def test_estimate_measure_backend_through_registry(tmp_path):
    from costmodels.registry import create
    from costmodels.spaces import nb201

    model = create(f"measure:ort,repeat=5,warmup=1,min_round_s=0,db={tmp_path / 'runs.sqlite'}")
    est = model.estimate(nb201.build_network(11))
    assert est.latency_ms > 0 and est.meta["runtime"] == "ort"
    for key in ("p10_ms", "p90_ms", "cv", "fingerprint"):
        assert key in est.meta
    again = model.estimate(nb201.build_network(11))  # read back from the store
    assert again.latency_ms == est.latency_ms


def test_between_process_spread_reports_per_cell_figures():
    from measure import MeasureConfig
    from measure.quality import between_process_spread

    rep = between_process_spread([3, 11], "ort", n_proc=2,
                                 config=MeasureConfig(repeat=5, min_round_s=0))
    assert rep["n_proc"] == 2 and len(rep["cells"]) == 2
    for cell in rep["cells"]:
        assert len(cell["medians_ms"]) == 2 and not cell["failures"]
        assert cell["spread"] >= 0 and cell["cv_within"] >= 0
    assert rep["median_spread"] is not None


def test_two_processes_walk_the_windows_in_other_orders(monkeypatch):
    """Each process walks a campaign's windows in an order of its own (seeded by its pid),
    so two campaigns on one store split the work (in one order both measured every
    window: 60 + 60 networks for 60, in 38 s against 14 s alone; now 35 + 35 in 15 s)."""
    import os

    from measure.campaign import _window_order

    orders = []
    for pid in (101, 202):
        monkeypatch.setattr(os, "getpid", lambda pid=pid: pid)
        orders.append(_window_order(60, 5))
    assert all(sorted(o) == list(range(0, 60, 5)) for o in orders)
    assert orders[0] != orders[1] and orders[0][0] != orders[1][0]
    assert _window_order(3, 5) == [0] and _window_order(0, 5) == []
