"""FBNet as HW-NAS-Bench defines it: 22 searchable layers, each one of 9 blocks.

The macro skeleton follows HW-NAS-Bench's PyTorch definition
(``hw_nas_bench_api/fbnet_models/model_infer.py``, ``FBNet_Infer``; Li et al.,
ICLR 2021), itself the FBNet-v1 setting (Wu et al., CVPR 2019):

- stem: Conv3x3 3->16 (stride 1 on cifar100, 2 on ImageNet; pad 1) + BN + ReLU;
- 22 layers in stages of [1, 4, 4, 4, 4, 4, 1] with output channels
  [16, 24, 32, 64, 112, 184, 352]; the first layer of a stage takes the stage's
  stride (cifar100 [1, 1, 2, 2, 1, 2, 1], ImageNet [1, 2, 2, 2, 1, 2, 1]) and the
  previous stage's channels (the stem's 16 for stage 0), the others stride 1;
- header: Conv1x1 352->1504 (cifar100) or 1984 (ImageNet) + BN + ReLU;
  global average pool; linear classifier (100 / 1000 classes, with bias).

Blocks (:data:`BLOCKS`, in HW-NAS-Bench's order, so ``op_idx_list`` indexes it):
``kK_eE[_g2]`` is an inverted bottleneck with expansion E and a KxK depthwise
conv: Conv1x1 (groups g) + BN + ReLU, [channel shuffle with g groups when g > 1],
depthwise ConvKxK (the layer's stride, pad ceil((K - stride) / 2)) + BN + ReLU,
Conv1x1 (groups g) + BN, plus the block input when C_in == C_out and stride 1.
``skip`` is the identity when the shape is kept, else Conv1x1 (stride) + BN +
ReLU. No conv has a bias. Channel shuffle is Reshape -> Transpose -> Reshape.

Architecture strings: the canonical form is the 22 block names joined by ``|``
(``k3_e1|k3_e1_g2|...|skip``); :func:`parse_arch` also takes HW-NAS-Bench's
``op_idx_list`` as 22 comma-separated indices (``0,0,...,1``) or a JSON list.

:func:`build_network` builds the IR directly; :func:`build_onnx` builds an ONNX
model from the same description (:func:`describe`; random weights, fixed seed)
that imports back to the same IR. Block fragments are cached, so building a
network takes well under a millisecond after the first.
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

import numpy as np

from costmodels.errors import UnknownArchitecture, UnknownSpace
from costmodels.network import Network, Shape
from costmodels.spaces import SearchSpace
from costmodels.spaces.nb201 import NodeSpec

BLOCKS: tuple[str, ...] = ("k3_e1", "k3_e1_g2", "k3_e3", "k3_e6", "k5_e1", "k5_e1_g2", "k5_e3",
                           "k5_e6", "skip")
BLOCK_INDEX = {b: i for i, b in enumerate(BLOCKS)}
STAGE_LAYERS: tuple[int, ...] = (1, 4, 4, 4, 4, 4, 1)
STAGE_CHANNELS: tuple[int, ...] = (16, 24, 32, 64, 112, 184, 352)
STEM_CHANNELS = 16
NUM_LAYERS = sum(STAGE_LAYERS)  # 22
NUM_ARCHS = len(BLOCKS) ** NUM_LAYERS  # 9**22, not enumerable
BN_EPSILON = 1e-5


@dataclass(frozen=True)
class BlockSpec:
    """An inverted-bottleneck block: ``kernel`` x ``kernel`` depthwise, ``expansion``,
    ``groups`` of the two 1x1 convs. ``skip`` has ``kernel == 0``."""

    name: str
    kernel: int
    expansion: int
    groups: int

    @property
    def is_skip(self) -> bool:
        return self.kernel == 0


BLOCK_SPECS: dict[str, BlockSpec] = {
    "k3_e1": BlockSpec("k3_e1", 3, 1, 1), "k3_e1_g2": BlockSpec("k3_e1_g2", 3, 1, 2),
    "k3_e3": BlockSpec("k3_e3", 3, 3, 1), "k3_e6": BlockSpec("k3_e6", 3, 6, 1),
    "k5_e1": BlockSpec("k5_e1", 5, 1, 1), "k5_e1_g2": BlockSpec("k5_e1_g2", 5, 1, 2),
    "k5_e3": BlockSpec("k5_e3", 5, 3, 1), "k5_e6": BlockSpec("k5_e6", 5, 6, 1),
    "skip": BlockSpec("skip", 0, 1, 1),
}


@dataclass(frozen=True)
class DatasetSpec:
    """Input resolution (pixels, square, 3 channels), classes and the dataset's skeleton."""

    name: str
    resolution: int
    num_classes: int
    stem_stride: int
    stage_strides: tuple[int, ...]
    header_channels: int
    channels: int = 3


DATASETS: dict[str, DatasetSpec] = {
    "cifar100": DatasetSpec("cifar100", 32, 100, 1, (1, 1, 2, 2, 1, 2, 1), 1504),
    "ImageNet": DatasetSpec("ImageNet", 224, 1000, 2, (1, 2, 2, 2, 1, 2, 1), 1984),
}


@dataclass(frozen=True)
class Position:
    """One of the 22 searchable layers: what every block at this place sees."""

    index: int
    in_shape: Shape     # (batch, C_in, H, W)
    cout: int
    stride: int


# --------------------------------------------------------------------- arch strings
def arch_str(ops: Sequence[int]) -> str:
    """22 block indices -> the canonical arch string (names joined by ``|``)."""
    return "|".join(BLOCKS[o] for o in _check_indices(ops, ops))


def _check_indices(ops: Sequence[Any], original: object) -> tuple[int, ...]:
    if len(ops) != NUM_LAYERS:
        raise UnknownArchitecture(original, f"expected {NUM_LAYERS} blocks, got {len(ops)}")
    out = []
    for pos, o in enumerate(ops):
        if isinstance(o, bool) or not isinstance(o, (int, np.integer)):
            raise UnknownArchitecture(original, f"layer {pos}: {o!r} is not a block index "
                                                f"(an integer in 0..{len(BLOCKS) - 1})")
        if not 0 <= o < len(BLOCKS):
            raise UnknownArchitecture(original, f"layer {pos}: block index {o} is out of range "
                                                f"0..{len(BLOCKS) - 1}")
        out.append(int(o))
    return tuple(out)


def _names_to_indices(names: Sequence[str], original: object) -> tuple[int, ...]:
    if len(names) != NUM_LAYERS:
        raise UnknownArchitecture(original, f"expected {NUM_LAYERS} blocks, got {len(names)}")
    out = []
    for pos, name in enumerate(names):
        name = name.strip()
        if name not in BLOCK_INDEX:
            raise UnknownArchitecture(original, f"layer {pos}: unknown block {name!r}; expected "
                                                f"one of {', '.join(BLOCKS)}")
        out.append(BLOCK_INDEX[name])
    return tuple(out)


def _int_list(items: Sequence[str], original: object) -> list[int]:
    out = []
    for pos, item in enumerate(items):
        item = item.strip()
        try:
            out.append(int(item))
        except ValueError:
            raise UnknownArchitecture(original, f"layer {pos}: {item!r} is not a block index "
                                                f"(an integer in 0..{len(BLOCKS) - 1})") from None
    return out


def parse_arch(arch: str | Sequence[int] | Sequence[str]) -> tuple[int, ...]:
    """Any accepted form -> 22 block indices.

    Accepted: ``k3_e1|...|skip`` (canonical), ``0,0,...,8`` (HW-NAS-Bench's
    ``op_idx_list``), a JSON list of indices or block names, or a sequence of ints.
    Raises :class:`UnknownArchitecture` saying what is wrong (count, name, range).
    """
    if isinstance(arch, str):
        text = arch.strip()
        if text.startswith("["):
            try:
                items = json.loads(text)
            except json.JSONDecodeError as exc:
                raise UnknownArchitecture(arch, f"not a valid JSON list ({exc.msg})") from None
            except ValueError:  # a number of thousands of digits (int() refuses over 4,300)
                raise UnknownArchitecture(arch, "a number too long to be a block index"
                                          ) from None
            except RecursionError:
                raise UnknownArchitecture(arch, "a JSON list nested too deep") from None
            if not isinstance(items, list):
                raise UnknownArchitecture(arch, "expected a JSON list of block indices")
            if items and all(isinstance(i, str) for i in items):
                return _names_to_indices(items, arch)
            return _check_indices(items, arch)
        if "|" in text or text in BLOCK_INDEX:
            return _names_to_indices(text.split("|"), arch)
        if "," in text or text.isdigit():
            return _check_indices(_int_list(text.split(","), arch), arch)
        raise UnknownArchitecture(arch, f"expected {NUM_LAYERS} block names joined by '|' "
                                        f"({'|'.join(BLOCKS[:2])}|...) or {NUM_LAYERS} "
                                        "comma-separated block indices (0,0,...,8)")
    if isinstance(arch, (int, np.integer)):
        raise UnknownArchitecture(arch, "FBNet has no standard index; give 22 block names "
                                        "joined by '|' or 22 comma-separated block indices")
    items = list(arch)
    if items and all(isinstance(i, str) for i in items):
        return _names_to_indices(items, arch)
    return _check_indices(items, arch)


# --------------------------------------------------------------------- skeleton
def dataset_spec(dataset: str) -> DatasetSpec:
    try:
        return DATASETS[dataset]
    except KeyError:
        raise UnknownSpace(f"unknown FBNet dataset {dataset!r}; expected one of "
                           f"{', '.join(DATASETS)}") from None


def _conv_out(size: int, k: int, s: int, p: int) -> int:
    return (size + 2 * p - k) // s + 1


def dw_padding(kernel: int, stride: int) -> int:
    """HW-NAS-Bench's padding: ceil((kernel - stride) / 2) (keeps H_out = H_in / stride)."""
    return int(math.ceil((kernel - stride) / 2))


@cache
def positions(dataset: str, batch: int = 1) -> tuple[Position, ...]:
    """The 22 searchable layers of ``dataset`` at ``batch``: input shape, C_out, stride."""
    ds = dataset_spec(dataset)
    h = _conv_out(ds.resolution, 3, ds.stem_stride, 1)
    cin = STEM_CHANNELS
    out: list[Position] = []
    for n, cout, stride in zip(STAGE_LAYERS, STAGE_CHANNELS, ds.stage_strides, strict=True):
        for i in range(n):
            s = stride if i == 0 else 1
            out.append(Position(len(out), (batch, cin, h, h), cout, s))
            h = _conv_out(h, 1, s, 0)
            cin = cout
    return tuple(out)


def output_shape(dataset: str, batch: int = 1) -> Shape:
    """Shape of the last searchable layer's output (the header's input)."""
    last = positions(dataset, batch)[-1]
    h = _conv_out(last.in_shape[2], 1, last.stride, 0)
    return (batch, last.cout, h, h)


# --------------------------------------------------------------------- description
def _conv_attrs(k: int, s: int, p: int, g: int = 1) -> tuple[tuple[str, Any], ...]:
    return (("kernel_shape", (k, k)), ("strides", (s, s)), ("pads", (p, p, p, p)),
            ("dilations", (1, 1)), ("group", g))


def _conv_bn(prefix: str, x: str, in_shape: Shape, cout: int, k: int, s: int, p: int,
             g: int = 1, relu: bool = True, last: str | None = None) -> list[NodeSpec]:
    """Conv (no bias) + BN [+ ReLU]; the last node is named ``last`` when given."""
    b, cin, h, w = in_shape
    out = (b, cout, _conv_out(h, k, s, p), _conv_out(w, k, s, p))
    conv, bn, act = f"{prefix}_conv", f"{prefix}_bn", f"{prefix}_relu"
    if last:
        bn, act = (last, act) if not relu else (bn, last)
    nodes = [
        NodeSpec(conv, "Conv", (x,), (in_shape,), out, ((cout, cin // g, k, k),),
                 _conv_attrs(k, s, p, g)),
        NodeSpec(bn, "BatchNormalization", (conv,), (out,), out, ((cout,),) * 4,
                 (("epsilon", BN_EPSILON),)),
    ]
    if relu:
        nodes.append(NodeSpec(act, "Relu", (bn,), (out,), out))
    return nodes


def _shuffle(prefix: str, x: str, shape: Shape, groups: int) -> list[NodeSpec]:
    """Channel shuffle [N,C,H,W] -> [N,g,C/g,H,W] -> [N,C/g,g,H,W] -> [N,C,H,W]."""
    b, c, h, w = shape
    split = (b, groups, c // groups, h, w)
    swapped = (b, c // groups, groups, h, w)
    return [
        NodeSpec(f"{prefix}_split", "Reshape", (x,), (shape,), split, (), (("shape", split),)),
        NodeSpec(f"{prefix}_transpose", "Transpose", (f"{prefix}_split",), (split,), swapped,
                 (), (("perm", (0, 2, 1, 3, 4)),)),
        NodeSpec(f"{prefix}_merge", "Reshape", (f"{prefix}_transpose",), (swapped,), shape, (),
                 (("shape", shape),)),
    ]


@cache
def block_nodes(prefix: str, x: str, in_shape: Shape, cout: int, stride: int,
                block: str) -> tuple[NodeSpec, ...]:
    """The operators of one block reading tensor ``x``; the last one is named ``prefix``.

    The identity ``skip`` (shape kept) has no operators: ``()``.
    """
    spec = BLOCK_SPECS[block]
    cin = in_shape[1]
    if spec.is_skip:
        if stride == 1 and cin == cout:
            return ()
        return tuple(_conv_bn(prefix, x, in_shape, cout, 1, stride, 0, last=prefix))
    mid, g, k = cin * spec.expansion, spec.groups, spec.kernel
    residual = cin == cout and stride == 1
    nodes = _conv_bn(f"{prefix}_pw1", x, in_shape, mid, 1, 1, 0, g)
    if g > 1:
        nodes += _shuffle(f"{prefix}_shuffle", nodes[-1].name, nodes[-1].out_shape, g)
    nodes += _conv_bn(f"{prefix}_dw", nodes[-1].name, nodes[-1].out_shape, mid, k, stride,
                      dw_padding(k, stride), mid)
    nodes += _conv_bn(f"{prefix}_pw2", nodes[-1].name, nodes[-1].out_shape, cout, 1, 1, 0, g,
                      relu=False, last=None if residual else prefix)
    if residual:
        out = nodes[-1].out_shape
        nodes.append(NodeSpec(prefix, "Add", (nodes[-1].name, x), (out, in_shape), out))
    return tuple(nodes)


@cache
def stem_nodes(dataset: str, batch: int) -> tuple[NodeSpec, ...]:
    ds = dataset_spec(dataset)
    in_shape = (batch, ds.channels, ds.resolution, ds.resolution)
    return tuple(_conv_bn("stem", "input", in_shape, STEM_CHANNELS, 3, ds.stem_stride, 1,
                          last="stem"))


@cache
def header_nodes(x: str, dataset: str, batch: int) -> tuple[NodeSpec, ...]:
    """Conv1x1 352 -> header + BN + ReLU, reading tensor ``x``; last node ``header``."""
    ds = dataset_spec(dataset)
    return tuple(_conv_bn("header", x, output_shape(dataset, batch), ds.header_channels, 1, 1, 0, last="header"))


@cache
def classifier_nodes(x: str, dataset: str, batch: int) -> tuple[NodeSpec, ...]:
    """Global average pool, flatten, linear (with bias) reading ``x``; last node ``logits``."""
    ds = dataset_spec(dataset)
    b, _, h, w = output_shape(dataset, batch)
    c = ds.header_channels
    shape = (b, c, h, w)
    return (
        NodeSpec("gap", "GlobalAveragePool", (x,), (shape,), (b, c, 1, 1)),
        NodeSpec("flatten", "Flatten", ("gap",), ((b, c, 1, 1),), (b, c), (), (("axis", 1),)),
        NodeSpec("logits", "Gemm", ("flatten",), ((b, c),), (b, ds.num_classes),
                 ((ds.num_classes, c), (ds.num_classes,)), (("transB", 1),)),
    )


def describe(ops: Sequence[int], dataset: str = "cifar100", batch: int = 1) -> list[NodeSpec]:
    """The operators of the whole network for 22 block indices, in topological order."""
    nodes = list(stem_nodes(dataset, batch))
    x = "stem"
    for pos, o in zip(positions(dataset, batch), ops, strict=True):
        frag = block_nodes(f"l{pos.index}", x, pos.in_shape, pos.cout, pos.stride, BLOCKS[o])
        if frag:
            nodes.extend(frag)
            x = frag[-1].name
    nodes.extend(header_nodes(x, dataset, batch))
    nodes.extend(classifier_nodes("header", dataset, batch))
    return nodes


# --------------------------------------------------------------------- IR builder
def build_network(arch: str | Sequence[int], dataset: str = "cifar100",
                  batch: int = 1) -> Network:
    """The IR of an FBNet network, built directly (no ONNX)."""
    ops = parse_arch(arch)
    ds = dataset_spec(dataset)
    in_shape = (batch, ds.channels, ds.resolution, ds.resolution)
    return Network(
        name=f"fbnet-{dataset}-{''.join(str(o) for o in ops)}",
        inputs=(("input", in_shape),),
        layers=tuple(spec.layer for spec in describe(ops, dataset, batch)),
        outputs=("logits",),
        meta={"space": "fbnet", "arch_str": arch_str(ops), "arch_index": None,
              "dataset": dataset, "batch": batch, "ops": ops},
    )


# --------------------------------------------------------------------- ONNX builder
def _weight(rng: np.random.Generator, spec: NodeSpec, j: int, shape: Shape) -> np.ndarray:
    if spec.op == "BatchNormalization":
        return (rng.uniform(0.5, 1.5, shape) if j in (0, 3)
                else rng.normal(0, 0.1, shape)).astype(np.float32)
    if spec.op == "Gemm" and j == 1:
        return np.zeros(shape, dtype=np.float32)
    fan_in = int(np.prod(shape[1:])) if len(shape) > 1 else 1
    return rng.normal(0, (2.0 / fan_in) ** 0.5, shape).astype(np.float32)


def onnx_graph_model(nodes: Sequence[NodeSpec], inputs: Sequence[tuple[str, Shape]],
                     outputs: Sequence[tuple[str, Shape]], name: str, seed: int = 0,
                     opset: int = 17, doc: str = ""):
    """An ``onnx.ModelProto`` of ``nodes`` (random weights drawn with ``seed``), checked."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    onnx_nodes, inits = [], []
    for spec in nodes:
        wnames = []
        for j, wshape in enumerate(spec.weights):
            wname = f"{spec.name}_w{j}"
            inits.append(numpy_helper.from_array(_weight(rng, spec, j, wshape), wname))
            wnames.append(wname)
        if spec.op == "Reshape":  # the target shape: int64 shape data, not a weight in the IR
            inits.append(numpy_helper.from_array(
                np.asarray(dict(spec.attrs)["shape"], dtype=np.int64), f"{spec.name}_shape"))
            wnames.append(f"{spec.name}_shape")
        attrs = {k: list(v) if isinstance(v, tuple) else v for k, v in spec.attrs
                 if not (spec.op == "Reshape" and k == "shape")}
        onnx_nodes.append(helper.make_node(spec.op, list(spec.inputs) + wnames, [spec.name],
                                           name=spec.name, **attrs))
    graph = helper.make_graph(
        onnx_nodes, name,
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, list(s)) for n, s in inputs],
        [helper.make_tensor_value_info(n, TensorProto.FLOAT, list(s)) for n, s in outputs],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name="costmodels")
    model.ir_version = min(model.ir_version, 8)
    model.doc_string = doc
    onnx.checker.check_model(model)
    return model


def build_onnx(arch: str | Sequence[int], dataset: str = "cifar100", batch: int = 1,
               seed: int = 0, opset: int = 17):
    """A valid ONNX model of the network (random weights drawn with ``seed``)."""
    ops = parse_arch(arch)
    ds = dataset_spec(dataset)
    in_shape = (batch, ds.channels, ds.resolution, ds.resolution)
    return onnx_graph_model(describe(ops, dataset, batch), [("input", in_shape)],
                            [("logits", (batch, ds.num_classes))],
                            f"fbnet_{dataset}_{''.join(str(o) for o in ops)}", seed, opset,
                            doc=f"FBNet (HW-NAS-Bench) {dataset} {arch_str(ops)}")


# --------------------------------------------------------------------- plug-in
class FBNetSearchSpace(SearchSpace):
    """FBNet (HW-NAS-Bench) behind the :class:`~costmodels.spaces.SearchSpace` protocol.

    ``size`` is ``None``: 9**22 (:data:`NUM_ARCHS`) architectures cannot be
    enumerated, so :meth:`archs` raises and callers sample.
    """

    name = "fbnet"
    spec = "fbnet"
    datasets = tuple(DATASETS)
    default_dataset = "cifar100"
    size = None
    has_index = False

    def parse(self, text: str | int | Sequence[int]) -> str:
        return arch_str(parse_arch(text))

    def sample(self, n: int, seed: int = 0) -> list[str]:
        """``n`` distinct architectures, each block drawn uniformly with ``seed``."""
        self.check_sample(n)
        rng = np.random.default_rng(seed)
        seen: dict[tuple[int, ...], None] = {}
        while len(seen) < n:
            for row in rng.integers(0, len(BLOCKS), size=(n - len(seen), NUM_LAYERS)):
                seen.setdefault(tuple(int(o) for o in row), None)
        return [arch_str(ops) for ops in seen]

    def covering_archs(self) -> list[str]:
        """The 9 uniform architectures (block b at all 22 positions): a position's input
        shape and width do not depend on the other choices and no kernel spans two
        blocks, so these hold every kernel of the 9^22 architectures."""
        return [arch_str((b,) * NUM_LAYERS) for b in range(len(BLOCKS))]

    def build_network(self, arch: str, dataset: str | None = None, batch: int = 1) -> Network:
        return build_network(arch, self.check_dataset(dataset), batch)

    def build_onnx(self, arch: str, dataset: str | None = None, batch: int = 1, seed: int = 0):
        return build_onnx(arch, self.check_dataset(dataset), batch, seed=seed)

    def encode(self, arch: str) -> np.ndarray:
        """One-hot of the 22 layers' blocks (198 values)."""
        out = np.zeros((NUM_LAYERS, len(BLOCKS)), dtype=np.float32)
        out[np.arange(NUM_LAYERS), parse_arch(arch)] = 1.0
        return out.ravel()

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "num_archs": NUM_ARCHS, "blocks": list(BLOCKS),
                "layers": NUM_LAYERS}


def space_from_spec(arg: str | None, **_: Any) -> FBNetSearchSpace:
    if arg:
        raise UnknownSpace(f"space 'fbnet' takes no argument (got 'fbnet:{arg}')")
    return FBNetSearchSpace()
