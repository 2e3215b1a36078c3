"""GNN latency predictor: a graph network over the network's layer graph (any network).

Graph of a network: one node per layer of the IR, an edge from each layer to
every layer that reads one of its outputs. Node features
(:data:`NODE_FEATURES`): the layer's operator group one-hot
(:data:`predictors.features.GROUPS`), log1p of its MACs, element ops, bytes
and output channels, and its output spatial size. Message passing
(:data:`layers` rounds): ``h <- relu(W_self h + W_in mean(h of producers) +
W_out mean(h of consumers))``, then the mean and the max over nodes,
concatenated with the network's global features
(:func:`predictors.features.compact`, standardised), into an MLP that predicts
the standardised log latency (in the spirit of BRP-NAS, Dudziak et al.,
NeurIPS 2020, which regresses latency with a GCN on the cell graph; here the
graph is the whole layer graph, so NAS-Bench-201, FBNet and imported ONNX
models all work).

Graphs are cached by their structure (space, architecture, dataset, batch, or
the network's fingerprint), never by ``id()``. Deterministic for a seed
(``torch.manual_seed``, deterministic algorithms, ``n_threads`` threads).
Saved as ``model.safetensors`` (tensors only) + ``manifest.json``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from costmodels.errors import ModelFileError
from costmodels.network import Network
from predictors import features as F
from predictors import persistence as P
from predictors.base import Predictor, check_training_data

CLASS = "predictors.gnn.GNNModel"
NODE_FEATURES = len(F.GROUPS) + 5
# Predictions are clipped to this many standard deviations of the training log-latencies.
GNN_CLIP = 8.0
_GRAPH_CACHE: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}


def layer_graph(net: Network) -> tuple[np.ndarray, np.ndarray]:
    """Node features (layers, NODE_FEATURES) float32 and edges (2, e) int64 (producer, consumer)."""
    key = F._struct_key(net)
    hit = _GRAPH_CACHE.get(key)
    if hit is not None:
        return hit
    producer: dict[str, int] = {}
    x = np.zeros((len(net.layers), NODE_FEATURES), dtype=np.float32)
    src: list[int] = []
    dst: list[int] = []
    for i, layer in enumerate(net.layers):
        x[i, F.GROUPS.index(F.op_group(layer))] = 1
        h = layer.output_shape[2] if len(layer.output_shape) == 4 else 1
        x[i, len(F.GROUPS):] = np.log1p([layer.macs, layer.elem_ops, layer.bytes_total,
                                         layer.out_channels, h])
        for t in layer.inputs:
            j = producer.get(t)
            if j is not None:
                src.append(j)
                dst.append(i)
        for t in layer.outputs:
            producer[t] = i
    out = (x, np.array([src, dst], dtype=np.int64).reshape(2, -1))
    if len(_GRAPH_CACHE) > 50_000:
        _GRAPH_CACHE.clear()
    _GRAPH_CACHE[key] = out
    return out


def batch_graphs(nets: Sequence[Network]):
    """One disjoint union of the networks' graphs: (x, edges, graph id of each node, n graphs)."""
    xs, es, gid = [], [], []
    offset = 0
    for g, net in enumerate(nets):
        x, e = layer_graph(net)
        xs.append(x)
        es.append(e + offset)
        gid.append(np.full(len(x), g, dtype=np.int64))
        offset += len(x)
    return np.vstack(xs), np.hstack(es), np.concatenate(gid), len(nets)


def _net_module(hidden: int, layers: int, n_global: int):
    import torch
    from torch import nn

    class LayerGNN(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.embed = nn.Linear(NODE_FEATURES, hidden)
            self.self_w = nn.ModuleList(nn.Linear(hidden, hidden) for _ in range(layers))
            self.in_w = nn.ModuleList(nn.Linear(hidden, hidden, bias=False) for _ in range(layers))
            self.out_w = nn.ModuleList(nn.Linear(hidden, hidden, bias=False)
                                       for _ in range(layers))
            self.head = nn.Sequential(nn.Linear(2 * hidden + n_global, hidden), nn.ReLU(),
                                      nn.Linear(hidden, 1))

        @staticmethod
        def _mean(h, index_from, index_to, n):
            out = torch.zeros(n, h.shape[1], dtype=h.dtype)
            out.index_add_(0, index_to, h[index_from])
            deg = torch.zeros(n, dtype=h.dtype).index_add_(
                0, index_to, torch.ones(len(index_to), dtype=h.dtype))
            return out / deg.clamp(min=1)[:, None]

        def forward(self, x, edges, gid, n_graphs, g):
            h = torch.relu(self.embed(x))
            n = len(x)
            for ws, wi, wo in zip(self.self_w, self.in_w, self.out_w, strict=True):
                h = torch.relu(ws(h) + wi(self._mean(h, edges[0], edges[1], n))
                               + wo(self._mean(h, edges[1], edges[0], n)))
            mean = self._mean(h, torch.arange(n), gid, n_graphs)
            mx = torch.full((n_graphs, h.shape[1]), -1e9, dtype=h.dtype)
            mx = mx.scatter_reduce(0, gid[:, None].expand_as(h), h, reduce="amax")
            return self.head(torch.cat([mean, mx, g], dim=1)).squeeze(-1)

    return LayerGNN()


@contextlib.contextmanager
def _torch_settings(threads: int, seed: int | None = None):
    import torch

    old_threads = torch.get_num_threads()
    old_det = torch.are_deterministic_algorithms_enabled()
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    if seed is not None:
        torch.manual_seed(seed)
    try:
        yield torch
    finally:
        torch.set_num_threads(old_threads)
        torch.use_deterministic_algorithms(old_det)


class GNNModel(Predictor):
    """Graph network latency predictor on the layer graph of any network; latency in ms.

    Parameters
    ----------
    hidden, layers: width and number of message-passing rounds.
    epochs: passes over the training set (at least ``min_steps`` optimiser steps are run).
    lr, weight_decay, batch_size: Adam settings.
    random_state: seed (weights init and batch order); results are deterministic.
    n_threads: torch threads while fitting and predicting.
    device: name of the target device, recorded in the saved manifest.
    """

    name = "gnn"
    registry_name = "gnn"

    # what a saved model may say (persistence refuses more: the net is built before its
    # weights are read, so a manifest edited to 10**6 layers built for minutes)
    PARAM_BOUNDS = {"hidden": (1, 4096), "layers": (1, 64), "epochs": (1, 10 ** 6),
                    "batch_size": (1, 1 << 16), "min_steps": (0, 10 ** 7), "n_threads": (1, 1024)}

    def __init__(self, hidden: int = 32, layers: int = 3, epochs: int = 100, lr: float = 3e-3,
                 weight_decay: float = 1e-4, batch_size: int = 32, min_steps: int = 200,
                 random_state: int = 0, n_threads: int = 1, device: str = "") -> None:
        self.hidden = hidden
        self.layers = layers
        self.epochs = epochs
        self.lr = lr
        self.weight_decay = weight_decay
        self.batch_size = batch_size
        self.min_steps = min_steps
        self.random_state = random_state
        self.n_threads = n_threads
        self.device = device

    def _inputs(self, nets: Sequence[Network], g: np.ndarray | None = None):
        import torch

        x, edges, gid, n = batch_graphs(nets)
        if g is None:
            g = F.compact(F.features(nets))
        g = (g - self.g_mean_) / self.g_std_
        return (torch.from_numpy(x), torch.from_numpy(edges), torch.from_numpy(gid), n,
                torch.from_numpy(g.astype(np.float32)))

    def fit(self, nets: Sequence[Network], latencies_ms: Sequence[float]) -> GNNModel:
        y = check_training_data(nets, latencies_ms)
        g = F.compact(F.features(nets))
        self.g_mean_ = g.mean(axis=0)
        sd = g.std(axis=0)
        self.g_std_ = np.where(sd > 1e-12, sd, 1.0)
        t = np.log(y)
        self.y_mean_ = float(t.mean())
        self.y_std_ = float(t.std()) or 1.0
        with _torch_settings(self.n_threads, self.random_state) as torch:
            target = torch.from_numpy(((t - self.y_mean_) / self.y_std_).astype(np.float32))
            self.module_ = _net_module(self.hidden, self.layers, g.shape[1])
            opt = torch.optim.Adam(self.module_.parameters(), lr=self.lr,
                                   weight_decay=self.weight_decay)
            n = len(y)
            bs = min(self.batch_size, n)
            per_epoch = -(-n // bs)
            steps = max(self.epochs * per_epoch, self.min_steps)
            sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
            gen = torch.Generator().manual_seed(self.random_state)
            self.module_.train()
            step = 0
            while step < steps:
                perm = torch.randperm(n, generator=gen)
                for start in range(0, n, bs):
                    b = perm[start:start + bs].numpy()
                    inputs = self._inputs([nets[i] for i in b], g[b])
                    loss = torch.mean((self.module_(*inputs) - target[b]) ** 2)
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    sched.step()
                    step += 1
                    if step >= steps:
                        break
            self.module_.eval()
        self._mark_fitted(n, P.data_hash(nets, y))
        self._note_training(nets, y)
        return self

    def predict(self, nets: Sequence[Network]) -> np.ndarray:
        """Latency in ms of each network, shape (len(nets),)."""
        self._check_fitted()
        if len(nets) == 0:
            return np.zeros(0)
        g = F.compact(F.features(nets))
        out = []
        with _torch_settings(self.n_threads) as torch, torch.no_grad():
            for start in range(0, len(nets), 256):  # bounded memory for large sets
                part = list(nets[start:start + 256])
                out.append(self.module_(*self._inputs(part, g[start:start + 256])).double()
                           .numpy())
        # A network far outside the training set (one that folds to no layer, a model 1e6x
        # larger) can drive the output anywhere: clip to GNN_CLIP standard deviations of the
        # training log-latencies, a finite extrapolation rather than an overflow.
        out = np.clip(np.concatenate(out), -GNN_CLIP, GNN_CLIP)
        return np.exp(out * self.y_std_ + self.y_mean_)

    # ------------------------------------------------------------------ persistence
    def save(self, model_dir: str | Path) -> Path:
        """``manifest.json`` + ``model.safetensors`` (weights and normalisers, tensors only)."""
        import torch
        from safetensors.torch import save_file

        self._check_fitted()
        d = Path(model_dir)
        d.mkdir(parents=True, exist_ok=True)
        tensors = {f"module.{k}": v.detach().contiguous()
                   for k, v in self.module_.state_dict().items()}
        tensors["norm.g_mean"] = torch.from_numpy(np.asarray(self.g_mean_, dtype=np.float64))
        tensors["norm.g_std"] = torch.from_numpy(np.asarray(self.g_std_, dtype=np.float64))
        tensors["norm.y"] = torch.tensor([self.y_mean_, self.y_std_], dtype=torch.float64)
        save_file(tensors, str(d / "model.safetensors"))
        P.write_manifest(d, CLASS, self.get_params(),
                         libraries=("torch", "safetensors", "numpy"),
                         training_data_sha256=self.training_data_sha256_, n_train=self.n_train_,
                         trained_on=getattr(self, "trained_on_", None),
                         device=self.device_, files=("model.safetensors",))
        return d

    @classmethod
    def load(cls, model_dir: str | Path) -> GNNModel:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        model, doc, d = P.restore(cls, model_dir, CLASS)
        path = P.model_file(d, doc, "model.safetensors")
        try:
            tensors = load_file(str(path))
            model.g_mean_ = tensors["norm.g_mean"].numpy()
            model.g_std_ = tensors["norm.g_std"].numpy()
            model.y_mean_, model.y_std_ = (float(v) for v in tensors["norm.y"])
            model.module_ = _net_module(model.hidden, model.layers, len(model.g_mean_))
            model.module_.load_state_dict({k[len("module."):]: v for k, v in tensors.items()
                                           if k.startswith("module.")})
        except (SafetensorError, KeyError, RuntimeError, OSError, ValueError):
            raise ModelFileError(f"{path}: does not hold this GNN; fit the model again") from None
        model.module_.eval()
        return P.finish_restore(model, doc)


