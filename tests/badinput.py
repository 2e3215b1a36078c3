"""Bad inputs for the real CLI: files that users bring, and a runner that checks the contract.

The contract (issue 11, "one error contract"): a user mistake prints a line starting
with ``error: `` that names what is at fault, exits with code 2, never prints a
traceback, and leaves every file it was given byte-identical (no ``-wal``/``-shm``
sibling, nothing else in the folder created or changed). Inputs and outputs are
checked before any work starts.

:func:`make_fixtures` writes every bad (and a few good) input into one folder;
a :class:`Case` is a command line with ``{d}`` for that folder; :func:`run_case`
runs it in-process through :func:`costmodels.cli.main` or in a real subprocess,
and :func:`snapshot` / :func:`diff` tell what changed on disk.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
LUT = ROOT / "datasets" / "nb201" / "xeon-2c-ort-cifar10-lut.sqlite"
TABLE = ROOT / "datasets" / "nb201" / "xeon-2c-ort-cifar10.csv"
MARKER = "IMPORTED_BY_MANIFEST"   # file the planted module writes when imported


# ----------------------------------------------------------------------------- cases
@dataclass(frozen=True)
class Case:
    """One bad input: a CLI command line and what its ``error:`` line must name.

    ``argv`` items may contain ``{d}`` (the fixture folder). ``names``: substrings
    that must all appear in the error text. ``owner``: the file whose code makes
    this case fail today (the test marks it xfail, strict). ``sub``: run in a
    real subprocess (``timeout_s`` bounds it) instead of in-process.
    """

    id: str
    argv: tuple[str, ...]
    names: tuple[str, ...] = ()
    code: int = 2
    sub: bool = False
    owner: str = ""
    why: str = ""
    env: Mapping[str, str] = field(default_factory=dict)
    timeout_s: float = 60.0
    not_in_output: tuple[str, ...] = ()   # text that must not be echoed (file contents)

    def args(self, d: Path) -> list[str]:
        return [a.replace("{d}", str(d)) for a in self.argv]


@dataclass
class Outcome:
    """What a case did: exit code, output, and the traceback if one escaped."""

    code: int
    out: str
    err: str
    seconds: float
    escaped: str = ""   # traceback text of an exception that left main()

    @property
    def error_lines(self) -> list[str]:
        return [ln for ln in self.err.splitlines() if ln.startswith("error: ")]


# ----------------------------------------------------------------------------- running
def cli_command() -> list[str]:
    """The installed ``costmodels`` script next to this Python, else ``python -m``."""
    script = Path(sys.executable).with_name("costmodels")
    return [str(script)] if script.is_file() else [sys.executable, "-m", "costmodels.cli"]


def base_env(home: Path) -> dict[str, str]:
    """Environment for a case: short mode, no debug tracebacks, config kept in ``home``."""
    env = {k: v for k, v in os.environ.items() if k != "COSTMODELS_DEBUG"}
    env.update(COSTMODELS_SHORT="1", XDG_CONFIG_HOME=str(home / "config"),
               COSTMODELS_ROOFLINE_SPEC=str(home / "config" / "roofline-local.toml"),
               PYTHONDONTWRITEBYTECODE="1")
    return env


def run_case(case: Case, d: Path, home: Path) -> Outcome:
    """Run ``case`` with the fixtures in ``d`` (cwd ``d``)."""
    env = {**base_env(home), **{k: v.replace("{d}", str(d)) for k, v in case.env.items()}}
    if case.sub:
        return _run_subprocess(case.args(d), d, env, case.timeout_s)
    return _run_inprocess(case.args(d), d, env)


def _run_subprocess(argv: Sequence[str], cwd: Path, env: Mapping[str, str],
                    timeout_s: float) -> Outcome:
    """Run the CLI in its own process group; past ``timeout_s`` the whole group is killed."""
    t0 = time.perf_counter()
    p = subprocess.Popen([*cli_command(), *argv], cwd=cwd, env=dict(env), text=True,
                         stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                         stderr=subprocess.PIPE, start_new_session=True)
    try:
        out, err = p.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(p.pid, signal.SIGKILL)   # its workers too (TVM, isolated runs)
        out, err = p.communicate()
        return Outcome(-9, out, err + f"\n[still running after {timeout_s} s: it started work]",
                       time.perf_counter() - t0)
    return Outcome(p.returncode, out, err, time.perf_counter() - t0)


def _run_inprocess(argv: Sequence[str], cwd: Path, env: Mapping[str, str]) -> Outcome:
    from costmodels.cli import main

    out, err = io.StringIO(), io.StringIO()
    old_env, old_cwd = dict(os.environ), os.getcwd()
    affinity = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
    escaped = ""
    t0 = time.perf_counter()
    os.environ.clear()
    os.environ.update(env)
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                code = main(list(argv))
            except SystemExit as exc:   # sys.exit("message") from a handler
                code = exc.code if isinstance(exc.code, int) else 1
                if not isinstance(exc.code, int) and exc.code is not None:
                    print(exc.code, file=sys.stderr)
            except BaseException:  # noqa: BLE001 - what a user would see as a traceback
                code = 1
                escaped = traceback.format_exc()
    finally:
        if affinity is not None:   # a measurement pins the process: never leave pytest pinned
            os.sched_setaffinity(0, affinity)
        os.chdir(old_cwd)
        os.environ.clear()
        os.environ.update(old_env)
    return Outcome(int(code or 0), out.getvalue(), err.getvalue(), time.perf_counter() - t0,
                   escaped)


# ----------------------------------------------------------------------------- disk state
def snapshot(folder: Path) -> dict[str, str]:
    """``relative path -> sha256`` of every file below ``folder`` (``<dir>`` for folders)."""
    state = {}
    for p in sorted(folder.rglob("*")):
        rel = str(p.relative_to(folder))
        if p.is_symlink():
            state[rel] = f"<link {os.readlink(p)}>"
        elif p.is_dir():
            state[rel] = f"<dir {oct(p.stat().st_mode & 0o777)}>"
        else:
            state[rel] = sha256(p) + f" {oct(p.stat().st_mode & 0o777)}"
    return state


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def diff(before: Mapping[str, str], after: Mapping[str, str]) -> list[str]:
    """Human-readable changes between two snapshots (empty when nothing changed)."""
    out = [f"created {k}" for k in after if k not in before]
    out += [f"removed {k}" for k in before if k not in after]
    out += [f"changed {k}" for k in before if k in after and before[k] != after[k]]
    return out


# ----------------------------------------------------------------------------- fixtures
def tiny_model(dynamic: bool = False, with_if: bool = False):
    """Conv-Relu-GlobalAveragePool on x: 1x3x16x16 (``dynamic``: N and H/W symbolic)."""
    import numpy as np
    from onnx import TensorProto, helper, numpy_helper

    w = numpy_helper.from_array(np.random.default_rng(0).normal(size=(8, 3, 3, 3))
                                .astype(np.float32), "w")
    nodes = [helper.make_node("Conv", ["x", "w"], ["c"], name="conv", pads=[1, 1, 1, 1]),
             helper.make_node("Relu", ["c"], ["r"], name="relu"),
             helper.make_node("GlobalAveragePool", ["r"], ["y"], name="gap")]
    inputs = [helper.make_tensor_value_info(
        "x", TensorProto.FLOAT, ["N", 3, "H", "W"] if dynamic else [1, 3, 16, 16])]
    outputs = [helper.make_tensor_value_info("y", TensorProto.FLOAT,
                                             ["N", 8, 1, 1] if dynamic else [1, 8, 1, 1])]
    inits = [w]
    if with_if:
        def branch(name: str, value: float):
            c = helper.make_node("Constant", [], [f"{name}_out"], name=f"{name}_const",
                                 value=numpy_helper.from_array(np.full((1, 8, 1, 1), value,
                                                                       np.float32)))
            return helper.make_graph([c], name, [], [helper.make_tensor_value_info(
                f"{name}_out", TensorProto.FLOAT, [1, 8, 1, 1])])
        # the condition is a runtime value (the input's sign): an If on a constant or on
        # shapes alone is its branch, and imports
        inits.append(numpy_helper.from_array(np.array(0, np.float32), "zero"))
        nodes[:0] = [helper.make_node("ReduceSum", ["x"], ["s"], keepdims=0, name="sum"),
                     helper.make_node("Greater", ["s", "zero"], ["flag"], name="sign")]
        nodes[-1] = helper.make_node("GlobalAveragePool", ["r"], ["g"], name="gap")
        nodes += [helper.make_node("If", ["flag"], ["b"], name="choose_branch",
                                   then_branch=branch("then", 1.0),
                                   else_branch=branch("else", 0.0)),
                  helper.make_node("Add", ["g", "b"], ["y"], name="add")]
    g = helper.make_graph(nodes, "tiny", inputs, outputs, inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def _sqlite(path: Path, *sql: str) -> None:
    con = sqlite3.connect(path)
    try:
        for s in sql:
            con.execute(s)
        con.commit()
    finally:
        con.close()
    for side in ("-wal", "-shm", "-journal"):
        Path(f"{path}{side}").unlink(missing_ok=True)


def nb201_rows(n: int) -> list[tuple[int, str, float]]:
    """``n`` rows (index, arch_str, latency_ms) of the committed measured table."""
    import csv

    with open(TABLE, newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))[:n]
    return [(int(r["arch_index"]), r["arch_str"], float(r["latency_ms"])) for r in rows]


def _table(rows: Sequence[Sequence[object]], header: str = "arch_index,arch_str,latency_ms"
           ) -> str:
    return header + "\n" + "".join(",".join(map(str, r)) + "\n" for r in rows)


def _photo_png() -> bytes:
    """A 1x1 grey PNG as an image tool writes it (no Software text): a user's picture."""
    import struct
    import zlib

    def chunk(kind: bytes, body: bytes) -> bytes:
        return (struct.pack(">I", len(body)) + kind + body
                + struct.pack(">I", zlib.crc32(kind + body)))

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(b"\x00\x80")) + chunk(b"IEND", b""))


def make_fixtures(d: Path) -> None:
    """Write every input the cases use into folder ``d`` (cheap: no fitting, no measuring)."""
    import onnx

    d.mkdir(parents=True, exist_ok=True)
    good = nb201_rows(30)
    # -- ONNX files
    onnx.save(tiny_model(), d / "tiny.onnx")
    onnx.save(tiny_model(dynamic=True), d / "dyn.onnx")
    onnx.save(tiny_model(with_if=True), d / "ifnode.onnx")
    data = (d / "tiny.onnx").read_bytes()
    (d / "trunc.onnx").write_bytes(data[: len(data) // 2])
    (d / "random.onnx").write_bytes(hashlib.sha512(b"x").digest() * 64)
    (d / "empty.onnx").write_bytes(b"")
    (d / "text.onnx").write_text("this is not a model\n")
    m = tiny_model()
    dup = onnx.helper.make_node("Relu", [m.graph.node[0].input[0]], [m.graph.node[0].output[0]],
                                name="twice")
    m.graph.node.insert(1, dup)  # a second node defines the first one's output
    onnx.save(m, d / "dup_output.onnx")
    m = tiny_model()
    del m.graph.output[:]
    onnx.save(m, d / "no_outputs.onnx")
    (d / "dir.onnx").mkdir()
    (d / "models_ok").mkdir()
    shutil.copy(d / "tiny.onnx", d / "models_ok" / "a.onnx")
    (d / "models_link").mkdir()
    os.symlink("../tiny.onnx", d / "models_link" / "outside.onnx")   # leaves the folder
    (d / "models_loop").mkdir()
    os.symlink("loop.onnx", d / "models_loop" / "loop.onnx")   # a link to itself
    (d / "models_none").mkdir()
    (d / "models_none" / "readme.txt").write_text("no models here\n")
    # -- tables
    (d / "good.csv").write_text(_table(good))
    (d / "bom.csv").write_bytes(b"\xef\xbb\xbf" + _table(good).encode())
    (d / "empty.csv").write_bytes(b"")
    (d / "header_only.csv").write_text("arch_index,arch_str,latency_ms\n")
    (d / "wrong_header.csv").write_text(_table(good, "index,arch,time"))
    latin = _table(good[:2]) + f"{good[2][0]},{good[2][1]},1.5 caf\xe9\n"
    (d / "latin1.csv").write_bytes(latin.encode("latin-1"))
    (d / "nul.csv").write_bytes(_table(good[:3]).encode() + b"\x00\x00\x00\n")
    (d / "png.csv").write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR" + bytes(range(256)))
    for name, bad in (("nan", "nan"), ("neg", "-1.5"), ("zero", "0"), ("text", "fast")):
        rows = [list(r) for r in good]
        rows[1][2] = bad
        (d / f"lat_{name}.csv").write_text(_table(rows))
    (d / "dup.csv").write_text(_table(good + [(good[0][0], good[0][1], good[0][2] * 3)]))
    (d / "dup_column.csv").write_text(_table([(*r, 99.0) for r in good],
                                             "arch_index,arch_str,latency_ms,latency_ms"))
    rows = [list(r) for r in good]
    rows[2][0] = rows[2][0] + 1
    (d / "mismatch.csv").write_text(_table(rows))
    (d / "comma.csv").write_text(_table(good[:2]) + f"{good[2][0]},{good[2][1]},1.0,oops\n")
    (d / "huge.csv").write_text(_table(good[:2]) + f"{good[2][0]},{'x' * 300_000},1.0\n")
    (d / "fbnet_rows.csv").write_text(
        "arch_index,arch_str,latency_ms\n," + "|".join(["k3_e1"] * 22) + ",1.0\n")
    (d / "idx_range.csv").write_text("arch_index\n99999\n")
    (d / "idx_text.csv").write_text("arch_index\nabc\n")
    (d / "bad_syntax.toml").write_text("[device\nname = 'x'\n")
    (d / "bad_fields.toml").write_text('kind = "roofline"\nname = "x"\npeak_gflops = "fast"\n')
    # -- stores and LUTs (SQLite files made by someone else)
    (d / "notsqlite.db").write_text("just some text, not a database\n")
    (d / "emptyfile.db").write_bytes(b"")
    _sqlite(d / "table_t.db", "CREATE TABLE t (a INTEGER)", "INSERT INTO t VALUES (1)")
    _sqlite(d / "view_only.db", "CREATE VIEW v AS SELECT 1 AS one")
    _sqlite(d / "user_version.db", "PRAGMA user_version=7")
    _sqlite(d / "no_tables.db", "CREATE TABLE gone (a)", "DROP TABLE gone")
    shutil.copy(LUT, d / "ort.lut.sqlite")
    con = sqlite3.connect(f"{LUT.as_uri()}?mode=ro&immutable=1", uri=True)
    try:
        keys = con.execute("SELECT key, median_ms FROM entries WHERE ok=1 LIMIT 3").fetchall()
    finally:
        con.close()
    (d / "lut_entries.csv").write_text(
        "key,median_ms\n" + "".join(f'"{k}",{m!r}\n' for k, m in keys))
    # -- files a command would write over (an output folder holding an input's name)
    (d / "rep").mkdir()
    (d / "rep" / "predictions.csv").write_text(_table(good))
    (d / "fs").mkdir()
    (d / "fs" / "tgt.png").write_text(_table(good))
    shutil.copy(LUT, d / "trigger.lut.sqlite")  # SQL stored in a LUT, run on writes
    _sqlite(d / "trigger.lut.sqlite", "CREATE TABLE log (x)",
            "CREATE TRIGGER t2 AFTER UPDATE ON entries BEGIN INSERT INTO log VALUES('fired'); "
            "DELETE FROM calibration_points; END")
    m = tiny_model()
    w = m.graph.initializer[0]
    w.dims[:] = [d_ + 2 for d_ in w.dims]  # the data stays the old size
    onnx.save(m, d / "init_dims.onnx")
    (d / "models_latin1").mkdir()
    shutil.copy(d / "tiny.onnx", os.path.join(os.fsencode(d / "models_latin1"), b"caf\xe9.onnx"))
    (d / "rules_cse.json").write_text(json.dumps({
        "format": "costmodels-fusion-rules", "schema": 1, "name": "x", "runtime": "any",
        "eliminate": [], "cse": 5, "prune_dead": False, "layout": None, "fusion": []}))
    (d / "curve_cols.csv").write_text(_table(good))
    (d / "curve_k_huge.csv").write_text("k,seed,spearman\n99999999999999999999999,0,0.9\n")
    (d / "curve_rho7.csv").write_text("k,seed,spearman\n5,0,7\n10,0,0.9\n")
    # -- files of the user's where a command writes under its own names
    png = _photo_png()
    (d / "photo").mkdir()
    (d / "photo" / "c.png").write_bytes(png)
    (d / "photo" / "scatter.png").write_bytes(png)
    (d / "rep_dir").mkdir()
    (d / "rep_dir" / "metrics.csv").mkdir()  # a folder where the report writes a file
    (d / "rep_notes").mkdir()
    (d / "rep_notes" / "report.md").write_text("# my notes\n")
    (d / "zoo_dir").mkdir()
    (d / "zoo_dir" / "resnet_w16_r32.onnx").mkdir()
    (d / "rep_lut").mkdir()
    shutil.copy(LUT, d / "rep_lut" / "metrics.csv")  # a LUT under a name compare writes
    m = tiny_model()
    m.graph.node.insert(0, onnx.helper.make_node(
        "Constant", [], ["kconst"], name="kconst", value=onnx.helper.make_tensor(
            "kconst", onnx.TensorProto.FLOAT, [1, 4], [1.0, 2.0, 3.0, 4.0])))
    del m.graph.node[0].attribute[0].t.float_data[2:]  # dims 1x4, two values
    onnx.save(m, d / "const_dims.onnx")
    m = tiny_model()  # relu reads gap's output, gap reads relu's: a cycle
    m.graph.node[1].input[0] = "y"
    m.graph.node[2].input[0] = "r"
    m.graph.node[2].output[0] = "y"
    onnx.save(m, d / "cycle.onnx")
    m = tiny_model()
    m.graph.node[1].name = m.graph.node[0].name  # two nodes named "conv"
    onnx.save(m, d / "dup_names.onnx")
    m = tiny_model()
    del m.opset_import[:]
    onnx.save(m, d / "no_opset.onnx")
    m = tiny_model()
    m.graph.input.append(onnx.helper.make_tensor_value_info("w", onnx.TensorProto.FLOAT,
                                                            [4, 3, 3, 3]))  # it is 8x3x3x3
    onnx.save(m, d / "init_as_input.onnx")
    shutil.copy(LUT, d / "nopoints.lut.sqlite")
    _sqlite(d / "nopoints.lut.sqlite", "DELETE FROM calibration_points")
    k0, m0 = keys[0]
    (d / "lut_dupkey.csv").write_text(f'key,median_ms\n"{k0}",{m0!r}\n"{k0}",{2 * m0!r}\n')
    (d / "lut_huge.csv").write_text(f'key,median_ms\n"{k0}",1e300\n')
    (d / "lut_short.csv").write_text(f'key,ops,median_ms\n"{k0}",Conv\n')
    (d / "lut_cv_nan.csv").write_text(f'key,median_ms,cv\n"{k0}",{m0!r},nan\n')
    (d / "short_row.csv").write_text(_table(good[:1]) + f"{good[1][0]},{good[1][1]}\n")
    fb = "|".join(["k3_e1"] * 22)
    (d / "fbnet_table.csv").write_text(f"arch_index,arch_str,latency_ms\n,{fb},1.0\n")
    rows = [list(r) for r in good]
    rows[1][2] = "1e-300"
    (d / "lat_tiny.csv").write_text(_table(rows))
    spec = (ROOT / "analytical" / "specs" / "x86_generic.toml").read_text()
    (d / "inf.toml").write_text(spec.replace("peak_gflops = 96.0", "peak_gflops = inf"))
    # -- a model directory and a module a manifest could name
    (d / "emptydir").mkdir()
    (d / "afile.txt").write_text("a file, not a folder\n")
    (d / "outdir").mkdir()
    pylib = d / "pylib"
    pylib.mkdir()
    (pylib / "evil_cm_mod.py").write_text(
        "import pathlib, os\n"
        f"pathlib.Path(os.environ['H8_MARKER_DIR'], {MARKER!r}).write_text('imported')\n"
        "__version__ = '1.0'\n")


def make_store(path: Path) -> None:
    """An empty measurement store created by costmodels itself."""
    from measure.store import MeasureStore

    MeasureStore(path).close()
    for side in ("-wal", "-shm"):
        Path(f"{path}{side}").unlink(missing_ok=True)


def edit_manifest(src: Path, dst: Path, edit: Callable[[dict], None], reseal: bool = False
                  ) -> None:
    """Copy model directory ``src`` to ``dst`` and change its manifest with ``edit``.

    ``reseal``: recompute ``manifest_sha256`` as anyone can (SHA-256 of the canonical
    JSON of the other keys), so the checks behind the checksum are reached.
    """
    shutil.copytree(src, dst)
    path = dst / "manifest.json"
    doc = json.loads(path.read_text())
    edit(doc)
    if reseal and "manifest_sha256" in doc:
        body = {k: v for k, v in doc.items() if k != "manifest_sha256"}
        doc["manifest_sha256"] = hashlib.sha256(json.dumps(
            body, sort_keys=True, separators=(",", ":"), allow_nan=False).encode()).hexdigest()
    path.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
