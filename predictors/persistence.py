"""Model directories: ``manifest.json`` plus the model in an open format. No pickle.

A directory holds::

    manifest.json       what the model is and what it was trained with (below)
    model.json          XGBoost's own JSON (GBDT), and/or
    model.safetensors   torch tensors (GNN), and/or
    arrays.npz          numpy arrays (loaded with allow_pickle=False)

``manifest.json`` keys: ``manifest_version``, ``class`` (``predictors.gbdt.GBDTModel``,
...), ``params`` (the estimator's ``__init__`` keywords), ``feature_schema``
(name, version, feature names), ``training_data_sha256``, ``n_train``,
``device`` (target device name), ``trained_on`` (the training networks' spaces,
datasets, batch sizes and names; absent in older manifests), ``libraries`` (distribution versions),
``files`` (name -> SHA-256), ``state`` (small learned values, JSON) and
``manifest_sha256`` (SHA-256 of the canonical JSON of every other key).

Loading is safe: nothing a manifest says is imported or executed. Library
versions are read with :mod:`importlib.metadata` for the distributions in
:data:`ALLOWED_LIBRARIES` only; the class must be one the caller expects
(:mod:`predictors.learned` maps class names to classes; this module knows
none); every file named must be a plain name inside the directory (no ``../``,
no absolute path, no symlink) with the recorded checksum; the manifest's own
checksum catches an edited parameter (a checksum, not a signature: it refuses
edits by hand or by tools that do not recompute it). Errors name the file and
what to do and never echo the content of a file that could not be parsed.
Nothing is written while loading.
"""

from __future__ import annotations

import hashlib
import json
import platform
import zipfile
from collections.abc import Iterable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from costmodels.errors import ModelFileError
from costmodels.network import Network
from predictors import features as F

MANIFEST = "manifest.json"
# Every file a learned class writes into its folder (the manifest names its own subset).
MODEL_FILES = (MANIFEST, "model.json", "arrays.npz", "model.safetensors")
MANIFEST_VERSION = 2
MAX_MANIFEST_BYTES = 4 << 20
#: library -> distributions that provide it (the only ones whose versions are read)
ALLOWED_LIBRARIES: dict[str, tuple[str, ...]] = {
    "numpy": ("numpy",), "scipy": ("scipy",), "xgboost": ("xgboost", "xgboost-cpu"),
    "torch": ("torch",), "safetensors": ("safetensors",), "scikit-learn": ("scikit-learn",),
}
_KEYS = ("manifest_version", "class", "params", "feature_schema", "libraries", "files",
         "manifest_sha256")
# what write_manifest writes beside _KEYS; anything else was not written by costmodels
_OPTIONAL_KEYS = ("training_data_sha256", "n_train", "device", "state", "trained_on")


def library_versions(names: Iterable[str]) -> dict[str, str]:
    """Installed versions of allow-listed libraries (and Python), from package metadata."""
    out = {"python": platform.python_version()}
    for name in names:
        if name == "python":
            continue
        if name not in ALLOWED_LIBRARIES:
            raise ModelFileError(f"library {name!r} is not one a model may record; expected "
                                 f"one of {', '.join(ALLOWED_LIBRARIES)}")
        out[name] = "absent"
        for dist in ALLOWED_LIBRARIES[name]:
            try:
                out[name] = metadata.version(dist)
                break
            except metadata.PackageNotFoundError:
                continue
    return out


def data_hash(nets: Sequence[Network], latencies: Sequence[float]) -> str:
    """SHA-256 of the training set: each network's fingerprint and its latency."""
    h = hashlib.sha256()
    for net, y in zip(nets, latencies, strict=True):
        h.update(f"{net.fingerprint}:{float(y)!r};".encode())
    return h.hexdigest()


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _canonical_sha256(doc: dict) -> str:
    body = {k: v for k, v in doc.items() if k != "manifest_sha256"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":"),
                                     allow_nan=False).encode()).hexdigest()


def write_manifest(model_dir: str | Path, cls: str, params: dict, *, libraries: Sequence[str],
                   training_data_sha256: str, n_train: int, device: str,
                   files: Sequence[str], state: dict | None = None,
                   trained_on: dict | None = None) -> Path:
    """Write ``manifest.json`` after the model ``files`` (names in ``model_dir``);
    ``trained_on``: :func:`predictors.base.training_domain` of the training networks."""
    d = Path(model_dir)
    doc: dict[str, Any] = {
        "manifest_version": MANIFEST_VERSION,
        "class": cls,
        "params": params,
        "feature_schema": F.schema(),
        "training_data_sha256": training_data_sha256,
        "n_train": int(n_train),
        "device": device,
        "libraries": library_versions(libraries),
        "files": {name: file_sha256(d / name) for name in sorted(files)},
        "state": state or {},
    }
    if trained_on:
        doc["trained_on"] = trained_on
    doc["manifest_sha256"] = _canonical_sha256(doc)
    path = d / MANIFEST
    stale = _listed_files(path) - set(files)
    tmp = d / (MANIFEST + ".tmp")
    tmp.write_text(json.dumps(doc, indent=1, sort_keys=True, allow_nan=False) + "\n")
    tmp.replace(path)
    for name in stale:  # a model of another class fitted here before (a GNN's weights)
        (d / name).unlink(missing_ok=True)
    return path


def _listed_files(path: Path) -> set[str]:
    """The plain file names an existing manifest at ``path`` lists (none if unreadable):
    what a model written here before left, to be removed when a new one replaces it."""
    try:
        files = json.loads(path.read_text()).get("files", {})
    except (OSError, ValueError, AttributeError):
        return set()
    if not isinstance(files, dict):
        return set()
    # only the names our classes write: a manifest edited to list another file (an input
    # of this very fit) must not get it deleted
    return {n for n in files if n in MODEL_FILES and n != MANIFEST}


def _major(version: str) -> str:
    return str(version).split(".", 1)[0]


def _parse(path: Path) -> dict:
    """The manifest as a dict; errors give a position, never the content."""
    if path.is_symlink():
        raise ModelFileError(f"{path}: is a symbolic link; a model directory holds its own "
                             "files (copy the directory instead of linking)")
    if not path.is_file():
        raise ModelFileError(f"{path}: no manifest; {path.parent} is not a model directory "
                             "written by `costmodels fit` (fit the model again)")
    raw = path.read_bytes()
    if len(raw) > MAX_MANIFEST_BYTES:
        raise ModelFileError(f"{path}: {len(raw)} bytes, larger than any manifest "
                             "costmodels writes; fit the model again")
    try:
        doc = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ModelFileError(f"{path}: not UTF-8 text (byte offset {exc.start}); it is not a "
                             "manifest written by costmodels, fit the model again") from None
    except json.JSONDecodeError as exc:
        raise ModelFileError(f"{path}:{exc.lineno}: not valid JSON (column {exc.colno}); fit "
                             "the model again") from None
    except RecursionError:
        raise ModelFileError(f"{path}: JSON nested too deeply; fit the model again") from None
    if not isinstance(doc, dict):
        raise ModelFileError(f"{path}: the manifest is not a JSON object; fit the model again")
    return doc


def _check_keys(path: Path, doc: dict) -> None:
    missing = [k for k in _KEYS if k not in doc]
    if doc.get("manifest_version") != MANIFEST_VERSION:
        v = doc.get("manifest_version")
        shown = v if isinstance(v, int) else "unreadable"
        raise ModelFileError(f"{path}: manifest version {shown}, this costmodels reads "
                             f"version {MANIFEST_VERSION}; fit the model again with this version")
    if missing:
        raise ModelFileError(f"{path}: manifest lacks {', '.join(missing)}; fit the model again")
    unknown = sorted(k for k in doc if k not in _KEYS and k not in _OPTIONAL_KEYS)
    if unknown:
        shown = ", ".join(repr(k[:40]) for k in unknown[:5])
        raise ModelFileError(f"{path}: manifest has field(s) costmodels never writes ({shown}"
                             f"{', ...' if len(unknown) > 5 else ''}); it was not saved by "
                             "this costmodels: fit the model again")
    try:
        checksum = _canonical_sha256(doc)
    except ValueError:  # NaN or infinity: JSON has no such numbers, costmodels never wrote one
        raise ModelFileError(f"{path}: holds a non-finite number (NaN or Infinity), which "
                             "costmodels never writes; fit the model again") from None
    if doc["manifest_sha256"] != checksum:
        raise ModelFileError(f"{path}: the manifest's checksum does not match its content (it "
                             "was edited after saving); fit the model again rather than edit it")
    for key, typ in (("class", str), ("params", dict), ("feature_schema", dict),
                     ("libraries", dict), ("files", dict), ("device", str)):
        if not isinstance(doc.get(key, ""), typ):
            raise ModelFileError(f"{path}: field {key!r} is not a JSON {typ.__name__}; fit the "
                                 "model again")
    n = doc.get("n_train", 1)
    if not isinstance(n, int) or isinstance(n, bool) or not 0 < n <= 10 ** 9:
        raise ModelFileError(f"{path}: field 'n_train' is {str(n)[:40]!r}, not a count of "
                             "training networks; fit the model again")


def _check_schema(path: Path, schema: dict) -> None:
    mine = F.schema()
    if (schema.get("name"), schema.get("version")) != (mine["name"], mine["version"]):
        raise ModelFileError(f"{path}: trained on another feature schema than this costmodels "
                             f"computes ({mine['name']} v{mine['version']}); refit the model "
                             "(costmodels fit ...) with this version")
    if schema.get("features") != mine["features"]:
        raise ModelFileError(f"{path}: the feature names differ from schema {mine['name']} "
                             f"v{mine['version']} (edited or foreign manifest); refit the model")


def _check_libraries(path: Path, libs: dict) -> None:
    unknown = [k for k in libs if k != "python" and k not in ALLOWED_LIBRARIES]
    if unknown:
        raise ModelFileError(f"{path}: field 'libraries' names {len(unknown)} librar(y/ies) "
                             f"outside the allow-list ({', '.join(ALLOWED_LIBRARIES)}); nothing "
                             "was imported; fit the model again")
    now = library_versions(k for k in libs if k != "python")
    for lib, ver in libs.items():
        if lib == "python" or ver == "absent":
            continue
        if now[lib] == "absent":
            raise ModelFileError(f"{path}: needs {lib}, which is not installed; install it "
                                 "(pip install -e '.[gnn]') or fit the model again")
        if _major(now[lib]) != _major(str(ver)):
            raise ModelFileError(f"{path}: saved with {lib} {ver}, installed is {now[lib]} "
                                 "(different major version); refit the model, or install the "
                                 "version it was saved with")


def _check_files(d: Path, path: Path, files: dict) -> None:
    root = d.resolve()
    for name, digest in files.items():
        if (not isinstance(name, str) or not name or name in (".", "..") or "/" in name
                or "\\" in name or ":" in name or name == MANIFEST):
            raise ModelFileError(f"{path}: field 'files' names an entry that is not a plain "
                                 "file name inside the model directory; fit the model again")
        f = d / name
        if f.is_symlink() or not f.resolve().is_relative_to(root):
            raise ModelFileError(f"{f}: is a link or lies outside {d}; a model directory holds "
                                 "its own files (copy them in, or fit the model again)")
        if not f.is_file():
            raise ModelFileError(f"{f}: missing from the model directory; copy the whole "
                                 "directory or fit the model again")
        if not isinstance(digest, str) or file_sha256(f) != digest:
            raise ModelFileError(f"{f}: checksum differs from {path} (the file was changed "
                                 "after saving); fit the model again")


def read_manifest(model_dir: str | Path, expect: Sequence[str]) -> dict:
    """Read and check a model directory's manifest; :class:`ModelFileError` if unusable.

    ``expect``: class names the caller accepts (the first is named in the error).
    """
    d = Path(model_dir)
    if not d.is_dir():
        what = "is a file, not a model directory" if d.exists() else "no such model directory"
        raise ModelFileError(f"{d}: {what}; make one with `costmodels fit`")
    path = d / MANIFEST
    doc = _parse(path)
    _check_keys(path, doc)
    cls = doc["class"]
    if cls not in expect:
        from predictors.learned import backend_for_class

        hint = backend_for_class(cls)
        raise ModelFileError(f"{path}: holds a {cls if hint else 'model of an unknown class'}, "
                             f"not a {' or '.join(expect)}; "
                             + (f"load it as {hint}:{d}" if hint else "fit the model again"))
    _check_schema(path, doc["feature_schema"])
    _check_libraries(path, doc["libraries"])
    _check_files(d, path, doc["files"])
    seen = doc.get("trained_on")
    if isinstance(seen, dict) and all(isinstance(seen.get(k), list)
                                      for k in ("spaces", "datasets", "batches")) \
            and not _valid_domain(seen):
        raise ModelFileError(f"{path}: its trained_on is not what costmodels writes (lists of "
                             "space and dataset names, batch sizes, architecture names, "
                             "latencies); fit the model again")
    return doc


def model_file(d: Path, doc: dict, name: str) -> Path:
    """Path of a model file the (checked) manifest lists; refuses one it does not list."""
    if name not in doc["files"]:
        raise ModelFileError(f"{d / MANIFEST}: lists no {name}; fit the model again")
    return d / name


def save_arrays(path: Path, arrays: dict[str, np.ndarray]) -> None:
    with open(path, "wb") as fh:
        np.savez(fh, **{k: np.asarray(v) for k, v in arrays.items()})


def load_arrays(path: Path) -> dict[str, np.ndarray]:
    """The arrays of a saved model: numbers only (a string, complex, structured or object
    array is refused by name: it failed deep inside numpy, as a UFuncTypeError)."""
    try:
        with np.load(path, allow_pickle=False) as z:
            out = {k: z[k] for k in z.files}
    except (OSError, ValueError, EOFError, zipfile.BadZipFile) as exc:
        raise ModelFileError(f"{path}: unreadable arrays ({type(exc).__name__}); fit the model "
                             "again") from None
    except MemoryError:  # a header edited to claim billions of values
        raise ModelFileError(f"{path}: an array claims more values than memory holds; the "
                             "file was edited: fit the model again") from None
    for k, a in out.items():
        if a.dtype.kind not in "biuf" and not (a.dtype.kind == "U" and k.endswith("keys")):
            raise ModelFileError(f"{path}: array {k!r} holds {a.dtype} values, not numbers; "
                                 "the file was edited or is not this program's: fit the model "
                                 "again")
    return out


def restore(cls: type, model_dir: str | Path, class_name: str) -> tuple[Any, dict, Path]:
    """A new ``cls`` with the manifest's parameters and common learned state.

    Returns ``(model, manifest, directory)``; the caller reads its own model files
    and must call ``model._mark_fitted`` when done. Parameters that no longer fit
    ``cls`` raise :class:`ModelFileError`.
    """
    d = Path(model_dir)
    doc = read_manifest(d, (class_name,))
    _check_param_types(d / MANIFEST, cls, doc["params"])
    try:
        model = cls(**doc["params"])
    except TypeError:
        raise ModelFileError(f"{d / MANIFEST}: its parameters do not fit {cls.__name__}; fit the "
                             "model again") from None
    return model, doc, d


def _check_param_types(path: Path, cls: type, params: dict) -> None:
    """Each parameter of the JSON type of ``cls``'s default for it (an int may stand for a
    float; a default of None or a list allows any): a value of another type is refused."""
    import inspect

    try:
        defaults = {k: p.default for k, p in inspect.signature(cls).parameters.items()
                    if p.default is not inspect.Parameter.empty}
    except (TypeError, ValueError):
        return
    for key, value in params.items():
        want = defaults.get(key)
        if want is None or isinstance(want, (list, tuple, dict)):
            continue
        ok = (isinstance(value, bool) if isinstance(want, bool) else
              isinstance(value, (int, float)) and not isinstance(value, bool)
              if isinstance(want, float) else
              isinstance(value, int) and not isinstance(value, bool) if isinstance(want, int)
              else isinstance(value, type(want)))
        if not ok:
            raise ModelFileError(f"{path}: field 'params.{key}' is {str(value)[:40]!r}, not a "
                                 f"{type(want).__name__} as {cls.__name__} takes; fit the model "
                                 "again")
        lo, hi = getattr(cls, "PARAM_BOUNDS", {}).get(key, (None, None))
        if lo is not None and not lo <= value <= hi:  # a GNN of 10**6 layers never loaded
            raise ModelFileError(f"{path}: field 'params.{key}' is {str(value)[:40]}, outside "
                                 f"{lo}..{hi}; the file was edited: fit the model again")


def finish_restore(model: Any, doc: dict) -> Any:
    """Mark a restored model fitted with the manifest's training facts."""
    model._mark_fitted(int(doc.get("n_train", 0)), str(doc.get("training_data_sha256", "")))
    model.device_ = str(doc.get("device", ""))
    seen = doc.get("trained_on")
    if isinstance(seen, dict) and all(isinstance(seen.get(k), list)
                                      for k in ("spaces", "datasets", "batches")):
        model.trained_on_ = seen  # older manifests lack it: no domain check then
    return model


def _valid_domain(seen: dict) -> bool:
    """Whether a manifest's ``trained_on`` holds what :func:`predictors.base.training_domain`
    writes (``archs``, ``latency_ms`` and ``measured_on`` optional: older manifests)."""
    def items(key: str, kinds: tuple[type, ...], required: bool = True) -> bool:
        v = seen.get(key)
        if v is None:
            return not required
        return isinstance(v, list) and all(isinstance(x, kinds) and not isinstance(x, bool)
                                           for x in v)

    return (items("spaces", (str,)) and items("datasets", (str,))
            and items("batches", (int,)) and items("archs", (str,), required=False)
            and items("latency_ms", (int, float), required=False)
            and isinstance(seen.get("measured_on", ""), str))
