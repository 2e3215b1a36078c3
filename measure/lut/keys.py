"""The LUT's own kernel keys: the empty inference a measurement's overhead is taken from.

Kernel keys themselves (:class:`~costmodels.fusion.KernelKey`, :func:`~costmodels.fusion.parse_key`)
belong to the core planner, :mod:`costmodels.fusion`.
"""

from __future__ import annotations

from costmodels.fusion import KernelKey
from costmodels.network import Shape


def null_key(shape: Shape, dtype: str = "float32") -> str:
    """Key of the empty inference (a one-element Identity run) at output shape ``shape``.

    Its time is what any run costs (session call, input binding, and the output
    copy, which grows with the shape): what is taken off the entry of a kernel
    with that output shape.
    """
    return KernelKey(("Null",), (shape,), shape, dtype=dtype).text


# The empty inference at the smallest output: the fallback when no null_key was measured.
NULL_KEY = null_key((1,))
