"""``models:DIR``: a folder of the user's ONNX files as a search space.

Every ``*.onnx`` file directly in DIR is one architecture; its ``arch_str`` is the
file's stem and its ``arch_index`` its position in sorted order (so the index
moves when files are added: tables are keyed by ``arch_str``, and an index read
back from a table is refreshed rather than checked). ``--input-shape`` applies to
every model of the folder (``1x3x224x224``); a named one (``name=1x3x224x224``) to
the models that have an input of that name, the others are imported as they are (a
folder of fixed-shape CNNs and one dynamic-length text model needs one flag); a name
that no model of the folder has gets a ``warning:`` line once all are imported.

Nothing in the folder is executed: files are parsed as ONNX protobufs only, and
only regular files inside DIR are taken (a symlink that leaves DIR is refused).
"""

from __future__ import annotations

import dataclasses
import sys
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from costmodels.errors import UnknownArchitecture, UnknownSpace
from costmodels.network import Network, Shape
from costmodels.spaces import SearchSpace

# Folders whose skipped files were already named in this process (one warning each).
_WARNED_SKIPS: set[Path | tuple[Path, str]] = set()
_WARNED_BATCH: set[Path] = set()  # folders already warned about a fixed batch


class ModelsSpace(SearchSpace):
    """The ONNX files of one folder, in sorted order of their stems."""

    name = "models"
    datasets = ()
    default_dataset = None
    has_index = True
    strict_index = False   # positions move when files are added: refresh, don't check

    def __init__(self, folder: str | Path,
                 input_shapes: Mapping[str, Shape] | Sequence[Shape] | None = None) -> None:
        root = Path(folder).expanduser()
        if not root.exists():
            raise UnknownSpace(f"models:{folder}: no such folder; give a folder of .onnx files")
        if not root.is_dir():
            raise UnknownSpace(f"models:{folder}: not a folder; give a folder of .onnx files "
                               "(for one file use `costmodels info FILE.onnx`)")
        self.root = root.resolve()
        self.spec = f"models:{self.root}"
        self.input_shapes = input_shapes
        files = {}
        skipped, spaced = [], []
        for p in sorted(root.glob("*.onnx")):
            try:
                p.name.encode("utf-8")
            except UnicodeEncodeError:  # bytes the file system holds that are not UTF-8
                raise UnknownSpace(f"models:{folder}: the file name {p.name!r} is not valid "
                                   "UTF-8 (its stem names the model in every table); rename "
                                   "it") from None
            try:
                real = p.resolve(strict=True)
            except (OSError, RuntimeError):  # a dangling link or a symlink loop
                skipped.append(p.name)
                continue
            if real.parent != self.root or not real.is_file():
                skipped.append(p.name)  # a link out of the folder, or not a regular file
                continue
            if p.stem != p.stem.strip() or not p.stem or any(ch in p.stem for ch in "\n\r"):
                spaced.append(p.name)  # a name tables cannot hold (CSV fields are stripped)
                continue
            files[p.stem] = real
        if spaced and (self.root, "spaced") not in _WARNED_SKIPS:
            _WARNED_SKIPS.add((self.root, "spaced"))
            print(f"warning: models:{folder}: skipped {len(spaced)} .onnx whose name begins or "
                  f"ends with a space or holds a line break ({', '.join(map(repr, spaced[:3]))}"
                  f"); a table cannot name such a model: rename it", file=sys.stderr)
        if not files:
            why = (f"; skipped {len(skipped)} that are links out of the folder, broken links "
                   f"or not regular files (first: {skipped[0]}): copy the models in"
                   if skipped else "")
            if spaced:
                why += f"; skipped {len(spaced)} whose name begins or ends with a space"
            raise UnknownSpace(f"models:{folder}: no .onnx files in that folder{why}")
        nested = _nested_model_folders(root)
        if nested and (self.root, "nested") not in _WARNED_SKIPS:
            _WARNED_SKIPS.add((self.root, "nested"))
            print(f"note: models:{folder}: the .onnx files of its subfolder"
                  f"{'' if len(nested) == 1 else 's'} {', '.join(nested[:3])}"
                  f"{', ...' if len(nested) > 3 else ''} are not read; the space is the .onnx "
                  "files directly in the folder", file=sys.stderr)
        if skipped and self.root not in _WARNED_SKIPS:
            _WARNED_SKIPS.add(self.root)
            print(f"warning: models:{folder}: skipped {len(skipped)} .onnx "
                  f"{'file that is a link' if len(skipped) == 1 else 'files that are links'} "
                  f"out of the folder, broken links or not regular files "
                  f"({', '.join(skipped[:5])}{', ...' if len(skipped) > 5 else ''}); copy "
                  "the models in", file=sys.stderr)
        self._files = files
        self._names = sorted(files)
        self._pos = {n: i for i, n in enumerate(self._names)}
        self.size = len(self._names)
        self._cache: dict[tuple[str, int], Network] = {}
        self._imported: set[str] = set()
        self._matched: set[str] = set()
        self._warned = False

    # -- naming ------------------------------------------------------------
    def parse(self, text: str | int | Sequence[int]) -> str:
        if isinstance(text, (int, np.integer)) or (isinstance(text, str) and text.isdigit()
                                                    and text not in self._pos):
            i = int(text)
            if not 0 <= i < self.size:
                raise UnknownArchitecture(text, f"index out of range 0..{self.size - 1} of "
                                                f"{self.spec}")
            return self._names[i]
        if not isinstance(text, str):
            raise UnknownArchitecture(text, "expected a model name (a file stem)")
        name = text.strip()  # no model's name begins or ends with a space (they are skipped)
        if name not in self._pos and name.endswith(".onnx"):
            name = Path(name).stem  # a file name for its stem (x.onnx.onnx is x.onnx)
        if name not in self._pos:
            shown = ", ".join(self._names[:5]) + (", ..." if self.size > 5 else "")
            raise UnknownArchitecture(text, f"no {name}.onnx in {self.root} (it has: {shown})",
                                      absent=True)
        return name

    def index(self, arch: str) -> int:
        return self._pos[self.parse(arch)]

    def path(self, arch: str) -> Path:
        return self._files[self.parse(arch)]

    # -- enumerating -------------------------------------------------------
    def archs(self) -> Iterator[str]:
        return iter(self._names)

    def sample(self, n: int, seed: int = 0) -> list[str]:
        self.check_sample(n)
        rng = np.random.default_rng(seed)
        return [self._names[i] for i in sorted(rng.choice(self.size, size=n, replace=False))]

    def check_dataset(self, dataset: str | None) -> str | None:
        if dataset is not None:
            raise UnknownSpace(f"--dataset {dataset!r} does not apply to a model folder (the "
                               "models fix their own input size; use --input-shape)")
        return None

    # -- building ----------------------------------------------------------
    def build_network(self, arch: str, dataset: str | None = None, batch: int = 1) -> Network:
        """The model imported into the IR (cached).

        Without ``--input-shape``, a dynamic leading (batch) dimension is set to
        ``batch`` (``--batch``, default 1); any other dynamic dimension needs
        ``--input-shape``.
        """
        self.check_dataset(dataset)
        name = self.parse(arch)
        key = (name, batch)
        if key not in self._cache:
            net, how = self._import(name, batch)
            meta = {**net.meta, "space": self.spec, "arch_str": name,
                    "arch_index": self._pos[name], "dataset": None,
                    "batch": int(net.inputs[0][1][0]) if net.inputs and net.inputs[0][1] else 1,
                    "source": str(self._files[name]), "shapes_from": str(how),
                    "space_input_shapes": self.input_shapes_state()}
            self._cache[key] = dataclasses.replace(net, name=name, meta=meta)
            flag, want = f"--batch {batch}", batch
            shapes = self.input_shapes
            if shapes and not isinstance(shapes, Mapping) and shapes[0]:  # unnamed: its batch
                flag, want = "--input-shape " + "x".join(map(str, shapes[0])), shapes[0][0]
            if (want != 1 or flag != f"--batch {batch}") and how == "model" \
                    and meta["batch"] != want and self.root not in _WARNED_BATCH:
                _WARNED_BATCH.add(self.root)
                print(f"warning: {flag}: {name}.onnx (and any other model of "
                      f"models:{self.root} that fixes its batch) keeps its own batch "
                      f"{meta['batch']}; its row is at that batch. Export it with a dynamic "
                      "batch axis to change it", file=sys.stderr)
        return self._cache[key]

    def input_shapes_state(self) -> dict[str, list[int]] | list[list[int]] | None:
        """The space's own ``--input-shape`` (named: a dict, unnamed: a list of shapes, or
        None), as JSON: what reopens this space (:func:`costmodels.spaces.space_of`). A
        network's ``meta["input_shapes"]`` is the shapes *it* was built at, which are not
        the folder's: another model of the folder may have another input size."""
        shapes = self.input_shapes
        if not shapes:
            return None
        if isinstance(shapes, Mapping):
            return {str(k): [int(d) for d in v] for k, v in shapes.items()}
        return [[int(d) for d in v] for v in shapes]

    def _import(self, name: str, batch: int) -> tuple[Network, ShapesFrom]:
        from costmodels.errors import CostModelError, OnnxImportError

        path = str(self._files[name])
        try:
            net, how = import_model_file(path, batch, self.input_shapes, folder=True)
        except CostModelError:
            raise
        except Exception as exc:  # noqa: BLE001 - one odd model must not stop the folder
            first = (str(exc).strip().splitlines() or [""])[0][:200]
            raise OnnxImportError(f"{path}: cannot import this model ({type(exc).__name__}: "
                                  f"{first}); check it with `costmodels info {path}`") from None
        self._note_import(name, net)
        return net, how

    def _note_import(self, name: str, net: Network) -> None:
        """Once every model is imported, warn about named ``--input-shape`` entries that no
        model of the folder has (a typo would otherwise go unnoticed on static models)."""
        if not isinstance(self.input_shapes, Mapping) or self._warned:
            return
        self._imported.add(name)
        self._matched.update(n for n, _ in net.inputs if n in self.input_shapes)
        unused = sorted(set(self.input_shapes) - self._matched)
        if len(self._imported) == self.size and unused:
            self._warned = True
            print(f"warning: --input-shape {', '.join(unused)}: no model in {self.root} has "
                  f"an input of that name; ignored", file=sys.stderr)

    def build_onnx(self, arch: str, dataset: str | None = None, batch: int = 1,
                   seed: int = 0) -> Any:
        """The model file, with its graph inputs fixed to the shapes the IR was built at."""
        from costmodels.spaces import onnx_for

        return onnx_for(self.build_network(arch, dataset, batch))

    def describe(self) -> Mapping[str, Any]:
        return {**super().describe(), "folder": str(self.root), "models": list(self._names)}


class ShapesFrom(str):
    """Where an imported model's input shapes came from: ``"model"``, ``"--input-shape"``,
    ``"--batch"`` or ``"--input-shape and --batch (NAMES)"`` (the text, kept in a network's
    ``meta["shapes_from"]``), with the inputs whose leading dimension took ``--batch``
    (``batch_inputs``) kept as data."""

    batch_inputs: tuple[str, ...]

    def __new__(cls, kind: str, batch_inputs: Sequence[str] = ()) -> ShapesFrom:
        text = kind + (f" and --batch ({', '.join(batch_inputs)})" if batch_inputs else "")
        out = super().__new__(cls, text)
        out.batch_inputs = tuple(batch_inputs)
        return out

    @property
    def uses_batch(self) -> bool:
        """Whether ``--batch`` sized some input."""
        return self == "--batch" or bool(self.batch_inputs)


def import_model_file(path: str, batch: int = 1,
                      input_shapes: Mapping[str, Shape] | Sequence[Shape] | None = None,
                      folder: bool = False) -> tuple[Network, ShapesFrom]:
    """One ONNX file as a :class:`Network`, and where its input shapes came from
    (:class:`ShapesFrom`).

    ``input_shapes`` fix the inputs (a name the model lacks is an error, unless ``folder``:
    then only the named inputs the model has are fixed, and a model with none of them is
    imported as if none were given). Without them the model's own shapes are used, and a
    dynamic *batch* dimension alone takes ``batch``.
    """
    from costmodels.errors import OnnxImportError
    from costmodels.onnx_import import import_onnx, load_model_proto

    proto = named = None
    if input_shapes and folder and isinstance(input_shapes, Mapping):
        # In a folder, a named --input-shape fixes the models that have that input open; the
        # others are imported as they are (a mixed folder needs no per-model flags).
        proto = load_model_proto(path)
        inputs = _graph_inputs(proto, dynamic_only=True)  # a static input keeps its shape
        named = {k: _keep_static(proto, k, v) for k, v in input_shapes.items() if k in inputs}
        if named:
            return _import_named(path, proto, named, batch)
    elif input_shapes and isinstance(input_shapes, Mapping):
        return _import_named(path, load_model_proto(path), input_shapes, batch)
    elif input_shapes and folder:
        # In a folder, an unnamed --input-shape fixes the models that leave an input open;
        # a static model keeps its own shapes (a folder of 224 and 32 pixel CNNs and one
        # dynamic model needs one flag)
        proto = load_model_proto(path)
        if _graph_inputs(proto, dynamic_only=True):
            names = [vi.name for vi in proto.graph.input
                     if vi.name not in {t.name for t in proto.graph.initializer}]
            shapes = ([_keep_static(proto, n, s) for n, s in zip(names, input_shapes,
                                                                    strict=True)]
                      if len(names) == len(input_shapes) else input_shapes)  # import names it
            return import_onnx(path, input_shapes=shapes), ShapesFrom("--input-shape")
    elif input_shapes:
        return import_onnx(path, input_shapes=input_shapes), ShapesFrom("--input-shape")
    try:
        return import_onnx(path), ShapesFrom("model")
    except OnnxImportError as first:
        proto = proto if proto is not None else load_model_proto(path)
        shapes = _batch_only_shapes(proto, batch)
        if shapes is None:
            if named is not None:  # names given, none of them this model's
                raise OnnxImportError(
                    f"{first}; (--input-shape names {sorted(input_shapes)}, none of "
                    f"them an input of this model, whose inputs are "
                    f"{sorted(_graph_inputs(proto))})") from None
            raise first from None
        return import_onnx(path, input_shapes=shapes), ShapesFrom("--batch")


def _import_named(path: str, proto: Any, named: Mapping[str, Shape], batch: int
                  ) -> tuple[Network, ShapesFrom]:
    """Import with the named inputs' shapes; each input not named has its dynamic
    dimensions filled where it can be said: a dimension named like one of a named input
    (an exporter's shared ``batch``/``seq``) takes that size, a leading one ``batch``."""
    from costmodels.onnx_import import import_onnx

    sizes: dict[str, int] = {}
    inits = {t.name for t in proto.graph.initializer}
    dims = {vi.name: list(vi.type.tensor_type.shape.dim) for vi in proto.graph.input
            if vi.name not in inits and vi.type.HasField("tensor_type")}
    for name, shape in named.items():
        for d, size in zip(dims.get(name, ()), shape, strict=False):
            if d.HasField("dim_param") and d.dim_param:
                sizes.setdefault(d.dim_param, int(size))
    shapes = dict(named)
    used_batch: list[str] = []
    for name, ds in dims.items():
        if name in named or not ds:
            continue
        shape = []
        for i, d in enumerate(ds):
            if d.HasField("dim_value") and d.dim_value > 0:
                shape.append(int(d.dim_value))
            elif d.HasField("dim_param") and d.dim_param in sizes:
                shape.append(sizes[d.dim_param])
            elif i == 0:
                shape.append(batch)
                used_batch.append(name)
            else:
                break  # left to the import, which names the input and what to give
        else:
            shapes[name] = tuple(shape)
    return import_onnx(path, input_shapes=shapes), ShapesFrom("--input-shape", used_batch)


def batch_note(how: ShapesFrom, batch: int) -> str:
    """The note for inputs that took ``--batch`` because ``--input-shape`` did not name them
    (``how`` of :func:`import_model_file`), or ''."""
    if not how.batch_inputs:
        return ""
    return (f"note: {', '.join(how.batch_inputs)}: not named by --input-shape, so its "
            f"leading dimension is --batch {batch}")


def _keep_static(proto: Any, name: str, shape: Shape) -> Shape:
    """``shape`` for input ``name`` of a folder's model, its static dimensions kept: a
    folder-wide --input-shape fixes what a model leaves open, so a model of 64 x 64 pixels
    with a dynamic batch takes the batch from it and keeps its size (it was refused as a
    contradiction, and a folder could not hold it beside a model of open size)."""
    vi = next((v for v in proto.graph.input if v.name == name), None)
    if vi is None or not vi.type.HasField("tensor_type"):
        return tuple(shape)
    dims = vi.type.tensor_type.shape.dim
    if len(dims) != len(shape):
        return tuple(shape)  # the import names the rank it needs
    return tuple(int(d.dim_value) if d.HasField("dim_value") and d.dim_value > 0 else int(g)
                 for d, g in zip(dims, shape, strict=True))


def _nested_model_folders(root: Path) -> list[str]:
    """Names of the subfolders of ``root`` that hold ``.onnx`` files (not read: a note says
    so); an unreadable one is passed over."""
    out = []
    for q in sorted(root.iterdir()):
        try:
            if q.is_dir() and not q.name.startswith(".") and q.suffix != ".onnx" \
                    and next(q.glob("*.onnx"), None) is not None:
                out.append(q.name)
        except OSError:
            continue
    return out


def _graph_inputs(model: Any, dynamic_only: bool = False) -> set[str]:
    """Names of the graph inputs that are not initializers (``dynamic_only``: those with a
    dimension the file leaves open, or no declared shape)."""
    from costmodels.onnx_import import has_open_dims

    inits = {t.name for t in model.graph.initializer}
    return {vi.name for vi in model.graph.input
            if vi.name not in inits and (not dynamic_only or has_open_dims(vi))}


def _batch_only_shapes(model: Any, batch: int) -> dict[str, tuple[int, ...]] | None:
    """Input shapes with a dynamic leading dimension set to ``batch``, or None when any
    other dimension is dynamic too (then only ``--input-shape`` can say)."""
    inits = {t.name for t in model.graph.initializer}
    out = {}
    for vi in model.graph.input:
        if vi.name in inits or not vi.type.HasField("tensor_type"):
            continue
        dims = vi.type.tensor_type.shape.dim
        shape = []
        for i, d in enumerate(dims):
            if d.HasField("dim_value") and d.dim_value > 0:
                shape.append(d.dim_value)
            elif i == 0:
                shape.append(batch)
            else:
                return None
        if not shape:
            return None
        out[vi.name] = tuple(shape)
    return out or None


def space_from_spec(arg: str | None, *, input_shapes: Any = None, **_: Any) -> ModelsSpace:
    if not arg:
        raise UnknownSpace("space 'models' needs a folder: --space models:DIR")
    return ModelsSpace(arg, input_shapes=input_shapes)
