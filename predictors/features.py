"""Feature vectors of networks for the learned predictors: a versioned schema.

Schema ``costmodels-ir`` version 2 (:data:`SCHEMA_NAME`, :data:`SCHEMA_VERSION`,
names in :data:`FEATURE_NAMES`, one row per network, float64). Everything but
the last block comes from the IR alone and works for any network (NAS-Bench-201,
FBNet, a folder of ONNX models); op kinds come from :mod:`costmodels.ops`.

*Totals*
    ``layers``, ``macs``, ``params``, ``elem_ops``, ``bytes``, ``bytes_weights``,
    ``bytes_activations`` -- counts, MACs, element operations and bytes.
*Per operator group* (:data:`GROUPS`: convolutions by kernel area ``conv1x1``,
    ``conv3x3``, ``conv_other``; ``depthwise_conv``, ``grouped_conv``, ``gemm``,
    ``matmul``, ``pool``, ``gpool`` (global pools and reductions), ``norm``,
    ``softmax``, ``act`` (activations), ``eltwise`` (other element-wise ops),
    ``quant``, ``move`` (data movement that copies), ``free`` (views), ``other``)
    ``<group>_count``, ``<group>_work`` (MACs for MAC ops, element operations
    otherwise), ``<group>_bytes``.
*Per stage* (``stage0`` .. ``stage3``: layers grouped by output spatial size,
    largest first; smaller sizes fold into ``stage3``; non-4-D outputs are not
    in any stage) ``<stage>_layers``, ``<stage>_macs``, ``<stage>_bytes``.
*Structure*
    ``depth`` (layers on the longest input-to-output path), ``mac_depth`` (MAC
    layers on it), ``kernels`` (kernels after a simple fusion view: norms and
    activations fuse into the op that produces their input; views are free),
    ``kernels_nomac`` (those kernels without MACs), ``max_width`` and
    ``mean_mac_width`` (output channels: largest, and mean over MAC layers),
    ``connected`` (0 for a network whose meta says no input reaches the output,
    e.g. a NAS-Bench-201 cell with no path; else 1).
*NAS-Bench-201 cell block* (NaN for networks from other spaces)
    ``e{edge}_{op}`` one-hot (6 edges x 5 ops, edge order of
    :data:`costmodels.spaces.nb201.EDGES`), ``e{edge}_live``, ``live_edges``,
    and ``n_{op}`` / ``n_live_{op}`` counts of each non-``none`` operation.

Speed: the additive part is a sparse (networks x distinct layers) matrix times
a (distinct layers x features) matrix. Distinct layers are keyed by their
structure (op, shapes, attributes, costs -- not names, not ``id()``), so layers
built afresh by any space are costed once; the structural part is memoised by
(space, architecture, dataset, batch) when the network says where it came
from, else by its structural fingerprint.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import sparse

from costmodels import ops
from costmodels.network import Layer, Network
from costmodels.spaces import nb201

SCHEMA_NAME = "costmodels-ir"
SCHEMA_VERSION = 2

_TOTALS = ("layers", "macs", "params", "elem_ops", "bytes", "bytes_weights", "bytes_activations")
GROUPS = ("conv1x1", "conv3x3", "conv_other", "depthwise_conv", "grouped_conv", "gemm", "matmul",
          "pool", "gpool", "norm", "softmax", "act", "eltwise", "quant", "move", "free", "other")
_N_STAGES = 4
_STAGE_FIELDS = ("layers", "macs", "bytes")
_STRUCT = ("depth", "mac_depth", "kernels", "kernels_nomac", "max_width", "mean_mac_width",
           "connected")
_CELL_OPS = nb201.OPS
_LIVE_OPS = nb201.OPS[1:]

ADDITIVE_NAMES: tuple[str, ...] = (
    _TOTALS
    + tuple(f"{g}_{f}" for g in GROUPS for f in ("count", "work", "bytes"))
    + tuple(f"stage{s}_{f}" for s in range(_N_STAGES) for f in _STAGE_FIELDS))
STRUCT_NAMES: tuple[str, ...] = _STRUCT
CELL_NAMES: tuple[str, ...] = (
    tuple(f"e{e}_{op}" for e in range(len(nb201.EDGES)) for op in _CELL_OPS)
    + tuple(f"e{e}_live" for e in range(len(nb201.EDGES))) + ("live_edges",)
    + tuple(f"n_{op}" for op in _LIVE_OPS) + tuple(f"n_live_{op}" for op in _LIVE_OPS))
FEATURE_NAMES: tuple[str, ...] = ADDITIVE_NAMES + STRUCT_NAMES + CELL_NAMES
IR_NAMES: tuple[str, ...] = ADDITIVE_NAMES + STRUCT_NAMES

_FREE = ops.VIEW_OPS
_FUSES_INTO_PRODUCER = ops.NORM_OPS | ops.ACTIVATION_OPS
_GROUP_INDEX = {g: i for i, g in enumerate(GROUPS)}
_CLASS_GROUP = {"gemm": "gemm", "matmul": "matmul", "pool": "pool", "global_pool": "gpool",
                "norm": "norm", "softmax": "softmax", "quant": "quant", "data_movement": "move",
                "view": "free", "depthwise_conv": "depthwise_conv",
                "grouped_conv": "grouped_conv"}


def schema() -> dict:
    """Name, version and feature names: what a saved model records and checks."""
    return {"name": SCHEMA_NAME, "version": SCHEMA_VERSION, "features": list(FEATURE_NAMES)}


def op_group(layer: Layer) -> str:
    """The operator group of a layer (one of :data:`GROUPS`)."""
    cls = ops.op_class(layer)
    if cls == "conv":
        area = math.prod(layer.kernel) if layer.kernel else 1
        return "conv1x1" if area == 1 else "conv3x3" if area == 9 else "conv_other"
    if cls == "elementwise":
        return "act" if layer.op in ops.ACTIVATION_OPS else "eltwise"
    return _CLASS_GROUP.get(cls, "other")


def layer_key(layer: Layer) -> tuple:
    """Structural identity of a layer: everything but its name and tensor names."""
    return (layer.op, layer.input_shapes, layer.output_shape, layer.weight_shapes, layer.kernel,
            layer.stride, layer.pads, layer.dilation, layer.groups, layer.dtype, layer.macs,
            layer.elem_ops, layer.bytes_in, layer.bytes_out, layer.bytes_weights)


# ------------------------------------------------------------------ additive part
_N_ADD = len(_TOTALS) + 3 * len(GROUPS)


class _LayerBank:
    """Distinct layers seen so far (keyed by :func:`layer_key`) and their additive rows.

    Besides the row, each layer's output spatial size, MACs and bytes (for the
    stage sums) and output channels (for the widths).
    """

    MAX_ROWS = 200_000

    def __init__(self) -> None:
        self.index: dict[tuple, int] = {}
        self.rows: list[np.ndarray] = []
        self.by_arch: dict[tuple, list[int]] = {}
        self._matrix: np.ndarray | None = None

    def rows_of(self, net: Network) -> list[int]:
        akey = _struct_key(net) if net.meta.get("arch_str") else None
        if akey is not None and akey in self.by_arch:
            return self.by_arch[akey]
        index = self.index
        out = []
        for layer in net.layers:
            key = layer_key(layer)
            i = index.get(key)
            if i is None:
                i = index[key] = len(self.rows)
                self.rows.append(_layer_row(layer))
            out.append(i)
        if akey is not None:
            self.by_arch[akey] = out
        return out

    def matrix(self) -> np.ndarray:
        if self._matrix is None or len(self._matrix) != len(self.rows):
            self._matrix = np.vstack(self.rows) if self.rows else np.zeros((0, _N_ADD + 4))
        return self._matrix

    def trim(self) -> None:
        if len(self.rows) > self.MAX_ROWS:
            self.index.clear()
            self.rows.clear()
            self.by_arch.clear()
            self._matrix = None


_BANK = _LayerBank()


def _layer_row(layer: Layer) -> np.ndarray:
    """Additive features of one layer, then (spatial size, MACs, bytes, channels)."""
    row = np.zeros(_N_ADD + 4)
    row[:len(_TOTALS)] = (1, layer.macs, layer.params, layer.elem_ops, layer.bytes_total,
                          layer.bytes_weights, layer.bytes_in + layer.bytes_out)
    g = _GROUP_INDEX[op_group(layer)]
    base = len(_TOTALS) + 3 * g
    row[base:base + 3] = (1, layer.macs if layer.macs else layer.elem_ops, layer.bytes_total)
    h = layer.output_shape[2] if len(layer.output_shape) == 4 else 0
    row[_N_ADD:] = (h, layer.macs, layer.bytes_total, layer.out_channels)
    return row


def _stages(mat: np.ndarray, indices: np.ndarray, lengths: np.ndarray, n: int) -> np.ndarray:
    """(n, 4 stages x 3) layers/MACs/bytes by rank of output spatial size, largest first."""
    net_id = np.repeat(np.arange(n), lengths)
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
    size = n * _N_STAGES
    cols = [np.bincount(flat, minlength=size),
            np.bincount(flat, weights=mat[rows, _N_ADD + 1], minlength=size),
            np.bincount(flat, weights=mat[rows, _N_ADD + 2], minlength=size)]
    return np.stack(cols, axis=1).reshape(n, _N_STAGES * 3)


def _additive(nets: Sequence[Network]) -> tuple[np.ndarray, np.ndarray]:
    """Additive block (n, len(ADDITIVE_NAMES)) and widths (n, 2: max, mean over MAC layers)."""
    _BANK.trim()
    rows_per_net = [_BANK.rows_of(net) for net in nets]
    mat = _BANK.matrix()
    n = len(nets)
    lengths = np.fromiter((len(r) for r in rows_per_net), dtype=np.int64, count=n)
    indptr = np.zeros(n + 1, dtype=np.int64)
    indptr[1:] = np.cumsum(lengths)
    indices = np.fromiter((i for r in rows_per_net for i in r), dtype=np.int64, count=indptr[-1])
    counts = sparse.csr_matrix((np.ones(len(indices)), indices, indptr), shape=(n, len(mat)))
    out = np.zeros((n, len(ADDITIVE_NAMES)))
    out[:, :_N_ADD] = np.asarray(counts @ mat[:, :_N_ADD])
    out[:, _N_ADD:] = _stages(mat, indices, lengths, n)
    chans = mat[:, _N_ADD + 3]
    is_mac = (mat[:, _N_ADD + 1] > 0).astype(np.float64)
    n_mac = np.asarray(counts @ is_mac).ravel()
    widths = np.zeros((n, 2))
    widths[:, 1] = np.asarray(counts @ (chans * is_mac)).ravel() / np.maximum(n_mac, 1)
    if len(indices):
        widths[:, 0] = np.maximum.reduceat(np.r_[chans[indices], 0.0], indptr[:-1])
        widths[lengths == 0, 0] = 0.0
    return out, widths


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
        fused = op in _FUSES_INTO_PRODUCER and len(ins) == 1 and pop not in ("", *_FREE)
        if op not in _FREE and not fused:
            kernels += 1
            kernels_nomac += not mac
        rec = (d + 1, m + mac, op)
        for t in layer.outputs:
            info[t] = rec
    outs = [info[t] for t in net.outputs if t in info] or list(info.values()) or [_NO_INFO]
    return (float(max(o[0] for o in outs)), float(max(o[1] for o in outs)), float(kernels),
            float(kernels_nomac))


def _struct_key(net: Network) -> tuple:
    meta = net.meta
    if meta.get("space") and meta.get("arch_str"):
        return ("arch", str(meta["space"]), str(meta["arch_str"]), str(meta.get("dataset")),
                str(meta.get("batch")), str(meta.get("input_shapes")))
    return ("fp", net.fingerprint)


def _structure(net: Network) -> tuple[float, ...]:
    key = _struct_key(net)
    hit = _STRUCT_CACHE.get(key)
    if hit is not None:
        return hit
    out = _walk(net)
    if len(_STRUCT_CACHE) > 100_000:
        _STRUCT_CACHE.clear()
    _STRUCT_CACHE[key] = out
    return out


def cell_encoding(ops_idx: Sequence[int]) -> np.ndarray:
    """NAS-Bench-201 block of the schema (:data:`CELL_NAMES`) for one cell's 6 op indices."""
    live = nb201.live_edges(ops_idx)
    onehot = np.zeros((len(nb201.EDGES), len(_CELL_OPS)))
    onehot[np.arange(len(ops_idx)), list(ops_idx)] = 1
    ops_a = np.asarray(ops_idx)
    live_a = np.asarray(live)
    n = [(ops_a == o).sum() for o in range(1, len(_CELL_OPS))]
    n_live = [((ops_a == o) & live_a).sum() for o in range(1, len(_CELL_OPS))]
    return np.concatenate([onehot.ravel(), live_a.astype(float), [float(live_a.sum())], n,
                           n_live]).astype(float)


_CELL_CACHE: dict[tuple[int, ...], np.ndarray] = {}
_NAN_CELL = np.full(len(CELL_NAMES), np.nan)


def _cell_ops(net: Network) -> tuple[int, ...] | None:
    meta = net.meta
    if meta.get("space") != "nb201" or "ops" not in meta:
        return None
    return tuple(int(o) for o in meta["ops"])


def _cell_part(net: Network) -> np.ndarray:
    key = _cell_ops(net)
    if key is None:
        return _NAN_CELL
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
    add, widths = _additive(nets)
    walk = np.array([_structure(n) for n in nets], dtype=np.float64)
    connected = np.array([float(bool(n.meta.get("connected", True))) for n in nets])
    cell = np.vstack([_cell_part(n) for n in nets])
    return np.hstack([add, walk, widths, connected[:, None], cell])


COMPACT_NAMES: tuple[str, ...] = (
    "macs", "bytes", "conv1x1_count", "conv3x3_count", "depthwise_conv_count", "pool_count",
    "eltwise_count", "depth", "kernels", "connected") + tuple(f"n_live_{op}" for op in _LIVE_OPS)
_COMPACT_IDX = [FEATURE_NAMES.index(n) for n in COMPACT_NAMES]
_COMPACT_SCALE = np.array([1e-6 if n in ("macs", "bytes") else 1.0 for n in COMPACT_NAMES])


def compact(x: np.ndarray) -> np.ndarray:
    """A few well-conditioned columns of a feature matrix for linear models.

    Per-group counts of convolutions/pools/element-wise ops, totals of MACs and
    bytes (in millions), depth, kernels and connectivity (+ the NB201 live-op
    counts, 0 elsewhere); NaN replaced by 0.
    """
    return np.nan_to_num(x[:, _COMPACT_IDX] * _COMPACT_SCALE, nan=0.0)
