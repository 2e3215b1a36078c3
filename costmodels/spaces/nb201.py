"""NAS-Bench-201: the 15,625 cells, their standard indices, and the real macro skeleton.

A cell is a 4-node DAG; each of its 6 edges carries one of 5 operations. The arch
string lists the edges into node 1, node 2 and node 3::

    |op~0|+|op~0|op~1|+|op~0|op~1|op~2|

The standard index (NAS-Bench-201's own shuffled order) ships as package data
(``data/nb201_index.npy``, see ``data/README.md`` for its source).

The network (Dong & Yang, ICLR 2020, ``TinyNetwork``): stem conv3x3 3->16 + BN;
5 cells at C=16; a residual reduction block 16->32 (ReLU-Conv3x3/2-BN,
ReLU-Conv3x3-BN, shortcut AvgPool2x2/2 + Conv1x1); 5 cells at C=32; reduction
32->64; 5 cells at C=64; BN + ReLU; global average pool; linear classifier.
Convolution ops in cells are ReLU-Conv-BN; ``avg_pool_3x3`` is stride 1, pad 1,
without the padding in the count; ``skip_connect`` is an identity; ``none`` is a
zero. A node whose incoming edges are all ``none`` is a zero tensor, built as
``Mul(cell_input, 0)`` so that the network as built still runs every operator.

:func:`build_network` builds the IR directly; :func:`build_onnx` builds an ONNX
model from the same description (random weights, fixed seed) that imports back
to the same IR.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cache, cached_property, lru_cache
from importlib import resources
from typing import Any

import numpy as np

from costmodels.errors import UnknownArchitecture, UnknownSpace
from costmodels.network import Layer, Network, Shape, make_layer
from costmodels.spaces import SearchSpace

OPS: tuple[str, ...] = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
OP_INDEX = {op: i for i, op in enumerate(OPS)}
# (to_node, from_node) of the 6 edges, in arch-string order.
EDGES: tuple[tuple[int, int], ...] = ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))
NUM_ARCHS = len(OPS) ** len(EDGES)  # 15,625


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    channels: int
    resolution: int
    num_classes: int


DATASETS: dict[str, DatasetSpec] = {
    "cifar10": DatasetSpec("cifar10", 3, 32, 10),
    "cifar100": DatasetSpec("cifar100", 3, 32, 100),
    "ImageNet16-120": DatasetSpec("ImageNet16-120", 3, 16, 120),
}
STAGE_CHANNELS = (16, 32, 64)
CELLS_PER_STAGE = 5

# groups without '+': matched in linear time (with '.+' a 25 KB string took a minute)
_ARCH_RE = re.compile(r"^\|([^+]+)\|\+\|([^+]+)\|\+\|([^+]+)\|$")
MAX_ARCH_CHARS = 256  # the longest arch string is 6 x '|avg_pool_3x3~2' and the '+'s: 97


# --------------------------------------------------------------------- arch strings
def parse_arch(arch: str) -> tuple[int, ...]:
    """Arch string -> 6 op indices (edge order of :data:`EDGES`).

    Raises :class:`UnknownArchitecture` that says which part is wrong.
    """
    if not isinstance(arch, str):
        raise UnknownArchitecture(arch, "expected a NAS-Bench-201 arch string")
    if len(arch) > MAX_ARCH_CHARS:
        raise UnknownArchitecture(arch, f"{len(arch):,} characters, where a NAS-Bench-201 "
                                        f"arch string has at most about 100")
    m = _ARCH_RE.match(arch.strip())
    if not m:
        hint = ("; this looks like an FBNet architecture: give --space fbnet"
                if arch.count("|") >= 10 and not arch.startswith("|") and "~" not in arch
                else "")  # FBNet: 22 block names joined by '|
        raise UnknownArchitecture(
            arch, "expected 3 node groups '|op~0|+|op~0|op~1|+|op~0|op~1|op~2|'" + hint)
    ops: list[int] = []
    for node, group in enumerate(m.groups(), start=1):
        edges = group.split("|")
        if len(edges) != node:
            raise UnknownArchitecture(arch, f"node {node} must have {node} input edge(s), "
                                            f"got {len(edges)}")
        for src, edge in enumerate(edges):
            op, sep, idx = edge.partition("~")
            if not sep or idx != str(src):
                raise UnknownArchitecture(arch, f"edge {edge!r} into node {node} must be "
                                                f"'op~{src}'")
            if op not in OP_INDEX:
                raise UnknownArchitecture(arch, f"unknown operation {op!r}; expected one of "
                                                f"{', '.join(OPS)}")
            ops.append(OP_INDEX[op])
    return tuple(ops)


def arch_str(ops: Sequence[int]) -> str:
    """6 op indices -> the standard arch string."""
    if len(ops) != 6 or any(not 0 <= o < len(OPS) for o in ops):
        raise UnknownArchitecture(tuple(ops), "expected 6 op indices in 0..4")
    names = [f"{OPS[o]}~{src}" for o, (_, src) in zip(ops, EDGES, strict=True)]
    return f"|{names[0]}|+|{names[1]}|{names[2]}|+|{names[3]}|{names[4]}|{names[5]}|"


def _code(ops: Sequence[int]) -> int:
    code = 0
    for o in ops:
        code = code * len(OPS) + o
    return code


def _decode(code: int) -> tuple[int, ...]:
    ops = []
    for _ in EDGES:
        code, o = divmod(code, len(OPS))
        ops.append(o)
    return tuple(reversed(ops))


@lru_cache(maxsize=1)
def _index_codes() -> np.ndarray:
    with resources.files("costmodels.spaces").joinpath("data/nb201_index.npy").open("rb") as f:
        codes = np.load(f, allow_pickle=False)
    if codes.shape != (NUM_ARCHS,) or len(np.unique(codes)) != NUM_ARCHS:
        raise RuntimeError("costmodels/spaces/data/nb201_index.npy is damaged; reinstall")
    return codes


@lru_cache(maxsize=1)
def _code_to_index() -> dict[int, int]:
    return {int(c): i for i, c in enumerate(_index_codes())}


# --------------------------------------------------------------------- the space
class NB201Space:
    """The 15,625 cells in NAS-Bench-201's standard order.

    ``len(space)``, ``space[i]`` (arch string), ``space.index(arch)``,
    iteration, and :meth:`sample`.
    """

    name = "nb201"

    def __len__(self) -> int:
        return NUM_ARCHS

    def __getitem__(self, index: int) -> str:
        if not isinstance(index, (int, np.integer)) or not 0 <= index < NUM_ARCHS:
            raise UnknownArchitecture(index, f"index must be an integer in 0..{NUM_ARCHS - 1}")
        return arch_str(_decode(int(_index_codes()[index])))

    def __iter__(self) -> Iterator[str]:
        return (self[i] for i in range(NUM_ARCHS))

    def index(self, arch: str | Sequence[int]) -> int:
        ops = parse_arch(arch) if isinstance(arch, str) else tuple(arch)
        return _code_to_index()[_code(ops)]

    def sample(self, n: int, seed: int = 0) -> list[int]:
        """``n`` distinct standard indices drawn uniformly with ``seed``, sorted."""
        if not 0 < n <= NUM_ARCHS:
            raise ValueError(f"sample size must be in 1..{NUM_ARCHS}, got {n}")
        rng = np.random.default_rng(seed)
        return sorted(int(i) for i in rng.choice(NUM_ARCHS, size=n, replace=False))


SPACE = NB201Space()


# --------------------------------------------------------------------- cell topology
def reaches_output(ops: Sequence[int]) -> tuple[bool, ...]:
    """For each edge: does its destination node reach node 3 through non-``none`` edges?

    An edge whose destination does not is dead code (its result is never used).
    """
    bwd = {3}
    for (dst, src), o in reversed(list(zip(EDGES, ops, strict=True))):
        if o and dst in bwd:
            bwd.add(src)
    return tuple(dst in bwd for dst, _ in EDGES)


def live_edges(ops: Sequence[int]) -> tuple[bool, ...]:
    """For each edge: is it a non-``none`` edge on a path from node 0 to node 3?"""
    fwd = {0}
    for (dst, src), o in zip(EDGES, ops, strict=True):
        if o and src in fwd:
            fwd.add(dst)
    return tuple(bool(o) and src in fwd and out
                 for (_, src), o, out in zip(EDGES, ops, reaches_output(ops), strict=True))


def is_connected(ops: Sequence[int]) -> bool:
    """False for the 341 cells with no path from input to output (the cell outputs zero)."""
    return any(live_edges(ops))


def canonical(ops: Sequence[int], rule: str = "function") -> str:
    """Canonical form: equal for isomorphic cells.

    ``rule="function"`` (default): equal for cells that compute the same function
    up to weights. Dead edges are dropped, ``skip_connect`` is the identity, and
    each node is the sorted multiset of its terms, so the order of a sum does not
    matter; all 341 disconnected cells map to ``"zero"``. 5,273 classes.

    ``rule="nb201"``: NAS-Bench-201's own ``to_unique_str(consider_zero=True)``,
    which keeps a ``#`` term for each zero input; 6,466 classes, the figure in
    its paper.
    """
    if rule == "nb201":
        nodes = {0: "0"}
        for node in (1, 2, 3):
            cur = []
            for (dst, src), o in zip(EDGES, ops, strict=True):
                if dst != node:
                    continue
                if o == 0 or nodes[src] == "#":
                    cur.append("#")
                elif OPS[o] == "skip_connect":
                    cur.append(nodes[src])
                else:
                    cur.append(f"({nodes[src]})@{OPS[o]}")
            nodes[node] = "+".join(sorted(cur))
        return nodes[3]
    if rule != "function":
        raise ValueError(f"unknown isomorphism rule {rule!r}; expected 'function' or 'nb201'")
    live = live_edges(ops)
    expr: dict[int, str] = {0: "x"}
    for node in (1, 2, 3):
        terms = sorted(expr[src] if OPS[o] == "skip_connect" else f"{OPS[o]}({expr[src]})"
                       for (dst, src), o, ok in zip(EDGES, ops, live, strict=True) if dst == node and ok)
        expr[node] = "+".join(terms) if terms else "zero"
    return expr[3]


# --------------------------------------------------------------------- description
@dataclass(frozen=True, eq=False)
class NodeSpec:
    """One operator of the built network, enough for both the IR and ONNX builders.

    Specs come from cached fragment builders, so the same operator at the same
    place is one object across all cells; its :attr:`layer` is computed once.
    """

    name: str
    op: str
    inputs: tuple[str, ...]
    in_shapes: tuple[Shape, ...]
    out_shape: Shape
    weights: tuple[Shape, ...] = ()
    attrs: tuple[tuple[str, Any], ...] = ()

    @cached_property
    def layer(self) -> Layer:
        a = dict(self.attrs)
        return make_layer(
            self.name, self.op, self.inputs, (self.name,), self.in_shapes, self.out_shape,
            self.weights, kernel=a.get("kernel_shape", ()), stride=a.get("strides", ()),
            pads=a.get("pads", ()), dilation=a.get("dilations", ()), groups=a.get("group", 1))


def _conv_attrs(k: int, s: int, p: int) -> tuple[tuple[str, Any], ...]:
    return (("kernel_shape", (k, k)), ("strides", (s, s)), ("pads", (p, p, p, p)),
            ("dilations", (1, 1)), ("group", 1))


def _pool_attrs(k: int, s: int, p: int) -> tuple[tuple[str, Any], ...]:
    return (("kernel_shape", (k, k)), ("strides", (s, s)), ("pads", (p, p, p, p)),
            ("count_include_pad", 0))


@cache
def _relu_conv_bn(prefix: str, x: str, in_shape: Shape, cout: int, k: int, s: int,
                  p: int) -> tuple[NodeSpec, ...]:
    b, cin, h, w = in_shape
    out = (b, cout, (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1)
    return (
        NodeSpec(f"{prefix}_relu", "Relu", (x,), (in_shape,), in_shape),
        NodeSpec(f"{prefix}_conv", "Conv", (f"{prefix}_relu",), (in_shape,), out,
                 ((cout, cin, k, k),), _conv_attrs(k, s, p)),
        NodeSpec(f"{prefix}_bn", "BatchNormalization", (f"{prefix}_conv",), (out,), out,
                 ((cout,),) * 4, (("epsilon", 1e-5),)),
    )


@cache
def _edge(prefix: str, x: str, op: int, shape: Shape) -> tuple[NodeSpec, ...]:
    if OPS[op] == "skip_connect":
        return (NodeSpec(f"{prefix}_skip", "Identity", (x,), (shape,), shape),)
    if OPS[op] == "avg_pool_3x3":
        return (NodeSpec(f"{prefix}_pool", "AveragePool", (x,), (shape,), shape, (),
                         _pool_attrs(3, 1, 1)),)
    k = 1 if OPS[op] == "nor_conv_1x1" else 3
    return _relu_conv_bn(prefix, x, shape, shape[1], k, 1, k // 2)


@cache
def _binary(name: str, op: str, a: str, b: str, shape: Shape) -> NodeSpec:
    return NodeSpec(name, op, (a, b), (shape, shape), shape)


@cache
def _zero(name: str, x: str, shape: Shape) -> NodeSpec:
    return NodeSpec(name, "Mul", (x,), (shape,), shape, ((),), (("scalar", 0.0),))


def _cell(prefix: str, x: str, ops: Sequence[int], shape: Shape) -> tuple[list[NodeSpec], str]:
    nodes: list[NodeSpec] = []
    values: dict[int, str] = {0: x}
    for node in (1, 2, 3):
        terms: list[str] = []
        for (dst, src), o in zip(EDGES, ops, strict=True):
            if dst == node and o:
                frag = _edge(f"{prefix}_n{node}e{src}", values[src], o, shape)
                nodes.extend(frag)
                terms.append(frag[-1].name)
        if not terms:
            nodes.append(_zero(f"{prefix}_n{node}_zero", x, shape))
            terms.append(nodes[-1].name)
        acc = terms[0]
        for k, t in enumerate(terms[1:], start=1):
            nodes.append(_binary(f"{prefix}_n{node}_add{k}", "Add", acc, t, shape))
            acc = nodes[-1].name
        values[node] = acc
    return nodes, values[3]


@cache
def _reduction(prefix: str, x: str, in_shape: Shape, cout: int) -> tuple[NodeSpec, ...]:
    b, cin, h, w = in_shape
    a = _relu_conv_bn(f"{prefix}_a", x, in_shape, cout, 3, 2, 1)
    out = a[-1].out_shape
    bb = _relu_conv_bn(f"{prefix}_b", a[-1].name, out, cout, 3, 1, 1)
    pooled = (b, cin, h // 2, w // 2)
    return a + bb + (
        NodeSpec(f"{prefix}_sc_pool", "AveragePool", (x,), (in_shape,), pooled, (),
                 _pool_attrs(2, 2, 0)),
        NodeSpec(f"{prefix}_sc_conv", "Conv", (f"{prefix}_sc_pool",), (pooled,), out,
                 ((cout, cin, 1, 1),), _conv_attrs(1, 1, 0)),
        _binary(f"{prefix}_add", "Add", bb[-1].name, f"{prefix}_sc_conv", out),
    )


@cache
def _stem(dataset: str, batch: int) -> tuple[NodeSpec, ...]:
    ds = dataset_spec(dataset)
    in_shape = (batch, ds.channels, ds.resolution, ds.resolution)
    c = STAGE_CHANNELS[0]
    shape = (batch, c, ds.resolution, ds.resolution)
    return (
        NodeSpec("stem_conv", "Conv", ("input",), (in_shape,), shape,
                 ((c, ds.channels, 3, 3),), _conv_attrs(3, 1, 1)),
        NodeSpec("stem_bn", "BatchNormalization", ("stem_conv",), (shape,), shape,
                 ((c,),) * 4, (("epsilon", 1e-5),)),
    )


@cache
def _head(x: str, shape: Shape, num_classes: int) -> tuple[NodeSpec, ...]:
    b, c = shape[:2]
    return (
        NodeSpec("head_bn", "BatchNormalization", (x,), (shape,), shape, ((c,),) * 4,
                 (("epsilon", 1e-5),)),
        NodeSpec("head_relu", "Relu", ("head_bn",), (shape,), shape),
        NodeSpec("head_gap", "GlobalAveragePool", ("head_relu",), (shape,), (b, c, 1, 1)),
        NodeSpec("head_flatten", "Flatten", ("head_gap",), ((b, c, 1, 1),), (b, c), (),
                 (("axis", 1),)),
        NodeSpec("logits", "Gemm", ("head_flatten",), ((b, c),), (b, num_classes),
                 ((num_classes, c), (num_classes,)), (("transB", 1),)),
    )


def describe(ops: tuple[int, ...], dataset: str = "cifar10", batch: int = 1) -> list[NodeSpec]:
    """The operators of the full network for a cell, in topological order."""
    ds = dataset_spec(dataset)
    nodes = list(_stem(dataset, batch))
    x = nodes[-1].name
    shape = nodes[-1].out_shape
    for stage, cs in enumerate(STAGE_CHANNELS):
        if stage:
            red = _reduction(f"r{stage}", x, shape, cs)
            nodes.extend(red)
            x, shape = red[-1].name, red[-1].out_shape
        for cell in range(CELLS_PER_STAGE):
            cell_nodes, x = _cell(f"s{stage}c{cell}", x, ops, shape)
            nodes.extend(cell_nodes)
    nodes.extend(_head(x, shape, ds.num_classes))
    return nodes


def dataset_spec(dataset: str) -> DatasetSpec:
    try:
        return DATASETS[dataset]
    except KeyError:
        raise UnknownSpace(f"unknown NAS-Bench-201 dataset {dataset!r}; expected one of "
                         f"{', '.join(DATASETS)}") from None


def _arch_ops(arch: str | int | Sequence[int]) -> tuple[int, ...]:
    if isinstance(arch, str):
        return parse_arch(arch)
    if isinstance(arch, (int, np.integer)):
        return parse_arch(SPACE[int(arch)])
    ops = tuple(int(o) for o in arch)
    arch_str(ops)  # validates
    return ops


# --------------------------------------------------------------------- IR builder
def build_network(arch: str | int | Sequence[int], dataset: str = "cifar10",
                  batch: int = 1) -> Network:
    """The IR of a NAS-Bench-201 network, built directly (no ONNX); ~0.1 ms."""
    ops = _arch_ops(arch)
    ds = dataset_spec(dataset)
    in_shape = (batch, ds.channels, ds.resolution, ds.resolution)
    index = _code_to_index()[_code(ops)]
    return Network(
        name=f"nb201-{dataset}-{index}",
        inputs=(("input", in_shape),),
        layers=tuple(spec.layer for spec in describe(ops, dataset, batch)),
        outputs=("logits",),
        meta={"space": "nb201", "arch_str": arch_str(ops), "arch_index": index,
              "dataset": dataset, "batch": batch, "ops": ops,
              "live_edges": live_edges(ops), "connected": is_connected(ops)},
    )


def build_onnx(arch: str | int | Sequence[int], dataset: str = "cifar10", batch: int = 1,
               seed: int = 0, opset: int = 17):
    """A valid ONNX model (random weights drawn with ``seed``) that ONNX Runtime runs."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    ops = _arch_ops(arch)
    ds = dataset_spec(dataset)
    rng = np.random.default_rng(seed)
    nodes, inits = [], []
    for spec in describe(ops, dataset, batch):
        attrs = dict(spec.attrs)
        wnames = []
        for j, wshape in enumerate(spec.weights):
            wname = f"{spec.name}_w{j}"
            if spec.op == "Mul":
                arr = np.full(wshape, attrs.pop("scalar"), dtype=np.float32)
            elif spec.op == "BatchNormalization":
                arr = (rng.uniform(0.5, 1.5, wshape) if j in (0, 3)
                       else rng.normal(0, 0.1, wshape)).astype(np.float32)
            else:
                fan_in = int(np.prod(wshape[1:])) if len(wshape) > 1 else 1
                arr = rng.normal(0, (2.0 / fan_in) ** 0.5, wshape).astype(np.float32)
            inits.append(numpy_helper.from_array(arr, wname))
            wnames.append(wname)
        attrs = {k: list(v) if isinstance(v, tuple) else v for k, v in attrs.items()}
        nodes.append(helper.make_node(spec.op, list(spec.inputs) + wnames, [spec.name],
                                      name=spec.name, **attrs))
    in_shape = [batch, ds.channels, ds.resolution, ds.resolution]
    graph = helper.make_graph(
        nodes, f"nb201_{dataset}_{_code(ops)}",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, in_shape)],
        [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [batch, ds.num_classes])],
        inits,
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)],
                              producer_name="costmodels")
    model.ir_version = min(model.ir_version, 8)
    model.doc_string = f"NAS-Bench-201 {dataset} {arch_str(ops)}"
    onnx.checker.check_model(model)
    return model


# --------------------------------------------------------------------- plug-in
class NB201SearchSpace(SearchSpace):
    """NAS-Bench-201 behind the :class:`~costmodels.spaces.SearchSpace` protocol."""

    name = "nb201"
    spec = "nb201"
    datasets = tuple(DATASETS)
    default_dataset = "cifar10"
    size = NUM_ARCHS
    has_index = True

    def parse(self, text: str | int | Sequence[int]) -> str:
        if isinstance(text, str) and text.strip().isdigit():
            if len(text.strip()) > 12:  # no index has more digits (int() refuses 4,300)
                raise UnknownArchitecture(text[:40] + ("..." if len(text) > 40 else ""),
                                          f"index out of range 0..{NUM_ARCHS - 1}")
            text = int(text.strip())
        return arch_str(_arch_ops(text))

    def index(self, arch: str) -> int:
        return SPACE.index(arch)

    def archs(self) -> Iterator[str]:
        return iter(SPACE)

    def sample(self, n: int, seed: int = 0) -> list[str]:
        self.check_sample(n)
        return [SPACE[i] for i in SPACE.sample(n, seed)]

    def build_network(self, arch: str, dataset: str | None = None, batch: int = 1) -> Network:
        return build_network(arch, self.check_dataset(dataset), batch)

    def build_onnx(self, arch: str, dataset: str | None = None, batch: int = 1, seed: int = 0):
        return build_onnx(arch, self.check_dataset(dataset), batch, seed=seed)

    def encode(self, arch: str) -> np.ndarray:
        """One-hot of the 6 edges' operations (30 values)."""
        out = np.zeros((len(EDGES), len(OPS)), dtype=np.float32)
        for e, o in enumerate(parse_arch(arch)):
            out[e, o] = 1.0
        return out.ravel()


def space_from_spec(arg: str | None, **_: Any) -> NB201SearchSpace:
    if arg:
        raise UnknownSpace(f"space 'nb201' takes no argument (got 'nb201:{arg}')")
    return NB201SearchSpace()
