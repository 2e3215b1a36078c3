"""The rows of a source matrix: which networks the other devices' tables hold.

Transfer and few-shot models look a network up in the source devices' latency
tables. On NAS-Bench-201 a row is the cell's standard index (all 15,625 cells,
whatever the tables cover); in any other space (FBNet, ``models:DIR``) the rows are
the architectures the source tables list, keyed by ``arch_str`` (``meta["arch_str"]``
of a built network: FBNet's block string, a model file's stem), in sorted order.
A network no source table lists has no row: such a model predicts the networks the
sources measured, as HELP-style transfer does.

NB201-only helpers of those models (the additive smoothing of sources, the dead-edge
index, the built-in analytical priors of every cell) check :attr:`Rows.nb201`.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from costmodels.network import Network
from costmodels.spaces import nb201
from costmodels.tables import LatencyTable
from predictors.base import PredictorError

NB201 = "nb201"
# Built-in analytical priors off NB201: registry backends on the rows' own networks.
GENERIC_PRIORS = ("flops", "params", "eyeriss", "fpga")


def table_keys(tables: Sequence[LatencyTable]) -> list[str]:
    """The architectures the tables list, sorted: the rows off NB201."""
    return sorted({s for t in tables for s in t.arch_str})


def _buildable(keys: list[str], built: set[str], space: str, input_shapes, batch: int
               ) -> list[str]:
    """``keys`` less the models of a folder that cannot be built (a broken or uncostable
    file a source table lists: it has no features, so it cannot be a row), with a warning
    naming the first; ``built``: keys already built."""
    import sys

    from costmodels.cli import build_networks
    from costmodels.errors import first_line
    from costmodels.spaces import get_space

    bad: list = []
    build_networks(get_space(space, input_shapes=input_shapes),
                   [k for k in keys if k not in built], None, batch, errors=bad)
    if bad:
        print(f"warning: left out {len(bad)} source row(s) whose model cannot be built "
              f"(first: {first_line(str(bad[0][1]))})", file=sys.stderr)
    gone = {k for k, _ in bad}
    return [k for k in keys if k not in gone]


class Rows:
    """Row keys of a source matrix: ``keys=None`` = NB201's standard index."""

    def __init__(self, keys: Sequence[str] | None = None, space: str = NB201,
                 dataset: str | None = None, batch: int = 1,
                 input_shapes: dict | None = None) -> None:
        self.keys = None if keys is None else tuple(str(k) for k in keys)
        self.space = NB201 if keys is None else str(space)
        self.dataset = dataset
        self.batch = int(batch)
        self.input_shapes = input_shapes
        self._pos = None if self.keys is None else {k: i for i, k in enumerate(self.keys)}
        if self._pos is not None and len(self._pos) != len(self.keys):
            raise PredictorError("row keys of the source matrix are not unique")
        self._features: np.ndarray | None = None
        self._priors: np.ndarray | None = None

    @property
    def nb201(self) -> bool:
        return self.keys is None

    def __len__(self) -> int:
        return nb201.NUM_ARCHS if self.keys is None else len(self.keys)

    # ------------------------------------------------------------------ building
    @classmethod
    def for_networks(cls, nets: Sequence[Network], tables: Sequence[LatencyTable]) -> Rows:
        """The rows for networks of one space: NB201's index, or the tables' arch strings."""
        spaces = {str(net.meta.get("space") or "") for net in nets}
        if len(spaces) != 1 or "" in spaces:
            raise PredictorError("transfer needs networks built from one search space "
                                 f"(got {', '.join(sorted(spaces)) or 'none'})")
        space = spaces.pop()
        first = nets[0].meta
        # the folder's own --input-shape, not the first network's shapes (another model of
        # the folder may take another input size)
        shapes = first.get("space_input_shapes")
        if space == NB201:
            return cls(dataset=first.get("dataset"), batch=int(first.get("batch", 1)))
        keys = table_keys(tables)
        if space.startswith("models:"):
            keys = _buildable(keys, {str(n.meta.get("arch_str")) for n in nets}, space,
                              shapes, int(first.get("batch", 1)))
        return cls(keys, space, first.get("dataset"), int(first.get("batch", 1)), shapes)

    def matrix(self, tables: Sequence[LatencyTable]) -> np.ndarray:
        """Latencies (ms): rows x one column per table (NaN where a table lacks the row)."""
        out = np.full((len(self), len(tables)), np.nan)
        for j, t in enumerate(tables):
            if self.keys is None:
                if len(t) and (t.arch_index < 0).any():
                    raise PredictorError(f"{t.source or t.device}: rows without a NAS-Bench-201 "
                                         "index; on NB201 transfer looks cells up by their "
                                         "standard index")
                out[t.arch_index, j] = t.latency_ms
            else:
                pos = [self._pos.get(s) for s in t.arch_str]
                have = np.array([p is not None for p in pos], dtype=bool)
                out[np.array([p for p in pos if p is not None], dtype=np.int64), j] = \
                    t.latency_ms[have]
        return out

    # ------------------------------------------------------------------ lookup
    def index(self, nets: Sequence[Network]) -> np.ndarray:
        """The row of each network (:class:`PredictorError` naming one that has none)."""
        idx = np.empty(len(nets), dtype=np.int64)
        for i, net in enumerate(nets):
            space = net.meta.get("space")
            if self.keys is None:
                if space != NB201 or net.meta.get("arch_index") is None:
                    raise PredictorError(f"{net.name} is not a NAS-Bench-201 cell, and this "
                                         "model's sources are NB201 tables")
                idx[i] = int(net.meta["arch_index"])
                continue
            if space != self.space:
                raise PredictorError(f"{net.name} comes from the space {space!r}; this model's "
                                     f"source tables are of {self.space!r}")
            row = self._pos.get(str(net.meta.get("arch_str")))
            if row is None:
                arch = str(net.meta.get("arch_str"))
                shown = arch if len(arch) <= 200 else arch[:200] + "..."
                what = net.name if arch == net.name else f"{net.name} (arch_str {shown})"
                raise PredictorError(f"{what} is in none of the source tables; a transfer or "
                                     "few-shot model predicts only the networks the source "
                                     "devices measured (add it to a source table, or use gbdt)")
            idx[i] = row
        return idx

    def networks(self, idx: np.ndarray) -> list[Network]:
        """Build the networks of rows ``idx`` (for the GNN family and the feature basis)."""
        if self.keys is None:
            return [nb201.build_network(int(i), self.dataset or "cifar10", self.batch)
                    for i in idx]
        from costmodels.spaces import get_space

        space = get_space(self.space, input_shapes=self.input_shapes)
        return [space.build_network(self.keys[int(i)], self.dataset, self.batch) for i in idx]

    def features(self) -> np.ndarray:
        """Feature rows (:func:`predictors.features.features`) of every row, built once."""
        if self._features is None:
            from predictors import features as F

            self._features = F.features(self.networks(np.arange(len(self))))
        return self._features

    # ------------------------------------------------------------------ analytical priors
    def prior_names(self) -> tuple[str, ...]:
        """Column names of :meth:`priors` (``prior:<backend>/<dataset>``)."""
        if self.keys is None:
            from predictors.transfer import builtin_prior_names

            return builtin_prior_names()
        return tuple(f"prior:{b}/{self.dataset or 'model'}" for b in GENERIC_PRIORS)

    def priors(self) -> np.ndarray:
        """The built-in analytical priors of every row (n, len(prior_names())), in ms.

        NB201: :func:`predictors.transfer.builtin_priors` (six columns over three
        datasets); elsewhere :data:`GENERIC_PRIORS` on the rows' networks as built,
        computed once per :class:`Rows`.
        """
        if self.keys is None:
            from predictors.transfer import builtin_priors

            return builtin_priors()
        if self._priors is None:
            from costmodels import registry

            nets = self.networks(np.arange(len(self)))
            self._priors = np.array([[e.latency_ms for e in registry.create(b).estimate_many(nets)]
                                     for b in GENERIC_PRIORS]).T.reshape(len(self), -1)
            self._priors.setflags(write=False)
        return self._priors

    # ------------------------------------------------------------------ persistence
    def state(self) -> dict:
        """What a saved model records of its rows (the keys go to its arrays file)."""
        return {"space": self.space, "dataset": self.dataset, "batch": self.batch,
                "input_shapes": self.input_shapes}

    @classmethod
    def restore(cls, state: dict | None, keys: np.ndarray | None) -> Rows:
        """The rows of a saved model (:meth:`state` and its ``row_keys`` array, if any); a
        ValueError when the state is no JSON object (a manifest edited by hand)."""
        state = state or {}
        if not isinstance(state, dict):
            raise ValueError(f"state.rows is {type(state).__name__}, not an object")
        if keys is None:
            return cls(dataset=state.get("dataset"), batch=int(state.get("batch") or 1))
        return cls([str(k) for k in keys], str(state["space"]), state.get("dataset"),
                   int(state.get("batch") or 1), state.get("input_shapes"))
