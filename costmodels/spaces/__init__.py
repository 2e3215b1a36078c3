"""Search spaces behind one small protocol, and a registry like the backends'.

A space names architectures by a canonical string (``arch_str``) and builds each
one as the IR and as ONNX from the same description::

    from costmodels.spaces import get_space
    space = get_space("nb201")                 # or "fbnet", "models:path/to/dir"
    archs = space.sample(10, seed=0)           # canonical arch strings
    net = space.build_network(archs[0], dataset=space.default_dataset, batch=1)
    onnx_model = space.build_onnx(archs[0])

Every built :class:`~costmodels.network.Network` carries ``meta["space"]`` (the
spec that re-opens the space), ``meta["arch_str"]``, ``meta["arch_index"]`` (the
standard index, or ``None`` for a space without one), ``meta["dataset"]`` and
``meta["batch"]``; :func:`onnx_for` turns such a network back into ONNX.

Specs: ``nb201``, ``fbnet``, ``models:DIR`` (every ``*.onnx`` in DIR is one
architecture, its ``arch_str`` the file's stem). Nothing is imported until a
space is asked for.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from costmodels.errors import UnknownSpace

if TYPE_CHECKING:
    from costmodels.network import Network, Shape

# name: (module:factory, one-line help). The factory takes the ARG of NAME:ARG (or None)
# and keyword options (input_shapes) and returns a SearchSpace.
SPACES: dict[str, tuple[str, str]] = {
    "nb201": ("costmodels.spaces.nb201:space_from_spec",
              "NAS-Bench-201: 15,625 cells; cifar10, cifar100, ImageNet16-120"),
    "fbnet": ("costmodels.spaces.fbnet:space_from_spec",
              "FBNet as HW-NAS-Bench defines it: 22 layers x 9 blocks; cifar100, ImageNet"),
    "models": ("costmodels.spaces.models:space_from_spec",
               "models:DIR - every *.onnx file in DIR is one architecture (its stem)"),
}


#: the largest --sample of a space too large to enumerate (memory stays bounded)
MAX_SAMPLE = 1_000_000


class SearchSpace:
    """The protocol every search space implements (subclass it).

    ``size`` is the number of architectures, or ``None`` when the space is too
    large to enumerate (then :meth:`archs` raises and callers sample).
    ``has_index`` says whether the space has a standard integer index
    (tables then carry ``arch_index``; otherwise it is left empty).
    """

    name: str = "space"
    spec: str = "space"            # what get_space() takes to re-open this space
    datasets: tuple[str, ...] = ()
    default_dataset: str | None = None
    size: int | None = None
    has_index: bool = False
    strict_index: bool = True      # a table's arch_index must equal index(arch_str)

    # -- naming ------------------------------------------------------------
    def parse(self, text: str | int | Sequence[int]) -> str:
        """Any accepted form of an architecture -> its canonical ``arch_str``.

        Raises :class:`UnknownArchitecture` with the reason.
        """
        raise NotImplementedError

    def index(self, arch: str) -> int | None:
        """Standard index of a canonical ``arch_str`` (``None`` without an index)."""
        return None

    def check_dataset(self, dataset: str | None) -> str | None:
        """``dataset`` validated for this space (``None`` -> the default)."""
        if dataset is None:
            return self.default_dataset
        if dataset not in self.datasets:
            raise UnknownSpace(f"space {self.spec!r} has no dataset {dataset!r}; expected one "
                               f"of: {', '.join(self.datasets)}")
        return dataset

    # -- enumerating -------------------------------------------------------
    def archs(self) -> Iterator[str]:
        """Every architecture, in standard order. Raises if the space is unbounded."""
        raise UnknownSpace(f"space {self.spec!r} is too large to enumerate; use --sample N "
                           "or --archs FILE")

    def sample(self, n: int, seed: int = 0) -> list[str]:
        """``n`` distinct architectures drawn with ``seed`` (deterministic)."""
        raise NotImplementedError

    def covering_archs(self) -> list[str] | None:
        """A few architectures whose kernels include every kernel of the space, or None.

        For a space of independent layer choices (FBNet) one architecture per choice
        (the same block everywhere) covers every (position, block) pair, so a
        lookup table of the whole space needs no enumeration.
        """
        return None

    def check_sample(self, n: int) -> None:
        if not isinstance(n, int) or n <= 0:
            raise UnknownSpace(f"--sample must be a positive integer, got {n!r}")
        if self.size is not None and n > self.size:
            raise UnknownSpace(f"--sample {n} is larger than space {self.spec!r} "
                               f"({self.size} architectures)")
        if self.size is None and n > MAX_SAMPLE:
            raise UnknownSpace(f"--sample {n} is more than {MAX_SAMPLE:,} architectures of "
                               f"{self.spec!r}; sample in several runs with other --seed values")

    # -- building ----------------------------------------------------------
    def build_network(self, arch: str, dataset: str | None = None, batch: int = 1) -> Network:
        raise NotImplementedError

    def build_onnx(self, arch: str, dataset: str | None = None, batch: int = 1,
                   seed: int = 0) -> Any:
        """An ``onnx.ModelProto`` that ONNX Runtime runs."""
        raise NotImplementedError

    def encode(self, arch: str) -> Any:
        """A fixed-length numeric encoding for predictors (``numpy`` array), or ``None``."""
        return None

    def describe(self) -> Mapping[str, Any]:
        return {"space": self.spec, "size": self.size, "datasets": list(self.datasets),
                "has_index": self.has_index}

    def __repr__(self) -> str:
        return f"<space {self.spec} size={self.size if self.size is not None else 'unbounded'}>"


def split_spec(spec: str) -> tuple[str, str | None]:
    name, sep, arg = str(spec).strip().partition(":")
    return name, (arg if sep else None)


def get_space(spec: str, *, input_shapes: Mapping[str, Shape] | Sequence[Shape] | None = None
              ) -> SearchSpace:
    """Open the space named by ``spec`` (``nb201``, ``fbnet``, ``models:DIR``)."""
    name, arg = split_spec(spec)
    if name not in SPACES:
        raise UnknownSpace(f"unknown search space {spec!r}; expected one of: nb201, fbnet, "
                           "models:DIR (a folder of .onnx files)")
    module, _, attr = SPACES[name][0].partition(":")
    try:
        factory = getattr(importlib.import_module(module), attr)
    except (ImportError, AttributeError) as exc:
        raise UnknownSpace(f"search space {name!r} is not available: {exc}") from exc
    return factory(arg, input_shapes=input_shapes)


def space_of(net: Network) -> SearchSpace:
    """The space a built network came from (from ``meta["space"]``)."""
    spec = net.meta.get("space")
    if not spec:
        raise UnknownSpace(f"network {net.name} was not built from a search space "
                           "(no meta['space'])")
    return get_space(spec, input_shapes=net.meta.get("space_input_shapes"))


def onnx_for(net: Network, seed: int = 0) -> Any:
    """The ONNX model of a network built by a space or imported from a file.

    A network read from a file (``meta["source"]``: ``models:DIR`` and plain
    imports) gives that file, its graph inputs fixed to the shapes the IR was
    built at; a generated one (NB201, FBNet) is rebuilt by its space.
    """
    src = net.meta.get("source")
    if src:
        from costmodels.onnx_import import load_model_proto

        return fix_input_dims(load_model_proto(src), dict(net.inputs))
    return space_of(net).build_onnx(net.meta["arch_str"], net.meta.get("dataset"),
                                    int(net.meta.get("batch", 1)), seed=seed)


def onnx_dim(value: int) -> Any:
    """One static ONNX ``TensorShapeProto.Dimension``."""
    from onnx import TensorShapeProto

    return TensorShapeProto.Dimension(dim_value=int(value))


def fix_input_dims(model: Any, shapes: Mapping[str, Sequence[int]]) -> Any:
    """Set the graph inputs of ``model`` (in place) to the static ``shapes`` given (an input
    that declares no shape at all gets one)."""
    for vi in model.graph.input:
        shape = shapes.get(vi.name)
        if shape is None or not vi.type.HasField("tensor_type"):
            continue
        if not vi.type.tensor_type.HasField("shape"):
            vi.type.tensor_type.shape.dim.extend(
                onnx_dim(int(v)) for v in shape)
            continue
        dims = vi.type.tensor_type.shape.dim
        if len(dims) != len(shape):
            continue
        for d, v in zip(dims, shape, strict=True):
            d.ClearField("dim_param")
            d.dim_value = int(v)
    return model
