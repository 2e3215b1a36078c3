"""Exceptions raised by costmodels. Each message says what is wrong and what to do."""

from __future__ import annotations


class CostModelError(Exception):
    """Base class of every error this toolkit raises on purpose."""


class OnnxImportError(CostModelError, ValueError):
    """An ONNX file cannot be read into the IR (malformed, truncated, dynamic shape...)."""


class UnsupportedOperator(OnnxImportError):
    """An ONNX node whose cost the importer cannot reason about."""

    def __init__(self, node: str, op_type: str, source: str = "", domain: str = "",
                 why: str = "") -> None:
        self.node = node
        self.op_type = op_type
        where = f"{source}: " if source else ""
        if why:  # e.g. an op the model's opset does not define
            text = f"{where}node {node!r} has operator {op_type!r}, {why}"
        elif domain == "com.microsoft":
            text = (f"{where}node {node!r} has operator {op_type!r} of domain {domain!r} (an "
                    "ONNX Runtime contrib op, as ONNX Runtime's graph optimiser or "
                    "onnxruntime.quantization's QOperator format writes), which costmodels "
                    "cannot cost; import the model as exported, before runtime optimisation, "
                    "or quantize it in the QDQ format (quant_format=QuantFormat.QDQ)")
        elif domain == "ai.onnx.ml":
            text = (f"{where}node {node!r} has operator {op_type!r} of domain {domain!r} (a "
                    "classical machine-learning op), which costmodels cannot cost: it costs "
                    "neural-network layers; cost the network without that stage")
        elif domain and domain != "ai.onnx":
            text = (f"{where}node {node!r} has operator {op_type!r} of domain {domain!r} (a "
                    "runtime's or exporter's own op, not a standard ONNX one), which "
                    "costmodels cannot cost; import the model as exported, before runtime "
                    "optimisation, or replace the op before export")
        else:
            text = (f"{where}node {node!r} has operator {op_type!r}, which costmodels cannot "
                    "cost; open an issue with the model, or replace the op before export")
        super().__init__(text)


class UncostedCompute(CostModelError, ValueError):
    """An analytical model cannot map a layer that holds multiply-accumulates (its estimate
    would leave that compute out)."""


class UnknownArchitecture(CostModelError, ValueError):
    """An architecture string or index that is not in the search space."""

    def __init__(self, arch: object, reason: str, absent: bool = False) -> None:
        self.arch = arch
        self.reason = reason
        #: a well-formed name that this space lacks (a model folder without that file), not
        #: a malformed one: another device's table may list models this folder does not have
        self.absent = absent
        super().__init__(f"unknown architecture {short_repr(arch)}: {reason}")


class UnknownBackend(CostModelError, ValueError):
    """A registry spec that names no backend."""


class UnknownSpace(CostModelError, ValueError):
    """A search-space spec, dataset or sample request the space cannot serve."""


class TableError(CostModelError, ValueError):
    """A latency table (CSV) that is malformed: names the file, row and field."""


class DuplicateRowError(TableError):
    """A table lists one network twice; ``where`` is the place (``FILE:LINE: architecture
    A appears twice``) without the advice, for a command that gives its own."""

    def __init__(self, where: str, advice: str) -> None:
        super().__init__(f"{where}; {advice}")
        self.where = where


class NotCovered(CostModelError, KeyError):
    """A backend that answers for some networks only (a table, a LUT) has no answer here."""

    def __str__(self) -> str:
        return self.args[0] if self.args else ""


class InputError(CostModelError, ValueError):
    """A command-line value or input/output path that cannot be used; checked before work."""


class MissingKernel(CostModelError, KeyError):
    """A lookup table has no entry for some kernels of a network."""

    def __init__(self, keys: list[str], network: str = "") -> None:
        self.keys = list(keys)
        where = f" of {network}" if network else ""
        shown = "; ".join(self.keys[:2]) + ("; ..." if len(self.keys) > 2 else "")
        # One line, the advice first: the CLI prints an error's first line, cut at 300 chars.
        super().__init__(
            f"{len(self.keys)} kernel(s){where} are missing from the lookup table: measure "
            "them (`costmodels lut build` on these networks) or estimate with "
            f"lut:PATH?best-effort to leave them out and be told how many; missing: {shown}"
        )

    def __str__(self) -> str:  # KeyError quotes its message; keep it readable
        return self.args[0]


class ModelFileError(CostModelError, ValueError):
    """A saved model or store that is corrupt, foreign or incompatible; left untouched."""


def short_repr(value: object) -> str:
    """``repr(value)``, cut where long: an unterminated quote in a CSV makes the rest of the
    file one value, which an error must not echo."""
    shown = repr(value)
    return shown if len(shown) <= 160 else f"{shown[:120]}... ({len(str(value))} characters)"


def control_characters(text: str) -> bool:
    """Whether ``text`` holds a control character (newline, tab, ESC, ...): printed, one
    rewrites what the terminal shows."""
    import unicodedata

    return any(unicodedata.category(c) == "Cc" for c in text)


def first_line(text: str, limit: int = 400) -> str:
    """The first line of an error text, its middle cut where longer than ``limit`` (the
    advice is at its end)."""
    lines = str(text).strip().splitlines()
    line = lines[0] if lines else ""
    return line if len(line) <= limit else f"{line[:limit // 2]} ... {line[-limit // 2:]}"


def special_file(path: object) -> str | None:
    """What ``path`` is when it exists and is neither a regular file nor a folder ("a
    device", "a pipe", "a socket"), else None. Readers ask before they open an input:
    /dev/zero never ends and a terminal waits for typing (``stat`` does neither); a pipe
    (``--truth /dev/stdin`` fed by a shell) is read, up to :func:`read_capped`'s limit."""
    import os
    import stat

    try:
        mode = os.stat(os.fspath(path)).st_mode  # type: ignore[arg-type]
    except (OSError, TypeError, ValueError):
        return None
    if stat.S_ISREG(mode) or stat.S_ISDIR(mode):
        return None
    if stat.S_ISFIFO(mode):
        return "a pipe"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "a device"


def read_capped(path: object, limit: int, what: str, error: type[Exception]) -> bytes:
    """The bytes of input ``path``: a regular file's, or up to ``limit`` of a pipe's; a
    device or a socket, or a pipe that gives more, refused with ``error`` naming it."""
    from pathlib import Path

    kind = special_file(path)
    if kind is None:
        return Path(path).read_bytes()  # type: ignore[arg-type]
    if kind != "a pipe":
        raise error(f"{path}: is {kind}, not {what}")
    with open(path, "rb") as fh:  # type: ignore[arg-type]
        data = fh.read(limit + 1)
    if len(data) > limit:
        raise error(f"{path}: a pipe that gave more than {limit >> 20} MiB, more than "
                    f"{what} holds; give the file")
    return data
