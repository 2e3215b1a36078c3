"""Model directories: ``manifest.json`` plus the model in an open format. No pickle.

A directory holds::

    manifest.json   what the model is and what it was trained with (below)
    model.json      XGBoost's own JSON (GBDT), or
    model.safetensors   torch tensors (GNN), and/or
    arrays.npz      numpy arrays (loaded with allow_pickle=False)

``manifest.json`` keys: ``manifest_version``, ``class`` (``predictors.gbdt.GBDTModel``,
...), ``params`` (the estimator's ``__init__`` keywords), ``feature_schema``
(name, version, feature names), ``training_data_sha256``, ``n_train``,
``device`` (target device name), ``libraries`` (versions), ``files`` (name ->
SHA-256), ``state`` (small learned values, JSON).

Loading checks every one of these and raises :class:`ModelFileError` naming the
file and what to do: a different class, feature schema, major library version
or a file whose checksum changed is refused.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import json
import platform
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from costmodels.errors import ModelFileError
from costmodels.interface import BaseCostModel, Estimate
from costmodels.network import Network
from predictors import features as F

MANIFEST = "manifest.json"
MANIFEST_VERSION = 1
# Classes a manifest may name; loading imports nothing else.
KNOWN_CLASSES = {
    "predictors.gbdt.GBDTModel",
    "predictors.gnn.GNNModel",
    "predictors.transfer.TransferModel",
}


def library_versions(names: Sequence[str]) -> dict[str, str]:
    """Installed versions of the named libraries (and Python)."""
    out = {"python": platform.python_version()}
    for name in names:
        try:
            out[name] = importlib.import_module(name).__version__
        except (ImportError, AttributeError):
            out[name] = "absent"
    return out


def data_hash(nets: Sequence[Any], latencies: Sequence[float]) -> str:
    """SHA-256 of the training set: each network's fingerprint and its latency."""
    h = hashlib.sha256()
    for net, y in zip(nets, latencies, strict=True):
        h.update(f"{net.fingerprint}:{float(y)!r};".encode())
    return h.hexdigest()


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_manifest(model_dir: str | Path, cls: str, params: dict, *, libraries: Sequence[str],
                   training_data_sha256: str, n_train: int, device: str,
                   state: dict | None = None) -> Path:
    """Write ``manifest.json`` after the model files; records their checksums."""
    d = Path(model_dir)
    files = {p.name: file_sha256(p) for p in sorted(d.iterdir())
             if p.is_file() and p.name != MANIFEST}
    doc = {
        "manifest_version": MANIFEST_VERSION,
        "class": cls,
        "params": params,
        "feature_schema": F.schema(),
        "training_data_sha256": training_data_sha256,
        "n_train": int(n_train),
        "device": device,
        "libraries": library_versions(libraries),
        "files": files,
        "state": state or {},
    }
    path = d / MANIFEST
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    tmp.replace(path)
    return path


def _major(version: str) -> str:
    return version.split(".", 1)[0]


def read_manifest(model_dir: str | Path, expect_class: str | None = None) -> dict:
    """Read and check a model directory's manifest; :class:`ModelFileError` if unusable."""
    d = Path(model_dir)
    path = d / MANIFEST
    if not path.is_file():
        raise ModelFileError(f"{path}: no manifest; {d} is not a model directory written by "
                             "`costmodels fit` (fit the model again)")
    try:
        doc = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelFileError(f"{path}: unreadable manifest ({exc}); fit the model again") from None
    if not isinstance(doc, dict):
        raise ModelFileError(f"{path}: the manifest is not a JSON object; fit the model again")
    missing = [k for k in ("manifest_version", "class", "params", "feature_schema", "libraries",
                           "files") if k not in doc]
    if missing:
        raise ModelFileError(f"{path}: manifest lacks {', '.join(missing)}; fit the model again")
    if doc["manifest_version"] != MANIFEST_VERSION:
        raise ModelFileError(f"{path}: manifest version {doc['manifest_version']}, this "
                             f"costmodels reads version {MANIFEST_VERSION}; fit the model again "
                             "with this version")
    cls = doc["class"]
    if cls not in KNOWN_CLASSES:
        raise ModelFileError(f"{path}: unknown model class {cls!r}; expected one of "
                             f"{', '.join(sorted(KNOWN_CLASSES))}")
    if expect_class and cls != expect_class:
        raise ModelFileError(f"{path}: holds a {cls}, not a {expect_class}; load it with the "
                             "backend for its class (e.g. gnn:DIR for a GNN)")
    schema = doc["feature_schema"]
    mine = F.schema()
    if not isinstance(schema, dict) or (schema.get("name"), schema.get("version")) != (
            mine["name"], mine["version"]):
        got = (f"{schema.get('name')} v{schema.get('version')}" if isinstance(schema, dict)
               else repr(schema))
        raise ModelFileError(f"{path}: trained on feature schema {got}, this costmodels computes "
                             f"{mine['name']} v{mine['version']}; refit the model (costmodels fit "
                             "...) with this version")
    if schema.get("features") != mine["features"]:
        raise ModelFileError(f"{path}: the feature names differ from schema {mine['name']} "
                             f"v{mine['version']} (edited or foreign manifest); refit the model")
    now = library_versions(list(doc["libraries"]))
    for lib, ver in doc["libraries"].items():
        if lib == "python" or ver == "absent":
            continue
        if now.get(lib) == "absent":
            raise ModelFileError(f"{path}: needs {lib} {ver}, which is not installed; "
                                 f"pip install '{lib}=={ver}'")
        if _major(now[lib]) != _major(str(ver)):
            raise ModelFileError(f"{path}: saved with {lib} {ver}, installed is {now[lib]} "
                                 f"(different major version); refit the model, or install "
                                 f"{lib}=={ver}")
    for name, digest in doc["files"].items():
        f = d / name
        if not f.is_file():
            raise ModelFileError(f"{f}: missing from the model directory; copy the whole "
                                 "directory or fit the model again")
        if file_sha256(f) != digest:
            raise ModelFileError(f"{f}: checksum differs from {path} (the file was changed "
                                 "after saving); fit the model again")
    return doc


def save_arrays(path: Path, arrays: dict[str, np.ndarray]) -> None:
    np.savez(path, **{k: np.asarray(v) for k, v in arrays.items()})


def load_arrays(path: Path) -> dict[str, np.ndarray]:
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (OSError, ValueError) as exc:
        raise ModelFileError(f"{path}: unreadable arrays ({exc}); fit the model again") from None


MODELS = ("gbdt", "gnn", "transfer", "hybrid", "flops")


def make(name: str, sources: Sequence[Any] = (), **params: Any):
    """An unfitted estimator by name (see :func:`predictors.make`, which calls this)."""
    if name == "gbdt":
        from predictors.gbdt import GBDTModel

        return GBDTModel(**params)
    if name == "hybrid":
        from predictors.gbdt import GBDTModel

        if not params.get("prior"):
            raise ValueError("the hybrid model needs prior estimators: make('hybrid', "
                             "prior=['roofline:SPEC', 'lut:PATH']) / --prior SPEC")
        return GBDTModel(**params)
    if name == "gnn":
        from predictors.gnn import GNNModel

        return GNNModel(**params)
    if name == "transfer":
        from predictors.transfer import TransferModel

        if not sources:
            raise ValueError("the transfer model needs source tables: make('transfer', "
                             "sources=[...]) / --source TABLE.csv")
        return TransferModel(sources=list(sources), **params)
    if name == "flops":
        from costmodels.baselines import ProxyModel

        return ProxyModel("macs", **params)
    raise ValueError(f"unknown predictor {name!r}; expected one of {', '.join(MODELS)}")


def restore(cls: type, model_dir: str | Path, class_name: str) -> tuple[Any, dict, Path]:
    """A new ``cls`` with the manifest's parameters and common learned state.

    Returns ``(model, manifest, directory)``; the caller reads its own model files.
    Parameters that no longer fit ``cls`` raise :class:`ModelFileError`.
    """
    d = Path(model_dir)
    doc = read_manifest(d, class_name)
    try:
        model = cls(**doc["params"])
    except TypeError as exc:
        raise ModelFileError(f"{d / MANIFEST}: parameters do not fit {cls.__name__} ({exc}); "
                             "fit the model again") from None
    model.n_train_ = int(doc.get("n_train", 0))
    model.device_ = doc.get("device", "")
    model.training_data_sha256_ = doc.get("training_data_sha256", "")
    return model, doc, d


def load(model_dir: str | Path):
    """Load any predictor directory (class from its manifest)."""
    doc = read_manifest(model_dir)
    module, _, name = doc["class"].rpartition(".")
    cls = getattr(importlib.import_module(module), name)
    return cls.load(model_dir)


# ------------------------------------------------------------------ common estimator base
class Predictor(BaseCostModel):
    """Base of the fitted predictors: scikit-learn habits plus the CostModel interface.

    Subclasses store their keyword parameters in ``__init__`` (nothing else),
    implement ``fit(nets, latencies_ms) -> self`` setting ``_``-suffixed
    attributes, ``predict(nets) -> ndarray`` (ms), ``save(dir)`` and
    ``load(dir)``.
    """

    name = "predictor"

    def get_params(self, deep: bool = True) -> dict[str, Any]:
        sig = inspect.signature(type(self).__init__)
        return {p: getattr(self, p) for p in sig.parameters if p != "self"}

    def set_params(self, **params: Any) -> Predictor:
        valid = self.get_params()
        for k, v in params.items():
            if k not in valid:
                raise ValueError(f"{type(self).__name__} has no parameter {k!r}; "
                                 f"expected one of {', '.join(valid)}")
            setattr(self, k, v)
        return self

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({args})"

    def _check_fitted(self) -> None:
        if not hasattr(self, "n_train_"):
            raise ValueError(f"this {type(self).__name__} is not fitted; call fit(nets, "
                             "latencies_ms) or load a saved model")

    def predict(self, nets: Sequence[Network]) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def estimate(self, net: Network) -> Estimate:
        return self.estimate_many([net])[0]

    def estimate_many(self, nets: Sequence[Network]) -> list[Estimate]:
        pred = self.predict(nets)
        meta = {"backend": self.name, "device": getattr(self, "device_", "")}
        return [Estimate(float(p), meta=meta) for p in pred]


def check_training_data(nets: Sequence[Network], latencies_ms: Sequence[float]) -> np.ndarray:
    """Latencies as a float64 array, checked against the networks."""
    y = np.asarray(latencies_ms, dtype=np.float64)
    if y.ndim != 1 or len(y) != len(nets):
        raise ValueError(f"got {len(nets)} networks but {y.shape} latencies; one latency (ms) "
                         "per network")
    if len(y) == 0:
        raise ValueError("no training data: fit needs at least one measured network")
    if not np.all(np.isfinite(y)) or np.any(y <= 0):
        raise ValueError("latencies must be finite and > 0 ms")
    return y
