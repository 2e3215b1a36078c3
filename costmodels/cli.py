"""The ``costmodels`` command line.

Core commands live here; each backend package adds its own in ``<pkg>/cli.py``
through ``register(subparsers)`` (handlers import their backend lazily, so
``costmodels --help`` stays fast and works without optional extras).
"""

from __future__ import annotations

import argparse
import csv
import importlib
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from costmodels.errors import CostModelError, UnknownBackend

# Packages that add subcommands: module with `register(subparsers)`.
PLUGINS = ("measure.cli", "measure.lut_cli", "measure.tvm_cli", "analytical.cli", "predictors.cli",
           "costmodels.harness.cli", "costmodels.demo")

EPILOG = """\
examples:
  costmodels archs --space nb201 --sample 200 --seed 0 > sample.csv
  costmodels info '|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|nor_conv_3x3~0|nor_conv_3x3~1|nor_conv_3x3~2|'
  costmodels estimate flops --space nb201 --dataset cifar10 -o flops.csv
  costmodels backends
"""


class Formatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """Keeps the examples' layout and shows defaults (not ``None``, ``[]``, ``''`` or
    ``False``, and not where the help already says what the default is); a list default
    the way it is typed (``10,20``), not as a Python list."""

    def _get_help_string(self, action):
        text = action.help or ""
        if action.default in (None, [], False, "") or "default" in text or action.required:
            return text
        if isinstance(action.default, (list, tuple)):
            return f"{text} (default: {','.join(map(str, action.default))})"
        return super()._get_help_string(action)


class Parser(argparse.ArgumentParser):
    """argparse with the toolkit's one error line: ``error: <what>`` and exit code 2."""

    def error(self, message: str):  # noqa: D401 - argparse API
        sys.stderr.write(f"error: {message} (see `{self.prog} --help`)\n")
        raise SystemExit(2)

    def _print_message(self, message: str, file=None) -> None:
        """argparse's, without swallowing a failed write (``--help > /dev/full`` exited 0
        having written nothing): the failure reaches :func:`main`'s one error line."""
        if message:
            (file or sys.stderr).write(message)


# ----------------------------------------------------------------------------- value types
def positive_int(text: str) -> int:
    """argparse type: an integer > 0."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if v <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer (> 0), got {v}")
    return v


def one_line(text: str) -> str:
    """argparse type: text without control characters (a newline or a terminal escape,
    which would rewrite the terminal when the text is printed back)."""
    from costmodels.errors import control_characters

    if control_characters(text):
        raise argparse.ArgumentTypeError(f"holds control characters ({text!r:.60}); give "
                                         "one line of plain text")
    return text


def nonneg_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer >= 0, got {text!r}") from None
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be >= 0, got {v}")
    return v


SEED_MAX = 2**32 - 1   # what every generator a seed reaches takes (numpy, XGBoost, torch)
BATCH_MAX = 65536


def seed_int(text: str) -> int:
    """argparse type: a seed, an integer in 0 .. 2**32 - 1."""
    v = nonneg_int(text)
    if v > SEED_MAX:
        raise argparse.ArgumentTypeError(f"must be at most {SEED_MAX} (2**32 - 1), got {v}")
    return v


def batch_int(text: str) -> int:
    """argparse type: a batch size, 1 .. :data:`BATCH_MAX`."""
    v = positive_int(text)
    if v > BATCH_MAX:
        raise argparse.ArgumentTypeError(f"must be at most {BATCH_MAX}, got {v}")
    return v


# Existing files the running command reads (set by :func:`main` from its arguments): an
# output path that is one of them is refused, so no input is ever overwritten.
_INPUT_FILES: set[Path] = set()
# Arguments that name what a command writes (or, for a store, resumes): never inputs.
_OUTPUT_ARGS = frozenset({"output", "out", "db", "work_dir", "png"})


def _input_files(args) -> set[Path]:
    """Existing files named by the parsed arguments (a ``models:DIR`` folder's ``.onnx``
    files too), resolved, and those they read in turn: the files a saved model's priors
    name (its manifest's ``params.prior``) and the local roofline spec a bare ``roofline``
    reads. The output arguments are left out."""
    found: set[Path] = set()
    for key, value in vars(args).items():
        if key in _OUTPUT_ARGS or key == "func" or key.endswith("command"):  # the subcommand
            continue                                  # names (`roofline calibrate`): no files
        for v in value if isinstance(value, (list, tuple)) else [value]:
            if isinstance(v, (str, Path)):
                _add_inputs(str(v), found, depth=0)
    return found


def _add_inputs(v: str, found: set[Path], depth: int) -> None:
    """Add to ``found`` the files that argument or backend spec ``v`` names (a saved
    model's folder: all of its files, and what its priors name, 4 levels deep at most; a
    bare ``roofline``: the local calibrated spec it loads, which only it reads, so that
    ``roofline calibrate`` may still write it)."""
    import json

    if v.strip() == "roofline":
        try:
            from analytical.roofline import local_spec_path

            if (local := local_spec_path()).is_file():
                found.add(local.resolve())
        except (OSError, RuntimeError, ValueError):
            pass
        return
    spec = v.partition(":")[2]  # a backend spec: lut:PATH?uncalibrated
    for cand in {v, spec, spec.partition("?")[0]} - {""}:
        try:
            p = Path(cand).expanduser()
            if p.is_file():
                found.add(p.resolve())
            elif p.is_dir():
                # a saved model's folder (gbdt:DIR) is all input; else its models
                manifest = p / "manifest.json"
                pattern = "*" if manifest.is_file() else "*.onnx"
                found.update(f.resolve() for f in p.glob(pattern) if f.is_file())
                if manifest.is_file() and depth < 4 and manifest.stat().st_size < 1 << 24:
                    prior = (json.loads(manifest.read_text(encoding="utf-8"))
                             .get("params", {}).get("prior"))
                    for s in prior if isinstance(prior, list) else []:
                        if isinstance(s, str):
                            _add_inputs(s, found, depth + 1)
        except (OSError, RuntimeError, ValueError, AttributeError, RecursionError):
            continue


def check_output(path: str | Path, what: str = "output file", text: bool = True,
                 json_ok: bool = False, png_ours_only: bool = False) -> Path:
    """Fail before any work if ``path`` cannot be written (a file, not a directory).

    Creates nothing: checks that the file (if it exists) is a writable regular
    file, not one of the command's inputs and (``text``: the command writes a text file)
    not a binary file such as a model or a database, nor (unless ``json_ok``: the command
    writes JSON) a JSON document such as a fitted model's manifest, and that its nearest
    existing parent is a writable directory.
    """
    import os
    import stat

    from costmodels.errors import InputError

    p = Path(path)
    if str(path).strip() == "":
        raise InputError(f"{what}: empty path")
    if str(path) == "-":
        raise InputError(f"{what} -: costmodels writes its outputs to files, not to stdout; "
                         "give a file name (nothing was written)")
    if str(path).endswith(("/", os.sep)) and not p.is_dir():
        raise InputError(f"{what} {path}: names a folder (it ends with '/'); give a file name "
                         "(nothing was written)")
    if p.is_symlink():  # a link is written through: its target must be a path that can be
        try:
            p.resolve(strict=False)
        except (OSError, RuntimeError):  # a loop of links
            raise InputError(f"{what} {path}: a symbolic link that loops; give a file "
                             "name (nothing was written)") from None
        if not p.exists() and not p.resolve().parent.is_dir():
            raise InputError(f"{what} {path}: a symbolic link to {p.resolve()}, whose folder "
                             "does not exist; give a file name (nothing was written)")
    if p.exists():
        if p.is_dir():
            raise InputError(f"{what} {path}: is a directory; give a file name")
        if not stat.S_ISREG(p.stat().st_mode):  # a device, a pipe, a socket (links followed)
            raise InputError(f"{what} {path}: is not a regular file (a device or a pipe); "
                             "costmodels writes a file beside the target and renames it over "
                             "it when complete, so give a file path (nothing was written)")
        if p.resolve() in _INPUT_FILES:
            raise InputError(f"{what} {path}: is one of this command's inputs; give another "
                             "file name (nothing was written)")
        _check_png(p, what, png_ours_only)
        if text:
            try:
                with p.open("rb") as fh:
                    head = fh.read(1 << 16)
            except OSError:
                head = b""
            if b"\0" in head:
                raise InputError(f"{what} {path}: exists and is a binary file (a model or a "
                                 "database?), not a text file this command writes; give "
                                 "another file name (nothing was written)")
            if not json_ok and head.lstrip(b"\xef\xbb\xbf \t\r\n")[:1] == b"{":
                raise InputError(f"{what} {path}: exists and holds a JSON document (a fitted "
                                 "model's manifest, a fingerprint?), not a table this command "
                                 "writes; give another file name (nothing was written)")
        if not os.access(p, os.W_OK):
            raise InputError(f"{what} {path}: not writable (permission denied)")
        return p
    parent = p.parent if str(p.parent) else Path(".")
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise InputError(f"{what} {path}: {parent} is a file, not a folder")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise InputError(f"{what} {path}: cannot create it in {parent} (permission denied)")
    import tempfile

    try:  # access() says yes to root everywhere (/proc too): try it; leaves no file behind
        tempfile.TemporaryFile(dir=parent).close()
    except OSError as exc:
        raise InputError(f"{what} {path}: cannot create files in {parent} "
                         f"({exc.strerror or exc}); give a writable path") from None
    return p


def needs_command(parser: argparse.ArgumentParser):
    """The ``func`` of a command group called without one of its commands: one error line
    listing them, on stderr, exit 2 (as any other usage error)."""
    def run(args: argparse.Namespace) -> int:
        choices = next((list(a.choices) for a in parser._actions
                        if isinstance(a, argparse._SubParsersAction)), [])
        print(f"error: `{parser.prog}` needs a command: {', '.join(choices)} (see "
              f"`{parser.prog} --help`)", file=sys.stderr)
        return 2
    return run


PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


def png_software(p: Path) -> str | None:
    """The ``Software`` text of PNG file ``p`` ('' if it has none), or None if ``p`` is not
    a PNG that can be read. Reads the chunks before the image data only."""
    import struct

    try:
        with p.open("rb") as fh:
            if fh.read(8) != PNG_SIGNATURE:
                return None
            for _ in range(64):
                head = fh.read(8)
                if len(head) < 8:
                    return ""
                size, kind = struct.unpack(">I4s", head)
                if kind in (b"IDAT", b"IEND") or size > 1 << 20:
                    return ""
                body = fh.read(size + 4)[:size]
                if kind == b"tEXt" and body.startswith(b"Software\0"):
                    return body[9:].decode("latin-1")
    except OSError:
        return None
    return ""


def _check_png(p: Path, what: str, ours_only: bool = False) -> None:
    """A figure (``.png``) is written only over a PNG image: a file of another kind there is
    someone's (a ``.png`` holding text was replaced by a plot). ``ours_only``: the command
    names the figure itself (beside its ``-o``), so only a figure costmodels wrote is
    replaced, not an image of the user's."""
    if p.suffix.lower() != ".png" or not p.is_file():
        return
    from costmodels.errors import InputError
    from costmodels.harness.report import PNG_SOFTWARE

    soft = png_software(p)
    if soft is None:
        raise InputError(f"{what} {p}: exists and is not a PNG image, which this command would "
                         "write there; give another name, or move that file (nothing was "
                         "written)")
    if ours_only and PNG_SOFTWARE not in soft:
        raise InputError(f"{what} {p}: exists and is an image costmodels did not write "
                         f"(Software: {soft[:60] or 'none'}); this command writes its figure "
                         "there: give another -o, or move that image (nothing was written)")


EXPORT_MARK = "costmodels.export"  # metadata key `export` writes: what it may overwrite


def check_overwrite_model(path: Path, what: str, producers: Sequence[str] = (),
                          advice: str = "give another file name",
                          marks: Sequence[str] = (EXPORT_MARK,)) -> None:
    """Refuse an existing file at ``path`` unless it is a model this command wrote before
    (a metadata key in ``marks``, or a ``producer_name`` in ``producers``): another model, a
    table or a database there would be replaced. Raises :class:`InputError`; reads only the
    file's header fields, never its external data."""
    from costmodels.errors import InputError

    if not path.is_file():
        return
    try:
        import onnx

        proto = onnx.load(str(path), load_external_data=False)
        ours = (any(p.key in marks for p in proto.metadata_props)
                or proto.producer_name in producers)
    except Exception:  # noqa: BLE001 - not a model at all: not ours either
        ours = False
    if not ours:
        raise InputError(f"{what} {path}: exists and is not a model this command wrote (a "
                         f"model of yours, a table or a database?); {advice}, or remove it "
                         "first (nothing was written)")


def check_output_dir(path: str | Path, what: str = "output folder",
                     writes: Sequence[str] = ()) -> Path:
    """Fail before any work if folder ``path`` cannot be created or written, or if one of
    the files the command ``writes`` there is one of its inputs."""
    import os

    from costmodels.errors import InputError

    if not str(path).strip():
        raise InputError(f"{what}: an empty path; name the folder")
    p = Path(path)
    if p.is_symlink() and not p.exists():  # a loop of links, or a link to nowhere
        raise InputError(f"{what} {path}: a symbolic link to nothing that exists (or a loop "
                         "of links); name a folder (nothing was written)")
    if p.exists():
        if not p.is_dir():
            raise InputError(f"{what} {path}: exists and is not a folder")
        if not os.access(p, os.W_OK | os.X_OK):
            raise InputError(f"{what} {path}: not writable (permission denied)")
        for name in writes:
            try:
                real = (p / name).resolve()
            except (OSError, RuntimeError):  # a link that loops
                raise InputError(f"{what} {path}: {name} there is a symbolic link that loops; "
                                 "this command writes that file: remove the link or give "
                                 "another folder (nothing was written)") from None
            if real in _INPUT_FILES:
                raise InputError(f"{what} {path}: this command writes {name} there, which is "
                                 "one of its inputs; give another folder (nothing was written)")
            _check_png(p / name, what)
        return p
    check_output(p, what)
    return p


def check_distinct_outputs(args) -> None:
    """Two output arguments naming one path (``--db S -o S``) would overwrite each other."""
    from costmodels.errors import InputError

    seen: dict[Path, str] = {}
    for key in sorted(_OUTPUT_ARGS):
        value = getattr(args, key, None)
        if not isinstance(value, (str, Path)) or str(value).strip() == "":
            continue
        try:
            p = Path(value).expanduser().resolve()
        except (OSError, RuntimeError, ValueError):
            continue
        if p in seen:
            def flag(k: str) -> str:
                return {"output": "-o", "db": "--db"}.get(k, f"--{k.replace('_', '-')}")

            raise InputError(f"{flag(seen[p])} and {flag(key)} both name {value}; each needs "
                             "its own file (nothing was written)")
        seen[p] = key


# ----------------------------------------------------------------------------- spaces
SPACE_HELP = ("search space: nb201, fbnet, or models:DIR (every *.onnx in DIR is one "
              "architecture, named by its file stem)")
DATASET_HELP = ("dataset the networks are built for; nb201: cifar10 (default), cifar100, "
                "ImageNet16-120; fbnet: cifar100 (default), ImageNet; none for models:DIR")
INPUT_SHAPE_HELP = ("fix dynamic input shapes of ONNX models: 1x3x224x224, or "
                    "NAME=1x3x224x224 per input (repeat for several inputs)")


def add_space_args(p: argparse.ArgumentParser, archs: bool = True,
                   archs_default: str = ("the whole space (nb201: 15,625 cells; models:DIR: "
                                         "every file; fbnet must be sampled)")) -> None:
    """The options that select networks of a search space; shared by every command.

    ``archs_default``: what the command takes without ``--archs``/``--sample`` (help text).
    """
    p.add_argument("--space", default="nb201", metavar="SPACE", help=SPACE_HELP)
    p.add_argument("--dataset", default=None, help=DATASET_HELP)
    p.add_argument("--batch", type=batch_int, default=1, help="batch size of built networks")
    if "--input-shape" not in p._option_string_actions:
        p.add_argument("--input-shape", action="append", metavar="[NAME=]1x3x224x224",
                       help=INPUT_SHAPE_HELP)
    if archs:
        p.add_argument("--archs", metavar="FILE.csv",
                       help="only the architectures listed in this CSV (an arch_str or "
                            f"arch_index column); default: {archs_default}")
        p.add_argument("--sample", type=positive_int, metavar="N",
                       help="a random sample of N architectures (of those --archs lists, "
                            "when given)")
        p.add_argument("--seed", type=seed_int, default=0, help="seed of --sample")


def open_space(args: argparse.Namespace):
    """The space of ``--space`` (with ``--input-shape``), its dataset checked."""
    from costmodels.spaces import get_space

    shapes = None
    if getattr(args, "input_shape", None):
        from costmodels.onnx_import import parse_input_shapes

        shapes = parse_input_shapes(args.input_shape)
    spec = getattr(args, "space", None)
    space = get_space("nb201" if spec is None else spec, input_shapes=shapes)
    args.dataset = space.check_dataset(getattr(args, "dataset", None))
    if shapes and not space.spec.startswith("models:"):  # it was ignored without a word
        print(f"note: --input-shape applies to ONNX models (a models:DIR folder or a .onnx "
              f"file); the networks of {space.spec} are built at their dataset's size "
              "(--dataset) and --batch", file=sys.stderr)
    return space


def selected_archs(args: argparse.Namespace):
    """``(space, arch_strs)`` chosen by --space / --archs / --sample (all by default)."""
    space = open_space(args)
    if getattr(args, "seed", 0) and not getattr(args, "sample", None):  # it was ignored
        print(f"note: --seed {args.seed} seeds --sample only; without --sample every "
              "architecture is used", file=sys.stderr)
    if getattr(args, "archs", None) is not None:  # '' is a mistake, not "all of them"
        listed = read_arch_list(args.archs, space)
        n = getattr(args, "sample", None)
        if n:  # both: a sample of the listed ones (it used them all, without a word)
            from costmodels.errors import InputError

            if n > len(listed):
                raise InputError(f"--sample {n}: {args.archs} lists {len(listed)} "
                                 "architectures; give a smaller sample")
            import numpy as np

            rng = np.random.default_rng(args.seed)
            return space, [listed[i] for i in sorted(rng.choice(len(listed), n, replace=False))]
        return space, listed
    if getattr(args, "sample", None):
        return space, space.sample(args.sample, args.seed)
    return space, list(space.archs())


def selected_indices(args: argparse.Namespace) -> list[int]:
    """Standard indices chosen by --archs / --sample (NB201-style spaces only)."""
    from costmodels.errors import UnknownSpace

    space, archs = selected_archs(args)
    if not space.has_index:
        raise UnknownSpace(f"space {space.spec!r} has no standard index")
    return [space.index(a) for a in archs]


def read_arch_list(path: str, space=None) -> list[str]:
    """Canonical arch strings from a CSV with an ``arch_str`` or ``arch_index`` column."""
    from costmodels.errors import TableError, UnknownArchitecture, short_repr
    from costmodels.spaces import get_space
    from costmodels.tables import iter_csv

    space = space or get_space("nb201")
    cols, rows = iter_csv(path, "architecture list")
    if "arch_str" not in cols and "arch_index" not in cols:
        raise TableError(f"{path}: needs an arch_str or arch_index column "
                         f"(found {','.join(c for c in cols if c) or 'nothing'})")
    out: list[str] = []
    seen: dict[str, int] = {}
    for line, row in rows:
        text = (row.get("arch_str") or "").strip() or (row.get("arch_index") or "").strip()
        raw_idx = (row.get("arch_index") or "").strip()
        if not text:
            raise TableError(f"{path}:{line}: empty arch_str and arch_index")
        if not row.get("arch_str") and not text.isdigit():
            raise TableError(f"{path}:{line}: field 'arch_index' is not an integer: "
                             f"{short_repr(text)}")
        if not row.get("arch_str") and len(text) > 18:  # past any space's size (and int())
            raise TableError(f"{path}:{line}: field 'arch_index' is {len(text)} digits long, "
                             "past any space's size")
        try:
            arch = space.parse(int(text) if text.isdigit() and not row.get("arch_str")
                               else text)
        except UnknownArchitecture as exc:
            raise TableError(f"{path}:{line}: {exc}") from None
        if row.get("arch_str") and raw_idx and getattr(space, "strict_index", False):
            std = space.index(arch)
            if std is not None and str(std) != raw_idx:  # as read_table refuses it
                raise TableError(f"{path}:{line}: arch_index {raw_idx} does not match "
                                 f"arch_str; the standard index of that architecture is {std}")
        if arch in seen:
            raise TableError(f"{path}:{line}: architecture listed again (first at line "
                             f"{seen[arch]}); list each once")
        seen[arch] = line
        out.append(arch)
    if not out:
        raise TableError(f"{path}: lists no architectures")
    return out


def build_networks(space, archs: Sequence[str] | None = None, dataset: str | None = None,
                   batch: int = 1, *, errors: list | None = None):
    """Networks of ``archs`` in ``space``.

    With ``errors`` (a list), a model that fails to build is recorded there as
    ``(arch, exception)`` and yields ``None`` in its place instead of raising.
    Backwards compatible form: ``build_networks(indices, dataset, batch)`` for NB201.
    """
    from costmodels.errors import CostModelError
    from costmodels.spaces import SearchSpace, get_space

    if not isinstance(space, SearchSpace):  # old call: (indices, dataset, batch)
        space, archs, dataset, batch = get_space("nb201"), space, archs, dataset or 1
        archs = [space.parse(int(i)) for i in archs]
    out = []
    for a in archs:
        try:
            out.append(space.build_network(a, dataset, batch))
        except CostModelError as exc:
            if errors is None:
                raise
            errors.append((a, exc))
            out.append(None)
    return out


def progress(description: str = "working"):
    """A rich progress bar on stderr (kept here for the CLI; library code uses costmodels.progress)."""
    from costmodels.progress import progress as _progress

    return _progress(description)


# ----------------------------------------------------------------------------- commands
def cmd_archs(args: argparse.Namespace) -> int:
    space, archs = selected_archs(args)
    w = csv.writer(sys.stdout, lineterminator="\n")  # a model named a,b.onnx is quoted
    w.writerow(["arch_index", "arch_str"])
    for a in archs:
        i = space.index(a)
        w.writerow(["" if i is None else i, a])
    return 0


def load_network(target: str, dataset: str | None, batch: int, input_shapes: list[str] | None,
                 space: str = "nb201"):
    """An ONNX path, or an architecture of ``space`` (arch string or index) -> Network."""
    from costmodels.errors import UnknownArchitecture
    from costmodels.spaces import get_space

    path = Path(target)

    def is_file() -> bool:
        try:
            return path.exists() and not path.is_dir() and not target.isdigit()
        except OSError:  # a name too long to be a path: an architecture string, or a typo
            return False

    if target.lower().endswith(".onnx") or is_file():
        from costmodels.onnx_import import parse_input_shapes
        from costmodels.spaces.models import batch_note, import_model_file

        given = parse_input_shapes(input_shapes or [])
        # as in a models:DIR folder: without --input-shape a dynamic batch takes --batch
        net, how = import_model_file(target, batch, given)
        if given and batch != 1 and not how.uses_batch:
            print(f"warning: --batch {batch} ignored: --input-shape gives {target}'s "
                  "input shapes, batch included", file=sys.stderr)
        if note := batch_note(how, batch):
            print(note, file=sys.stderr)
        first_shape = net.inputs[0][1] if net.inputs else ()
        if how == "model" and batch != 1 and first_shape and first_shape[0] != batch:
            print(f"warning: --batch {batch} ignored: {target} fixes its input "
                  f"{net.inputs[0][0]!r} at {'x'.join(map(str, first_shape))} in the file; "
                  "export it with a dynamic batch axis to change it", file=sys.stderr)
        return net
    shapes = None
    if input_shapes:
        from costmodels.onnx_import import parse_input_shapes

        shapes = parse_input_shapes(input_shapes)
    sp = get_space(space, input_shapes=shapes)
    try:
        arch = sp.parse(target)
    except UnknownArchitecture as exc:
        raise UnknownArchitecture(target, f"{exc.reason} (space {sp.spec}; an ONNX file must "
                                          "end in .onnx)") from None
    return sp.build_network(arch, sp.check_dataset(dataset), batch)


def cmd_info(args: argparse.Namespace) -> int:
    net = load_network(args.model, args.dataset, args.batch, args.input_shape, args.space)
    if args.json:
        doc = {"name": net.name, **net.totals(),
               "meta": {k: v for k, v in net.meta.items() if k != "ops"}}
        if not args.totals_only:
            doc["layers"] = [layer._asdict() for layer in net.layers]
        json.dump(doc, sys.stdout, indent=1, default=list)
        sys.stdout.write("\n")
        return 0
    from rich.table import Table

    from costmodels.progress import console as progress_console

    t = Table(title=f"{net.name}  ({len(net)} layers)", show_lines=False)
    for col in ("layer", "op", "output", "kernel/stride", "MACs", "params", "bytes"):
        t.add_column(col, justify="right" if col in ("MACs", "params", "bytes") else "left")
    for layer in net.layers:
        ks = "x".join(map(str, layer.kernel))  # a Resize's taps have no stride
        ks += f"/{'x'.join(map(str, layer.stride))}" if layer.kernel and layer.stride else ""
        t.add_row(layer.name, layer.op, "x".join(map(str, layer.output_shape)), ks,
                  f"{layer.macs:,}", f"{layer.params:,}", f"{layer.bytes_total:,}")
    console = progress_console()
    if not args.totals_only:
        console.print(t)
    tot = net.totals()
    console.print(f"[bold]totals[/]: {tot['macs'] / 1e6:.2f} M MACs, {tot['params'] / 1e6:.3f} M "
                  f"params, {tot['bytes'] / 1e6:.2f} MB moved, {tot['layers']} layers")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    from costmodels.tables import atomic_output

    # a binary file: an earlier export is overwritten, nothing else (a database, a table,
    # a model of the user's)
    out = check_output(args.output, "-o", text=False)
    check_overwrite_model(out, "-o")
    space = open_space(args)
    arch = space.parse(args.arch)
    model = space.build_onnx(arch, args.dataset, args.batch, seed=args.seed)
    if args.seed and space.spec.startswith("models:"):
        print(f"note: --seed {args.seed} does not apply to a model file: {arch} is written "
              "with its own weights (its inputs fixed to the shapes it is costed at)",
              file=sys.stderr)
    out.parent.mkdir(parents=True, exist_ok=True)
    mark = model.metadata_props.add()
    mark.key, mark.value = EXPORT_MARK, f"{space.spec} {arch}"
    with atomic_output(out, "wb") as fh:
        fh.write(model.SerializeToString())
    print(f"wrote {args.output} ({arch}{', ' + args.dataset if args.dataset else ''})",
          file=sys.stderr)
    return 0


def cmd_backends(args: argparse.Namespace) -> int:
    from costmodels.registry import BACKENDS

    width = max(map(len, BACKENDS))
    for name, (_, text) in BACKENDS.items():
        print(f"{name:<{width}}  {text}")
    return 0


def cmd_spaces(args: argparse.Namespace) -> int:
    from costmodels.spaces import SPACES

    width = max(map(len, SPACES))
    for name, (_, text) in SPACES.items():
        print(f"{name:<{width}}  {text}")
    return 0


def cmd_estimate(args: argparse.Namespace) -> int:
    import math

    from costmodels.baselines import ProxyModel
    from costmodels.interface import estimate_each
    from costmodels.registry import create
    from costmodels.tables import write_table

    t0 = time.perf_counter()
    check_output(args.output, "-o")
    space, archs = selected_archs(args)
    spec = args.backend
    if args.best_effort:
        if not spec.startswith("lut:"):
            raise UnknownBackend("--best-effort applies to lut:PATH backends only")
        spec += "&best-effort" if "?" in spec else "?best-effort"
    model = create(spec)
    lat: list[float] = []
    energy: list[float | None] = []
    errors: list[str] = []
    missing: list[int | None] = []   # kernels a best-effort LUT lacked, per row
    zero: list[str] = []             # networks costed 0 ms (nothing the model costs)
    chunk = 1024
    with progress(f"estimate {args.backend}") as bar:
        task = bar.add_task(f"estimate {args.backend}", total=len(archs))
        for start in range(0, len(archs), chunk):
            part = archs[start:start + chunk]
            build_errors: list = []
            nets = build_networks(space, part, args.dataset, args.batch, errors=build_errors)
            failed = {a: exc for a, exc in build_errors}
            good = [n for n in nets if n is not None]
            ests = estimate_each(model, good).results
            it = iter(ests)
            for a, n in zip(part, nets, strict=True):
                est = next(it) if n is not None else failed[a]
                if not isinstance(est, Exception) and not (math.isfinite(est.latency_ms)
                                                          and est.latency_ms >= 0):
                    est = ValueError(est.meta.get("error") or  # a failed measurement says why
                                     f"{model.name} gave a latency of {est.latency_ms} ms for "
                                     f"{a} (a model file edited by hand, or a bug)")
                if isinstance(est, Exception):
                    lat.append(math.nan)
                    energy.append(None)
                    errors.append(_one_line(est))
                    missing.append(None)
                    continue
                lat.append(est.latency_ms)
                if est.latency_ms == 0:
                    zero.append(a)
                energy.append(est.energy_mj)
                errors.append("")
                missing.append(len(est.meta.get("missing_kernels", ())))
            bar.advance(task, len(part))
    has_energy = any(e is not None for e in energy)
    bad = sum(1 for e in errors if e)
    short = sum(1 for m in missing if m)
    extra = {"error": errors} if bad else {}
    if short:
        extra["missing_kernels"] = missing
    write_table(args.output, [space.index(a) for a in archs], archs, lat,
                energy if has_energy else None, extra=extra)
    dt = time.perf_counter() - t0
    print(f"wrote {args.output}: {len(archs) - bad} of {len(archs)} architectures with "
          f"{model.name} in {dt:.1f} s{' (with energy_mj)' if has_energy else ''}",
          file=sys.stderr)
    proxy = isinstance(model, ProxyModel) and not model.is_fitted()
    if proxy:
        unit = "MMACs" if model.proxy == "macs" else "millions of parameters"
        print(f"note: {model.name} is a proxy, not a latency: its latency_ms column holds "
              f"{unit}, good for ranking only (compare --train-samples K fits it to ms)",
              file=sys.stderr)
    if zero and not proxy:
        print(f"note: {len(zero)} network(s) were costed 0 ms (first: {zero[0]}): nothing "
              f"in them is work {model.name} costs (constants fold away; views, Identity "
              "and, on the accelerator models, element-wise ops are free), while a runtime "
              "still spends its per-run overhead on them", file=sys.stderr)
    if bad:
        first = next(e for e in errors if e)
        what = ("error: no architecture could be estimated" if bad == len(archs) else
                f"warning: {bad} architecture(s) could not be estimated")
        print(f"{what} (their rows have an error column); first: {first}", file=sys.stderr)
    if short:
        worst = max(range(len(archs)), key=lambda r: missing[r] or 0)
        print(f"warning: {short} architecture(s) have kernels the lookup table lacks (best "
              f"effort: column missing_kernels; their totals cover only the kernels it has); "
              f"most: {archs[worst]} ({missing[worst]} missing)", file=sys.stderr)
    return 1 if bad == len(archs) else 0


def _os_hint(exc: OSError) -> str:
    """What to do about an OSError nobody checked for earlier."""
    import errno

    hints = {errno.ENAMETOOLONG: "; use a shorter path or file name",
             errno.ENOSPC: "; free some disk space or write elsewhere",
             errno.EACCES: "; check the permissions or write elsewhere",
             errno.EROFS: "; the file system is read-only: write elsewhere"}
    return hints.get(exc.errno, "; check the path")


def _one_line(exc: BaseException) -> str:
    """The first line of an error, its middle cut where too long (the advice is at its end)."""
    from costmodels.errors import first_line

    return first_line(str(exc)) or type(exc).__name__


# ----------------------------------------------------------------------------- parser
def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="costmodels", formatter_class=Formatter, epilog=EPILOG,
        description="What does a neural network cost on a device, and how far can each way "
                    "of knowing it be trusted? Measurement, lookup tables, analytical models "
                    "and learned predictors behind one interface, on NAS-Bench-201, FBNet or "
                    "a folder of your own ONNX models (--space).")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("archs", help="list the architectures of a space as CSV",
                       formatter_class=Formatter,
                       epilog="examples:\n  costmodels archs --space nb201 --sample 100 --seed 1\n"
                              "  costmodels archs --space fbnet --sample 100 --seed 1\n"
                              "  costmodels archs --space models:my_models/")
    add_space_args(p)
    p.set_defaults(func=cmd_archs)

    p = sub.add_parser("info", help="per-layer table and totals of a network",
                       formatter_class=Formatter,
                       epilog="examples:\n  costmodels info model.onnx --input-shape 1x3x224x224\n"
                              "  costmodels info 1462 --dataset cifar10 --json\n"
                              "  costmodels info 0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0 "
                              "--space fbnet --dataset cifar100")
    p.add_argument("model", help="MODEL.onnx, or an architecture of --space (arch string or "
                                 "index; fbnet also takes 22 comma-separated block indices)")
    p.add_argument("--input-shape", action="append", metavar="[NAME=]1x3x224x224",
                   help=INPUT_SHAPE_HELP)
    p.add_argument("--json", action="store_true", help="print JSON (totals and layers)")
    p.add_argument("--totals-only", action="store_true",
                   help="only the totals line (with --json: no per-layer list)")
    add_space_args(p, archs=False)
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("export", help="write an architecture of a space as ONNX",
                       formatter_class=Formatter,
                       epilog="examples:\n  costmodels export 1462 --dataset cifar10 -o net.onnx\n"
                              "  costmodels export 0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,1 "
                              "--space fbnet -o fbnet.onnx")
    p.add_argument("arch", help="arch string or standard index")
    p.add_argument("-o", "--output", required=True, help="output .onnx path")
    p.add_argument("--seed", type=seed_int, default=0,
                   help="seed of the random weights of a generated network (nb201, fbnet; a "
                        "models:DIR file is written with its own weights)")
    add_space_args(p, archs=False)
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("estimate", help="estimate architectures with a backend -> latency CSV",
                       formatter_class=Formatter,
                       epilog="examples:\n  costmodels estimate flops -o flops.csv\n"
                              "  costmodels estimate lut:datasets/nb201/xeon-2c-ort-cifar10-lut.sqlite -o lut.csv\n"
                              "  costmodels estimate eyeriss --dataset cifar10 -o eyeriss.csv\n"
                              "  costmodels estimate roofline --space models:my_models/ "
                              "--input-shape 1x3x224x224 -o est.csv\n"
                              "A model that cannot be estimated is a row with an error column.\n"
                              "backends: see `costmodels backends`")
    p.add_argument("backend", help="registry spec, e.g. flops, lut:PATH, roofline:SPEC, eyeriss, "
                                   "gbdt:DIR")
    p.add_argument("-o", "--output", required=True, help="output latency-table CSV")
    p.add_argument("--best-effort", action="store_true",
                   help="lut: report kernels missing from the table instead of failing")
    add_space_args(p)
    p.set_defaults(func=cmd_estimate)

    p = sub.add_parser("backends", help="list the registered backends", formatter_class=Formatter,
                       epilog="examples:\n  costmodels backends\n"
                              "  costmodels estimate eyeriss --sample 5 -o e.csv")
    p.set_defaults(func=cmd_backends)
    p = sub.add_parser("spaces", help="list the search spaces", formatter_class=Formatter,
                       epilog="examples:\n  costmodels spaces\n"
                              "  costmodels archs --space fbnet --sample 3")
    p.set_defaults(func=cmd_spaces)

    for module in PLUGINS:
        try:
            mod = importlib.import_module(module)
        except ModuleNotFoundError as exc:
            if exc.name == module:
                continue
            raise
        mod.register(sub)
    return parser


def _command_parser(parser: argparse.ArgumentParser, argv: Sequence[str]
                    ) -> argparse.ArgumentParser:
    """The innermost (sub)command parser that ``argv`` names (``lut build`` -> its parser)."""
    for token in argv:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        if subs and token in subs[0].choices:
            parser = subs[0].choices[token]
    return parser


class _Terminated(BaseException):
    """SIGTERM, raised where the process is so that open files and stores are closed (``seen``:
    one arrived, also when an extension module's import turned it into an ImportError)."""

    seen = False


def _on_sigterm():
    """Turn SIGTERM into :class:`_Terminated` (main thread only); returns the old handler."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return None

    def handler(signum, frame):
        _Terminated.seen = True
        raise _Terminated

    return signal.signal(signal.SIGTERM, handler)


def _interrupted(term: bool) -> int:
    """The one line of a Ctrl-C (130) or a SIGTERM (143) during a command."""
    print(f"{'terminated (SIGTERM)' if term else 'interrupted'}: every file written is whole "
          "(outputs are renamed into place when complete); a measurement store or LUT keeps "
          "what was committed, and rerunning the command resumes it", file=sys.stderr)
    return 143 if term else 130


def _unexpected(exc: Exception) -> int:
    """The last resort: a bug, not a user mistake (one line; the traceback on request)."""
    import os

    if os.environ.get("COSTMODELS_DEBUG"):
        raise exc
    print(f"error: internal error ({type(exc).__name__}: {_one_line(exc)}); this is a bug "
          "in costmodels, please report it with the command line (COSTMODELS_DEBUG=1 shows "
          "the traceback)", file=sys.stderr)
    return 1


class _Stdout:
    """sys.stdout for the length of a command: a write or flush that fails (a full disk
    behind ``> file``) names standard output, not the command's other files."""

    def __init__(self, stream) -> None:
        self._stream = stream

    def _guard(self, fn, *a):
        try:
            return fn(*a)
        except BrokenPipeError:
            raise
        except OSError as exc:
            raise OSError(exc.errno, exc.strerror, "standard output") from None

    def write(self, text: str) -> int:
        return self._guard(self._stream.write, text)

    def flush(self) -> None:
        self._guard(self._stream.flush)

    def __getattr__(self, name: str):
        return getattr(self._stream, name)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the CLI. User mistakes print one ``error:`` line and return 2; never a traceback."""
    import os

    # started with stdout or stderr closed (>&-, 2>&-): what goes there goes nowhere
    if sys.stderr is None:
        sys.stderr = open(os.devnull, "w")  # noqa: SIM115 - for the life of the process
    if sys.stdout is None:
        sys.stdout = open(os.devnull, "w")  # noqa: SIM115 - for the life of the process
    real = sys.stdout
    sys.stdout = _Stdout(real)
    try:
        return _main(argv)
    finally:
        if isinstance(sys.stdout, _Stdout):
            sys.stdout = real


def _flushed(code: int) -> int:
    """``code``, once stdout is flushed: a help text or table that could not be written
    (``> /dev/full``) is an error, not a silent exit 0."""
    try:
        sys.stdout.flush()
    except BrokenPipeError:
        return code
    except OSError as exc:
        print(f"error: standard output: {exc.strerror or exc}{_os_hint(exc)}", file=sys.stderr)
        return 2
    return code


def _main(argv: Sequence[str] | None) -> int:
    try:
        parser = build_parser()  # imports the plug-ins' modules: a Ctrl-C lands here first
        args, extra = parser.parse_known_args(argv)
        if extra:  # named by the (sub)command they were given to, whose --help says more
            _command_parser(parser, sys.argv[1:] if argv is None else list(argv)).error(
                f"unrecognized arguments: {' '.join(extra)}")
    except SystemExit as exc:
        return _flushed(int(exc.code or 0) if isinstance(exc.code, int) else 2)
    except OSError as exc:  # the help text could not be written
        print(f"error: {exc.filename or 'standard output'}: {exc.strerror or exc}"
              f"{_os_hint(exc)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted before any work", file=sys.stderr)
        return 130
    if not getattr(args, "func", None):
        return needs_command(parser)(args)
    _Terminated.seen = False
    previous = _on_sigterm()
    try:
        _INPUT_FILES.clear()
        _INPUT_FILES.update(_input_files(args))
        check_distinct_outputs(args)
        code = int(args.func(args) or 0)
        sys.stdout.flush()  # a table or CSV that cannot all be written is an error here
        return code
    except CostModelError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except (KeyboardInterrupt, _Terminated) as exc:
        return _interrupted(isinstance(exc, _Terminated) or _Terminated.seen)
    except BrokenPipeError:
        return 0
    except SystemExit as exc:  # sys.exit("error: ...") in a handler: the same one line, code 2
        if isinstance(exc.code, int) or exc.code is None:
            raise
        text = str(exc.code).strip()
        print(text if text.startswith("error: ") else f"error: {text}", file=sys.stderr)
        return 2
    except OSError as exc:
        named = exc.filename or next((getattr(args, k) for k in ("output", "out", "db")
                                      if isinstance(getattr(args, k, None), str)), None)
        if named and len(str(named)) > 160:  # a mistyped argument read as a path
            named = f"{str(named)[:120]}... ({len(str(named))} characters)"
        where = f"{named}: " if named else ""
        print(f"error: {where}{exc.strerror or exc}{_os_hint(exc)}", file=sys.stderr)
        return 2
    except MemoryError:
        print("error: out of memory; use a smaller --sample or --batch", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - last resort: a bug, not a user mistake
        # (unless a SIGTERM arrived inside an extension's import, which reports ImportError)
        return _interrupted(True) if _Terminated.seen else _unexpected(exc)
    finally:
        if previous is not None:
            import signal

            signal.signal(signal.SIGTERM, previous)


def entry() -> None:
    """The ``costmodels`` command: :func:`main`, then exit with its code. A Ctrl-C or SIGTERM
    that lands once the work is done (the outputs written) no longer turns the exit code
    into a signal's."""
    import signal

    code = main()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.SIG_IGN)
    sys.exit(code)


if __name__ == "__main__":
    entry()
