"""A zoo of small ONNX models in the forms exporters write, generated on demand.

``build_zoo(dir)`` writes every model into ``dir`` and returns their paths; a
``zoo.json`` beside them records, per file, its form, the exporter, the input
shape to give ``--input-shape`` (``null`` when the file's inputs are static), the
ops that make the form what it is, and the MACs counted independently of
costmodels (torch layer shapes through forward hooks, or the textbook formula
for graphs built with ``onnx.helper``). Models from torch need ``torch`` (the
``gnn`` extra); without it only the ``onnx.helper`` models are written.

Run ``python -m tests.zoo DIR`` to write the zoo into a folder.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

ZOO_INDEX = "zoo.json"


def build_zoo(directory: str | Path, torch_models: bool = True) -> list[Path]:
    """Write the zoo's ``.onnx`` files (and ``zoo.json``) into ``directory``; their paths."""
    from . import helper_models

    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    entries: dict[str, dict[str, Any]] = {}
    entries.update(helper_models.write_all(out))
    if torch_models:
        try:
            import torch  # noqa: F401
        except ImportError:
            torch_models = False
    if torch_models:
        from . import export

        entries.update(export.write_all(out))
    (out / ZOO_INDEX).write_text(json.dumps(entries, indent=1, sort_keys=True))
    return [out / name for name in sorted(entries)]


def read_index(directory: str | Path) -> dict[str, dict[str, Any]]:
    """The ``zoo.json`` written by :func:`build_zoo`."""
    return json.loads((Path(directory) / ZOO_INDEX).read_text())
