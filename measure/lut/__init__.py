"""Lookup tables: measure each unique kernel once, estimate any network by summation.

Fusion-aware: a network is split into the kernels the runtime really executes
(:mod:`costmodels.fusion`, with rules as data in ``costmodels/fusion_rules/``), their
entries in the LUT file are summed, and per-network overhead terms fitted on a few
end-to-end measurements are added.

>>> from measure.lut import LookupTable                      # doctest: +SKIP
>>> LookupTable("datasets/nb201/xeon-2c-ort-cifar10-lut.sqlite").estimate(net)  # doctest: +SKIP

Modules: :mod:`~measure.lut.keys` (the empty-run keys), :mod:`~measure.lut.kernel_onnx`
(the one-kernel ONNX model of a key, its IR and its wrappers), :mod:`~measure.lut.table`
(the SQLite file, CSV, merge), :mod:`~measure.lut.build` (``build_lut`` for any networks,
``build_space`` for a search space), :mod:`~measure.lut.calibrate` (overhead terms),
:mod:`~measure.lut.model` (``LookupTable``, the CostModel), :mod:`~measure.lut.blocks`
(FBNet's block-level LUT).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from measure.lut.model import LookupTable

__all__ = ["LookupTable", "from_spec"]


def from_spec(arg: str | None) -> LookupTable:
    """Registry factory for ``lut:PATH[?best-effort][&uncalibrated]``."""
    from measure.lut.model import from_spec as _from_spec

    return _from_spec(arg)


def __getattr__(name: str) -> Any:
    if name == "LookupTable":
        from measure.lut.model import LookupTable

        return LookupTable
    raise AttributeError(name)
