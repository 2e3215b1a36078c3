"""Roofline latency model of a CPU or GPU, from a device spec (calibrated or datasheet).

The network is first turned into the kernels the runtime launches by the core
planner (:func:`costmodels.fusion.kernels`) with the fusion rules the spec names
(``fusion = "ort"``: removed ops, merged duplicates, fused chains such as
``Conv`` absorbing ``BatchNormalization``, ``Add``, ``Relu``, and layout reorders),
the same kernels the lookup table sums. Each kernel ``k`` of op class ``c`` then costs::

    compute_s = flops_k / (peak_gflops * 1e9 * compute_efficiency_c)
    memory_s  = bytes_k * traffic_factor_c / (bandwidth_gbps * 1e9 * memory_efficiency_c)
    time_s    = max(compute_s, memory_s) + launch_us_c * 1e-6

with ``flops = 2 * MACs + element ops`` of the layers it covers (a conv run in a blocked
layout computes its channels padded to whole blocks: :func:`block_padding`) and ``bytes`` = the
kernel's activation inputs + weights + output (bandwidth is the cache's when they
fit in ``cache_bytes``, the last-level cache's when the spec has one and they fit in
``llc_bytes``, DRAM's otherwise). A layout reorder covers no IR layer: it
is op class ``reorder``, pure data movement (no FLOPs; bytes = its input + its
output). An absorbed op the spec lists in ``post_pass_ops`` (a fused Clip on ONNX
Runtime) adds one element-wise pass over the kernel's output (its bytes read and
written). The network's latency is the sum over kernels (one stream, no overlap) plus
the spec's ``run_overhead_us``, once per run (a ``run`` entry of ``per_layer``).

A recurrence (LSTM, GRU, RNN) is not one GEMM: its time steps run one after the
other. It costs the input projection ``x_t W^T`` of every step as one ``gemm``
kernel, then each step and direction in turn as the recurrent product
``h_{t-1} R^T`` at the ``gemm`` rates (``R`` read from cache when it fits; no
launch: the op loops over its steps itself) plus a ``recurrent`` kernel: the gates
(one FLOP per gate element) and the op's per-step overhead (``launch_us``).
``roofline calibrate`` measures that class on LSTM steps; a spec without it prices
the gates as an ``elementwise`` kernel. A long sequence of small steps is thus
overhead-bound, as on the device.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from types import MappingProxyType

from analytical.specs import RooflineSpec, load_spec
from costmodels.fusion import Kernel, kernels, load_rules
from costmodels.interface import BaseCostModel, Estimate, LayerCost
from costmodels.network import DTYPE_BYTES, Layer, Network, numel, recurrence
from costmodels.ops import RESIZE_OPS, RNN_OPS, SOFTMAX_OPS
from costmodels.ops import op_class as ops_class

OP_CLASSES = ("conv", "conv1x1", "depthwise", "gemm", "pool", "global_pool", "elementwise",
              "view", "reorder")
# Classes a spec may add; absent, a layer of the class is costed as the one named here.
OPTIONAL_CLASSES = {"grouped": "conv", "recurrent": "elementwise", "conv_nchw": "conv",
                    "depthwise_nchw": "depthwise", "grouped_nchw": "grouped",
                    "transcendental": "elementwise", "conv_int8": "conv",
                    "depthwise_int8": "depthwise", "gemm_int8": "gemm",
                    "conv_transpose": "conv", "conv3d": "conv", "conv_integer": "conv_nchw",
                    "pool_int8": "pool"}
# A kernel on uint8/int8 tensors (a QDQ model's QLinearConv / QLinearMatMul, or a QOperator
# one's) computes in integers: these classes, when the spec has them (the float class else).
INT8_CLASSES = {"conv": "conv_int8", "conv1x1": "conv_int8", "grouped": "conv_int8",
                "depthwise": "depthwise_int8", "gemm": "gemm_int8"}
_INT8 = frozenset(INT8_CLASSES.values())  # their roof: the spec's int8_peak_gflops
# Element-wise ops whose function is costly per element: compute-bound on a CPU, the
# ``transcendental`` class where the spec has it (``elementwise`` else). Its unit is one
# element of the chain ``roofline calibrate`` times it on (Gelu and Erf in turn); each op's
# work per output element in that unit is TRANSCENDENTAL_WORK, measured with ONNX Runtime on
# this project's CPU as eight nodes of the op reading one input against eight of Gelu and of
# Erf, at 0.2 M and 1.2 M elements (bench/bench_elementwise.py, the mean of the two; a ReLU
# is 0.2-0.4 of a unit): ORT computes Softplus, Mish, Shrink, Cosh, Sinh, Tan and Asinh
# element by element without vector code, 11-37x a Gelu's element; Log, Sin, Cos and the Elu
# family take ~3x; Sigmoid, Tanh and QuickGelu (x * sigmoid(x), fused) half of one. Where
# such an op is absorbed into another op's kernel (a conv's fused Sigmoid), its work joins
# that kernel's FLOPs.
TRANSCENDENTAL_WORK = {
    "Gelu": 1.0, "Erf": 1.0, "QuickGelu": 0.5, "Sigmoid": 0.54, "Tanh": 0.5, "HardSwish": 0.77,
    "Softsign": 0.39, "Sqrt": 0.58, "Reciprocal": 0.37, "Exp": 0.33, "Floor": 0.57,
    "Ceil": 0.63, "Round": 0.47, "LeakyRelu": 0.38, "HardSigmoid": 0.33, "Sign": 1.9,
    "Acos": 1.1, "Atan": 1.7, "Log": 3.2, "Sin": 3.5, "Cos": 3.0, "Elu": 3.4, "Selu": 3.5,
    "Celu": 3.8, "Shrink": 10.9, "Cosh": 15.8, "Tan": 22.9, "Softplus": 19.2, "Mish": 20.2,
    "Sinh": 28.7, "Asinh": 37.2}
# Softmax-like ops (exp, sum and divide over a row): a unit's fixed part per element plus a
# part per row, SOFTMAX_WORK = (per element, per row) -- 0.4 + 27 / row length (0.88 units at
# rows of 56, 0.63 at 197, 0.46 at 384 on this project's CPU)
SOFTMAX_WORK = (0.4, 27.0)
TRANSCENDENTAL_OPS = frozenset(TRANSCENDENTAL_WORK) | SOFTMAX_OPS
# An interpolating Resize run in NCHW (ORT's plain Resize: a cubic one always, a linear one
# where the layout leaves it unblocked) computes its taps' weights per output element: work
# per output element of a 2-D resize in the transcendental unit, by taps per axis (nearest
# 1, linear 2, cubic 4), measured as the table above (bench/bench_elementwise.py, 2x
# upsamplings, half_pixel; nearest asymmetric; two runs on the AMD EPYC of 2026-12-07,
# where the table's other ops read 0.6-0.9 of their figures: nearest 0.77, linear 1.75-1.94,
# cubic 93-106, at 0.8, 1.8-2.0 and 96-107 ns an output element; a cubic one with
# align_corners takes up to 1.7x that, and the IR keeps no coordinate mode); scaled by the
# resized axes / 2. ORT's blocked Upsample (nearest, linear) streams like any element-wise
# op.
RESIZE_WORK = {1: 0.75, 2: 1.8, 4: 100.0}


def resize_work(k: Kernel) -> int | None:
    """An interpolating resize's work in the transcendental class's unit where ORT runs
    its plain (NCHW) Resize (:data:`RESIZE_WORK`), None for any other kernel."""
    la = k.layers[0] if k.layers else None
    if la is None or la.op not in RESIZE_OPS or k.layout == "nchwc" \
            or not la.input_shapes:
        return None
    axes = sum(i != o for i, o in zip(la.input_shapes[0], la.output_shape, strict=False))
    work = RESIZE_WORK.get(max(la.kernel, default=1))  # a nearest one keeps no taps
    return None if work is None or not axes else round(numel(la.output_shape) * work * axes / 2)


def transcendental_work(layer: Layer) -> int | None:
    """A transcendental layer's work in the class's unit (None for other layers)."""
    n = numel(layer.output_shape)
    if layer.op in SOFTMAX_OPS:  # the IR keeps no axis: the last one (exports' -1, mostly)
        row = layer.output_shape[-1] if layer.output_shape else 1
        return round(n * (SOFTMAX_WORK[0] + SOFTMAX_WORK[1] / max(row, 1)))
    work = TRANSCENDENTAL_WORK.get(layer.op)
    return None if work is None else round(n * work)


GEMM_ANCHORS = frozenset({"MatMul", "Gemm"})  # their absorbed ops are passes of their own
# A conv the planner leaves in plain NCHW under rules with a blocked layout (its channels
# cannot be reordered) runs the runtime's generic path: these classes, when the spec has them.
NCHW_CLASSES = {"conv": "conv_nchw", "depthwise": "depthwise_nchw", "grouped": "grouped_nchw"}
# costmodels.ops classes -> this model's spec classes (conv is split by kernel below)
_SPEC_CLASS = {"depthwise_conv": "depthwise", "grouped_conv": "grouped", "gemm": "gemm",
               "matmul": "gemm", "pool": "pool", "global_pool": "global_pool", "view": "view"}
DEFAULT_SPEC = "x86_generic"
LOCAL_SPEC_ENV = "COSTMODELS_ROOFLINE_SPEC"


def local_spec_path() -> Path:
    """Where ``costmodels roofline calibrate`` writes this machine's spec by default.

    ``$COSTMODELS_ROOFLINE_SPEC`` if set, else
    ``$XDG_CONFIG_HOME/costmodels/roofline-local.toml`` (``~/.config/...``).
    """
    env = os.environ.get(LOCAL_SPEC_ENV)
    if env:
        return Path(env).expanduser()
    base = os.environ.get("XDG_CONFIG_HOME") or os.path.expanduser("~/.config")
    return Path(base) / "costmodels" / "roofline-local.toml"


def op_class(layer: Layer) -> str:
    """The spec's op class of a layer, from :func:`costmodels.ops.op_class`: convolutions
    by groups and kernel (``depthwise``, ``grouped``, ``conv1x1``, ``conv``; a transposed
    one ``conv_transpose``, a 3-D one ``conv3d``: each ``conv`` where the spec lacks it;
    dynamic quantization's ``ConvInteger`` ``conv_integer``, ONNX Runtime's im2col path
    without a blocked or int8 kernel, ``conv_nchw`` where the spec lacks it),
    Gemm and MatMul ``gemm``, pools, views, ``transcendental`` element-wise ops
    (:data:`TRANSCENDENTAL_OPS`); every other op streams like an ``elementwise`` one."""
    cls = ops_class(layer)
    if layer.op == "ConvInteger":  # not QLinearConv's int8 kernel: ~4x a float conv padded
        return "conv_integer"
    if cls == "conv" and layer.op == "ConvTranspose":  # ONNX Runtime's col2im path
        return "conv_transpose"
    if cls == "conv" and len(layer.kernel) == 3:  # a volume: no blocked kernel for it
        return "conv3d"
    if cls == "conv":
        return "conv1x1" if layer.kernel and numel(layer.kernel) == 1 else "conv"
    if layer.op in TRANSCENDENTAL_OPS:
        return "transcendental"
    return _SPEC_CLASS.get(cls, "elementwise")


def kernel_work(k: Kernel) -> tuple[str, int, int]:
    """(op class, FLOPs, bytes) of one planned kernel.

    FLOPs: 2 per MAC plus the element ops of every layer it covers. Bytes: its
    activation inputs (the anchor's and those of absorbed ops read from memory) +
    the weights of every layer + its output. A reorder (no layer) moves its input
    into its output: class ``reorder``, no FLOPs.
    """
    key = k.key
    itemsize = DTYPE_BYTES.get(key.dtype, 4)
    act = (sum(numel(s) for s in key.input_shapes) + numel(key.output_shape)) * itemsize
    if not k.layers:
        return "reorder", 0, act
    return (op_class(k.layers[0]),
            sum(w if (w := transcendental_work(x)) is not None else 2 * x.macs + x.elem_ops
                for x in k.layers),
            act + sum(x.bytes_weights for x in k.layers))


def block_padding(conv: Layer, block: int) -> float:
    """The FLOPs a conv run in a blocked layout computes / its own: the runtime pads the
    output channels to whole blocks, and the input channels too when it reads a blocked
    input (a plain conv of at least ``block`` input channels; a depthwise conv's padded
    channels are its output's)."""
    def up(c: int) -> float:
        return -(-c // block) * block / c if c > 0 else 1.0

    factor = up(conv.out_channels)
    if conv.groups == 1 and conv.in_channels >= block:
        factor *= up(conv.in_channels)
    return factor


class RooflineModel(BaseCostModel):
    """Roofline over planned kernels; ``per_layer`` has one entry per kernel with its bound."""

    def __init__(self, spec: RooflineSpec) -> None:
        self.spec = spec
        from analytical.specs import SpecError

        missing = [c for c in OP_CLASSES if c not in spec.ops]
        if missing:
            raise SpecError(f"{spec.name}: field 'ops' lacks op class(es) {', '.join(missing)}")
        known = (*OP_CLASSES, *OPTIONAL_CLASSES)
        unknown = [c for c in spec.ops if c not in known]
        if unknown:  # a misspelt class would silently never be used
            import difflib

            near = difflib.get_close_matches(unknown[0], known, n=1)
            raise SpecError(f"{spec.name}: field 'ops' has unknown op class(es) "
                            f"{', '.join(unknown)}"
                            + (f" (did you mean {near[0]!r}?)" if near else "")
                            + f"; known: {', '.join(known)}")
        from costmodels.onnx_import import SUPPORTED_OPS

        odd = [op for op in spec.post_pass_ops if op not in SUPPORTED_OPS]
        if odd:  # a misspelt op would silently never match
            raise SpecError(f"{spec.name}: field 'post_pass_ops' names {', '.join(odd)}, not "
                            "ONNX ops costmodels imports (e.g. Clip, Sigmoid)")
        self.rules = load_rules(spec.fusion)
        self._by_key: dict[tuple, LayerCost] = {}

    @property
    def name(self) -> str:  # type: ignore[override]
        return f"roofline:{self.spec.name}"

    def class_cost(self, cls: str):
        """The spec's costs of op class ``cls`` (an optional class falls back, see
        :data:`OPTIONAL_CLASSES`, in turn: ``grouped_nchw`` -> ``grouped`` -> ``conv``)."""
        ops = self.spec.ops
        while cls not in ops:
            cls = OPTIONAL_CLASSES.get(cls, "elementwise")
        return ops[cls]

    def kernel_cost(self, k: Kernel) -> LayerCost:
        """The cost of one kernel. The figures are cached by its
        :class:`~costmodels.fusion.KernelKey`, layout and weight bytes (two kernels with the
        same key and weights cost the same); the names are the kernel's own."""
        latency_ms, bound, meta = self._figures_of(k)
        return LayerCost(
            name=k.layers[0].name if k.layers else k.ops[0], op="+".join(k.ops),
            latency_ms=latency_ms, bound=bound,
            meta=MappingProxyType({**meta, "fused": k.names, "layout": k.layout}))

    def _roof(self, cls: str, flops: float, nbytes: float) -> tuple[float, float, float]:
        """(compute_ms, memory_ms, launch_ms) of one kernel of class ``cls``."""
        s = self.spec
        c = self.class_cost(cls)
        bw = s.bandwidth_gbps(nbytes)
        peak = (s.int8_peak_gflops if cls in _INT8 and cls in s.ops and s.int8_peak_gflops
                else s.peak_gflops)
        return (flops / (peak * 1e6 * c.compute_efficiency),
                nbytes * c.traffic_factor / (bw * 1e6 * c.memory_efficiency),
                c.launch_us * 1e-3)

    def _figures(self, k: Kernel) -> tuple[float, str, dict]:
        cls, flops, nbytes = kernel_work(k)
        pad = 1.0
        if k.key.dtype in ("uint8", "int8") and INT8_CLASSES.get(cls) in self.spec.ops:
            cls = INT8_CLASSES[cls]
        elif (k.key.dtype in ("uint8", "int8") and cls == "pool" and k.layout != "nhwc"
              and "pool_int8" in self.spec.ops):
            cls = "pool_int8"  # ORT's plain uint8/int8 pool: ~20x its float one; NhwcMaxPool
            # (channels-last region) is as fast as a float pool
        elif k.layout == "nchw" and cls in NCHW_CLASSES and self.rules.layout is not None:
            cls = NCHW_CLASSES[cls]
        elif k.layout == "nchwc" and k.layers and k.layers[0].op == "Conv":
            pad = block_padding(k.layers[0], self.rules.layout.block)
        if k.layers and k.layers[0].op in RNN_OPS:
            fig = self._recurrence_figures(k, flops, nbytes)
            if fig is not None:
                return fig
        if work := resize_work(k):
            cls, flops = "transcendental", work
        compute_ms, memory_ms, launch_ms = self._roof(cls, flops * pad, nbytes)
        post_ms = self._post_pass_ms(k)
        return (max(compute_ms, memory_ms) + post_ms + launch_ms,
                "compute" if compute_ms >= memory_ms else "memory",
                {"op_class": cls, "compute_ms": compute_ms, "memory_ms": memory_ms,
                 "launch_ms": launch_ms, "post_pass_ms": post_ms, "flops": flops,
                 "block_padding": pad, "bytes": nbytes})

    def _post_pass_ms(self, k: Kernel) -> float:
        """The passes over the output of the absorbed ops the spec's runtime applies after
        the kernel (``post_pass_ops``): each reads and writes the output once. A matrix
        product's absorbed bias and activation are such passes whatever the spec says
        (ONNX Runtime's Gemm copies its bias into the output first, and FusedGemm runs the
        activation over it after: a bias took 3-12% more than the bare MatMul at
        transformer sizes on this project's CPU)."""
        gemm = bool(k.layers) and k.layers[0].op in GEMM_ANCHORS
        n = sum(gemm or la.op in self.spec.post_pass_ops for la in k.layers[1:])
        if not n:
            return 0.0
        out = 2 * numel(k.key.output_shape) * DTYPE_BYTES.get(k.key.dtype, 4)
        return n * self._roof("elementwise", 0, out)[1]

    def _recurrence_figures(self, k: Kernel, flops: int, nbytes: int
                            ) -> tuple[float, str, dict] | None:
        """A recurrence as its input projection plus ``seq x dirs`` sequential steps (module
        docstring); None when its shapes are not a recurrence's (costed as one GEMM)."""
        layer = k.layers[0]
        geo = recurrence(layer.op, layer.input_shapes[0] if layer.input_shapes else (),
                         layer.weight_shapes, layer.output_shape)
        if geo is None:
            return None
        item = DTYPE_BYTES.get(layer.dtype, 4)
        gh = geo.gates * geo.hidden
        steps = geo.seq * geo.dirs
        step_flops = 2 * geo.batch * gh * geo.hidden
        step_bytes = (gh * geo.hidden + geo.batch * (geo.hidden + gh)) * item
        # the projection carries the rest of the kernel's work (and all of its activations)
        proj = self._roof("gemm", max(flops - steps * step_flops, 0),
                          nbytes + steps * geo.batch * gh * item)
        gate_elems = geo.batch * gh
        # the step's product at the gemm rates, without a GEMM launch: the op loops over
        # its steps itself, and its per-step overhead is the recurrent class's launch
        step = self._roof("gemm", step_flops, step_bytes)[:2] + (0.0,)
        gate = self._roof("recurrent", gate_elems, 2 * gate_elems * item)
        proj_ms, step_ms, gate_ms = (max(f[0], f[1]) + f[2] for f in (proj, step, gate))
        launch_ms = proj[2] + steps * (step[2] + gate[2])
        total = proj_ms + steps * (step_ms + gate_ms)
        compute_ms = proj[0] + steps * (step[0] + gate[0])
        memory_ms = proj[1] + steps * (step[1] + gate[1])
        bound = ("overhead" if launch_ms >= total / 2 else
                 "compute" if compute_ms >= memory_ms else "memory")
        return (total, bound,
                {"op_class": "gemm", "compute_ms": compute_ms, "memory_ms": memory_ms,
                 "launch_ms": launch_ms, "flops": flops, "bytes": nbytes,
                 "sequential_steps": steps})

    def _figures_of(self, k: Kernel) -> tuple[float, str, dict]:
        # the key holds shapes, not the weights' element size (a float64 scalar next to a
        # float32 one): their bytes join it, so a figure never depends on another network
        ck = (k.key, k.layout, sum(la.bytes_weights for la in k.layers))
        fig = self._by_key.get(ck)
        if fig is None:
            fig = self._by_key[ck] = self._figures(k)
        return fig

    def _run_cost(self) -> tuple[LayerCost, ...]:
        """The per-run overhead as a ``per_layer`` entry (none when the spec has none)."""
        ms = self.spec.run_overhead_us * 1e-3
        if not ms:
            return ()
        return (LayerCost(name="(run)", op="run", latency_ms=ms, bound="overhead",
                          meta=MappingProxyType({"op_class": "run", "compute_ms": 0.0,
                                                 "memory_ms": 0.0, "launch_ms": ms, "flops": 0,
                                                 "bytes": 0, "fused": (), "layout": ""})),)

    def estimate(self, net: Network) -> Estimate:
        planned = tuple(self.kernel_cost(k) for k in kernels(net, self.rules))
        costs = planned + self._run_cost()
        return Estimate(
            latency_ms=sum(c.latency_ms for c in costs), energy_mj=None, per_layer=costs,
            meta={"backend": self.name, "device": self.spec.name, "rules": self.rules.name,
                  "kernels": len(planned), "layers": len(net.layers),
                  "compute_bound": sum(c.bound == "compute" for c in costs),
                  "memory_bound": sum(c.bound == "memory" for c in costs),
                  "uncosted_layers": ()})

    def estimate_many(self, nets: Sequence[Network]) -> list[Estimate]:
        """Totals only (``per_layer`` empty, for speed); :meth:`estimate` gives the breakdown."""
        out = []
        for net in nets:
            figs = [self._figures_of(k) for k in kernels(net, self.rules)]
            out.append(Estimate(
                latency_ms=sum(f[0] for f in figs) + self.spec.run_overhead_us * 1e-3,
                energy_mj=None,
                meta={"backend": self.name, "device": self.spec.name, "rules": self.rules.name,
                      "kernels": len(figs), "layers": len(net.layers),
                      "compute_bound": sum(f[1] == "compute" for f in figs),
                      "memory_bound": sum(f[1] == "memory" for f in figs),
                      "uncosted_layers": ()}))
        return out


def from_spec(arg: str | None) -> RooflineModel:
    """Registry factory: ``roofline`` (local calibrated spec, else x86_generic) or ``roofline:SPEC``
    (``roofline:local``, the name a calibrated spec reports: that spec, which must exist)."""
    if arg == "local" and not Path(arg).exists():
        local = local_spec_path()
        if not local.is_file():
            from analytical.specs import SpecError
            raise SpecError(f"roofline:local is this machine's calibrated spec, {local}, and it "
                            "does not exist yet: run `costmodels roofline calibrate`")
        arg = str(local)
    from analytical.specs import SpecError, resolve_spec_path

    if arg is not None and not arg.strip():
        raise SpecError("roofline: names no spec after the colon; give one (`costmodels "
                        "roofline specs` lists them), or say `roofline` for the default")
    arg = arg or default_spec()
    spec = load_spec(arg, RooflineSpec)
    try:
        return RooflineModel(spec)
    except SpecError as exc:  # a copied spec keeps its name: say which file is at fault
        path = resolve_spec_path(arg)
        if path.stem == spec.name:
            raise
        raise SpecError(f"{path}: {exc}") from None


def default_spec() -> str:
    """The spec a bare ``roofline`` loads: the local calibrated one (its path) when it
    exists, else :data:`DEFAULT_SPEC`."""
    local = local_spec_path()
    if local.exists() and not local.is_file():  # absent: not calibrated yet (generic)
        from analytical.specs import SpecError
        raise SpecError(f"{local} (the local roofline spec, ${LOCAL_SPEC_ENV} or "
                        f"~/.config/costmodels): {'a folder' if local.is_dir() else 'not a file'}"
                        f", not a roofline spec; point ${LOCAL_SPEC_ENV} at a TOML that "
                        "`costmodels roofline calibrate` wrote, or unset it")
    return str(local) if local.is_file() else DEFAULT_SPEC
