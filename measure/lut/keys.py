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

# meta key: how a LUT's one-kernel models were timed. "bound" (every ONNX Runtime LUT built
# since 2026-12-07): outputs written into buffers allocated once, as a kernel's are inside a
# network, so only the empty run at NULL_KEY (the call itself) is taken off. Absent (LUTs
# built before, and other runtimes): each run's outputs handed back as new arrays, so the
# empty run at the kernel's output shape is taken off -- an Identity's copy of the whole
# output too, which took most of a large memory-bound kernel's time off with it.
OUTPUTS_META = "kernel_outputs"
BOUND = "bound"


# how an entry's ``source`` says it was timed with bound outputs (``measured:ort:...:bound``),
# so that an exported CSV carries the protocol into `lut import`
BOUND_SOURCE = ":bound"


def outputs_bound(meta: dict[str, str]) -> bool:
    """Whether a LUT's meta says its one-kernel models were timed with bound outputs."""
    return meta.get(OUTPUTS_META, "") == BOUND


def measured_runtimes(sources) -> set[str]:
    """The runtimes measured entries name in their ``source`` fields
    (``measured:<runtime>:...``, as ``lut build`` writes them)."""
    return {s.split(":")[1] for s in sources if s.startswith("measured:")}


def entries_protocol(sources) -> bool | None:
    """How measured entries were timed, from their ``source`` fields: True (bound outputs),
    False (returned), None when none says (a table from another tool). Raises ValueError
    when they disagree."""
    seen = {s.endswith(BOUND_SOURCE) for s in sources if s.startswith("measured:")}
    if len(seen) > 1:
        raise ValueError("its entries were timed two ways (some with bound outputs, some "
                         "without)")
    return seen.pop() if seen else None
