"""costmodels: hardware cost models of neural networks behind one interface.

Nothing here reads files or imports a backend at import time; backends load
lazily through :mod:`costmodels.registry`.
"""

from costmodels.errors import (
    CostModelError,
    MissingKernel,
    ModelFileError,
    OnnxImportError,
    TableError,
    UnknownArchitecture,
    UnknownBackend,
    UnsupportedOperator,
)
from costmodels.interface import BaseCostModel, CostModel, Estimate, LayerCost
from costmodels.network import Layer, Network

__version__ = "0.1.0"

__all__ = [
    "BaseCostModel", "CostModel", "CostModelError", "Estimate", "Layer", "LayerCost",
    "MissingKernel", "ModelFileError", "Network", "OnnxImportError", "TableError",
    "UnknownArchitecture", "UnknownBackend", "UnsupportedOperator", "__version__",
]
