"""GNN latency predictor: a graph convolutional network over the cell graph (BRP-NAS style).

Graph of a NAS-Bench-201 network: 8 nodes -- the cell input, its 6 operations,
the cell output -- with data-flow edges (input -> operations reading node 0,
operation -> operations reading its destination node, operations into node 3
-> output); a ``none`` operation carries no edge. Node features: one-hot node
type (input, output, 5 operations) and whether the operation lies on a live
input-to-output path. Four GCN layers (Kipf & Welling propagation,
``D^-1/2 (A + A^T + I) D^-1/2``), then the output node's embedding and the
mean over nodes, concatenated with the network's global features
(:func:`predictors.features.compact`, standardised), into an MLP that predicts
the standardised log latency (Dudziak et al., BRP-NAS, NeurIPS 2020, regress
latency with a 4-layer GCN on the same graph).

Deterministic for a seed (``torch.manual_seed``, deterministic algorithms,
``n_threads`` threads); 1,000 networks train in well under a minute on a
2-core CPU. Saved as ``model.safetensors`` (tensors only) + ``manifest.json``.
Networks that are not NAS-Bench-201 cells are refused (use the GBDT).
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from functools import cache
from pathlib import Path

import numpy as np

from costmodels.errors import ModelFileError
from costmodels.network import Network
from costmodels.spaces import nb201
from predictors import features as F
from predictors import persistence as P

CLASS = "predictors.gnn.GNNModel"
N_NODES = 2 + len(nb201.EDGES)
NODE_FEATURES = 2 + len(nb201.OPS) + 1  # type one-hot (input, output, ops) + live


@cache
def _adjacency(mask: tuple[bool, ...]) -> np.ndarray:
    """Normalised adjacency (8, 8) for the edges whose operation is not ``none``."""
    a = np.zeros((N_NODES, N_NODES))
    out = N_NODES - 1
    for e, ((dst, src), on) in enumerate(zip(nb201.EDGES, mask, strict=True)):
        if not on:
            continue
        node = 1 + e
        if src == 0:
            a[0, node] = 1
        for f, (_, src2) in enumerate(nb201.EDGES):
            if src2 == dst and mask[f]:
                a[node, 1 + f] = 1
        if dst == 3:
            a[node, out] = 1
    a = a + a.T + np.eye(N_NODES)
    d = 1.0 / np.sqrt(a.sum(axis=1))
    return a * d[:, None] * d[None, :]


def cell_graphs(nets: Sequence[Network]) -> tuple[np.ndarray, np.ndarray]:
    """Node features (n, 8, NODE_FEATURES) and adjacency (n, 8, 8) of NB201 networks."""
    ops = np.empty((len(nets), len(nb201.EDGES)), dtype=np.int64)
    live = np.empty_like(ops)
    for i, net in enumerate(nets):
        meta = net.meta
        if meta.get("space") != "nb201" or "ops" not in meta:
            raise ValueError(f"{net.name} is not a NAS-Bench-201 cell; the GNN predictor encodes "
                             "NB201 cell graphs (use gbdt for other networks)")
        ops[i] = meta["ops"]
        live[i] = meta["live_edges"]
    n = len(nets)
    x = np.zeros((n, N_NODES, NODE_FEATURES), dtype=np.float32)
    x[:, 0, 0] = 1
    x[:, -1, 1] = 1
    rows = np.arange(n)[:, None]
    x[rows, np.arange(1, N_NODES - 1)[None, :], 2 + ops] = 1
    x[:, 1:N_NODES - 1, -1] = live
    codes = (ops > 0) @ (1 << np.arange(len(nb201.EDGES)))
    table = np.stack([_adjacency(tuple(bool(c >> b & 1) for b in range(len(nb201.EDGES))))
                      for c in range(1 << len(nb201.EDGES))]).astype(np.float32)
    return x, table[codes]


def _net_module(hidden: int, layers: int, n_global: int):
    import torch
    from torch import nn

    class GCN(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            dims = [NODE_FEATURES] + [hidden] * layers
            self.convs = nn.ModuleList(nn.Linear(a, b) for a, b in zip(dims[:-1], dims[1:], strict=True))
            self.head = nn.Sequential(nn.Linear(2 * hidden + n_global, hidden), nn.ReLU(),
                                      nn.Linear(hidden, 1))

        def forward(self, x, adj, g):
            h = x
            for conv in self.convs:
                h = torch.relu(adj @ conv(h))
            z = torch.cat([h[:, -1], h.mean(dim=1), g], dim=1)
            return self.head(z).squeeze(-1)

    return GCN()


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


class GNNModel(P.Predictor):
    """GCN latency predictor on NAS-Bench-201 cell graphs; latency in ms.

    Parameters
    ----------
    hidden, layers: width and number of GCN layers.
    epochs: passes over the training set (at least ``min_steps`` optimiser steps are run).
    lr, weight_decay, batch_size: Adam settings.
    random_state: seed (weights init and batch order); results are deterministic.
    n_threads: torch threads while fitting and predicting.
    device: name of the target device, recorded in the saved manifest.
    """

    name = "gnn"

    def __init__(self, hidden: int = 64, layers: int = 4, epochs: int = 150, lr: float = 3e-3,
                 weight_decay: float = 1e-4, batch_size: int = 64, min_steps: int = 300,
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

    def _inputs(self, nets: Sequence[Network]):
        import torch

        x, adj = cell_graphs(nets)
        g = (F.compact(F.features(nets)) - self.g_mean_) / self.g_std_
        return (torch.from_numpy(x), torch.from_numpy(adj),
                torch.from_numpy(g.astype(np.float32)))

    def fit(self, nets: Sequence[Network], latencies_ms: Sequence[float]) -> GNNModel:
        y = P.check_training_data(nets, latencies_ms)
        g = F.compact(F.features(nets))
        self.g_mean_ = g.mean(axis=0)
        sd = g.std(axis=0)
        self.g_std_ = np.where(sd > 1e-12, sd, 1.0)
        t = np.log(y)
        self.y_mean_ = float(t.mean())
        self.y_std_ = float(t.std()) or 1.0
        with _torch_settings(self.n_threads, self.random_state) as torch:
            x, adj, gg = self._inputs(nets)
            target = torch.from_numpy(((t - self.y_mean_) / self.y_std_).astype(np.float32))
            self.module_ = _net_module(self.hidden, self.layers, gg.shape[1])
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
                    b = perm[start:start + bs]
                    loss = torch.mean((self.module_(x[b], adj[b], gg[b]) - target[b]) ** 2)
                    opt.zero_grad()
                    loss.backward()
                    opt.step()
                    sched.step()
                    step += 1
                    if step >= steps:
                        break
            self.module_.eval()
        self.n_train_ = n
        self.device_ = self.device
        self.training_data_sha256_ = P.data_hash(nets, y)
        return self

    def predict(self, nets: Sequence[Network]) -> np.ndarray:
        """Latency in ms of each network, shape (len(nets),)."""
        self._check_fitted()
        if len(nets) == 0:
            return np.zeros(0)
        with _torch_settings(self.n_threads) as torch, torch.no_grad():
            out = self.module_(*self._inputs(nets)).double().numpy()
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
                         device=self.device_)
        return d

    @classmethod
    def load(cls, model_dir: str | Path) -> GNNModel:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        model, _, d = P.restore(cls, model_dir, CLASS)
        try:
            tensors = load_file(str(d / "model.safetensors"))
            model.g_mean_ = tensors["norm.g_mean"].numpy()
            model.g_std_ = tensors["norm.g_std"].numpy()
            model.y_mean_, model.y_std_ = (float(v) for v in tensors["norm.y"])
            model.module_ = _net_module(model.hidden, model.layers, len(model.g_mean_))
            model.module_.load_state_dict({k[len("module."):]: v for k, v in tensors.items()
                                           if k.startswith("module.")})
        except (SafetensorError, KeyError, RuntimeError, OSError) as exc:
            raise ModelFileError(f"{d / 'model.safetensors'}: does not hold this GNN ({exc}); "
                                 "fit the model again") from None
        model.module_.eval()
        return model


def from_spec(arg: str | None) -> GNNModel:
    """Registry factory for ``gnn:MODEL_DIR``."""
    if not arg:
        raise ModelFileError("the gnn backend needs a model directory: gnn:MODEL_DIR (make one "
                             "with `costmodels fit gnn --train TABLE.csv -o MODEL_DIR`)")
    return GNNModel.load(arg)
