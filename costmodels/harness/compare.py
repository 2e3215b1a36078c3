"""Rank cost estimators against ground truth on NAS-Bench-201 cells.

:func:`compare` takes a measured latency table (the truth) and a list of
backends (registry specs or CostModel objects) and returns, for each backend,
its build cost, query cost, predictions and metrics. Nothing a backend does
stops the comparison: a backend that cannot be created, or that fails on some
networks, is recorded with its coverage and first error.

Train/test mode (``train_samples=K``): K truth rows are drawn with ``seed``;
learned backends (``gbdt``, ``gnn``, ``transfer`` given without a model path,
and ``flops``/``params`` which are then fitted by least squares) are fitted on
them, and *every* backend is scored on the other rows only, so all rows of the
table are comparable and no backend is scored on its training data.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from costmodels.harness import metrics
from costmodels.harness.fitting import (  # noqa: F401 - re-exported
    LEARNED,
    NO_MEASUREMENTS,
    PROXIES,
    _build_measurements,
    _is_learned,
    _spec_name,
    build_backend,
    fit_estimator,
)
from costmodels.harness.scoring import (  # noqa: F401 - re-exported
    Estimated,
    _best_time,
    _calibrated,
    _energy_metrics,
    _first_line,
    estimate_all,
    lower_bound_note,
    rank,
    split_rows,
)
from costmodels.interface import CostModel
from costmodels.network import Network
from costmodels.tables import LatencyTable, sidecar_device


@dataclass
class BackendResult:
    """What one backend achieved on the scored truth cells.

    ``rows`` index the truth table (cells the backend covered); ``y_pred`` and
    ``y_true`` (and the ``connected`` mask) are aligned with them, in ms. ``metrics`` is
    :func:`metrics.summary` over those cells (empty when fewer than 2 were
    covered). ``build_measurements``: networks or kernels measured to build it
    (``None`` when unknown); ``build_s``: seconds to create or fit it here;
    ``query_us``: microseconds per network for ``estimate_many`` on the scored
    cells (network construction excluded). ``calibrated`` is False for
    estimators whose scale is arbitrary (raw MACs): rank metrics hold,
    absolute errors do not. ``reference_only`` backends (models of other
    hardware, shown for illustration) are left out of the recommendation, and so are
    saved models scored on cells they were fitted on (``in_sample``: how many).
    """

    spec: str
    name: str
    n_total: int
    n_covered: int = 0
    first_error: str | None = None
    build_s: float = 0.0
    build_measurements: int | None = None
    query_us: float = math.nan
    fitted: bool = False
    calibrated: bool = True
    note: str = ""
    reference_only: bool = False
    in_sample: int = 0
    rows: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64), repr=False)
    y_true: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)
    y_pred: np.ndarray = field(default_factory=lambda: np.zeros(0), repr=False)
    connected: np.ndarray = field(default_factory=lambda: np.zeros(0, bool), repr=False)
    metrics: dict[str, float] = field(default_factory=dict)
    model: Any = field(default=None, repr=False)

    @property
    def coverage(self) -> float:
        return self.n_covered / self.n_total if self.n_total else 0.0

    def metric(self, key: str) -> float:
        return float(self.metrics.get(key, math.nan))

    def by_row(self) -> dict[int, float]:
        """{row: estimated latency_ms} for the covered rows."""
        return dict(zip(self.rows.tolist(), self.y_pred.tolist(), strict=True))


def _in_sample(model: Any, nets: Sequence[Network], device: str = "",
               measured_on: str = "", truth_ms: np.ndarray | None = None) -> int:
    """How many of ``nets`` a saved learned model was fitted on (its manifest's training
    networks, by ``arch_str``, dataset and batch) on this ``device`` (the truth's; a model
    fitted on another device's table is scored out of sample); 0 for anything else.

    Table names are file stems, so two tables of one machine may differ in name
    (``truth.csv``, ``truth100.csv``): where both the truth's sidecar (``measured_on``) and
    the manifest name the machine that measured them, that decides instead. Where neither
    does, a network whose truth latency (``truth_ms``, aligned with ``nets``) is exactly the
    one the model was fitted with counts too: rows cut from this very table under another
    name (another device's measurement does not repeat a figure to every digit)."""
    seen = getattr(model, "trained_on_", None)
    if not isinstance(seen, dict) or not seen.get("archs"):
        return 0
    datasets = {str(d) for d in seen.get("datasets") or ()}
    batches = {int(b) for b in seen.get("batches") or ()}

    def key(n: Network) -> str | None:
        if datasets and str(n.meta.get("dataset")) not in datasets:
            return None
        if batches and int(n.meta.get("batch", 1) or 1) not in batches:
            return None
        return str(n.meta.get("arch_str") or n.name)

    fitted_for = str(getattr(model, "device_", "") or "")
    fitted_on = str(seen.get("measured_on") or "")
    same = (measured_on == fitted_on if measured_on and fitted_on
            else not (device and fitted_for and fitted_for != device))
    if same:
        archs = set(seen["archs"])
        return sum(1 for n in nets if key(n) in archs)
    lat = seen.get("latency_ms")
    if truth_ms is None or not isinstance(lat, list) or len(lat) != len(seen["archs"]):
        return 0
    fitted = dict(zip(seen["archs"], (float(v) for v in lat), strict=True))
    both = [(float(t), fitted[k]) for n, t in zip(nets, truth_ms, strict=True)
            if (k := key(n)) in fitted]
    exact = sum(1 for t, f in both if t == f)
    # rows copied and rounded (a table saved with fewer digits): nearly every shared network
    # within 0.1%, which two measurements of a cell (1-5% apart) do not give
    close = sum(1 for t, f in both if abs(t - f) <= 1e-3 * max(abs(t), abs(f)))
    return len(both) if both and close >= 0.9 * len(both) else exact


@dataclass
class ComparisonResult:
    """All backends on one truth table; :meth:`ranked` orders them by Kendall tau."""

    truth_source: str
    device: str
    dataset: str
    n_truth: int
    train_rows: np.ndarray
    test_rows: np.ndarray
    seed: int
    results: list[BackendResult]
    train_samples: int | None = None
    space: str = "nb201"
    #: truth rows whose network could not be built: {arch_str: error}; never scored
    build_errors: dict[str, str] = field(default_factory=dict)
    #: caveats about the truth itself (measured at another dataset or batch), for the report
    warnings: list[str] = field(default_factory=list)

    def ranked(self, key: str = "kendall") -> list[BackendResult]:
        """Best first by ``key``: see :func:`rank`."""
        return rank(self.results, key)


# ----------------------------------------------------------------------------- helpers
def display_name(spec: str) -> str:
    """A spec as shown in tables: paths shortened to their file name."""
    name, sep, arg = spec.partition(":")
    if spec.lower().endswith(".csv") and not sep or (sep and name not in _backend_names()):
        return Path(spec).name
    return f"{name}:{Path(arg).name}" if sep and ("/" in arg or "\\" in arg) else spec


def display_names(specs: Sequence[str]) -> list[str]:
    """:func:`display_name` of each spec, made distinct: specs whose shortened names
    collide (``a/est.csv`` and ``b/est.csv``) keep as many of their folders as tell them
    apart, and a spec given twice is numbered."""
    names = [display_name(s) for s in specs]
    for depth in range(1, 8):
        clash = {n for n in names if names.count(n) > 1}
        if not clash:
            return names
        for i, spec in enumerate(specs):
            if names[i] in clash:
                name, sep, arg = spec.partition(":")
                path = Path(arg if sep and name in _backend_names() else spec)
                tail = "/".join(path.parts[-depth - 1:])
                names[i] = f"{name}:{tail}" if sep and name in _backend_names() else tail
    twice = {n for n in names if names.count(n) > 1}
    seen: dict[str, int] = {}
    for i, n in enumerate(names):
        if n in twice:
            seen[n] = seen.get(n, 0) + 1
            names[i] = f"{n} ({seen[n]})"
    return names


def _backend_names() -> tuple[str, ...]:
    from costmodels.registry import BACKENDS
    return tuple(BACKENDS)


# ----------------------------------------------------------------------------- compare
MIN_SCORED = 3  # below it every rank metric is trivially +-1 or undefined


def compare(truth: LatencyTable, backends: Sequence[str | CostModel],
            dataset: str | None = None,
            train_samples: int | None = None, seed: int = 0, sources: Sequence[str] = (),
            *, max_cells: int | None = None, notes: Mapping[str, str] | None = None,
            reference_only: Sequence[str] = (), priors: Sequence[str] = (),
            on_progress: Callable[[str], None] | None = None,
            space: Any = "nb201", batch: int = 1) -> ComparisonResult:
    """Score every backend on the truth table's cells; see the module docstring.

    ``max_cells`` scores a seeded random subset of the test rows (for slow
    backends such as ``measure:ort``). ``notes`` maps a backend spec (or name)
    to a caveat printed beside it in the report (e.g. "different device:
    illustration only"). Backends named in ``reference_only`` are scored and
    shown but never recommended. ``priors``: registry specs the ``hybrid`` backend
    corrects (e.g. ``roofline:SPEC``, ``lut:PATH``). ``on_progress`` is called with a
    message per backend. ``space`` (a :class:`~costmodels.spaces.SearchSpace` or its
    spec) builds the truth rows' networks at ``dataset`` (None: the space's default)
    and ``batch``; a row whose network cannot be built is recorded in
    ``build_errors`` and not scored. When the truth has ``energy_mj``, backends that
    estimate energy are scored on it too (``energy_*`` metrics).
    """
    from costmodels.registry import BACKENDS, split_spec
    from costmodels.spaces import SearchSpace, get_space

    sp = space if isinstance(space, SearchSpace) else get_space(space)
    dataset = sp.check_dataset(dataset)

    for spec in backends:  # a typo should fail before minutes of work
        if isinstance(spec, str) and split_spec(spec)[0] not in (*BACKENDS, *LEARNED):
            from costmodels.registry import resolve
            resolve(split_spec(spec)[0])
    _refuse_truth_copies(truth, sp, sources, [b for b in backends if isinstance(b, str)],
                         priors)
    built, build_errors, train_rows, test_rows = split_truth(truth, sp, dataset, batch,
                                                            train_samples, seed)
    if max_cells and max_cells < len(test_rows):
        rng = np.random.default_rng(seed + 1)
        test_rows = np.sort(rng.choice(test_rows, size=max_cells, replace=False))
    if len(test_rows) < MIN_SCORED:
        from costmodels.errors import InputError

        fitted = f" beside the {len(train_rows)} learned backends are fitted on" \
            if len(train_rows) else ""
        raise InputError(f"{truth.source}: {len(test_rows)} network(s) to score{fitted}; "
                         f"ranking estimators needs at least {MIN_SCORED}: give a truth "
                         "table of more networks" + (" or fewer --train-samples"
                                                     if len(train_rows) else ""))
    nets = built
    train_nets = [nets[r] for r in train_rows]
    test_nets = [nets[r] for r in test_rows]
    train_y = truth.latency_ms[train_rows]
    y_true_all = truth.latency_ms[test_rows]
    connected = np.array([bool(n.meta.get("connected", True)) for n in test_nets])
    notes = dict(notes or {})

    results = []
    shown = iter(display_names([s for s in backends if isinstance(s, str)]))
    for spec in backends:
        label = next(shown) if isinstance(spec, str) else _spec_name(spec)
        if on_progress:
            on_progress(label)
        learned = _is_learned(spec, train_samples is not None)
        keys = {label, _spec_name(spec)} | ({spec} if isinstance(spec, str) else set())
        res = BackendResult(spec=spec if isinstance(spec, str) else label, name=label,
                            n_total=len(test_rows), fitted=learned,
                            note=next((notes[k] for k in keys if k in notes), ""),
                            reference_only=bool(keys & set(reference_only)))
        try:
            model, res.build_s = build_backend(spec, learned=learned, train_nets=train_nets,
                                               train_y=train_y, sources=sources, priors=priors,
                                               seed=seed)
        except Exception as exc:  # noqa: BLE001 - recorded, the comparison goes on
            res.first_error = _first_line(exc)
            results.append(res)
            continue
        res.model = model
        res.in_sample = _in_sample(model, test_nets, truth.device,
                                   sidecar_device(truth.source) if truth.source else "",
                                   y_true_all)
        if res.in_sample:
            res.note = (f"fitted on {res.in_sample} of the {len(test_nets)} scored cells "
                        "(in-sample: its errors are optimistic); left out of the advice")
        elif (cal_on := getattr(model, "calibrated_on_", None)) and (n_cal := sum(
                (str(n.meta.get("arch_str") or n.name), str(n.meta.get("dataset"))) in cal_on
                for n in test_nets)):
            res.note = (f"its overhead terms were fitted on the end-to-end times of {n_cal} of "
                        "the scored networks (a few coefficients; its MAPE is slightly "
                        "optimistic)")
        if learned:
            with_sources = f", {len(sources)} source devices" if label == "transfer" else ""
            res.name = f"{label} (fit on {len(train_rows)}{with_sources})"
        res.build_measurements = _build_measurements(spec, model,
                                                     len(train_rows) if learned else None)
        ok, lat, _, res.first_error, secs, energy, partial = estimate_all(model, test_nets)
        secs = _best_time(model, test_nets, secs, res.first_error is None)
        res.n_covered = int(ok.sum())
        res.query_us = secs / len(test_nets) * 1e6 if res.n_covered else math.nan
        res.rows = test_rows[ok]
        res.y_true, res.y_pred, res.connected = y_true_all[ok], lat[ok], connected[ok]
        res.calibrated = _calibrated(model, [n for n, o in zip(test_nets, ok, strict=True) if o][:1])
        if not res.calibrated and not res.note:
            res.note = "uncalibrated proxy: scale arbitrary, only rank metrics are meaningful"
        res.note = lower_bound_note(res.note, partial)
        if res.n_covered >= 2:
            res.metrics = metrics.summary(res.y_true, res.y_pred, connected[ok])
            res.metrics.update(_energy_metrics(truth, test_rows[ok], energy[ok]))
        results.append(res)
    return ComparisonResult(truth_source=truth.source, device=truth.device,
                            dataset=dataset or "", n_truth=len(truth), train_rows=train_rows,
                            test_rows=test_rows, seed=seed, results=results,
                            train_samples=train_samples, space=_space_label(sp),
                            build_errors=build_errors)


def split_truth(truth: LatencyTable, sp: Any, dataset: str | None, batch: int,
                train_samples: int | None, seed: int
                ) -> tuple[list[Network | None], dict[str, str], np.ndarray, np.ndarray]:
    """The truth's networks (None where one cannot be built), the build errors, and the rows
    learned backends are fitted on and the rows scored (:func:`split_rows` over the rows
    that build). ``demo`` calibrates its LUT on the same training rows."""
    from costmodels.errors import CostModelError, InputError

    built: list[Network | None] = []
    build_errors: dict[str, str] = {a: f"failed in the truth table: {e}" for a, e in truth.failed}
    for a in truth.arch_str:
        try:
            built.append(sp.build_network(sp.parse(a), dataset, batch))
        except CostModelError as exc:
            build_errors[a] = _first_line(exc)
            built.append(None)
    usable = np.array([n is not None for n in built])
    if not usable.any():
        raise InputError(f"{truth.source}: none of its {len(truth)} networks could be built in "
                         f"{sp.spec}; first error: {next(iter(build_errors.values()))}")
    train_rows, test_rows = split_rows(int(usable.sum()), train_samples, seed)
    kept = np.flatnonzero(usable)
    return built, build_errors, kept[train_rows], kept[test_rows]


def _refuse_truth_copies(truth: LatencyTable, sp: Any, sources: Sequence[str],
                         backends: Sequence[str], priors: Sequence[str]) -> None:
    """Refuse a table among the sources, the backends or the priors that is the truth: its
    path, or another file holding the truth's figures on every network both list (5 or
    more, or all of a smaller truth). Scored against itself, it (or a model fitted on it)
    ranks perfectly and would be recommended."""
    from costmodels.errors import CostModelError, InputError
    from costmodels.registry import split_spec
    from costmodels.tables import holds_figures_of, read_table

    tables = [("--source", s) for s in sources]
    tables += [(role, arg) for role, specs in (("backend", backends), ("--prior", priors))
               for name, arg in map(split_spec, specs) if name == "table" and arg]
    for role, path in tables:
        same = bool(truth.source) and Path(path).resolve() == Path(truth.source).resolve()
        if not same:
            try:
                table = read_table(path, duplicates="mean", space=sp, absent="skip")
            except (CostModelError, OSError):
                continue  # reported where it is used
            same = holds_figures_of(table, truth, min_shared=min(5, len(truth)))
        if same:
            raise InputError(f"{role} {path} is the truth table itself (its path, or the "
                             "truth's latencies on every network both list); a predictor's "
                             "inputs must not hold the figures it is scored on")


def _space_label(sp: Any) -> str:
    name = getattr(sp, "name", "space")
    return f"models:{Path(sp.root).name}" if name == "models" else name


# ----------------------------------------------------------------------------- ONNX models
@dataclass
class ModelsResult:
    """Backends on a folder of ONNX models, against a measuring backend as truth.

    ``truth_ms[i]`` is nan where the truth backend failed on model i (its error
    in ``truth_errors``); ``rows`` of each :class:`BackendResult` index ``names``.
    """

    folder: str
    truth_spec: str
    names: list[str]
    macs: np.ndarray
    truth_ms: np.ndarray
    truth_errors: dict[str, str]
    results: list[BackendResult]

    def ranked(self, key: str = "spearman") -> list[BackendResult]:
        return rank(self.results, key)


def load_models(folder: str | Path, input_shapes: Any = None) -> tuple[list[str], list[Network]]:
    """Every ``*.onnx`` in ``folder`` (sorted) imported into the IR: the files a
    ``models:`` space of the folder holds (a link out of the folder, a broken link or a
    special file is skipped with a warning, never read)."""
    from costmodels.errors import UnknownSpace
    from costmodels.onnx_import import import_onnx
    from costmodels.spaces.models import ModelsSpace

    try:
        space = ModelsSpace(folder)
    except UnknownSpace:
        space = None
    if space is None or not space.size:
        raise FileNotFoundError(f"{folder}: no .onnx models there; write the generated set with "
                                f"`costmodels gen-models -o {folder}`")
    names = list(space.archs())
    return names, [import_onnx(str(space.path(n)), input_shapes=input_shapes) for n in names]


def compare_models(folder: str | Path,
                   backends: Sequence[str | CostModel | BackendResult | tuple[str, CostModel]],
                   truth: str | CostModel = "measure:ort", *, input_shapes: Any = None,
                   notes: Mapping[str, str] | None = None,
                   on_progress: Callable[[str], None] | None = None) -> ModelsResult:
    """Measure every ONNX model of ``folder`` with ``truth`` and score each backend on them.

    ``backends`` may hold the :class:`BackendResult` objects of :func:`compare`
    (their built or fitted models are reused, with their build cost), or
    ``(label, model)`` pairs, so that a predictor fitted on NAS-Bench-201 is
    tested off that space.
    Learned specs without a path cannot be fitted here (no training rows) and
    are recorded as failed.
    """
    from costmodels.registry import create

    names, nets = load_models(folder, input_shapes)
    if on_progress:
        on_progress(f"truth: {truth if isinstance(truth, str) else _spec_name(truth)}")
    truth_model = create(truth) if isinstance(truth, str) else truth
    ok, truth_ms, errors, *_ = estimate_all(truth_model, nets)
    truth_errors = {names[i]: str(errors[i]) for i in np.flatnonzero(~ok)}
    scored = np.flatnonzero(ok)
    scored_nets = [nets[i] for i in scored]
    notes = dict(notes or {})
    results = []
    shown = iter(display_names([s for s in backends if isinstance(s, str)]))
    for spec in backends:
        prior = None
        if isinstance(spec, BackendResult):  # a backend built (maybe fitted) by compare()
            prior, label, spec = spec, spec.name, spec.model
            if spec is None:
                continue  # it could not be built there; nothing to test here
        elif isinstance(spec, tuple):  # (label, fitted model)
            label, spec = spec
        else:
            label = next(shown) if isinstance(spec, str) else _spec_name(spec)
        if on_progress:
            on_progress(label)
        res = BackendResult(spec=spec if isinstance(spec, str) else label, name=label,
                            n_total=len(scored),
                            note=notes.get(label, prior.note if prior else ""))
        if prior:
            res.build_measurements, res.build_s = prior.build_measurements, prior.build_s
            res.fitted, res.reference_only = prior.fitted, prior.reference_only
        try:
            if isinstance(spec, str) and _is_learned(spec, False):
                raise ValueError(f"{spec} must be fitted first: give {spec}:DIR, or pass the "
                                 "model fitted by compare()")
            model, build_s = build_backend(spec, learned=False, train_nets=(),
                                           train_y=np.zeros(0), sources=())
            res.build_s = res.build_s or build_s
        except Exception as exc:  # noqa: BLE001
            res.first_error = _first_line(exc)
            results.append(res)
            continue
        res.model = model
        if res.build_measurements is None:
            res.build_measurements = _build_measurements(spec, model, None)
        hit, lat, _, res.first_error, secs, _, partial = estimate_all(model, scored_nets)
        res.note = lower_bound_note(res.note, partial)
        secs = _best_time(model, scored_nets, secs, res.first_error is None)
        res.n_covered = int(hit.sum())
        res.query_us = secs / len(scored_nets) * 1e6 if res.n_covered else math.nan
        res.rows = scored[hit]
        res.y_true, res.y_pred = truth_ms[scored][hit], lat[hit]
        res.calibrated = _calibrated(model, [n for n, h in zip(scored_nets, hit, strict=True) if h][:1])
        if res.n_covered >= 2:
            # a quarter, not summary's 5%: of a dozen models that is one (the report says so)
            res.metrics = metrics.summary(res.y_true, res.y_pred, k=max(1, res.n_covered // 4))
        results.append(res)
    return ModelsResult(str(folder), truth if isinstance(truth, str) else _spec_name(truth),
                        names, np.array([n.macs for n in nets], dtype=np.float64), truth_ms,
                        truth_errors, results)
