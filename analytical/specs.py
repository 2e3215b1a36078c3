"""Device and accelerator specs: versioned TOML files -> validated, frozen dataclasses.

A spec is data, never code: every hardware number the analytical models use lives
in a TOML file under ``analytical/specs/`` (or a file the user names), with its
source stated in a comment next to it. Units are part of every field name
(``peak_gflops``, ``clock_mhz``, ``glb_bytes``, ``mac_pj``); a field whose name
carries another unit (``peak_tflops``) is refused, not converted.

Loading validates types, ranges and choices and refuses a bad spec with
:class:`SpecError`, whose message names the file and the field::

    eyeriss.toml: field 'glb_bytes' must be > 0 (got -4)

Four kinds of spec: :class:`RooflineSpec` (CPU, GPU: one roofline per op class),
:class:`PredictorSpec` (Eyeriss as the DNN-Chip Predictor / HW-NAS-Bench model it),
:class:`EyerissSpec` (a physically derived row-stationary ASIC) and :class:`FpgaSpec`
(layer-wise FPGA accelerator). Each file says its ``kind``.
"""

from __future__ import annotations

import difflib
import math
import os
import tomllib
import types
import typing
from dataclasses import MISSING, dataclass, field, fields, is_dataclass
from pathlib import Path
from typing import Any, Literal, TypeVar

from costmodels.errors import CostModelError, control_characters, special_file

SCHEMA_VERSION = 1
T = TypeVar("T")


class SpecError(CostModelError, ValueError):
    """A spec file that is missing, malformed, or has a bad field; names the file and field."""


def _pos(**kw: Any) -> dict[str, Any]:
    """Field metadata: ``gt``/``ge``/``le`` bounds checked at load."""
    return kw


# ----------------------------------------------------------------------------- roofline
@dataclass(frozen=True)
class OpClassCost:
    """How one class of operator uses the machine.

    ``compute_efficiency``: fraction of ``peak_gflops`` the kernel reaches;
    ``memory_efficiency``: fraction of the bandwidth it reaches; ``launch_us``:
    fixed cost per kernel (dispatch, threading, setup), microseconds;
    ``traffic_factor``: bytes actually moved / bytes the IR counts (0 for views
    such as Flatten, which move nothing).
    """

    compute_efficiency: float = field(metadata=_pos(ge=1e-4, le=1))
    memory_efficiency: float = field(metadata=_pos(ge=1e-4, le=1))
    launch_us: float = field(metadata=_pos(ge=0, le=1e6))
    traffic_factor: float = field(default=1.0, metadata=_pos(ge=0))


@dataclass(frozen=True)
class RooflineSpec:
    """A processor as a roofline: peak compute, two bandwidths, per-op-class efficiencies.

    FLOPs are 2 per MAC plus one per element op. Memory traffic uses
    ``cache_bandwidth_gbps`` when a kernel's bytes fit in ``cache_bytes``, else
    ``llc_bandwidth_gbps`` when they fit in ``llc_bytes`` (an optional last-level
    cache; 0, the default, means none), else ``dram_bandwidth_gbps``.
    ``int8_peak_gflops``: the roof of the int8 classes (``conv_int8`` ...: a quantized
    model's kernels; 0, the default, means ``peak_gflops``).
    ``run_overhead_us`` is paid once per run of a network (the runtime's own call: feeds,
    outputs, scheduling; default 0). ``post_pass_ops``: ops a kernel absorbs (fused
    activations) but applies as one more pass over its output, each costing the output's
    bytes read and written at the ``elementwise`` class's memory rate (ONNX Runtime's
    convs apply ReLU in their registers, Clip and the like over the output buffer). ``ops`` must define every class of
    :data:`analytical.roofline.OP_CLASSES`; an optional class
    (:data:`analytical.roofline.OPTIONAL_CLASSES`, e.g. ``grouped``) falls back to the
    one named there when absent. ``fusion`` names the fusion rules of
    the runtime (:func:`costmodels.fusion.load_rules`): a shipped name (``"ort"``)
    or a ``.json`` path, relative to the spec file.
    """

    kind: Literal["roofline"]
    schema_version: int
    name: str
    description: str
    # floors: 1 MFLOP/s and 1 MB/s, below any processor (a typo's 1e-300 gave 1e301 ms)
    peak_gflops: float = field(metadata=_pos(ge=1e-3))
    dram_bandwidth_gbps: float = field(metadata=_pos(ge=1e-3))
    cache_bandwidth_gbps: float = field(metadata=_pos(ge=1e-3))
    cache_bytes: int = field(metadata=_pos(ge=0))
    ops: dict[str, OpClassCost]
    fusion: str
    llc_bandwidth_gbps: float = field(default=0.0, metadata=_pos(ge=0))
    llc_bytes: int = field(default=0, metadata=_pos(ge=0))
    run_overhead_us: float = field(default=0.0, metadata=_pos(ge=0, le=1e6))
    # the roof of the int8 classes (conv_int8, ...): 0, the default, means peak_gflops
    int8_peak_gflops: float = field(default=0.0, metadata=_pos(ge=0))
    post_pass_ops: tuple[str, ...] = ()
    calibration: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if 0 < self.llc_bandwidth_gbps < 1e-3:
            raise ValueError(f"field 'llc_bandwidth_gbps' must be 0 (no such level) or >= "
                             f"0.001 (got {self.llc_bandwidth_gbps})")
        if 0 < self.int8_peak_gflops < 1e-3:
            raise ValueError(f"field 'int8_peak_gflops' must be 0 (none) or >= 0.001 (got "
                             f"{self.int8_peak_gflops})")
        if self.llc_bytes and not self.llc_bandwidth_gbps:
            raise ValueError(f"field 'llc_bytes' is set ({self.llc_bytes}) but "
                             "'llc_bandwidth_gbps' is not: give both or neither")

    def bandwidth_gbps(self, nbytes: float) -> float:
        """The bandwidth streams of ``nbytes`` run at (:func:`level_bandwidth`)."""
        return level_bandwidth(nbytes, self)


def level_bandwidth(nbytes: float, levels: Any) -> float:
    """The bandwidth streams of ``nbytes`` run at on ``levels`` (a :class:`RooflineSpec` or a
    calibration: ``cache_bytes``, ``llc_bytes`` and the three ``*_bandwidth_gbps``): the
    cache's, the last-level cache's or DRAM's, by the smallest level they fit in."""
    if nbytes <= levels.cache_bytes:
        return levels.cache_bandwidth_gbps
    if nbytes <= levels.llc_bytes:
        return levels.llc_bandwidth_gbps
    return levels.dram_bandwidth_gbps


# ----------------------------------------------------------------------------- eyeriss
@dataclass(frozen=True)
class EyerissEnergy:
    """Energy per action, picojoules: one MAC, one value read or written in a scratchpad,
    one value moved one hop on the array network, one value read or written in the
    global buffer, one byte to or from DRAM, one post-processing op, one host op."""

    mac_pj: float = field(metadata=_pos(ge=0))
    spad_access_pj: float = field(metadata=_pos(ge=0))
    noc_transfer_pj: float = field(metadata=_pos(ge=0))
    glb_access_pj: float = field(metadata=_pos(ge=0))
    dram_byte_pj: float = field(metadata=_pos(ge=0))
    post_op_pj: float = field(metadata=_pos(ge=0))
    host_op_pj: float = field(metadata=_pos(ge=0))


@dataclass(frozen=True)
class EyerissSpec:
    """An Eyeriss-like row-stationary accelerator (Chen et al., ISCA 2016 / JSSC 2017)."""

    kind: Literal["eyeriss"]
    schema_version: int
    name: str
    description: str
    pe_rows: int = field(metadata=_pos(gt=0))
    pe_cols: int = field(metadata=_pos(gt=0))
    spad_ifmap_entries: int = field(metadata=_pos(gt=0))
    spad_weight_entries: int = field(metadata=_pos(gt=0))
    spad_psum_entries: int = field(metadata=_pos(gt=0))
    spad_word_bits: int = field(metadata=_pos(gt=0))
    glb_bytes: int = field(metadata=_pos(gt=0))
    glb_word_bits: int = field(metadata=_pos(gt=0))
    glb_words_per_cycle: float = field(metadata=_pos(gt=0))
    data_bits: int = field(metadata=_pos(gt=0))
    psum_bits: int = field(metadata=_pos(gt=0))
    clock_mhz: float = field(metadata=_pos(gt=0))
    dram_bandwidth_gbps: float = field(metadata=_pos(gt=0))
    layer_setup_cycles: int = field(metadata=_pos(ge=0))
    weights_in_glb: bool
    objective: Literal["energy", "latency", "edp"]
    pooling_on: Literal["pe_array", "post_processing", "host"]
    elementwise_on: Literal["pe_array", "post_processing", "host"]
    batchnorm: Literal["fold", "pe_array", "post_processing", "host"]
    activation_fused: bool
    post_processing_ops_per_cycle: float = field(metadata=_pos(gt=0))
    host_gops: float = field(metadata=_pos(gt=0))
    energy: EyerissEnergy


# ----------------------------------------------------------------------------- predictor
@dataclass(frozen=True)
class PredictorEnergy:
    """Energy per action, picojoules: one MAC, and one 16-bit value moved at each level
    (DRAM access, DRAM-to-global-buffer transfer, global buffer access, array network
    hop, register-file access)."""

    mac_pj: float = field(metadata=_pos(ge=0))
    dram_pj: float = field(metadata=_pos(ge=0))
    dram_to_glb_pj: float = field(metadata=_pos(ge=0))
    glb_pj: float = field(metadata=_pos(ge=0))
    noc_pj: float = field(metadata=_pos(ge=0))
    rf_pj: float = field(metadata=_pos(ge=0))


@dataclass(frozen=True)
class ReferenceOffset:
    """A fixed part of a reference's totals that its public code does not cost.

    Added to every network of ``key`` = ``"SPACE/DATASET"`` (e.g. ``"nb201/cifar10"``);
    ``source`` says where the figure comes from and how it was checked.
    """

    key: str
    latency_ms: float = field(metadata=_pos(ge=0))
    energy_mj: float = field(metadata=_pos(ge=0))
    source: str = ""


@dataclass(frozen=True)
class PredictorSpec:
    """Eyeriss as the DNN-Chip Predictor models it (the HW-NAS-Bench reference).

    Bounds of a legal tiling: ``pe_count`` PEs, ``spad_ifmap_words`` /
    ``spad_weight_words`` scratchpad words, ``psum_entries`` filters per PE,
    ``glb_words`` 16-bit words of global buffer. ``pool_mapping``: pooling as a
    ``"dense"`` C -> C convolution (the reference) or per channel (``"depthwise"``).
    Layers whose :func:`costmodels.ops.op_class` is in ``free_op_classes`` cost nothing.
    """

    kind: Literal["eyeriss_predictor"]
    schema_version: int
    name: str
    description: str
    clock_mhz: float = field(metadata=_pos(gt=0))
    pe_count: int = field(metadata=_pos(gt=1))
    spad_ifmap_words: int = field(metadata=_pos(gt=1))
    spad_weight_words: int = field(metadata=_pos(gt=1))
    psum_entries: int = field(metadata=_pos(gt=0))
    glb_words: int = field(metadata=_pos(gt=0))
    pool_mapping: Literal["dense", "depthwise"]
    free_op_classes: tuple[str, ...]
    energy: PredictorEnergy
    reference_offset: tuple[ReferenceOffset, ...] = ()

    def __post_init__(self) -> None:
        from costmodels.ops import OP_CLASSES

        bad = [c for c in self.free_op_classes if c not in OP_CLASSES]
        if bad:
            raise ValueError(f"field 'free_op_classes' has unknown op class(es) {', '.join(bad)}; "
                             f"expected some of {', '.join(OP_CLASSES)}")


# ----------------------------------------------------------------------------- fpga
@dataclass(frozen=True)
class FpgaEnergy:
    """Dynamic energy per action (picojoules) and static power (watts)."""

    mac_pj: float = field(metadata=_pos(ge=0))
    bram_byte_pj: float = field(metadata=_pos(ge=0))
    ddr_byte_pj: float = field(metadata=_pos(ge=0))
    vector_op_pj: float = field(metadata=_pos(ge=0))
    static_power_w: float = field(metadata=_pos(ge=0))


@dataclass(frozen=True)
class FpgaSpec:
    """A layer-wise FPGA CNN accelerator (Zhang et al., FPGA 2015 style ``Tm x Tn`` array)."""

    kind: Literal["fpga"]
    schema_version: int
    name: str
    description: str
    dsp_count: int = field(metadata=_pos(gt=0))
    dsps_per_mac: float = field(metadata=_pos(gt=0))
    unroll_out_channels: int = field(metadata=_pos(gt=0))
    unroll_in_channels: int = field(metadata=_pos(gt=0))
    clock_mhz: float = field(metadata=_pos(gt=0))
    bram_bytes: int = field(metadata=_pos(gt=0))
    bram_usable_fraction: float = field(metadata=_pos(gt=0, le=1))
    data_bits: int = field(metadata=_pos(gt=0))
    ddr_bandwidth_gbps: float = field(metadata=_pos(gt=0))
    ddr_efficiency: float = field(metadata=_pos(gt=0, le=1))
    vector_lanes: int = field(metadata=_pos(gt=0))
    layer_overhead_cycles: int = field(metadata=_pos(ge=0))
    fused_post_ops: tuple[str, ...]
    energy: FpgaEnergy
    # "per_action": energy = counts x energy table + static power x latency;
    # "board_power": energy = board_power_w x latency (what a board power report gives).
    energy_model: Literal["per_action", "board_power"] = "per_action"
    board_power_w: float = field(default=0.0, metadata=_pos(ge=0))

    def __post_init__(self) -> None:
        used = self.unroll_out_channels * self.unroll_in_channels * self.dsps_per_mac
        if used > self.dsp_count:
            raise ValueError(f"unroll {self.unroll_out_channels} x {self.unroll_in_channels} "
                             f"needs {used:g} DSPs but dsp_count is {self.dsp_count}")


KINDS: dict[str, type] = {"roofline": RooflineSpec, "eyeriss": EyerissSpec, "fpga": FpgaSpec,
                          "eyeriss_predictor": PredictorSpec}


def spec_kind(name_or_path: str) -> str | None:
    """The ``kind`` field of a spec (shipped name or path), without validating the rest."""
    return _read_toml(resolve_spec_path(name_or_path)).get("kind")


# ----------------------------------------------------------------------------- loading
def spec_dir() -> Path:
    """The folder of the specs shipped with the package."""
    return Path(__file__).resolve().parent / "specs"


def available_specs(kind: str | None = None) -> list[str]:
    """Names of the shipped specs (of one ``kind`` if given), sorted."""
    out = []
    for p in sorted(spec_dir().glob("*.toml")):
        if kind is None or _read_toml(p).get("kind") == kind:
            out.append(p.stem)
    return out


def resolve_spec_path(name_or_path: str) -> Path:
    """A shipped spec name (``x86_generic``) or a path to a TOML file -> the file's path."""
    p = Path(os.path.expanduser(name_or_path))
    if p.suffix == ".toml" or p.exists() or os.sep in name_or_path:
        if not p.is_file():
            kind = special_file(p) or ("a folder" if p.is_dir() else None)
            raise SpecError(f"{p}: is {kind}, not a spec file" if kind else
                            f"{p}: no such spec file")
        return p
    shipped = spec_dir() / f"{name_or_path}.toml"
    if not shipped.is_file():
        raise SpecError(f"unknown spec {name_or_path!r}; shipped specs: "
                        f"{', '.join(available_specs())} (or give a path to a .toml file)")
    return shipped


def load_spec(name_or_path: str, cls: type[T]) -> T:
    """Load and validate a spec of class ``cls`` (e.g. :class:`RooflineSpec`)."""
    path = resolve_spec_path(name_or_path)
    doc = _read_toml(path)
    kind = doc.get("kind")
    want = next(k for k, c in KINDS.items() if c is cls)
    if kind != want:
        raise SpecError(f"{path.name}: field 'kind' must be {want!r} for this model "
                        f"(got {kind!r})")
    if doc.get("schema_version") != SCHEMA_VERSION:
        raise SpecError(f"{path.name}: field 'schema_version' must be {SCHEMA_VERSION} "
                        f"(got {doc.get('schema_version')!r})")
    if kind == "roofline":
        _check_fusion_field(doc, path)
    return build(cls, doc, path.name)


def _check_fusion_field(doc: dict[str, Any], path: Path) -> None:
    """Resolve a roofline spec's ``fusion`` (rules name, or a path relative to the spec) in
    ``doc`` and refuse rules that do not load, naming the file and the field."""
    from costmodels.fusion import load_rules, shipped_rules

    value = doc.get("fusion")
    if not isinstance(value, str):
        was = " (the [fusion] table of older specs is replaced by a rules name)" \
            if isinstance(value, dict) else ""
        raise SpecError(f"{path.name}: field 'fusion' must name fusion rules: one of "
                        f"{', '.join(shipped_rules())} or a .json path, e.g. fusion = \"ort\" "
                        f"(got {value!r}){was}")
    rules = Path(os.path.expanduser(value))
    if (rules.suffix == ".json" or os.sep in value) and not rules.is_absolute():
        doc["fusion"] = str(path.parent / rules)
    try:
        load_rules(doc["fusion"])
    except CostModelError as exc:
        raise SpecError(f"{path.name}: field 'fusion': {exc}") from None


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        raw = Path(path).read_bytes()
        return tomllib.loads(raw.decode("utf-8-sig"))  # a BOM, as tables accept one
    except OSError as exc:
        raise SpecError(f"{path}: cannot read spec: {exc.strerror}") from None
    except UnicodeDecodeError as exc:  # the line, not a byte offset, tells where
        line = raw[:exc.start].count(b"\n") + 1
        raise SpecError(f"{path.name}: line {line}: not UTF-8 text (byte {raw[exc.start]:#x}); "
                        "save the spec as UTF-8") from None
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"{path.name}: not valid TOML: {exc}") from None
    except RecursionError:
        raise SpecError(f"{path.name}: not a spec: its tables or arrays are nested thousands "
                        "deep") from None


def build(cls: type[T], doc: dict[str, Any], source: str, prefix: str = "") -> T:
    """Validate the mapping ``doc`` into dataclass ``cls``; errors name ``source`` and field."""
    hints = typing.get_type_hints(cls)
    known = {f.name for f in fields(cls)}
    for key in doc:
        if key not in known:
            close = difflib.get_close_matches(key, known, n=1, cutoff=0.5)
            hint = (f"; did you mean {close[0]!r}? (units are part of field names)"
                    if close else f"; expected one of {', '.join(sorted(known))}")
            raise SpecError(f"{source}: unknown field {prefix + key!r}{hint}")
    values: dict[str, Any] = {}
    for f in fields(cls):
        name = prefix + f.name
        if f.name not in doc:
            if f.default is MISSING and f.default_factory is MISSING:
                raise SpecError(f"{source}: missing field {name!r}")
            continue
        values[f.name] = _convert(hints[f.name], doc[f.name], source, name)
        _check_bounds(f.metadata, values[f.name], source, name)
    try:
        return cls(**values)
    except (TypeError, ValueError) as exc:
        raise SpecError(f"{source}: {prefix or 'spec'}: {exc}") from None


def _convert(tp: Any, value: Any, source: str, name: str) -> Any:
    origin = typing.get_origin(tp)
    if is_dataclass(tp):
        if not isinstance(value, dict):
            raise SpecError(f"{source}: field {name!r} must be a table")
        return build(tp, value, source, name + ".")
    if origin is Literal:
        if value not in typing.get_args(tp):
            choices = ", ".join(repr(a) for a in typing.get_args(tp))
            raise SpecError(f"{source}: field {name!r} must be one of {choices} (got {value!r})")
        return value
    if origin is dict:
        if not isinstance(value, dict):
            raise SpecError(f"{source}: field {name!r} must be a table")
        _, vt = typing.get_args(tp)
        return types.MappingProxyType(
            {k: _convert(vt, v, source, f"{name}.{k}") for k, v in value.items()})
    if origin is tuple:
        if not isinstance(value, list):
            raise SpecError(f"{source}: field {name!r} must be an array")
        et = typing.get_args(tp)[0]
        return tuple(_convert(et, v, source, f"{name}[{i}]") for i, v in enumerate(value))
    if tp is Any:
        return value
    if tp is bool:
        ok = isinstance(value, bool)
    elif tp is int:
        ok = isinstance(value, int) and not isinstance(value, bool)
    elif tp is float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        try:
            value = float(value) if ok else value
        except OverflowError:  # an integer of hundreds of digits
            raise SpecError(f"{source}: field {name!r} must be a finite number (got an "
                            f"integer of {len(str(value))} digits)") from None
        if ok and not math.isfinite(value):
            raise SpecError(f"{source}: field {name!r} must be a finite number (got {value!r})")
    else:
        ok = isinstance(value, tp)
    if not ok:
        raise SpecError(f"{source}: field {name!r} must be {tp.__name__} (got {value!r})")
    if tp is str and control_characters(value):
        raise SpecError(f"{source}: field {name!r} holds control characters (a newline, a "
                        f"terminal escape: {value!r:.60}); write it on one line of plain text")
    return value



# A field that must be positive is also held to a physical range: a clock of 1e-300 MHz gave
# 1e302 ms, and an array of 10**18 PEs ran out of memory mapping its first layer.
POSITIVE_FLOOR = 1e-6
MAX_COUNT, MAX_BYTES = 1 << 24, 1 << 40


def _check_bounds(meta: Any, value: Any, source: str, name: str) -> None:
    if "gt" in meta and not value > meta["gt"]:
        raise SpecError(f"{source}: field {name!r} must be > {meta['gt']} (got {value!r})")
    if "gt" in meta and isinstance(value, float) and value < POSITIVE_FLOOR:
        raise SpecError(f"{source}: field {name!r} must be at least {POSITIVE_FLOOR:g} (got "
                        f"{value!r})")
    if "gt" in meta and isinstance(value, int) and not isinstance(value, bool):
        most = MAX_BYTES if name.endswith(("bytes", "words")) else MAX_COUNT
        if value > most:
            raise SpecError(f"{source}: field {name!r} must be at most {most:,} (got "
                            f"{value:.3g})")
    if "ge" in meta and not value >= meta["ge"]:
        raise SpecError(f"{source}: field {name!r} must be >= {meta['ge']} (got {value!r})")
    if "le" in meta and not value <= meta["le"]:
        raise SpecError(f"{source}: field {name!r} must be <= {meta['le']} (got {value!r})")
