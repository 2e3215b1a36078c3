"""Calibrate a roofline spec for this machine from micro-benchmarks run through ONNX Runtime.

Only micro-benchmarks, never the networks being predicted. Every timing goes through
the measurement package's own builder and timer (:func:`measure.ort.build`,
:func:`measure.ort.burst_timer`: one intra-op thread, preempted runs replaced) with
the process pinned by :func:`measure.timing.pinned`; a figure is the median of
``repeats`` runs, best of :data:`ROUNDS` such medians.

* **Peak compute** (``peak_gflops``): the best FLOP rate of square fp32 ``MatMul``
  s of :data:`PEAK_SIZES` (one op per model, compute-bound).
* **DRAM bandwidth**: an ``Add`` of two 32 MiB tensors (3 x 32 MiB streamed).
* **Cache bandwidth**: the best of a numpy ``add`` of 512 KiB vectors and a single
  ONNX Runtime ``Add`` of L2-resident tensors (both 3 x 512 KiB per call). It is
  measured on its own: the element-wise chains below do not raise it.
* **Run overhead** (``run_overhead_us``): what one ORT run costs beyond its ops (feeds,
  outputs, scheduling), the intercept of chains of 1 and :data:`CHAIN` ReLUs on 4
  floats; a network pays it once. Without it a model of a few microseconds of kernels
  was priced at a fraction of its run time. It is measured first and taken off the
  time of every benchmark run below (each is one run): a one-op benchmark such as a
  ``gemm`` point would otherwise put it into its class's launch.
* **Last-level cache** (when sysfs shows an L3 larger than twice the L2):
  ``llc_bytes`` = half the L3 (:func:`llc_bytes`), ``llc_bandwidth_gbps`` = an ORT
  ``Add`` whose three streams span half of that. Without it every kernel over the L2
  was priced at DRAM's rate, a 3x underestimate of the rate of the 1-16 MiB kernels
  of 224x224 networks on a 32 MiB L3 (bench section *models*).
* **Per op class**, a least-squares line ``time_per_op = launch + work / rate`` over
  the class's benchmark points (relative residuals, :func:`fit_line`) gives the launch
  overhead (intercept) and sustained rate (slope); efficiency = rate / roof:

  - ``conv`` (3x3), ``conv1x1``, ``depthwise`` (3x3, groups = C) and ``grouped``
    (3x3, groups = C/8): chains of :data:`CHAIN` convs at (C, H) in :data:`SIZES`,
    each class its own, fitted on FLOPs; their memory efficiency is the element-wise
    stream's (a byte rate fitted on compute-bound runs would understate the roof);
  - ``conv_nchw`` and ``depthwise_nchw``: the same 3x3 chains at 2 more channels
    (:data:`SIZES_NCHW`), a count ONNX Runtime cannot reorder to its blocked NCHWc
    layout: the convs run in plain NCHW, depthwise ones through the generic grouped
    path (im2col and a GEMM per group), about 7x slower than the NCHWc depthwise kernel
    on this project's EPYC; the roofline prices a conv the fusion planner leaves in
    NCHW with them;
  - ``gemm`` (Gemm and MatMul): the shapes networks use, at batch 1:
    transformer projections and MLPs (tokens x d -> d / 4d, :data:`GEMM_SHAPES`) and
    chains of small square MatMuls (:data:`GEMM_CHAINS`, which pin the launch) for
    the compute efficiency and the launch, classifier heads (1 x K -> N, :data:`GEMV_SHAPES`, which
    stream their weights) for the memory efficiency: the median over the heads of
    their byte rate / the roof the model prices them at (the cache, last-level cache
    or DRAM, by the smallest one their bytes fit in);
  - ``pool``, ``global_pool``, ``elementwise``: fitted on bytes;
  - ``recurrent`` (what one time step of an LSTM/GRU/RNN costs beyond its recurrent
    GEMM: the gates and the op's per-step overhead): forward LSTMs of
    :data:`RNN_STEPS` steps at (batch, hidden) in :data:`RNN_SIZES`, one input
    feature (so the input projection is negligible); each step's time less the
    ``gemm`` roofline of its product ``h R^T`` (just calibrated; not its launch, an
    intercept extrapolated from large MatMuls) is fitted on the gate elements
    (``batch x 4h``, one FLOP each); it streams at the element-wise efficiency.

A fitted efficiency above 1 means the roof was measured too low; it is kept in the
``[calibration]`` section (``*_raw``) and the spec gets 1.0, with a warning in the log
(the efficiencies are not clipped silently, and no roof is raised to fit them).
The result is written as a roofline TOML spec (:func:`write_spec`).
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from types import SimpleNamespace

import numpy as np

from analytical.specs import RooflineSpec, level_bandwidth, load_spec

CHAIN = 16
ROUNDS = 3
SIZES = ((8, 8), (32, 16), (64, 32))   # (channels, height = width) of the conv/pool chains
# the same with 2 more channels: not a multiple of 4, so ONNX Runtime cannot reorder the
# tensors to its blocked NCHWc layout and runs the convs in plain NCHW (the *_nchw classes)
SIZES_NCHW = tuple((c + 2, h) for c, h in SIZES)
SIZES_3D = ((8, 8), (16, 12), (32, 16))    # (channels, depth = height = width) of 3-D convs
PEAK_SIZES = (256, 512, 1024)           # square MatMuls for the peak
# (tokens, in features, out features): ViT-S/B, Swin and ConvNeXt-style projections and MLPs
GEMM_SHAPES = ((49, 96, 384), (197, 384, 384), (197, 768, 768), (197, 768, 3072))
# (tokens, width): chains of small square MatMuls, which pin the gemm class's launch
GEMM_CHAINS = ((1, 64), (1, 256), (16, 128))
# (1, K, N): classifier heads at batch 1 (weights streamed once per call)
GEMV_SHAPES = ((512, 1000), (1024, 1000), (2048, 1000))
# (batch, hidden) of the LSTM benchmarks of the ``recurrent`` class, RNN_STEPS steps each
RNN_SIZES = ((1, 32), (1, 128), (8, 64), (8, 256))
RNN_STEPS = 64
OP_CLASSES_MEASURED = ("conv", "conv1x1", "depthwise", "grouped", "conv_nchw",
                       "depthwise_nchw", "conv_transpose", "conv3d", "gemm", "pool",
                       "global_pool", "elementwise",
                       "transcendental", "recurrent", "conv_int8", "depthwise_int8",
                       "gemm_int8", "conv_integer", "pool_int8")
# the int8 matrix-product chains (tokens, width): GEMM_CHAINS and a transformer's size
GEMM_INT8_CHAINS = (*GEMM_CHAINS, (197, 384))
INT8_MEASURED = ("conv_int8", "depthwise_int8", "gemm_int8")
# the ops of the ``transcendental`` benchmark chains, in turn (Gelu: opset 20)
TRANSCENDENTAL_CHAIN = ("Gelu", "Erf")


@dataclass(frozen=True)
class Calibration:
    """What :func:`calibrate` measured. Rates in GFLOP/s and GB/s, times in microseconds.

    ``ops[class]`` has ``launch_us`` and ``compute_efficiency`` and/or
    ``memory_efficiency`` (fractions of the roofs, <= 1); ``raw`` keeps any fitted
    efficiency that exceeded 1 before it was capped.
    """

    peak_gflops: float
    dram_bandwidth_gbps: float
    cache_bandwidth_gbps: float
    cache_bytes: int
    ops: dict[str, dict[str, float]]
    cpu: str
    onnxruntime: str
    seconds: float
    raw: dict[str, float] = field(default_factory=dict)
    llc_bandwidth_gbps: float = 0.0   # 0: no last-level cache found
    llc_bytes: int = 0
    run_overhead_us: float = 0.0
    int8_peak_gflops: float = 0.0  # best int8 (QDQ) benchmark point; 0: not measured

    def bandwidth_gbps(self, nbytes: float) -> float:
        """The roof streams of ``nbytes`` are priced at (as :class:`RooflineSpec` does)."""
        return level_bandwidth(nbytes, self)


def idlest_cpu(sample_s: float = 0.3) -> int:
    """The allowed CPU with the most idle time over ``sample_s`` (from /proc/stat); 0 if unknown.

    Only chooses the CPU; pinning is :func:`measure.timing.pinned`'s.
    """
    allowed = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else [0]

    def idle() -> dict[int, int]:
        out = {}
        try:
            for line in Path("/proc/stat").read_text().splitlines():
                name, *vals = line.split()
                if name.startswith("cpu") and name[3:].isdigit():
                    out[int(name[3:])] = int(vals[3]) + int(vals[4])
        except (OSError, ValueError, IndexError):
            return {}
        return out

    before = idle()
    time.sleep(sample_s)
    after = idle()
    gains = {c: after.get(c, 0) - before.get(c, 0) for c in allowed if c in after}
    return max(allowed, key=lambda c: (gains[c], -c)) if gains else 0


def _config(repeats: int):
    from measure.config import MeasureConfig

    return MeasureConfig(runtime="ort", threads=1, warmup=3, repeat=max(repeats, 1),
                         pin_cpu=-1, drop_preempted=True)


def time_model(model, feeds: dict[str, np.ndarray], repeats: int = 15, warmup: int = 3,
               rounds: int | None = None) -> float:
    """Seconds of one run of an ONNX model through :mod:`measure.ort` (1 intra-op thread):
    the median of ``repeats`` timed runs after ``warmup``, best of ``rounds`` (default
    :data:`ROUNDS`) medians."""
    from measure.ort import build, burst_timer

    rounds = ROUNDS if rounds is None else rounds
    config = _config(repeats)
    built = build(model, config)
    if not built.ok:
        raise RuntimeError(f"calibration model did not build: {built.error}")
    burst = burst_timer(built, config, feeds)
    best = float("inf")
    for i in range(rounds):
        sample = burst(warmup if i == 0 else 1, repeats)
        best = min(best, float(np.median(sample.times_ms)) * 1e-3)
    return best


def _graph(nodes, inputs, outputs, inits, opset: int = 17):
    from onnx import TensorProto, helper

    def vi(name, shape, elem=TensorProto.FLOAT):
        return helper.make_tensor_value_info(name, elem, list(shape))

    g = helper.make_graph(nodes, "calib", [vi(*v) for v in inputs],
                          [vi(*v) for v in outputs], inits)
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    m.ir_version = 8
    return m


def _init(name: str, shape, rng) -> object:
    from onnx import numpy_helper

    return numpy_helper.from_array(rng.normal(0, 0.1, shape).astype(np.float32), name)


@dataclass(frozen=True)
class Point:
    """One benchmark model: its feeds, ops per run, and FLOPs and bytes per op."""

    model: object
    feeds: dict[str, np.ndarray]
    ops: int
    flops: float
    nbytes: float


def conv_chain(c: int, h: int, k: int, groups: int, act: str = "Relu", dims: int = 2
               ) -> Point:
    """``CHAIN`` convs (k x k, ``groups``) + ``act`` (``Relu``, or ``Clip`` to [0, 6]: ReLU6)
    on a 1 x c x h x h map (``dims`` 3: k x k x k convs on a 1 x c x h x h x h volume)."""
    from onnx import helper, numpy_helper

    rng = np.random.default_rng(0)
    nodes, inits, x = [], [], "x"
    cin = c // groups
    if act == "Clip":
        inits += [numpy_helper.from_array(np.float32(0.0), "lo"),
                  numpy_helper.from_array(np.float32(6.0), "hi")]
    for i in range(CHAIN):
        inits += [_init(f"w{i}", (c, cin, *(k,) * dims), rng), _init(f"b{i}", (c,), rng)]
        nodes.append(helper.make_node("Conv", [x, f"w{i}", f"b{i}"], [f"c{i}"],
                                      kernel_shape=[k] * dims, pads=[k // 2] * (2 * dims),
                                      group=groups))
        nodes.append(helper.make_node(act, [f"c{i}", "lo", "hi"] if act == "Clip"
                                      else [f"c{i}"], [f"y{i}"]))
        x = f"y{i}"
    shape = (1, c, *(h,) * dims)
    macs = h ** dims * c * cin * k ** dims
    nbytes = 4 * (2 * c * h ** dims + c * cin * k ** dims + c)
    return Point(_graph(nodes, [("x", shape)], [(x, shape)], inits),
                 {"x": np.ones(shape, np.float32)}, CHAIN, 2.0 * macs, float(nbytes))


def conv_transpose_fan(c: int, h: int, k: int = 3) -> Point:
    """``CHAIN`` transposed convs (k x k, stride 2, pads 1, output padding 1: the upsampler
    that doubles a 1 x c x h x h map, as torch's and Keras's 'same' write it), each reading
    the input: ONNX Runtime runs them as a GEMM and a col2im scatter, not its blocked conv
    (stride 1 runs ~1.2x faster per FLOP, k=4 a little slower)."""
    from onnx import helper

    rng = np.random.default_rng(0)
    nodes, inits, outs = [], [], []
    shape, up = (1, c, h, h), (1, c, 2 * h, 2 * h)
    for i in range(CHAIN):
        inits.append(_init(f"w{i}", (c, c, k, k), rng))
        nodes.append(helper.make_node("ConvTranspose", ["x", f"w{i}"], [f"y{i}"],
                                      kernel_shape=[k, k], strides=[2, 2], pads=[1] * 4,
                                      output_padding=[1, 1]))
        outs.append((f"y{i}", up))
    macs = h * h * c * c * k * k  # each input pixel through the kernel
    nbytes = 4 * (c * h * h + 4 * c * h * h + c * c * k * k)
    return Point(_graph(nodes, [("x", shape)], outs, inits),
                 {"x": np.ones(shape, np.float32)}, CHAIN, 2.0 * macs, float(nbytes))


def conv3d_chain(c: int, h: int, k: int = 3) -> Point:
    """``CHAIN`` 3-D convs (k x k x k, the size kept) + Relu on 1 x c x h x h x h."""
    return conv_chain(c, h, k, 1, dims=3)


def conv_integer_fan(c: int, h: int, k: int = 3) -> Point:
    """``CHAIN`` ConvIntegers (dynamic quantization's conv: uint8 activations, int8 weights,
    int32 out; the size kept by padding, as exported convs are, which ONNX Runtime runs
    about 4x slower than unpadded) reading one 1 x c x h x h map quantized once."""
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(0)
    shape = (1, c, h, h)
    nodes = [helper.make_node("DynamicQuantizeLinear", ["x"], ["xq", "xs", "xz"])]
    inits = []
    for i in range(CHAIN):
        inits.append(numpy_helper.from_array(rng.integers(-8, 8, (c, c, k, k)).astype(np.int8),
                                             f"w{i}"))
        nodes.append(helper.make_node("ConvInteger", ["xq", f"w{i}", "xz"], [f"y{i}"],
                                      kernel_shape=[k, k], pads=[k // 2] * 4))
    outs = [(f"y{i}", shape, TensorProto.INT32) for i in range(CHAIN)]
    macs = h * h * c * c * k * k
    return Point(_graph(nodes, [("x", shape)], outs, inits),
                 {"x": rng.normal(size=shape).astype(np.float32)}, CHAIN, 2.0 * macs,
                 float(5 * c * h * h + c * c * k * k))


def _qdq(nodes: list, inits: list, x: str, name: str) -> str:
    """``x`` quantized and back (uint8, scale 0.05, zero point 0): the DQ's output."""
    from onnx import helper

    nodes += [helper.make_node("QuantizeLinear", [x, "s", "z"], [f"{name}_q"]),
              helper.make_node("DequantizeLinear", [f"{name}_q", "s", "z"], [f"{name}_d"])]
    return f"{name}_d"


def _qdq_consts(rng) -> list:
    """The scales and zero points of the QDQ chains (a bias's scale is input x weight)."""
    from onnx import numpy_helper

    return [numpy_helper.from_array(np.float32(0.05), "s"),
            numpy_helper.from_array(np.uint8(0), "z"), numpy_helper.from_array(np.int8(0), "zw"),
            numpy_helper.from_array(np.float32(0.0025), "sb"),
            numpy_helper.from_array(np.int32(0), "zb")]


def _int8_weight(nodes: list, inits: list, name: str, shape, rng, bias: bool = False) -> str:
    """A DequantizeLinear of an int8 weight (an int32 bias): how a QDQ model stores them."""
    from onnx import helper, numpy_helper

    dt, scale, zp = (np.int32, "sb", "zb") if bias else (np.int8, "s", "zw")
    inits.append(numpy_helper.from_array(rng.integers(-8, 8, shape).astype(dt), name))
    nodes.append(helper.make_node("DequantizeLinear", [name, scale, zp], [f"{name}_d"]))
    return f"{name}_d"


def qdq_conv_chain(c: int, h: int, k: int, groups: int) -> Point:
    """``CHAIN`` convs quantized in the QDQ format (uint8 activations, int8 weights, int32
    biases; ONNX Runtime runs QLinearConv chains, channels-last) on a 1 x c x h x h map."""
    from onnx import helper

    rng = np.random.default_rng(0)
    nodes, inits = [], _qdq_consts(rng)
    cin = c // groups
    x = _qdq(nodes, inits, "x", "in")
    for i in range(CHAIN):
        w = _int8_weight(nodes, inits, f"w{i}", (c, cin, k, k), rng)
        b = _int8_weight(nodes, inits, f"b{i}", (c,), rng, bias=True)
        nodes.append(helper.make_node("Conv", [x, w, b], [f"c{i}"], kernel_shape=[k, k],
                                      pads=[k // 2] * 4, group=groups))
        x = _qdq(nodes, inits, f"c{i}", f"c{i}")
    shape = (1, c, h, h)
    macs = h * h * c * cin * k * k
    nbytes = 2 * c * h * h + c * cin * k * k + 4 * c
    return Point(_graph(nodes, [("x", shape)], [(x, shape)], inits),
                 {"x": np.ones(shape, np.float32)}, CHAIN, 2.0 * macs, float(nbytes))


def qdq_matmul_chain(m: int, k: int) -> Point:
    """``CHAIN`` MatMuls quantized in the QDQ format (ONNX Runtime: QLinearMatMul) of an
    m x k activation by int8 k x k weights."""
    from onnx import helper

    rng = np.random.default_rng(0)
    nodes, inits = [], _qdq_consts(rng)
    x = _qdq(nodes, inits, "a", "in")
    for i in range(CHAIN):
        w = _int8_weight(nodes, inits, f"w{i}", (k, k), rng)
        nodes.append(helper.make_node("MatMul", [x, w], [f"y{i}"]))
        x = _qdq(nodes, inits, f"y{i}", f"y{i}")
    feeds = {"a": rng.normal(size=(1, m, k)).astype(np.float32)}
    return Point(_graph(nodes, [("a", (1, m, k))], [(x, (1, m, k))], inits), feeds, CHAIN,
                 2.0 * m * k * k, float(2 * m * k + k * k))


def matmul_point(m: int, k: int, n: int) -> Point:
    """One ``MatMul`` of an m x k activation by a k x n weight (a single op per model)."""
    from onnx import helper

    rng = np.random.default_rng(0)
    model = _graph([helper.make_node("MatMul", ["a", "w"], ["y"])], [("a", (1, m, k))],
                   [("y", (1, m, n))], [_init("w", (k, n), rng)])
    feeds = {"a": rng.normal(size=(1, m, k)).astype(np.float32)}
    return Point(model, feeds, 1, 2.0 * m * k * n, 4.0 * (m * k + k * n + m * n))


def matmul_chain(m: int, k: int) -> Point:
    """``CHAIN`` MatMuls of an m x k activation by k x k weights, one after the other: small
    ones are all launch, which a line through single large MatMuls only extrapolates."""
    from onnx import helper

    rng = np.random.default_rng(0)
    nodes, inits, x = [], [], "a"
    for i in range(CHAIN):
        inits.append(_init(f"w{i}", (k, k), rng))
        nodes.append(helper.make_node("MatMul", [x, f"w{i}"], [f"y{i}"]))
        x = f"y{i}"
    feeds = {"a": rng.normal(size=(1, m, k)).astype(np.float32)}
    return Point(_graph(nodes, [("a", (1, m, k))], [(x, (1, m, k))], inits), feeds, CHAIN,
                 2.0 * m * k * k, 4.0 * (2 * m * k + k * k))


def pool_chain(c: int, h: int) -> Point:
    from onnx import helper

    nodes, x = [], "x"
    for i in range(CHAIN):
        nodes.append(helper.make_node("AveragePool", [x], [f"y{i}"], kernel_shape=[3, 3],
                                      pads=[1] * 4, strides=[1, 1], count_include_pad=0))
        x = f"y{i}"
    shape = (1, c, h, h)
    return Point(_graph(nodes, [("x", shape)], [(x, shape)], []),
                 {"x": np.ones(shape, np.float32)}, CHAIN, 9.0 * c * h * h, 8.0 * c * h * h)


def pool_int8_chain(c: int, h: int) -> Point:
    """``CHAIN`` 3x3 MaxPools on a uint8 NCHW map (a QDQ model's pool outside the
    channels-last region: ONNX Runtime's plain uint8 kernel, ~20x its float NCHWc pool)."""
    from onnx import TensorProto, helper

    nodes, x = [], "x"
    for i in range(CHAIN):
        nodes.append(helper.make_node("MaxPool", [x], [f"y{i}"], kernel_shape=[3, 3],
                                      pads=[1] * 4, strides=[1, 1]))
        x = f"y{i}"
    shape = (1, c, h, h)
    rng = np.random.default_rng(0)
    return Point(_graph(nodes, [("x", shape, TensorProto.UINT8)],
                        [(x, shape, TensorProto.UINT8)], []),
                 {"x": rng.integers(0, 255, shape).astype(np.uint8)}, CHAIN,
                 9.0 * c * h * h, 2.0 * c * h * h)


def add_chain(c: int, h: int) -> Point:
    from onnx import helper

    rng = np.random.default_rng(0)
    shape = (1, c, h, h)
    nodes, inits, x = [], [], "x"
    for i in range(CHAIN):
        inits.append(_init(f"a{i}", shape, rng))
        nodes.append(helper.make_node("Add", [x, f"a{i}"], [f"y{i}"]))
        x = f"y{i}"
    return Point(_graph(nodes, [("x", shape)], [(x, shape)], inits),
                 {"x": np.ones(shape, np.float32)}, CHAIN, float(c * h * h), 12.0 * c * h * h)


def transcendental_chain(c: int, h: int) -> Point:
    """A chain of element-wise transcendental ops (:data:`TRANSCENDENTAL_CHAIN` in turn) on a
    1 x C x H x H tensor; work = elements per op."""
    from onnx import helper

    shape = (1, c, h, h)
    nodes, x = [], "x"
    for i in range(CHAIN):
        nodes.append(helper.make_node(TRANSCENDENTAL_CHAIN[i % len(TRANSCENDENTAL_CHAIN)],
                                      [x], [f"y{i}"]))
        x = f"y{i}"
    return Point(_graph(nodes, [("x", shape)], [(x, shape)], [], opset=20),
                 {"x": np.full(shape, 0.5, np.float32)}, CHAIN, float(c * h * h),
                 8.0 * c * h * h)


def gap_fan(c: int, h: int) -> Point:
    from onnx import helper

    shape = (1, c, h, h)
    ins = [(f"x{i}", shape) for i in range(CHAIN)]
    nodes = [helper.make_node("GlobalAveragePool", [f"x{i}"], [f"y{i}"]) for i in range(CHAIN)]
    outs = [(f"y{i}", (1, c, 1, 1)) for i in range(CHAIN)]
    feeds = {n: np.ones(shape, np.float32) for n, _ in ins}
    return Point(_graph(nodes, ins, outs, []), feeds, CHAIN, float(c * h * h),
                 4.0 * (c * h * h + c))


def lstm_point(batch: int, hidden: int, steps: int = RNN_STEPS) -> Point:
    """One forward LSTM of ``steps`` steps on one input feature; per op = per step."""
    from onnx import helper

    rng = np.random.default_rng(0)
    gh = 4 * hidden
    inits = [_init("W", (1, gh, 1), rng), _init("R", (1, gh, hidden), rng),
             _init("B", (1, 2 * gh), rng)]
    node = helper.make_node("LSTM", ["x", "W", "R", "B"], ["y"], hidden_size=hidden)
    model = _graph([node], [("x", (steps, batch, 1))], [("y", (steps, 1, batch, hidden))],
                   inits)
    feeds = {"x": rng.normal(size=(steps, batch, 1)).astype(np.float32)}
    # per op (step): FLOPs = the gate elements; bytes = the recurrent GEMM's (R, h, gates)
    return Point(model, feeds, steps, float(batch * gh),
                 4.0 * (gh * hidden + batch * (hidden + gh)))


def benchmark_points() -> dict[str, list[Point]]:
    """The benchmark models of every op class (built, not timed)."""
    conv = lambda k, g: [conv_chain(c, h, k, g(c)) for c, h in SIZES]  # noqa: E731
    return {
        "conv": conv(3, lambda c: 1),
        "conv1x1": conv(1, lambda c: 1),
        "depthwise": conv(3, lambda c: c),
        "grouped": conv(3, lambda c: max(c // 8, 1)),
        "conv_nchw": [conv_chain(c, h, 3, 1) for c, h in SIZES_NCHW],
        "depthwise_nchw": [conv_chain(c, h, 3, c) for c, h in SIZES_NCHW],
        "conv_transpose": [conv_transpose_fan(c, h) for c, h in SIZES],
        "conv3d": [conv3d_chain(c, h) for c, h in SIZES_3D],
        "gemm": [matmul_point(*s) for s in GEMM_SHAPES]
        + [matmul_chain(m, k) for m, k in GEMM_CHAINS],
        "gemv": [matmul_point(1, k, n) for k, n in GEMV_SHAPES],
        "pool": [pool_chain(c, h) for c, h in SIZES],
        "pool_int8": [pool_int8_chain(c, h) for c, h in SIZES],
        "global_pool": [gap_fan(c, h) for c, h in SIZES],
        "elementwise": [add_chain(c, h) for c, h in SIZES],
        "transcendental": [transcendental_chain(c, h) for c, h in SIZES],
        "recurrent": [lstm_point(b, h) for b, h in RNN_SIZES],
        "conv_int8": [qdq_conv_chain(c, h, 3, 1) for c, h in SIZES],
        "conv_integer": [conv_integer_fan(c, h) for c, h in SIZES],
        "depthwise_int8": [qdq_conv_chain(c, h, 3, c) for c, h in SIZES],
        "gemm_int8": [qdq_matmul_chain(m, k) for m, k in GEMM_INT8_CHAINS],
    }


def fit_line(work: np.ndarray, seconds: np.ndarray, scale: np.ndarray | None = None
             ) -> tuple[float, float]:
    """Least squares ``seconds = launch + work / rate`` -> (launch_s >= 0, rate per second).

    Residuals are relative to ``scale`` (default ``seconds``): a timing's noise grows with
    its length, so an unweighted fit lets the largest point's few-percent noise swing the
    intercept by more than the small points' whole time (a 200 us "launch" for a GEMM)."""
    work, seconds = np.asarray(work, float), np.asarray(seconds, float)
    scale = np.asarray(seconds if scale is None else scale, float)
    w = 1.0 / np.maximum(scale, max(float(np.max(scale)), 1e-12) * 1e-6)
    slope, icpt = np.polyfit(work, seconds, 1, w=w)
    if slope <= 0:
        return max(float(np.min(seconds)), 0.0), float(np.max(work) / np.max(seconds))
    if icpt < 0:  # no overhead visible: rate through the origin
        w2 = w * w
        return 0.0, float(np.sum(w2 * work * work) / np.sum(w2 * work * seconds))
    return float(icpt), float(1.0 / slope)


def measure_peak_gflops(sizes: tuple[int, ...] = PEAK_SIZES, repeats: int = 5) -> float:
    """Best FLOP rate (GFLOP/s) of square fp32 MatMuls of ``sizes``."""
    return max(p.flops / time_model(p.model, p.feeds, repeats=repeats) / 1e9
               for p in (matmul_point(n, n, n) for n in sizes))


def measure_dram_gbps(elems: int = 8 * 1024 * 1024, repeats: int = 7,
                      overhead_s: float = 0.0) -> float:
    """GB/s of an ORT ``Add`` of two ``elems``-float tensors (3 x 4 x elems bytes); the
    run's own ``overhead_s`` (:func:`measure_run_overhead_us`) taken off its time."""
    from onnx import helper

    shape = (elems,)
    m = _graph([helper.make_node("Add", ["a", "b"], ["y"])], [("a", shape), ("b", shape)],
               [("y", shape)], [])
    feeds = {"a": np.ones(shape, np.float32), "b": np.ones(shape, np.float32)}
    return 3 * 4 * elems / _less(time_model(m, feeds, repeats=repeats), overhead_s) / 1e9


def _less(seconds: float, overhead_s: float) -> float:
    """A run's time less the run overhead (never below half of it: a noisy overhead)."""
    return max(seconds - overhead_s, seconds / 2)


def relu_chain(n: int) -> Point:
    """``n`` ReLUs on 4 floats: a run that is all overhead."""
    from onnx import helper

    nodes, x = [], "x"
    for i in range(n):
        nodes.append(helper.make_node("Relu", [x], [f"y{i}"]))
        x = f"y{i}"
    return Point(_graph(nodes, [("x", (1, 4))], [(x, (1, 4))], []),
                 {"x": np.ones((1, 4), np.float32)}, n, 4.0 * n, 32.0 * n)


def measure_run_overhead_us(repeats: int = 50) -> float:
    """Microseconds one ORT run costs beyond its ops: the intercept of the run time of
    chains of 1 and :data:`CHAIN` trivial ReLUs (at least 0)."""
    one, many = (time_model(p.model, p.feeds, repeats=repeats)
                 for p in (relu_chain(1), relu_chain(CHAIN)))
    per_op = max(many - one, 0.0) / (CHAIN - 1)
    return max(one - per_op, 0.0) * 1e6


def measure_cache_gbps(elems: int = 128 * 1024, loops: int = 200, repeats: int = 15,
                       overhead_s: float = 0.0) -> float:
    """GB/s of L2-resident streams: best of numpy ``add`` and one ORT ``Add`` (3 x 4 x elems B)."""
    a, b, c = (np.ones(elems, np.float32) for _ in range(3))
    best = float("inf")
    for _ in range(5):
        t0 = time.perf_counter_ns()
        for _ in range(loops):
            np.add(a, b, out=c)
        best = min(best, (time.perf_counter_ns() - t0) * 1e-9 / loops)
    numpy_gbps = 3 * 4 * elems / best / 1e9
    return max(numpy_gbps, measure_dram_gbps(elems, repeats=repeats, overhead_s=overhead_s))


def _sysfs_cache(level: int) -> int | None:
    """Size (bytes) of CPU 0's level-``level`` data or unified cache from sysfs; None if
    unknown."""
    try:
        base = Path("/sys/devices/system/cpu/cpu0/cache")
        for idx in sorted(base.glob("index*")):
            if (idx / "level").read_text().strip() == str(level) and \
                    (idx / "type").read_text().strip() != "Instruction":
                size = (idx / "size").read_text().strip().upper()
                mult = {"K": 1024, "M": 1024**2}.get(size[-1], 1)
                return int(size.rstrip("KM")) * mult
    except (OSError, ValueError):
        pass
    return None


def cache_bytes() -> int:
    """Per-core L2 size from sysfs (bytes); 1 MiB if unknown."""
    return _sysfs_cache(2) or 1 << 20


def llc_bytes() -> int:
    """The bytes a kernel's streams may span and still run at the last-level cache's rate:
    half the L3 from sysfs (an ORT ``Add`` swept over sizes on an EPYC with 32 MiB of L3
    holds its L3 rate up to 16 MiB of streams and falls toward DRAM's by 32 MiB: the
    cache also holds the runtime's other data); 0 when there is no L3 or it is no bigger
    than twice the L2."""
    l3 = _sysfs_cache(3) or 0
    return l3 // 2 if l3 // 2 > cache_bytes() else 0


def measure_llc_gbps(nbytes: int, repeats: int = 7, overhead_s: float = 0.0) -> float:
    """GB/s of an ORT ``Add`` whose three streams span ``nbytes`` / 2 (inside the L3)."""
    return measure_dram_gbps(max(nbytes // 2 // 12, 1024), repeats=repeats,
                             overhead_s=overhead_s)


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _fit(points: list[Point], secs: list[float], by: str,
         scale: list[float] | None = None) -> tuple[float, float]:
    work = np.array([p.flops if by == "flops" else p.nbytes for p in points])
    return fit_line(work, np.array(secs), None if scale is None else np.array(scale))


def _efficiency(name: str, key: str, rate: float, roof: float, raw: dict[str, float],
                log: Callable[[str], None]) -> float:
    eff = rate / roof
    if eff > 1.0:
        raw[f"{name}_{key}_raw"] = round(eff, 4)
        log(f"warning: {name} {key} {eff:.2f} > 1: its roof was measured too low; capped at 1")
        return 1.0
    return float(eff)


def calibrate(cpu: int | str | None = "auto", repeats: int = 15,
              log: Callable[[str], None] = lambda s: None) -> Calibration:
    """Run every micro-benchmark pinned to ``cpu`` and return the measured figures.

    ``cpu``: a CPU index, ``"auto"`` (the most idle allowed CPU) or None (not pinned).
    """
    import onnxruntime as ort

    from measure.timing import pinned

    t0 = time.perf_counter()
    if cpu == "auto":
        cpu = idlest_cpu()
    log(f"pinned to CPU {cpu}" if cpu is not None else "not pinned")
    pts = benchmark_points()
    with pinned(-1 if cpu is None else int(cpu)):
        # first, what a run costs beyond its ops: every benchmark below is one run, and
        # the roofline adds this once per network, so it comes off each run's time
        run_us = measure_run_overhead_us(repeats=max(repeats, 10) * 3)
        run_s = run_us * 1e-6
        log(f"run overhead: {run_us:.2f} us per run")
        peak = measure_peak_gflops(repeats=max(repeats // 3, 3))
        log(f"peak: {peak:.1f} GFLOP/s (best MatMul of {PEAK_SIZES} cubed)")
        dram = measure_dram_gbps(repeats=max(repeats // 2, 3), overhead_s=run_s)
        cache = measure_cache_gbps(repeats=repeats, overhead_s=run_s)
        llc_b = llc_bytes()
        llc = (measure_llc_gbps(llc_b, repeats=max(repeats // 2, 3), overhead_s=run_s)
               if llc_b else 0.0)
        log(f"bandwidth: DRAM {dram:.1f} GB/s (Add 3x32 MiB), cache {cache:.1f} GB/s"
            + (f", last-level cache {llc:.1f} GB/s (Add of {llc_b / 2**21:.0f} MiB)"
               if llc_b else ""))

        secs = {name: [_less(time_model(p.model, p.feeds, repeats=repeats), run_s) / p.ops
                       for p in pts_] for name, pts_ in pts.items()}
    ops: dict[str, dict[str, float]] = {}
    raw: dict[str, float] = {}
    for name in ("pool", "global_pool", "elementwise"):
        launch, brate = _fit(pts[name], secs[name], "bytes")
        ops[name] = {"launch_us": launch * 1e6,
                     "memory_efficiency": _efficiency(name, "memory", brate, cache * 1e9, raw,
                                                      log)}
        log(f"{name}: launch {launch * 1e6:.2f} us, {brate / 1e9:.1f} GB/s")
    stream = ops["elementwise"]["memory_efficiency"]
    # the int8 roof: the best rate of the quantized benchmarks (VNNI: several times the float
    # peak), which the int8 classes' efficiencies are fractions of
    int8_peak = max(p.flops / t for name in INT8_MEASURED
                    for p, t in zip(pts[name], secs[name], strict=True)) / 1e9
    for name in ("conv", "conv1x1", "depthwise", "grouped", "conv_nchw", "depthwise_nchw",
                 "conv_transpose", "conv3d", "conv_integer", "pool_int8", "transcendental",
                 *INT8_MEASURED):
        # fitted on FLOPs (a transcendental op: one per element); a byte rate fitted on
        # compute-bound runs would understate the memory roof, so they stream at the
        # element-wise efficiency
        launch, rate = _fit(pts[name], secs[name], "flops")
        roof = int8_peak if name in INT8_MEASURED else peak
        ops[name] = {"launch_us": launch * 1e6,
                     "compute_efficiency": _efficiency(name, "compute", rate, roof * 1e9, raw,
                                                       log),
                     "memory_efficiency": stream}
        log(f"{name}: launch {launch * 1e6:.2f} us, {rate / 1e9:.1f} GFLOP/s")
    # gemm: compute efficiency at transformer sizes, memory efficiency of classifier heads
    launch, rate = _fit(pts["gemm"], secs["gemm"], "flops")
    # each head against the roof the model prices it at (the smallest level it fits in)
    levels = SimpleNamespace(cache_bytes=cache_bytes(), llc_bytes=llc_b,
                             cache_bandwidth_gbps=cache, llc_bandwidth_gbps=llc,
                             dram_bandwidth_gbps=dram)
    head_eff = [p.nbytes / t / (level_bandwidth(p.nbytes, levels) * 1e9)
                for p, t in zip(pts["gemv"], secs["gemv"], strict=True)]
    ops["gemm"] = {"launch_us": launch * 1e6,
                   "compute_efficiency": _efficiency("gemm", "compute", rate, peak * 1e9, raw,
                                                     log),
                   "memory_efficiency": _efficiency("gemm", "memory", float(np.median(head_eff)),
                                                    1.0, raw, log)}
    log(f"gemm: launch {launch * 1e6:.2f} us, {rate / 1e9:.1f} GFLOP/s at {GEMM_SHAPES}; "
        f"heads at {', '.join(f'{e:.0%}' for e in head_eff)} of their roofs")
    # recurrent: a step less its GEMM h R^T as the gemm class prices it, on gate elements
    g = ops["gemm"]
    rest = []
    for (_, hidden), p in zip(RNN_SIZES, pts["recurrent"], strict=True):
        gemm_flops = 2.0 * p.flops * hidden  # 2 x batch x 4h x h
        bw = level_bandwidth(p.nbytes, levels)
        rest.append(max(gemm_flops / (peak * 1e9 * g["compute_efficiency"]),
                        p.nbytes / (bw * 1e9 * g["memory_efficiency"])))
    residual = [max(t - r, 0.0) for t, r in zip(secs["recurrent"], rest, strict=True)]
    launch, rate = _fit(pts["recurrent"], residual, "flops", scale=secs["recurrent"])
    ops["recurrent"] = {"launch_us": launch * 1e6,
                        "compute_efficiency": _efficiency("recurrent", "compute", rate,
                                                          peak * 1e9, raw, log),
                        "memory_efficiency": stream}
    log(f"recurrent: {launch * 1e6:.2f} us per step beyond its GEMM, gates at "
        f"{rate / 1e9:.2f} G elements/s")
    return Calibration(peak, dram, cache, levels.cache_bytes, ops, cpu_name(), ort.__version__,
                       time.perf_counter() - t0, raw, llc, llc_b, run_us, int8_peak)


def spec_toml(cal: Calibration, name: str = "local", base: RooflineSpec | None = None) -> str:
    """The roofline spec TOML of a calibration.

    The fusion rules (what the runtime's graph optimiser does) are not measured;
    ``base`` names them (default: the shipped ``x86_generic`` spec, whose rules are
    ``ort``, ONNX Runtime's CPU optimiser). Layout reorders are not benchmarked:
    they are copies, so the ``reorder`` class takes the element-wise stream's
    memory efficiency and launch overhead. A class measured only on one roof takes
    1.0 on the other (pooling never binds on compute); compute classes stream at the
    element-wise efficiency.
    """
    base = base or load_spec("x86_generic", RooflineSpec)
    ew = cal.ops["elementwise"]
    lines = [
        "# Roofline spec of this machine, measured by `costmodels roofline calibrate`",
        f"# on {time.strftime('%Y-%m-%d %H:%M:%S')} ({cal.seconds:.0f} s of micro-benchmarks;",
        "# see analytical/calibrate.py for each benchmark). Nothing here is fitted to networks.",
        'kind = "roofline"', "schema_version = 1", f'name = "{name}"',
        f'description = "calibrated: {cal.cpu}, ONNX Runtime {cal.onnxruntime} CPU, 1 thread"',
        f"peak_gflops = {cal.peak_gflops:.3f}   # best square MatMul of {PEAK_SIZES}",
        f"dram_bandwidth_gbps = {cal.dram_bandwidth_gbps:.3f}   # ORT Add, 3 x 32 MiB streamed",
        f"cache_bandwidth_gbps = {cal.cache_bandwidth_gbps:.3f}   # best of numpy add and one "
        "ORT Add, 3 x 512 KiB",
        f"cache_bytes = {cal.cache_bytes}   # L2 per core (sysfs)",
        *([f"llc_bandwidth_gbps = {cal.llc_bandwidth_gbps:.3f}   # ORT Add, 3 streams of "
           f"{cal.llc_bytes / 2**21:g} MiB in all",
           f"llc_bytes = {cal.llc_bytes}   # half the L3 (sysfs): streams up to it run at "
           "the L3 rate"] if cal.llc_bytes else []),
        f"run_overhead_us = {cal.run_overhead_us:.3f}   # one ORT run beyond its ops (ReLU chains "
        f"of 1 and {CHAIN} ops on 4 floats)",
        *([f"int8_peak_gflops = {cal.int8_peak_gflops:.3f}   # best quantized (QDQ) benchmark "
           "chain: the int8 classes' roof"] if cal.int8_peak_gflops else []),
        f"fusion = {json.dumps(base.fusion)}   # graph optimiser: the rules of the {base.name} spec",
        f"post_pass_ops = {json.dumps(list(base.post_pass_ops))}   # fused activations applied "
        f"over the conv's output: from the {base.name} spec",
        "",
        "# Per op class: launch_us = fitted intercept, efficiency = fitted rate / roof.",
        f"# conv/conv1x1/depthwise/grouped/pool/global_pool/elementwise: chains of {CHAIN} ops at",
        f"# (C, H) in {SIZES}; gemm: MatMuls of (tokens, in, out) {GEMM_SHAPES} and chains",
        f"# of {CHAIN} (tokens, width) x (width, width) MatMuls at {GEMM_CHAINS}",
        f"# (compute) and classifier heads (1, K, N) for (K, N) in {GEMV_SHAPES} (memory);",
        f"# recurrent: one step of forward LSTMs ({RNN_STEPS} steps) at (batch, hidden) in "
        f"{RNN_SIZES}; transcendental: chains of {CHAIN} {'/'.join(TRANSCENDENTAL_CHAIN)} at "
        "the conv sizes (one element = one op);",
        f"# conv_int8/depthwise_int8/gemm_int8: the conv and depthwise chains and MatMul chains "
        f"at {GEMM_INT8_CHAINS},",
        "# quantized in the QDQ format (uint8 activations, int8 weights: ORT's QLinearConv /",
        "# QLinearMatMul; their efficiency is against int8_peak_gflops); conv_integer: fans of",
        f"# {CHAIN} padded 3x3 ConvIntegers (dynamic quantization's conv) at the conv sizes;",
        f"# pool_int8: chains of {CHAIN} 3x3 MaxPools on uint8 NCHW maps (one tap = one op).",
    ]
    for cls in (c for c in OP_CLASSES_MEASURED if c in cal.ops):
        o = cal.ops[cls]
        lines += [f"[ops.{cls}]",
                  f"compute_efficiency = {max(o.get('compute_efficiency', 1.0), 1e-4):.4f}",
                  f"memory_efficiency = {max(o.get('memory_efficiency', 1.0), 1e-4):.4f}",
                  f"launch_us = {o['launch_us']:.3f}"]
    lines += ["[ops.view]   # Flatten/Reshape: no data moved; launch as an element-wise op",
              "compute_efficiency = 1.0", "memory_efficiency = 1.0",
              f"launch_us = {ew['launch_us']:.3f}", "traffic_factor = 0.0",
              "[ops.reorder]   # layout reorders (copies): not benchmarked, the element-wise figures",
              "compute_efficiency = 1.0", f"memory_efficiency = {ew['memory_efficiency']:.4f}",
              f"launch_us = {ew['launch_us']:.3f}",
              "",
              "[calibration]", f'cpu = "{cal.cpu}"', f'onnxruntime = "{cal.onnxruntime}"',
              f"seconds = {cal.seconds:.1f}"]
    lines += [f"{k} = {v}" for k, v in sorted(cal.raw.items())]
    return "\n".join(lines) + "\n"


def write_spec(cal: Calibration, path: str | Path, name: str = "local",
               base: RooflineSpec | None = None) -> Path:
    """Write the calibrated spec to ``path`` (folders created) and check it loads back."""
    p = Path(path).expanduser()
    p.parent.mkdir(parents=True, exist_ok=True)
    from costmodels.tables import atomic_output

    with atomic_output(p) as fh:
        fh.write(spec_toml(cal, name, base))
    load_spec(str(p), RooflineSpec)
    return p


__all__ = ["Calibration", "calibrate", "fit_line", "spec_toml", "write_spec"]
