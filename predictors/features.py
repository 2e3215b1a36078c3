"""Feature vectors of networks for the learned predictors: a versioned schema.

Schema ``costmodels-ir`` version 1 (:data:`SCHEMA_NAME`, :data:`SCHEMA_VERSION`,
names in :data:`FEATURE_NAMES`, one row per network, float64):

*Totals* (from the IR, any network)
    ``layers``, ``macs``, ``params``, ``elem_ops``, ``bytes``, ``bytes_weights``,
    ``bytes_activations`` -- counts, MACs, element operations and bytes.
*Per operator group* (``conv1x1``, ``conv3x3``, ``conv_other``, ``gemm``, ``bn``,
    ``act``, ``pool``, ``gpool``, ``add``, ``mul``, ``free``, ``other``)
    ``<group>_count``, ``<group>_work`` (MACs for convolutions and GEMMs,
    element operations otherwise), ``<group>_bytes``. ``free`` are layout-only
    ops (Identity, Flatten, Reshape, ...).
*Per stage* (``stage0`` .. ``stage3``: layers grouped by output spatial size,
    largest first; smaller sizes fold into ``stage3``; non-4-D outputs are not
    in any stage) ``<stage>_layers``, ``<stage>_macs``, ``<stage>_bytes``.
*Structure*
    ``depth`` (layers on the longest input-to-output path), ``mac_depth`` (MAC
    layers on it), ``kernels`` (kernels after a simple fusion view: BN and
    activations fuse into the op that produces their input; layout-only ops
    are free), ``kernels_nomac`` (those kernels without MACs).
*Connectivity* ``connected`` (0 for a NAS-Bench-201 cell with no input-to-output
    path, else 1), ``live_edges`` (edges on such a path; NaN outside NB201).
*NAS-Bench-201 cell encoding* (NaN for networks from elsewhere)
    ``e{edge}_{op}`` one-hot (6 edges x 5 ops, edge order of
    :data:`costmodels.spaces.nb201.EDGES`), ``e{edge}_live``, and
    ``n_{op}`` / ``n_live_{op}`` counts of each non-``none`` operation.

Speed: the additive part is a sparse (networks x distinct layers) matrix times
a (distinct layers x features) matrix; layer objects shared between networks
(NAS-Bench-201 builds them from cached fragments) are costed once. The
structural part is memoised per NAS-Bench-201 cell (it depends only on the
cell, not on the dataset or batch). All 15,625 cells: about 3 s on a 2-core
CPU the first time, under 1 s once the layer rows and cells are cached.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import sparse

from costmodels.network import Layer, Network
from costmodels.spaces import nb201

SCHEMA_NAME = "costmodels-ir"
SCHEMA_VERSION = 1

_TOTALS = ("layers", "macs", "params", "elem_ops", "bytes", "bytes_weights", "bytes_activations")
GROUPS = ("conv1x1", "conv3x3", "conv_other", "gemm", "bn", "act", "pool", "gpool", "add", "mul",
          "free", "other")
_N_STAGES = 4
_STAGE_FIELDS = ("layers", "macs", "bytes")
_STRUCT = ("depth", "mac_depth", "kernels", "kernels_nomac", "connected", "live_edges")
_CELL_OPS = nb201.OPS
_LIVE_OPS = nb201.OPS[1:]

ADDITIVE_NAMES: tuple[str, ...] = (
    _TOTALS
    + tuple(f"{g}_{f}" for g in GROUPS for f in ("count", "work", "bytes"))
    + tuple(f"stage{s}_{f}" for s in range(_N_STAGES) for f in _STAGE_FIELDS))
STRUCT_NAMES: tuple[str, ...] = _STRUCT
CELL_NAMES: tuple[str, ...] = (
    tuple(f"e{e}_{op}" for e in range(len(nb201.EDGES)) for op in _CELL_OPS)
    + tuple(f"e{e}_live" for e in range(len(nb201.EDGES)))
    + tuple(f"n_{op}" for op in _LIVE_OPS) + tuple(f"n_live_{op}" for op in _LIVE_OPS))
FEATURE_NAMES: tuple[str, ...] = ADDITIVE_NAMES + STRUCT_NAMES + CELL_NAMES

_ACT = frozenset({"Relu", "LeakyRelu", "PRelu", "Sigmoid", "HardSigmoid", "HardSwish", "Clip",
                  "Tanh", "Elu", "Selu", "Gelu", "Softplus", "Mish", "Swish", "Silu", "Erf"})
_FREE = frozenset({"Identity", "Flatten", "Reshape", "Squeeze", "Unsqueeze", "Dropout"})
_FUSES_INTO_PRODUCER = frozenset({"BatchNormalization"}) | _ACT
_GROUP_INDEX = {g: i for i, g in enumerate(GROUPS)}


def schema() -> dict:
    """Name, version and feature names: what a saved model records and checks."""
    return {"name": SCHEMA_NAME, "version": SCHEMA_VERSION, "features": list(FEATURE_NAMES)}


def op_group(layer: Layer) -> str:
    """The operator group of a layer (see the module docstring)."""
    op = layer.op
    if op in ("Conv", "ConvTranspose"):
        area = math.prod(layer.kernel) if layer.kernel else 1
        return "conv1x1" if area == 1 else "conv3x3" if area == 9 else "conv_other"
    if op in ("Gemm", "MatMul"):
        return "gemm"
    if op == "BatchNormalization":
        return "bn"
    if op in _ACT:
        return "act"
    if op in ("AveragePool", "MaxPool"):
        return "pool"
    if op in ("GlobalAveragePool", "GlobalMaxPool", "ReduceMean", "ReduceMax", "ReduceSum"):
        return "gpool"
    if op in ("Add", "Sum", "Sub"):
        return "add"
    if op in ("Mul", "Div"):
        return "mul"
    if op in _FREE:
        return "free"
    return "other"


# ------------------------------------------------------------------ additive part
_N_ADD = len(_TOTALS) + 3 * len(GROUPS)


class _LayerBank:
    """Distinct layer objects seen so far and their additive feature rows.

    Keyed by ``id(layer)``; the entry keeps the layer alive, so an id is never
    reused while it is in the bank (checked with ``is`` anyway). Besides the
    row, each layer's output spatial size, MACs and bytes (for the stage sums).
    """

    MAX_ROWS = 200_000

    def __init__(self) -> None:
        self.index: dict[int, tuple[Layer, int]] = {}
        self.rows: list[np.ndarray] = []
        self._matrix: np.ndarray | None = None

    def row_of(self, layer: Layer) -> int:
        hit = self.index.get(id(layer))
        if hit is not None and hit[0] is layer:
            return hit[1]
        i = len(self.rows)
        self.rows.append(_layer_row(layer))
        self.index[id(layer)] = (layer, i)
        return i

    def rows_of(self, net: Network) -> list[int]:
        get = self.index.get
        out = []
        for layer in net.layers:
            hit = get(id(layer))
            out.append(hit[1] if hit is not None and hit[0] is layer else self.row_of(layer))
        return out

    def matrix(self) -> np.ndarray:
        if self._matrix is None or len(self._matrix) != len(self.rows):
            self._matrix = np.vstack(self.rows) if self.rows else np.zeros((0, _N_ADD + 3))
        return self._matrix

    def trim(self) -> None:
        if len(self.rows) > self.MAX_ROWS:
            self.index.clear()
            self.rows.clear()
            self._matrix = None


_BANK = _LayerBank()


def _layer_row(layer: Layer) -> np.ndarray:
    """Additive features of one layer, then (spatial size, MACs, bytes) for the stages."""
    row = np.zeros(_N_ADD + 3)
    row[:len(_TOTALS)] = (1, layer.macs, layer.params, layer.elem_ops, layer.bytes_total,
                          layer.bytes_weights, layer.bytes_in + layer.bytes_out)
    g = _GROUP_INDEX[op_group(layer)]
    base = len(_TOTALS) + 3 * g
    row[base:base + 3] = (1, layer.macs if layer.macs else layer.elem_ops, layer.bytes_total)
    h = layer.output_shape[2] if len(layer.output_shape) == 4 else 0
    row[_N_ADD:] = (h, layer.macs, layer.bytes_total)
    return row


def _additive(nets: Sequence[Network]) -> np.ndarray:
    _BANK.trim()
    rows_per_net = [_BANK.rows_of(net) for net in nets]
    mat = _BANK.matrix()
    lengths = np.fromiter((len(r) for r in rows_per_net), dtype=np.int64, count=len(nets))
    indptr = np.zeros(len(nets) + 1, dtype=np.int64)
    indptr[1:] = np.cumsum(lengths)
    indices = np.fromiter((i for r in rows_per_net for i in r), dtype=np.int64, count=indptr[-1])
    counts = sparse.csr_matrix((np.ones(len(indices)), indices, indptr),
                               shape=(len(nets), len(mat)))
    out = np.zeros((len(nets), len(ADDITIVE_NAMES)))
    out[:, :_N_ADD] = np.asarray(counts @ mat[:, :_N_ADD])
    # Stages: rank of each layer's spatial size among its network's sizes, largest first.
    net_id = np.repeat(np.arange(len(nets)), lengths)
    h = mat[indices, _N_ADD].astype(np.int64)
    keep = h > 0
    net_id, h, rows = net_id[keep], h[keep], indices[keep]
    key = net_id * (1 << 32) - h
    uniq = np.unique(key)
    uniq_net = (uniq + (1 << 31)) >> 32  # keys of net n lie in (n*2^32 - 2^31, n*2^32)
    first = np.searchsorted(uniq, (uniq_net << 32) - (1 << 31))
    rank = np.arange(len(uniq)) - first
    stage = np.minimum(rank[np.searchsorted(uniq, key)], _N_STAGES - 1)
    flat = net_id * _N_STAGES + stage
    size = len(nets) * _N_STAGES
    cols = [np.bincount(flat, minlength=size),
            np.bincount(flat, weights=mat[rows, _N_ADD + 1], minlength=size),
            np.bincount(flat, weights=mat[rows, _N_ADD + 2], minlength=size)]
    out[:, _N_ADD:] = np.stack(cols, axis=1).reshape(len(nets), _N_STAGES * 3)
    return out


# ------------------------------------------------------------------ structure
_STRUCT_CACHE: dict[tuple, tuple[float, ...]] = {}
_NO_INFO = (0, 0, "")


def _walk(net: Network) -> tuple[float, float, float, float]:
    """Longest path (layers, MAC layers) and kernel counts under the fusion view."""
    info: dict[str, tuple[int, int, str]] = {}  # tensor -> (depth, MAC depth, producer op)
    get = info.get
    kernels = kernels_nomac = 0
    for layer in net.layers:
        ins = layer.inputs
        if len(ins) == 1:
            d, m, pop = get(ins[0], _NO_INFO)
        else:
            d = m = 0
            pop = ""
            for t in ins:
                a, b, _ = get(t, _NO_INFO)
                d, m = max(d, a), max(m, b)
        op = layer.op
        mac = layer.macs > 0
        fused = op in _FUSES_INTO_PRODUCER and len(ins) == 1 and pop not in ("", "Identity")
        if op not in _FREE and not fused:
            kernels += 1
            kernels_nomac += not mac
        rec = (d + 1, m + mac, op)
        for t in layer.outputs:
            info[t] = rec
    outs = [info[t] for t in net.outputs if t in info] or list(info.values()) or [_NO_INFO]
    return (float(max(o[0] for o in outs)), float(max(o[1] for o in outs)), float(kernels),
            float(kernels_nomac))


def _structure(net: Network) -> tuple[float, ...]:
    meta = net.meta
    key = None
    if meta.get("space") == "nb201" and "ops" in meta:
        key = ("nb201", tuple(meta["ops"]))
        hit = _STRUCT_CACHE.get(key)
        if hit is not None:
            return hit
    walk = _walk(net)
    connected = float(bool(meta.get("connected", True)))
    live = float(sum(meta["live_edges"])) if "live_edges" in meta else math.nan
    out = walk + (connected, live)
    if key is not None:
        if len(_STRUCT_CACHE) > 100_000:
            _STRUCT_CACHE.clear()
        _STRUCT_CACHE[key] = out
    return out


def cell_encoding(ops: Sequence[int]) -> np.ndarray:
    """NAS-Bench-201 part of the schema (:data:`CELL_NAMES`) for one cell's 6 op indices."""
    live = nb201.live_edges(ops)
    onehot = np.zeros((len(nb201.EDGES), len(_CELL_OPS)))
    onehot[np.arange(len(ops)), list(ops)] = 1
    ops_a = np.asarray(ops)
    live_a = np.asarray(live)
    n = [(ops_a == o).sum() for o in range(1, len(_CELL_OPS))]
    n_live = [((ops_a == o) & live_a).sum() for o in range(1, len(_CELL_OPS))]
    return np.concatenate([onehot.ravel(), live_a.astype(float), n, n_live]).astype(float)


_CELL_CACHE: dict[tuple[int, ...], np.ndarray] = {}


def _cell_part(net: Network) -> np.ndarray:
    meta = net.meta
    if meta.get("space") != "nb201" or "ops" not in meta:
        return np.full(len(CELL_NAMES), np.nan)
    key = tuple(meta["ops"])
    hit = _CELL_CACHE.get(key)
    if hit is None:
        hit = _CELL_CACHE[key] = cell_encoding(key)
    return hit


def clear_caches() -> None:
    """Forget every cached layer row and cell (for honest timings, or to free memory)."""
    global _BANK
    _BANK = _LayerBank()
    _STRUCT_CACHE.clear()
    _CELL_CACHE.clear()


def features(nets: Sequence[Network]) -> np.ndarray:
    """Feature matrix, shape (len(nets), len(FEATURE_NAMES)), float64."""
    if len(nets) == 0:
        return np.zeros((0, len(FEATURE_NAMES)))
    add = _additive(nets)
    struct = np.array([_structure(n) for n in nets], dtype=np.float64)
    cell = np.vstack([_cell_part(n) for n in nets])
    return np.hstack([add, struct, cell])


def compact(x: np.ndarray) -> np.ndarray:
    """A few well-conditioned columns of a feature matrix for linear models.

    Per-group counts of convolutions/pools/adds, totals of MACs and bytes (in
    millions), depth, kernels and connectivity; NaN replaced by 0.
    """
    idx = [FEATURE_NAMES.index(n) for n in COMPACT_NAMES]
    out = x[:, idx].copy()
    scale = np.array([1e-6 if n in ("macs", "bytes") else 1.0 for n in COMPACT_NAMES])
    out *= scale
    return np.nan_to_num(out, nan=0.0)


COMPACT_NAMES: tuple[str, ...] = (
    "macs", "bytes", "conv1x1_count", "conv3x3_count", "pool_count", "add_count", "depth",
    "kernels", "connected") + tuple(f"n_live_{op}" for op in _LIVE_OPS)
