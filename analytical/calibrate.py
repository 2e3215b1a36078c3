"""Calibrate a roofline spec for this machine from micro-benchmarks run through ONNX Runtime.

Only micro-benchmarks, never the networks being predicted:

* peak compute: a 1024^3 fp32 ``MatMul`` (one intra-op thread, CPU pinned);
* DRAM bandwidth: an ``Add`` of two 32 MiB tensors (3 x 32 MiB streamed);
* cache bandwidth: numpy ``add`` of 512 KiB vectors, repeated (stays in L2);
* per op class, a chain of ``CHAIN`` identical operators at three sizes; a
  least-squares line ``time_per_op = launch + work / rate`` gives the launch
  overhead (intercept) and the sustained rate (slope). Compute classes (conv,
  1x1 conv, GEMM) are fitted on FLOPs, memory classes (depthwise, pooling, global
  pooling, element-wise) on bytes; efficiency = rate / peak (or / bandwidth).

Each timing is the median of ``repeats`` runs after warm-up, best of ``ROUNDS``
such medians, in process CPU time (``time.process_time_ns``: other processes on the
same core do not inflate it, wall time would); the CPU is pinned (``os.sched_setaffinity``), by default to the most idle
one. The whole run takes 5-20 s. The result is written as a roofline TOML spec (:func:`write_spec`).
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from analytical.specs import RooflineSpec, load_spec

CHAIN = 16
ROUNDS = 3
# CPU time of this process: what the kernels cost the core, not inflated when other
# processes share it (ORT with one intra-op thread computes in the calling thread).
CLOCK = time.process_time_ns
SIZES = ((8, 8), (32, 16), (64, 32))  # (channels, height=width) of the op-class benchmarks


@dataclass(frozen=True)
class Calibration:
    """What :func:`calibrate` measured. Rates in GFLOP/s and GB/s, times in microseconds."""

    peak_gflops: float
    dram_bandwidth_gbps: float
    cache_bandwidth_gbps: float
    cache_bytes: int
    ops: dict[str, dict[str, float]]
    cpu: str
    onnxruntime: str
    seconds: float


@contextmanager
def pinned(cpu: int | None) -> Iterator[None]:
    """Pin this process to one CPU (``os.sched_setaffinity``) for the block, then restore."""
    if cpu is None or not hasattr(os, "sched_setaffinity"):
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def idlest_cpu(sample_s: float = 0.3) -> int:
    """The allowed CPU with the most idle time over ``sample_s`` (from /proc/stat); 0 if unknown."""
    allowed = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else [0]

    def idle() -> dict[int, int]:
        out = {}
        try:
            for line in Path("/proc/stat").read_text().splitlines():
                name, *vals = line.split()
                if name.startswith("cpu") and name[3:].isdigit():
                    out[int(name[3:])] = int(vals[3]) + int(vals[4])  # idle + iowait
        except (OSError, ValueError, IndexError):
            pass
        return out

    before = idle()
    time.sleep(sample_s)
    after = idle()
    gains = {c: after.get(c, 0) - before.get(c, 0) for c in allowed}
    return max(allowed, key=lambda c: (gains[c], -c)) if gains else 0


def _session(model):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(model.SerializeToString(), so,
                                providers=["CPUExecutionProvider"])


def time_model(model, feeds: dict[str, np.ndarray], repeats: int = 15, warmup: int = 3,
               rounds: int = ROUNDS) -> float:
    """Seconds of one run of an ONNX model (1 intra-op thread): the median of ``repeats``
    timed runs after ``warmup``, best of ``rounds`` such medians (rejects interference from
    other processes, as ``timeit`` takes the best of its repeats)."""
    sess = _session(model)
    for _ in range(warmup):
        sess.run(None, feeds)
    best = float("inf")
    for _ in range(rounds):
        ts = []
        for _ in range(repeats):
            t0 = CLOCK()
            sess.run(None, feeds)
            ts.append(CLOCK() - t0)
        best = min(best, float(np.median(ts)) * 1e-9)
    return best


def _graph(nodes, inputs, outputs, inits):
    from onnx import TensorProto, helper

    def vi(name, shape):
        return helper.make_tensor_value_info(name, TensorProto.FLOAT, list(shape))

    g = helper.make_graph(nodes, "calib", [vi(n, s) for n, s in inputs],
                          [vi(n, s) for n, s in outputs], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    m.ir_version = 8
    return m


def _init(name: str, shape, rng) -> object:
    from onnx import numpy_helper

    return numpy_helper.from_array(rng.normal(0, 0.1, shape).astype(np.float32), name)


@dataclass(frozen=True)
class Bench:
    """A chain benchmark: ``build(c, h)`` -> (model, feeds, work per op)."""

    name: str
    by: str  # "flops" or "bytes"
    build: Callable[[int, int], tuple[object, dict[str, np.ndarray], float]]


def _conv_chain(k: int, depthwise: bool) -> Callable:
    def build(c: int, h: int):
        from onnx import helper

        rng = np.random.default_rng(0)
        nodes, inits, x = [], [], "x"
        cin = 1 if depthwise else c
        for i in range(CHAIN):
            inits += [_init(f"w{i}", (c, cin, k, k), rng), _init(f"b{i}", (c,), rng)]
            nodes.append(helper.make_node("Conv", [x, f"w{i}", f"b{i}"], [f"c{i}"],
                                          kernel_shape=[k, k], pads=[k // 2] * 4,
                                          group=c if depthwise else 1))
            nodes.append(helper.make_node("Relu", [f"c{i}"], [f"y{i}"]))
            x = f"y{i}"
        shape = (1, c, h, h)
        m = _graph(nodes, [("x", shape)], [(x, shape)], inits)
        macs = h * h * c * cin * k * k
        nbytes = 4 * (2 * c * h * h + c * cin * k * k + c)
        return m, {"x": np.ones(shape, np.float32)}, float(2 * macs if not depthwise else nbytes)
    return build


def _gemm_chain(c: int, h: int):
    from onnx import helper

    rng = np.random.default_rng(0)
    n = c * h // 4  # 16, 128, 512 features
    nodes, inits, x = [], [], "x"
    for i in range(CHAIN):
        inits += [_init(f"w{i}", (n, n), rng), _init(f"b{i}", (n,), rng)]
        nodes.append(helper.make_node("Gemm", [x, f"w{i}", f"b{i}"], [f"y{i}"], transB=1))
        x = f"y{i}"
    return _graph(nodes, [("x", (1, n))], [(x, (1, n))], inits), \
        {"x": np.ones((1, n), np.float32)}, float(2 * n * n)


def _pool_chain(c: int, h: int):
    from onnx import helper

    nodes, x = [], "x"
    for i in range(CHAIN):
        nodes.append(helper.make_node("AveragePool", [x], [f"y{i}"], kernel_shape=[3, 3],
                                      pads=[1] * 4, strides=[1, 1], count_include_pad=0))
        x = f"y{i}"
    shape = (1, c, h, h)
    return _graph(nodes, [("x", shape)], [(x, shape)], []), \
        {"x": np.ones(shape, np.float32)}, float(2 * 4 * c * h * h)


def _add_chain(c: int, h: int):
    from onnx import helper

    rng = np.random.default_rng(0)
    shape = (1, c, h, h)
    nodes, inits, x = [], [], "x"
    for i in range(CHAIN):
        inits.append(_init(f"a{i}", shape, rng))
        nodes.append(helper.make_node("Add", [x, f"a{i}"], [f"y{i}"]))
        x = f"y{i}"
    return _graph(nodes, [("x", shape)], [(x, shape)], inits), \
        {"x": np.ones(shape, np.float32)}, float(3 * 4 * c * h * h)


def _gap_fan(c: int, h: int):
    from onnx import helper

    shape = (1, c, h, h)
    ins = [(f"x{i}", shape) for i in range(CHAIN)]
    nodes = [helper.make_node("GlobalAveragePool", [f"x{i}"], [f"y{i}"]) for i in range(CHAIN)]
    outs = [(f"y{i}", (1, c, 1, 1)) for i in range(CHAIN)]
    feeds = {n: np.ones(shape, np.float32) for n, _ in ins}
    return _graph(nodes, ins, outs, []), feeds, float(4 * c * h * h + 4 * c)


BENCHES = (  # element-wise first: its stream rate can raise the cache roof
    Bench("elementwise", "bytes", _add_chain),
    Bench("conv", "flops", _conv_chain(3, False)),
    Bench("conv1x1", "flops", _conv_chain(1, False)),
    Bench("depthwise", "bytes", _conv_chain(3, True)),
    Bench("gemm", "flops", _gemm_chain),
    Bench("pool", "bytes", _pool_chain),
    Bench("global_pool", "bytes", _gap_fan),
)


def fit_line(work: np.ndarray, seconds: np.ndarray) -> tuple[float, float]:
    """Least squares ``seconds = launch + work / rate`` -> (launch_s >= 0, rate per second)."""
    slope, icpt = np.polyfit(work, seconds, 1)
    if slope <= 0:
        return max(float(np.min(seconds)), 0.0), float(np.max(work) / np.max(seconds))
    if icpt < 0:  # no overhead visible: rate through the origin
        return 0.0, float(np.sum(work * work) / np.sum(work * seconds))
    return float(icpt), float(1.0 / slope)


def measure_peak_gflops(n: int = 1024, repeats: int = 5) -> float:
    from onnx import helper

    rng = np.random.default_rng(0)
    m = _graph([helper.make_node("MatMul", ["a", "b"], ["y"])], [("a", (n, n))], [("y", (n, n))],
               [_init("b", (n, n), rng)])
    t = time_model(m, {"a": rng.normal(size=(n, n)).astype(np.float32)}, repeats=repeats)
    return 2 * n**3 / t / 1e9


def measure_dram_gbps(elems: int = 8 * 1024 * 1024, repeats: int = 7) -> float:
    from onnx import helper

    shape = (elems,)
    m = _graph([helper.make_node("Add", ["a", "b"], ["y"])], [("a", shape), ("b", shape)],
               [("y", shape)], [])
    feeds = {"a": np.ones(shape, np.float32), "b": np.ones(shape, np.float32)}
    return 3 * 4 * elems / time_model(m, feeds, repeats=repeats) / 1e9


def measure_cache_gbps(elems: int = 128 * 1024, loops: int = 200) -> float:
    a, b, c = (np.ones(elems, np.float32) for _ in range(3))
    best = float("inf")
    for _ in range(5):
        t0 = CLOCK()
        for _ in range(loops):
            np.add(a, b, out=c)
        best = min(best, (CLOCK() - t0) * 1e-9 / loops)
    return 3 * 4 * elems / best / 1e9


def cache_bytes() -> int:
    """Per-core L2 size from sysfs (bytes); 1 MiB if unknown."""
    try:
        base = Path("/sys/devices/system/cpu/cpu0/cache")
        for idx in sorted(base.glob("index*")):
            if (idx / "level").read_text().strip() == "2":
                size = (idx / "size").read_text().strip().upper()
                mult = {"K": 1024, "M": 1024**2}.get(size[-1], 1)
                return int(size.rstrip("KM")) * mult
    except OSError:
        pass
    return 1 << 20


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def calibrate(cpu: int | str | None = "auto", repeats: int = 15,
              log: Callable[[str], None] = lambda s: None) -> Calibration:
    """Run every micro-benchmark pinned to ``cpu`` and return the measured figures.

    ``cpu``: a CPU index, ``"auto"`` (the most idle allowed CPU) or None (not pinned).
    """
    import onnxruntime as ort

    t0 = time.perf_counter()
    if cpu == "auto":
        cpu = idlest_cpu()
    log(f"pinned to CPU {cpu}" if cpu is not None else "not pinned")
    with pinned(cpu):
        peak = max(measure_peak_gflops(n) for n in (512, 1024, 2048))
        log(f"peak: {peak:.1f} GFLOP/s (best MatMul of 512^3, 1024^3, 2048^3)")
        dram = measure_dram_gbps()
        cache = measure_cache_gbps()
        log(f"bandwidth: DRAM {dram:.1f} GB/s (Add 3x32 MiB), cache {cache:.1f} GB/s")
        ops: dict[str, dict[str, float]] = {}
        for b in BENCHES:
            work, secs = [], []
            for c, h in SIZES:
                model, feeds, per_op = b.build(c, h)
                work.append(per_op)
                secs.append(time_model(model, feeds, repeats=repeats) / CHAIN)
            launch_s, rate = fit_line(np.array(work), np.array(secs))
            if b.name == "elementwise":  # ORT's own stream may beat numpy's: the roof is the best
                cache = max(cache, rate / 1e9)
            roof = peak * 1e9 if b.by == "flops" else cache * 1e9
            eff = float(min(max(rate / roof, 1e-3), 1.0))
            ops[b.name] = {"launch_us": launch_s * 1e6,
                           "compute_efficiency" if b.by == "flops" else "memory_efficiency": eff}
            log(f"{b.name}: launch {launch_s * 1e6:.2f} us, {b.by} rate {rate / 1e9:.1f} G/s "
                f"({eff:.0%} of roof)")
    return Calibration(peak, dram, cache, cache_bytes(), ops, cpu_name(), ort.__version__,
                       time.perf_counter() - t0)


def spec_toml(cal: Calibration, name: str = "local", base: RooflineSpec | None = None) -> str:
    """The roofline spec TOML of a calibration.

    The fusion rules (what the runtime's graph optimiser does) are not measured;
    ``base`` names them (default: the shipped ``x86_generic`` spec, whose rules are
    ``ort``, ONNX Runtime's CPU optimiser). Layout reorders are not benchmarked:
    they are copies, so the ``reorder`` class takes the element-wise stream's
    memory efficiency and launch overhead.
    """
    base = base or load_spec("x86_generic", RooflineSpec)
    stream = cal.ops["elementwise"]["memory_efficiency"]
    lines = [
        "# Roofline spec of this machine, measured by `costmodels roofline calibrate`",
        f"# on {time.strftime('%Y-%m-%d %H:%M:%S')} ({cal.seconds:.0f} s of micro-benchmarks;",
        "# see analytical/calibrate.py for each benchmark). Nothing here is fitted to networks.",
        'kind = "roofline"', "schema_version = 1", f'name = "{name}"',
        f'description = "calibrated: {cal.cpu}, ONNX Runtime {cal.onnxruntime} CPU, 1 thread"',
        f"peak_gflops = {cal.peak_gflops:.3f}   # best MatMul (512..2048)^3 fp32, median",
        f"dram_bandwidth_gbps = {cal.dram_bandwidth_gbps:.3f}   # ORT Add, 3 x 32 MiB streamed",
        f"cache_bandwidth_gbps = {cal.cache_bandwidth_gbps:.3f}   # best of numpy add (3 x 512 KiB) and the ORT Add chain",
        f"cache_bytes = {cal.cache_bytes}   # L2 per core (sysfs)",
        f"fusion = {json.dumps(base.fusion)}   # graph optimiser: the rules of the {base.name} spec",
        "",
        "# Per op class: chains of 16 ops at (C, H) in " + str(SIZES) + ";",
        "# launch_us = intercept, efficiency = fitted rate / roof. Compute classes take the",
        "# element-wise stream's memory efficiency; memory classes never bind on compute.",
    ]
    for cls in ("conv", "conv1x1", "depthwise", "gemm", "pool", "global_pool", "elementwise"):
        o = cal.ops[cls]
        lines += [f"[ops.{cls}]",
                  f"compute_efficiency = {o.get('compute_efficiency', 1.0):.4f}",
                  f"memory_efficiency = {o.get('memory_efficiency', stream):.4f}",
                  f"launch_us = {o['launch_us']:.3f}"]
    lines += ["[ops.view]   # Flatten/Reshape: no data moved; launch as an element-wise op",
              "compute_efficiency = 1.0", "memory_efficiency = 1.0",
              f"launch_us = {cal.ops['elementwise']['launch_us']:.3f}", "traffic_factor = 0.0",
              "[ops.reorder]   # layout reorders (copies): not benchmarked, the element-wise figures",
              "compute_efficiency = 1.0", f"memory_efficiency = {stream:.4f}",
              f"launch_us = {cal.ops['elementwise']['launch_us']:.3f}",
              "",
              "[calibration]", f'cpu = "{cal.cpu}"', f'onnxruntime = "{cal.onnxruntime}"',
              f"seconds = {cal.seconds:.1f}", ""]
    return "\n".join(lines)


def write_spec(cal: Calibration, path: str | Path, name: str = "local",
               base: RooflineSpec | None = None) -> Path:
    """Write the calibrated spec to ``path`` (folders created) and check it loads back."""
    p = Path(path).expanduser()
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(spec_toml(cal, name, base))
    load_spec(str(p), RooflineSpec)
    return p
