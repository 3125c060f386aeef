"""The on-disk artifacts of a model: the manifest, the ``.mem`` bank files and their names.

This module is the one home of:

* the bank file names (``weights_bank{b}.mem``, ``biases_bank{b}.mem``), used by the exporter,
  the generator, the board build and the gateware's ``$readmemh`` parameters;
* the ``.mem`` text format (a ``//`` header line naming the bank, its lanes and format, then one
  hexadecimal word per line, lane 0 in the least significant bits);
* the manifest (``manifest.json``): writing it, reading it back and cross-checking everything in it
  (formats, bank geometry, file list, checksums, ``.mem`` headers, input normalisation) with its
  config, so that an edited manifest is refused instead of silently changing the outputs;
* which tool wrote an output folder (:func:`folder_kind`), so that a tool only ever replaces a
  folder it wrote itself.

It knows models only through duck typing (``config``, ``report``, ``meta``, ``input_mean``,
``input_std`` and what :class:`deltahw.layout.Layout` reads), so :mod:`deltahw.model` imports it and
not the other way round.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import shutil
from contextlib import contextmanager
from pathlib import Path

from .config import ConfigError, DeltaGRUConfig
from .errors import DeltahwError
from .layout import Layout
from .util import OutputError, atomic_dir

__all__ = [
    "MANIFEST_NAME",
    "MANIFEST_KIND",
    "MANIFEST_VERSION",
    "BANK_KINDS",
    "BANK_FILE_RE",
    "ManifestError",
    "bank_file_name",
    "weight_bank_name",
    "bias_bank_name",
    "expected_bank_files",
    "bank_header",
    "mem_text",
    "parse_mem",
    "bank_files",
    "build_manifest",
    "write_bank_files",
    "write_model_files",
    "write_manifest",
    "read_manifest",
    "manifest_config",
    "check_files",
    "read_bank_words",
    "folder_kind",
    "output_dir",
]

MANIFEST_NAME = "manifest.json"
MANIFEST_KIND = "deltahw-model"
MANIFEST_VERSION = 1
#: The two kinds of parameter bank, in the order they are written.
BANK_KINDS = ("weights", "biases")
#: Every bank file name matches this pattern (group 1: kind, group 2: bank number).
BANK_FILE_RE = re.compile(r"(weights|biases)_bank(\d+)\.mem")


class ManifestError(DeltahwError, ValueError):
    """An exported folder is inconsistent (missing file, wrong length, checksum mismatch)."""


# --------------------------------------------------------------------------------------------------
# Names
def bank_file_name(kind: str, bank: int) -> str:
    """File name of parameter bank ``bank`` of ``kind`` ("weights" or "biases")."""
    if kind not in BANK_KINDS:
        raise ValueError(f"kind must be one of {BANK_KINDS}; got {kind!r}.")
    return f"{kind}_bank{bank}.mem"


def weight_bank_name(bank: int) -> str:
    return bank_file_name("weights", bank)


def bias_bank_name(bank: int) -> str:
    return bank_file_name("biases", bank)


def _kind_formats(config: DeltaGRUConfig, lay: Layout):
    """(kind, format, word bits, depth) of each bank kind."""
    return (
        ("weights", config.weight, lay.weight_word_bits, lay.weight_depth),
        ("biases", config.bias, lay.bias_word_bits, lay.acc_depth),
    )


def expected_bank_files(config: DeltaGRUConfig) -> dict[str, tuple[int, int]]:
    """Name -> (word bits, depth) of every bank file the layout of ``config`` needs."""
    lay = Layout(config)
    return {
        bank_file_name(kind, b): (bits, depth)
        for kind, _, bits, depth in _kind_formats(config, lay)
        for b in range(lay.num_banks)
    }


def bank_header(config: DeltaGRUConfig, kind: str, bank: int, depth: int) -> str:
    """The header line (without ``//``) of a bank file: bank, lanes, format and depth."""
    G = config.lanes_per_bank
    fmt = config.weight if kind == "weights" else config.bias
    return (
        f"deltahw {kind} bank {bank}: lanes {bank * G}..{bank * G + G - 1}, {G} x "
        f"{fmt.name()} per word, depth {depth}"
    )


# --------------------------------------------------------------------------------------------------
# .mem text
def mem_text(words: list[int], bits: int, header: str) -> str:
    digits = -(-bits // 4)
    lines = [f"// {header}"]
    lines += [f"{w:0{digits}x}" for w in words]
    return "\n".join(lines) + "\n"


def parse_mem(path: Path, bits: int) -> list[int]:
    """The words of a ``.mem`` file, each checked to fit in ``bits`` bits."""
    try:
        text = Path(path).read_text()
    except (OSError, UnicodeDecodeError) as e:
        raise ManifestError(f"{path} cannot be read as a text file: {e}.") from None
    words = []
    for n, line in enumerate(text.splitlines(), 1):
        line = line.split("//", 1)[0].strip()
        if not line:
            continue
        try:
            w = int(line, 16)
        except ValueError:
            raise ManifestError(f"{path}:{n}: '{line}' is not a hexadecimal word.") from None
        if w < 0 or w >> bits:
            raise ManifestError(f"{path}:{n}: word {line} does not fit in {bits} bits.")
        words.append(w)
    return words


def bank_files(model) -> dict[str, tuple[str, int, int]]:
    """Name -> (text, word bits, depth) of every bank file of a model, in the hardware layout."""
    cfg = model.config
    lay = Layout(cfg)
    lanes = {"weights": lay.lane_weights(model), "biases": lay.lane_biases(model)}
    files = {}
    for kind, fmt, word_bits, _ in _kind_formats(cfg, lay):
        for b, words in enumerate(lay.to_bank_words(lanes[kind], fmt.bits)):
            text = mem_text(words, word_bits, bank_header(cfg, kind, b, len(words)))
            files[bank_file_name(kind, b)] = (text, word_bits, len(words))
    return files


def _source_bank_files(model) -> dict[str, tuple[bytes, int, int]] | None:
    """The bank files of the exported folder ``model`` was loaded from, if they still apply.

    A model loaded from an exported folder remembers it (``model.origin``); when the layout of
    its current config is the folder's (only thresholds or the clock changed), the files are
    reused byte for byte instead of being parsed and re-packed. ``None`` otherwise.
    """
    origin = getattr(model, "origin", None)
    if origin is None:
        return None
    origin = Path(origin)
    try:
        manifest = read_manifest(origin)
        src_cfg = manifest_config(origin, manifest)
    except ManifestError:
        return None
    if Layout(src_cfg).geometry() != Layout(model.config).geometry():
        return None
    for name in ("weight", "bias"):
        if getattr(src_cfg, name) != getattr(model.config, name):
            return None
    files = {}
    for name, (bits, depth) in expected_bank_files(model.config).items():
        data = (origin / name).read_bytes()
        if hashlib.sha256(data).hexdigest() != manifest["files"][name]["sha256"]:
            return None  # changed since it was loaded: re-pack from the parameters in memory
        files[name] = (data, bits, depth)
    return files


def write_bank_files(model, folder: Path) -> dict[str, tuple[bytes, int, int]]:
    """Write every bank file of ``model`` into ``folder``; returns name -> (bytes, bits, depth).

    The files of the exported folder the model came from are copied when they still apply.
    """
    folder = Path(folder)
    files = _source_bank_files(model)
    if files is not None:
        for name in files:
            shutil.copyfile(Path(model.origin) / name, folder / name)
        return files
    files = {n: (t.encode(), bits, depth) for n, (t, bits, depth) in bank_files(model).items()}
    for name, (data, _, _) in files.items():
        (folder / name).write_bytes(data)
    return files


# --------------------------------------------------------------------------------------------------
# Manifest
def _formats(cfg: DeltaGRUConfig) -> dict:
    return {
        "act": cfg.act.name(),
        "weight": cfg.weight.name(),
        "bias": cfg.bias.name(),
        "acc": f"{cfg.acc_bits} bits, {cfg.acc_frac} fraction bits",
        "sigmoid_in": cfg.sigmoid_in.name(),
        "tanh_in": cfg.tanh_in.name(),
    }


def build_manifest(model, files: dict) -> dict:
    """The manifest of ``model`` whose bank files are ``files`` (name -> (data, bits, depth))."""
    cfg = model.config
    listed = {}
    for name, (data, bits, depth) in sorted(files.items()):
        data = data.encode() if isinstance(data, str) else data
        listed[name] = {"sha256": hashlib.sha256(data).hexdigest(), "word_bits": bits,
                        "depth": depth}
    return {
        "kind": MANIFEST_KIND,
        "format_version": MANIFEST_VERSION,
        "config": cfg.to_dict(),
        "formats": _formats(cfg),
        "geometry": Layout(cfg).geometry(),
        "files": listed,
        "quantization": model.report,
        "input_mean": None if model.input_mean is None else model.input_mean.tolist(),
        "input_std": None if model.input_std is None else model.input_std.tolist(),
        "meta": json.loads(json.dumps(model.meta, default=str)),
    }


def write_manifest(folder: Path, manifest: dict) -> None:
    (Path(folder) / MANIFEST_NAME).write_text(json.dumps(manifest, indent=2) + "\n")


def write_model_files(model, folder: Path) -> dict:
    """Write bank files and manifest into an existing folder (not atomic); return the manifest."""
    files = write_bank_files(model, folder)
    manifest = build_manifest(model, files)
    write_manifest(folder, manifest)
    return manifest


def read_manifest(folder: Path) -> dict:
    """The manifest of an exported folder, with its structure checked (not yet its config)."""
    mpath = Path(folder) / MANIFEST_NAME
    if not mpath.is_file():
        raise ManifestError(f"{folder} is not an exported model folder: it has no {MANIFEST_NAME}.")
    try:
        manifest = json.loads(mpath.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ManifestError(f"{mpath} is not valid JSON: {e}.") from None
    except OSError as e:
        raise ManifestError(f"{mpath} cannot be read: {e.strerror}.") from None
    if not isinstance(manifest, dict) or manifest.get("kind") != MANIFEST_KIND:
        kind = manifest.get("kind") if isinstance(manifest, dict) else type(manifest).__name__
        raise ManifestError(f"{mpath} is not a deltahw model manifest (kind={kind}).")
    version = manifest.get("format_version")
    if version != MANIFEST_VERSION:
        raise ManifestError(f"{mpath} has format_version {version!r}; this deltahw reads version "
                            f"{MANIFEST_VERSION}.")
    files = manifest.get("files")
    if not isinstance(files, dict) or not all(
        isinstance(v, dict) and isinstance(v.get("sha256"), str) for v in files.values()
    ):
        raise ManifestError(f"'files' in {mpath} must be an object mapping each bank file name to "
                            f"its sha256, word_bits and depth; got {_short(files)}.")
    for key in ("formats", "geometry"):
        if not isinstance(manifest.get(key), dict):
            raise ManifestError(f"'{key}' in {mpath} must be an object; got "
                                f"{_short(manifest.get(key))}.")
    for key in ("quantization", "meta"):
        if not isinstance(manifest.get(key, {}), dict):
            raise ManifestError(f"'{key}' in {mpath} must be an object; got "
                                f"{_short(manifest.get(key))}.")
    return manifest


def _short(v) -> str:
    text = json.dumps(v) if isinstance(v, (dict, list, str, int, float, type(None))) else repr(v)
    return text if len(text) <= 60 else text[:57] + "..."


def check_input_stats(mean, std, input_size: int, where: str) -> None:
    """Input normalisation: both or neither; I finite values each; every std finite and > 0."""
    if mean is None and std is None:
        return
    for name, v in (("input_mean", mean), ("input_std", std)):
        if v is None:
            other = "input_std" if name == "input_mean" else "input_mean"
            raise ManifestError(f"{where} has {other} but no {name}; give both or neither.")
        vals = v.tolist() if hasattr(v, "tolist") else v
        if not isinstance(vals, list) or not all(
            isinstance(x, (int, float)) and not isinstance(x, bool) for x in vals
        ):
            raise ManifestError(f"{name} in {where} must be a list of {input_size} numbers; got "
                                f"{_short(vals)}.")
        if len(vals) != input_size:
            raise ManifestError(f"{name} in {where} has {len(vals)} values; the model has "
                                f"input_size={input_size}.")
        bad = [x for x in vals if not math.isfinite(x)]
        if bad:
            raise ManifestError(f"{name} in {where} holds {bad[0]!r}; every value must be finite.")
        if name == "input_std":
            low = [x for x in vals if x <= 0]
            if low:
                raise ManifestError(f"input_std in {where} holds {low[0]!r}; every standard "
                                    "deviation must be > 0 (inputs are divided by it).")


def manifest_config(folder: Path, manifest: dict) -> DeltaGRUConfig:
    """The manifest's config, cross-checked with the manifest's formats, geometry and inputs."""
    folder = Path(folder)
    try:
        cfg = DeltaGRUConfig.from_dict(manifest["config"])
    except KeyError:
        raise ManifestError(f"The manifest in {folder} has no config.") from None
    except ConfigError as e:
        raise ManifestError(f"The manifest in {folder} has an invalid config: {e}") from None
    for key, expect in _formats(cfg).items():
        got = manifest["formats"].get(key)
        if got != expect:
            raise ManifestError(
                f"The manifest in {folder} says formats.{key} = {got!r} but its config gives "
                f"{expect!r}; the manifest was edited after export (re-export the model instead)."
            )
    geometry = Layout(cfg).geometry()
    if manifest["geometry"] != geometry:
        diff = sorted(k for k in set(geometry) | set(manifest["geometry"])
                      if manifest["geometry"].get(k) != geometry.get(k))
        k = diff[0]
        raise ManifestError(
            f"The manifest in {folder} says geometry.{k} = {manifest['geometry'].get(k)!r} but its "
            f"config gives {geometry.get(k)!r}; the manifest was edited after export."
        )
    check_input_stats(manifest.get("input_mean"), manifest.get("input_std"), cfg.input_size,
                      f"the manifest in {folder}")
    return cfg


def check_files(folder: Path, manifest: dict, config: DeltaGRUConfig) -> dict[str, list[int]]:
    """Every bank file exists, parses, has the layout's length, the manifest's checksum and the
    header its config gives; returns name -> words."""
    folder = Path(folder)
    listed = manifest.get("files")
    if not isinstance(listed, dict):
        raise ManifestError(f"'files' in the manifest in {folder} must be an object; got "
                            f"{_short(listed)}.")
    expect = expected_bank_files(config)
    words = {}
    extra = sorted(set(listed) - set(expect))
    if extra:
        raise ManifestError(f"The manifest in {folder} lists {extra[0]}, which the config "
                            f"({config.summary()}) does not have.")
    for name, (bits, depth) in expect.items():
        path = folder / name
        if name not in listed:
            raise ManifestError(
                f"The manifest in {folder} does not list {name}, which the config "
                f"({config.summary()}) requires."
            )
        if not path.is_file():
            raise ManifestError(f"{path} is missing.")
        words[name] = parse_mem(path, bits)
        if len(words[name]) != depth:
            raise ManifestError(f"{path} has {len(words[name])} words; the layout needs {depth}.")
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        if digest != listed[name]["sha256"]:
            raise ManifestError(
                f"{path} does not match the checksum in the manifest; it was changed after export."
            )
        m = BANK_FILE_RE.fullmatch(name)
        header = "// " + bank_header(config, m.group(1), int(m.group(2)), depth)
        first = path.read_text(errors="replace").split("\n", 1)[0]
        if first != header:
            raise ManifestError(
                f"{path} starts with '{first[:80]}' but the manifest's config needs '{header}'; "
                "the manifest's formats or shape were edited after export."
            )
    return words


def read_bank_words(folder: Path) -> tuple[DeltaGRUConfig, dict, list, list]:
    """Read and check an exported folder: (config, manifest, weight banks, bias banks).

    Each bank is a list of unsigned words; every file's checksum, header and length are checked
    against the manifest and its config.
    """
    folder = Path(folder)
    manifest = read_manifest(folder)
    cfg = manifest_config(folder, manifest)
    words = check_files(folder, manifest, cfg)
    n = Layout(cfg).num_banks
    return (cfg, manifest, [words[weight_bank_name(b)] for b in range(n)],
            [words[bias_bank_name(b)] for b in range(n)])


# --------------------------------------------------------------------------------------------------
# Which tool wrote a folder
#: Names the exporter writes (besides the bank files).
_EXPORT_NAMES = {MANIFEST_NAME}
#: Suffixes of the files the generator writes (RTL, C header) besides the bank files.
_GENERATE_SUFFIXES = {".v", ".sv", ".vh", ".h", ".json"}


def _read_json(path: Path):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def folder_kind(folder: Path) -> tuple[str | None, list[str]]:
    """Which deltahw tool wrote ``folder`` ("export", "generate", "build" or None), and the names
    in it that this tool does not write (for export and generate; a build tree holds tool logs).

    An export holds a model manifest and bank files; a generated folder a manifest with an ``rtl``
    section; a board build a ``report.json`` of kind ``deltahw-build`` (or, from older versions, a
    report naming the board and the flow).
    """
    folder = Path(folder)
    report = _read_json(folder / "report.json")
    if isinstance(report, dict) and (
        report.get("kind") == "deltahw-build" or {"board", "flow", "build_dir"} <= set(report)
    ):
        return "build", []
    manifest = _read_json(folder / MANIFEST_NAME)
    if not isinstance(manifest, dict) or manifest.get("kind") != MANIFEST_KIND:
        return None, []
    names = [p.name for p in folder.iterdir()]
    if "rtl" in manifest:
        foreign = [n for n in names
                   if not BANK_FILE_RE.fullmatch(n) and Path(n).suffix not in _GENERATE_SUFFIXES]
        return "generate", sorted(foreign)
    foreign = [n for n in names if not BANK_FILE_RE.fullmatch(n) and n not in _EXPORT_NAMES]
    return "export", sorted(foreign)


def _within(inner: Path, outer: Path) -> bool:
    return inner == outer or outer in inner.parents


@contextmanager
def output_dir(path, kind: str, force: bool = False, protect=()):
    """Checks, then an :func:`deltahw.util.atomic_dir` for the output folder of tool ``kind``.

    An existing ``path`` is replaced only if the same tool wrote it (:func:`folder_kind`) and it
    holds nothing else, or with ``force``. Never replaced, even with ``force``: the working
    directory or a folder containing it, and a folder containing any of the ``protect`` paths (the
    tool's inputs). Everything is checked before the caller starts any work.
    """
    raw = str(path)
    path = Path(path).absolute()
    resolved = path.resolve()
    cwd = Path.cwd().resolve()
    if path.exists() and not path.is_dir():
        raise OutputError(f"The output folder {raw} is an existing file; expected a folder.")
    if path.is_dir():
        if _within(cwd, resolved):
            raise OutputError(
                f"The output folder {raw} is the working directory (or holds it); deltahw "
                "replaces its output folder whole, so give a new or tool-written folder instead, "
                "e.g. --out out."
            )
        for p in protect:
            if p is not None and _within(Path(p).resolve(), resolved):
                raise OutputError(
                    f"The output folder {raw} holds the input {p}; deltahw replaces its output "
                    "folder whole, so write to another folder."
                )
        if any(path.iterdir()) and not force:
            found, foreign = folder_kind(path)
            if found != kind:
                what = (f"the output of deltahw.{found}" if found
                        else f"not a folder deltahw.{kind} wrote")
                raise OutputError(
                    f"The output folder {raw} already exists and is {what}; refusing to replace "
                    f"it (give a new folder, or --force to replace it anyway)."
                )
            if foreign:
                more = f" and {len(foreign) - 3} more" if len(foreign) > 3 else ""
                raise OutputError(
                    f"The output folder {raw} holds files deltahw.{kind} did not write "
                    f"({', '.join(foreign[:3])}{more}); refusing to replace it (move them, or "
                    "--force to replace the folder anyway)."
                )
    with atomic_dir(path) as tmp:
        yield tmp
