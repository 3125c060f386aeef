"""Quantized delta-GRU parameters and their import from PyTorch GRUs and deltahw checkpoints.

A :class:`QuantizedModel` is a config plus integer tensors, in the gate order of ``torch.nn.GRU``
(r, u = PyTorch's z, c = PyTorch's n). It is what the golden model runs and what the exporter lays
out into BRAM words. :func:`load_model` accepts every form a user has at hand:

* a ``torch.nn.GRU`` (optionally with a ``torch.nn.Linear`` head) object,
* a saved ``state_dict`` of such a GRU (keys ``weight_ih_l0`` ..., optionally with a prefix) and
  optionally one head ``torch.nn.Linear`` stored next to it under one of the names in
  :data:`HEAD_NAMES` (``head.weight``/``head.bias``, ``fc.*``, ``out.*`` ..., with any prefix);
  any other key is refused, naming it,
* a deltahw training checkpoint (``deltahw.train`` writes them; they carry their config),
* an exported model folder (``manifest.json`` + ``.mem`` files, read by :mod:`deltahw.artifacts`).

Files are read with ``torch.load(weights_only=True)`` only: tensors and plain containers, never
arbitrary pickled objects (unpickling can run code). A whole pickled ``nn.Module`` is refused with
a message saying how to save its ``state_dict``; ``trust_pickle=True`` (``--trust-pickle``) loads it
anyway for a file the user trusts.

Quantization must not silently destroy a model: :func:`load_model` refuses a model of which more
than :data:`MAX_CLIPPED_FRACTION` of all parameters, or more than
:data:`MAX_CLIPPED_TENSOR_FRACTION` of one tensor's, saturate, or whose non-zero weights all
round to zero, unless ``allow_clipping=True`` (``--allow-clipping``). The per-tensor figures are in
``QuantizedModel.report``.
"""

from __future__ import annotations

import json
import pickle
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch

from . import artifacts
from .config import ConfigError, DeltaGRUConfig
from .errors import DeltahwError
from .layout import Layout
from .numerics import FixedFormat, quantize_float

__all__ = [
    "LayerParams",
    "QuantizedModel",
    "ImportError_",
    "InputError",
    "CHECKPOINT_KIND",
    "HEAD_NAMES",
    "MAX_CLIPPED_FRACTION",
    "MAX_CLIPPED_TENSOR_FRACTION",
    "quantize_gru",
    "from_modules",
    "check_quantization",
    "load_model",
    "load_exported",
    "save_checkpoint",
]

#: Marker stored in deltahw training checkpoints.
CHECKPOINT_KIND = "deltahw-checkpoint"


#: Names under which a head ``torch.nn.Linear`` is recognised in a state dict (the last component
#: before ``.weight``/``.bias``; any prefix before it, e.g. ``model.fc.weight``).
HEAD_NAMES = ("head", "fc", "out", "output", "linear", "classifier", "readout")
#: Import refuses a model when more than this fraction of all its parameters saturate ...
MAX_CLIPPED_FRACTION = 0.01
#: ... or more than this fraction of any one tensor (unless clipping is explicitly allowed).
MAX_CLIPPED_TENSOR_FRACTION = 0.10


class ImportError_(DeltahwError, ValueError):
    """A checkpoint cannot be imported (unsupported feature, wrong shape, missing key, NaN...)."""


class InputError(DeltahwError, ValueError):
    """Input data for the model has the wrong shape, type or values."""


@dataclass
class LayerParams:
    """Integer parameters of one delta-GRU layer (weights in the weight format, biases in bias)."""

    w_x: torch.Tensor  # (3H, I_l), rows r | u | c
    w_h: torch.Tensor  # (3H, H)
    b_r: torch.Tensor  # (H,) = b_ir + b_hr
    b_u: torch.Tensor  # (H,) = b_iz + b_hz
    b_cx: torch.Tensor  # (H,) = b_in
    b_ch: torch.Tensor  # (H,) = b_hn


@dataclass
class QuantizedModel:
    config: DeltaGRUConfig
    layers: list[LayerParams]
    head_w: torch.Tensor | None = None  # (O, H)
    head_b: torch.Tensor | None = None  # (O,)
    #: Optional input normalisation (float, per feature): x_hw = (x - mean) / std before quantizing.
    input_mean: torch.Tensor | None = None
    input_std: torch.Tensor | None = None
    #: Quantization report from import (per tensor: clipped count, max and RMS error).
    report: dict = field(default_factory=dict)
    #: Free-form metadata (source, task, metrics) carried into manifests.
    meta: dict = field(default_factory=dict)
    #: The exported folder this model was read from (its bank files are reused when they apply).
    origin: Path | None = None

    def with_config(self, config: DeltaGRUConfig) -> QuantizedModel:
        """Same parameters under another config of identical shape and formats (e.g. thresholds)."""
        old = self.config
        for name in (
            "input_size",
            "hidden_size",
            "num_layers",
            "output_size",
            "act",
            "weight",
            "bias",
        ):
            if getattr(old, name) != getattr(config, name):
                raise ConfigError(
                    f"The new config changes {name} from {getattr(old, name)} to "
                    f"{getattr(config, name)}; only thresholds and hardware parameters may change "
                    f"without re-quantizing."
                )
        return QuantizedModel(
            config,
            self.layers,
            self.head_w,
            self.head_b,
            self.input_mean,
            self.input_std,
            self.report,
            self.meta,
            self.origin,
        )

    def preprocess(self, x: torch.Tensor) -> torch.Tensor:
        """Apply the stored input normalisation (if any) to float inputs."""
        x = torch.as_tensor(x, dtype=torch.float64)
        if self.input_mean is not None:
            x = (x - self.input_mean.to(torch.float64)) / self.input_std.to(torch.float64)
        return x

    def quantize_input(self, x) -> tuple[torch.Tensor, int]:
        """Normalise and quantize float inputs (T, I) or (B, T, I) to the act format."""
        x = torch.as_tensor(x)
        if x.dim() not in (2, 3) or x.shape[-1] != self.config.input_size:
            raise InputError(
                f"Inputs must have shape (T, {self.config.input_size}) or "
                f"(B, T, {self.config.input_size}); got {tuple(x.shape)}."
            )
        if not (x.is_floating_point() or x.dtype in (torch.int8, torch.int16, torch.int32,
                                                       torch.int64, torch.uint8)):
            raise InputError(f"Inputs must be real numbers; got dtype {x.dtype}.")
        x = self.preprocess(x)
        if not torch.isfinite(x).all():
            bad = int((~torch.isfinite(x)).sum())
            raise InputError(f"The inputs hold {bad} NaN or infinite value(s); every input must "
                             "be a finite number.")
        return quantize_float(x, self.config.act)

    def float_params(self) -> dict:
        """Dequantized parameters as a ``torch.nn.GRU``-style state dict (float32)."""
        c = self.config
        sw, sb = 2.0**-c.weight.frac, 2.0**-c.bias.frac
        sd = {}
        for l, p in enumerate(self.layers):
            zeros = torch.zeros_like(p.b_r)
            sd[f"weight_ih_l{l}"] = p.w_x.float() * sw
            sd[f"weight_hh_l{l}"] = p.w_h.float() * sw
            sd[f"bias_ih_l{l}"] = torch.cat([p.b_r, p.b_u, p.b_cx]).float() * sb
            sd[f"bias_hh_l{l}"] = torch.cat([zeros, zeros, p.b_ch]).float() * sb
        if c.has_head:
            sd["head.weight"] = self.head_w.float() * sw
            sd["head.bias"] = self.head_b.float() * sb
        return sd


# ------------------------------------------------------------------------------------------------
_GRU_KEY = re.compile(r"(weight|bias)_(ih|hh)_l\d+")


def _check_tensor(name: str, t, shape: tuple) -> torch.Tensor:
    if not isinstance(t, torch.Tensor):
        raise ImportError_(f"'{name}' must be a tensor; got {type(t).__name__}.")
    if tuple(t.shape) != shape:
        raise ImportError_(f"'{name}' has shape {tuple(t.shape)}; expected {shape}.")
    if not torch.isfinite(t).all():
        raise ImportError_(f"'{name}' contains NaN or infinite values; cannot quantize it.")
    return t.detach().to(torch.float64)


def _quant(name: str, t: torch.Tensor, fmt: FixedFormat, report: dict) -> torch.Tensor:
    q, clipped = quantize_float(t, fmt)
    err = (q.to(torch.float64) * fmt.lsb - t).abs()
    report[name] = {
        "format": fmt.name(),
        "count": t.numel(),
        "clipped": clipped,
        "min": float(t.min()) if t.numel() else 0.0,
        "max": float(t.max()) if t.numel() else 0.0,
        "max_abs_error": float(err.max()) if t.numel() else 0.0,
        "rms_error": float(err.pow(2).mean().sqrt()) if t.numel() else 0.0,
    }
    return q


def _keys(obj) -> str:
    if isinstance(obj, dict):
        keys = sorted(map(str, obj))
        return f"keys {keys[:6]}{'...' if len(keys) > 6 else ''}"
    return f"a {type(obj).__name__}"


def _split_state_dict(sd: dict) -> tuple[dict, dict | None]:
    """Find the GRU keys (any prefix) and an optional head Linear in a flat state dict."""
    bad = [k for k in sd if not isinstance(k, str)]
    if bad:
        raise ImportError_(f"A state dict has string keys; this one has {bad[0]!r}.")
    gru_key = (
        "weight_ih_l0"
        if "weight_ih_l0" in sd
        else next((k for k in sd if k.endswith("weight_ih_l0")), None)
    )
    if gru_key is None:
        raise ImportError_(
            "The state dict has no 'weight_ih_l0' key; expected the state dict of a torch.nn.GRU "
            f"(found keys: {sorted(sd)[:8]}{'...' if len(sd) > 8 else ''})."
        )
    prefix = gru_key[: -len("weight_ih_l0")]
    if any(k.startswith(prefix) and "_reverse" in k for k in sd):
        raise ImportError_(
            "Bidirectional GRUs are not supported: a delta network runs forward only."
        )
    if any(k.startswith(prefix) and k[len(prefix) :].startswith("weight_hr_l") for k in sd):
        raise ImportError_("GRUs with proj_size are not supported by the delta-GRU datapath.")
    gru, rest = {}, {}
    for k, v in sd.items():
        if k.startswith(prefix) and _GRU_KEY.fullmatch(k[len(prefix) :]):
            gru[k[len(prefix) :]] = v
        else:
            rest[k] = v
    head = None
    heads = sorted({k.rsplit(".", 1)[0] for k in rest
                    if k.endswith((".weight", ".bias"))
                    and k.rsplit(".", 1)[0].rsplit(".", 1)[-1] in HEAD_NAMES})
    if len(heads) > 1:
        raise ImportError_(
            f"Found more than one head {heads} next to the GRU; only a single torch.nn.Linear "
            "after the GRU is supported."
        )
    used = set()
    if heads:
        name = heads[0]
        wkey, bkey = f"{name}.weight", f"{name}.bias"
        if wkey not in rest:
            raise ImportError_(f"The head bias '{bkey}' has no weight '{wkey}'.")
        if bkey not in rest:
            raise ImportError_(f"The head weight '{wkey}' has no bias '{bkey}'.")
        head = {"weight": rest[wkey], "bias": rest[bkey]}
        used = {wkey, bkey}
    unused = sorted(set(rest) - used)
    if unused:
        more = f" and {len(unused) - 4} more" if len(unused) > 4 else ""
        raise ImportError_(
            f"The state dict has key(s) deltahw does not use: {unused[:4]}{more}; it imports the "
            f"keys of one torch.nn.GRU ('{prefix}weight_ih_l0' ...) and optionally one "
            f"torch.nn.Linear head named one of {list(HEAD_NAMES)} (e.g. 'fc.weight', "
            "'fc.bias'). Remove or rename the other keys."
        )
    return gru, head


def quantize_gru(
    state_dict: dict,
    config: DeltaGRUConfig | None = None,
    head: dict | None = None,
    **config_overrides,
) -> QuantizedModel:
    """Quantize a ``torch.nn.GRU`` state dict (+ optional head ``{"weight", "bias"}``).

    The network shape is read from the tensors; formats, thresholds and hardware parameters come
    from
    ``config`` (if given, its shape must match) and ``config_overrides``.
    """
    # Split even a plain GRU state dict: that is where bidirectional and proj_size weights and a
    # head stored next to the GRU keys are found.
    sd, found_head = _split_state_dict(dict(state_dict))
    head = head if head is not None else found_head
    w0 = sd["weight_ih_l0"]
    if not isinstance(w0, torch.Tensor) or w0.dim() != 2 or w0.shape[0] % 3:
        raise ImportError_(
            f"'weight_ih_l0' must be a (3H, I) tensor; got {getattr(w0, 'shape', type(w0))}."
        )
    H, I = w0.shape[0] // 3, w0.shape[1]
    L = 0
    while f"weight_ih_l{L}" in sd:
        L += 1
    for k in sd:
        if int(k.rsplit("_l", 1)[1]) >= L:
            raise ImportError_(f"The state dict is missing 'weight_ih_l{L}' (it has '{k}').")
    O = 0
    if head is not None:
        if not isinstance(head, dict) or "weight" not in head:
            raise ImportError_(
                f"The head must be a dict with 'weight' and 'bias' tensors; got {_keys(head)}."
            )
        hw = head["weight"]
        if not isinstance(hw, torch.Tensor) or hw.dim() != 2 or hw.shape[1] != H:
            raise ImportError_(
                f"The head weight must have shape (O, {H}); got {getattr(hw, 'shape', hw)}."
            )
        O = hw.shape[0]
    shape = dict(input_size=I, hidden_size=H, num_layers=L, output_size=O)
    if config is None:
        base = {}
    else:
        for k, v in shape.items():
            if getattr(config, k) != v:
                raise ImportError_(
                    f"The checkpoint has {k}={v} but the config says {getattr(config, k)}."
                )
        base = config.to_dict()
        base.pop("format_version", None)
        base.pop("acc_bits", None) if config_overrides else None
    base.update(shape)
    if L != len(base.get("theta_x", ())) and "theta_x" not in config_overrides:
        base.pop("theta_x", None)
        base.pop("theta_h", None)
    base.update(config_overrides)
    cfg = DeltaGRUConfig.from_dict(base)

    report: dict = {}
    layers = []
    for l in range(L):
        Il = cfg.layer_input_size(l)
        for key in (f"weight_hh_l{l}",):
            if key not in sd:
                raise ImportError_(f"The state dict is missing '{key}'.")
        w_ih = _check_tensor(f"weight_ih_l{l}", sd[f"weight_ih_l{l}"], (3 * H, Il))
        w_hh = _check_tensor(f"weight_hh_l{l}", sd[f"weight_hh_l{l}"], (3 * H, H))
        if f"bias_ih_l{l}" in sd or f"bias_hh_l{l}" in sd:
            for key in (f"bias_ih_l{l}", f"bias_hh_l{l}"):
                if key not in sd:
                    raise ImportError_(f"The state dict is missing '{key}'.")
            b_ih = _check_tensor(f"bias_ih_l{l}", sd[f"bias_ih_l{l}"], (3 * H,))
            b_hh = _check_tensor(f"bias_hh_l{l}", sd[f"bias_hh_l{l}"], (3 * H,))
        else:  # bias=False GRU
            b_ih = b_hh = torch.zeros(3 * H, dtype=torch.float64)
        layers.append(
            LayerParams(
                w_x=_quant(f"layer{l}.w_x", w_ih, cfg.weight, report),
                w_h=_quant(f"layer{l}.w_h", w_hh, cfg.weight, report),
                b_r=_quant(f"layer{l}.b_r", b_ih[:H] + b_hh[:H], cfg.bias, report),
                b_u=_quant(f"layer{l}.b_u", b_ih[H : 2 * H] + b_hh[H : 2 * H], cfg.bias, report),
                b_cx=_quant(f"layer{l}.b_cx", b_ih[2 * H :], cfg.bias, report),
                b_ch=_quant(f"layer{l}.b_ch", b_hh[2 * H :], cfg.bias, report),
            )
        )
    head_w = head_b = None
    if head is not None:
        head_w = _quant(
            "head.w", _check_tensor("head.weight", head["weight"], (O, H)), cfg.weight, report
        )
        hb = head.get("bias")
        hb = torch.zeros(O) if hb is None else hb
        head_b = _quant("head.b", _check_tensor("head.bias", hb, (O,)), cfg.bias, report)
    return QuantizedModel(cfg, layers, head_w, head_b, report=report)


def from_modules(gru: torch.nn.GRU, head: torch.nn.Linear | None = None, **kw) -> QuantizedModel:
    """Quantize a ``torch.nn.GRU`` object (and optional ``torch.nn.Linear`` head)."""
    if not isinstance(gru, torch.nn.GRU):
        raise ImportError_(f"Expected a torch.nn.GRU; got {type(gru).__name__}.")
    if gru.bidirectional:
        raise ImportError_(
            "Bidirectional GRUs are not supported: a delta network runs forward only."
        )
    if getattr(gru, "proj_size", 0):
        raise ImportError_("GRUs with proj_size are not supported by the delta-GRU datapath.")
    hd = None
    if head is not None:
        if not isinstance(head, torch.nn.Linear):
            raise ImportError_(f"The head must be a torch.nn.Linear; got {type(head).__name__}.")
        hd = {"weight": head.weight, "bias": head.bias}
    return quantize_gru(gru.state_dict(), head=hd, **kw)


def check_quantization(model: QuantizedModel) -> None:
    """Refuse a model that quantization destroyed (see the module docstring for the limits)."""
    rep = model.report
    if not rep:
        return
    total = sum(v["count"] for v in rep.values())
    clipped = sum(v["clipped"] for v in rep.values())
    bad = [(k, v) for k, v in rep.items()
           if v["count"] and v["clipped"] > MAX_CLIPPED_TENSOR_FRACTION * v["count"]]
    hint = ("choose formats with more integer bits in the config (e.g. \"weight\": {\"bits\": "
            "8, \"frac\": 6}), or pass --allow-clipping (allow_clipping=True) to accept it")
    if bad or (total and clipped > MAX_CLIPPED_FRACTION * total):
        worst = bad or sorted(rep.items(), key=lambda kv: -kv[1]["clipped"])[:3]
        detail = "; ".join(
            f"{k}: {v['clipped']} of {v['count']} ({100 * v['clipped'] / v['count']:.1f} %) "
            f"outside {v['format']} (values {v['min']:.4g} .. {v['max']:.4g})"
            for k, v in worst[:3] if v["clipped"]
        )
        raise ImportError_(
            f"Quantization clips {clipped} of {total} parameters ({100 * clipped / total:.2f} %), "
            f"more than the allowed {100 * MAX_CLIPPED_FRACTION:g} % of the model or "
            f"{100 * MAX_CLIPPED_TENSOR_FRACTION:g} % of one tensor: {detail}. To keep the model "
            f"intact, {hint}."
        )
    tensors = [("head.w", model.head_w)] if model.head_w is not None else []
    for l, p in enumerate(model.layers):
        tensors += [(f"layer{l}.w_x", p.w_x), (f"layer{l}.w_h", p.w_h)]
    for name, q in tensors:
        r = rep.get(name)
        if r and q.numel() and not q.any() and (r["min"] != 0 or r["max"] != 0):
            raise ImportError_(
                f"Every weight of {name} rounds to 0 in {r['format']} (values "
                f"{r['min']:.3g} .. {r['max']:.3g}); choose a weight format with more fraction "
                "bits, or pass --allow-clipping (allow_clipping=True) to accept it."
            )


def save_checkpoint(
    path,
    config: DeltaGRUConfig,
    gru_state: dict,
    head_state: dict | None = None,
    input_mean=None,
    input_std=None,
    meta: dict | None = None,
) -> None:
    """Write a deltahw checkpoint (float parameters + config) atomically."""
    from .util import atomic_write_bytes
    import io

    obj = {
        "kind": CHECKPOINT_KIND,
        "version": 1,
        "config": config.to_dict(),
        "gru": {k: v.detach().cpu() for k, v in gru_state.items()},
        "head": None
        if head_state is None
        else {k: v.detach().cpu() for k, v in head_state.items()},
        "input_mean": None if input_mean is None else torch.as_tensor(input_mean).float(),
        "input_std": None if input_std is None else torch.as_tensor(input_std).float(),
        "meta": meta or {},
    }
    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(Path(path), buf.getvalue())


def _load_torch_file(path: Path, trust_pickle: bool = False):
    """``torch.load`` restricted to tensors and plain containers (``weights_only=True``).

    A file that needs arbitrary Python objects (a whole pickled ``nn.Module``, a custom class) is
    refused: unpickling it could run any code it carries. ``trust_pickle=True`` loads it anyway.
    """
    if trust_pickle:
        try:
            return torch.load(path, map_location="cpu", weights_only=False)
        except Exception as e:  # noqa: BLE001 - re-raised with a clear message
            raise ImportError_(
                f"{path} is not a readable PyTorch file: {_first_line(e)}."
            ) from None
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL ([\w.]+)|global ([\w.]+)", str(e))
        if "weights only load failed" not in str(e).lower() or not found:
            raise ImportError_(
                f"{path} is not a readable PyTorch file: {_first_line(e)}."
            ) from None
        name = next(g for g in found.groups() if g)
        what = f"a pickled Python object ({name})"
        raise ImportError_(
            f"{path} holds {what}, which deltahw does not unpickle because loading it could run "
            "arbitrary code. Save the weights instead: torch.save(model.state_dict(), 'model.pt') "
            "(or deltahw.model.save_checkpoint); if you trust this file, pass --trust-pickle "
            "(load_model(..., trust_pickle=True))."
        ) from None
    except Exception as e:  # noqa: BLE001 - re-raised with a clear message
        raise ImportError_(f"{path} is not a readable PyTorch file: {_first_line(e)}.") from None


def _first_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return (text[0] if text else type(e).__name__).rstrip(".")


def load_exported(folder) -> QuantizedModel:
    """Read an exported folder back (every file checked against the manifest and its config)."""
    folder = Path(folder)
    cfg, manifest, wb, bb = artifacts.read_bank_words(folder)
    lay = Layout(cfg)
    z = torch.zeros(0, dtype=torch.int64)
    model = QuantizedModel(cfg, [LayerParams(z, z, z, z, z, z) for _ in range(cfg.num_layers)])
    lay.unpack_weights(lay.from_bank_words(wb, cfg.weight.bits), model)
    lay.unpack_biases(lay.from_bank_words(bb, cfg.bias.bits), model)
    model.report = manifest.get("quantization", {})
    model.meta = manifest.get("meta", {})
    if manifest.get("input_mean") is not None:
        model.input_mean = torch.tensor(manifest["input_mean"], dtype=torch.float32)
        model.input_std = torch.tensor(manifest["input_std"], dtype=torch.float32)
    model.origin = folder.resolve()
    return model


def load_model(
    source,
    config: DeltaGRUConfig | None = None,
    *,
    allow_clipping: bool = False,
    trust_pickle: bool = False,
    **overrides,
) -> QuantizedModel:
    """Load a model from a folder, a checkpoint file, a state dict or a ``torch.nn.GRU``.

    ``overrides`` (e.g. ``theta_x=(8,)``, ``lanes=24``) replace config fields; for an exported
    folder only thresholds and hardware parameters may be overridden. ``allow_clipping`` accepts a
    model that quantization clips heavily; ``trust_pickle`` unpickles arbitrary objects from a
    file the user trusts (see the module docstring).
    """
    if isinstance(source, torch.nn.Module):
        model = _from_module(source, config, overrides, "The given module")
    elif isinstance(source, dict):
        model = _from_object(source, config, overrides, "the given state dict")
    else:
        path = Path(source)
        if path.is_dir():
            model = load_exported(path)
            if config is not None or overrides:
                d = (config or model.config).to_dict()
                d.update(overrides)
                d.pop("acc_bits", None)
                model = model.with_config(DeltaGRUConfig.from_dict(d))
            return model  # checked when it was exported
        if not path.exists():
            raise ImportError_(f"Model path {path} does not exist.")
        if not path.is_file():
            raise ImportError_(f"Model path {path} is not a file or folder.")
        obj = _load_torch_file(path, trust_pickle)
        if isinstance(obj, torch.nn.Module):
            model = _from_module(obj, config, overrides, f"{path}")
        else:
            model = _from_object(obj, config, overrides, str(path))
    if not allow_clipping:
        check_quantization(model)
    return model


def _from_module(obj: torch.nn.Module, config, overrides, where: str) -> QuantizedModel:
    """A ``torch.nn.GRU`` or a module holding one (its last ``torch.nn.Linear`` is the head)."""
    if isinstance(obj, torch.nn.GRU):
        return from_modules(obj, config=config, **overrides)
    gru = next((m for m in obj.modules() if isinstance(m, torch.nn.GRU)), None)
    if gru is None:
        raise ImportError_(f"{where} is a {type(obj).__name__} module with no torch.nn.GRU inside.")
    lin = [(n, m) for n, m in obj.named_modules() if isinstance(m, torch.nn.Linear)]
    if len(lin) > 1:
        raise ImportError_(
            f"{where} has {len(lin)} torch.nn.Linear modules ({', '.join(n for n, _ in lin)}); "
            "only one Linear head after the GRU is supported."
        )
    return from_modules(gru, lin[0][1] if lin else None, config=config, **overrides)


def _from_object(obj, config, overrides, where: str) -> QuantizedModel:
    if not isinstance(obj, dict):
        raise ImportError_(
            f"{where} holds a {type(obj).__name__}; expected a state dict or a deltahw checkpoint."
        )
    if obj.get("kind") == CHECKPOINT_KIND:
        for key, types, expect in (("config", dict, "a config object"),
                                   ("gru", dict, "a dict of GRU tensors"),
                                   ("head", (dict, type(None)), "a dict of head tensors or None"),
                                   ("meta", (dict, type(None)), "a dict or None")):
            if not isinstance(obj.get(key), types):
                raise ImportError_(
                    f"{where} is a deltahw checkpoint whose '{key}' is "
                    f"{type(obj.get(key)).__name__}; expected {expect}."
                )
        try:
            cfg = DeltaGRUConfig.from_dict(obj["config"])
        except ConfigError as e:
            raise ImportError_(f"{where} has an invalid config: {e}") from None
        if config is not None:
            d = config.to_dict()
            for k in ("input_size", "hidden_size", "num_layers", "output_size"):
                if d[k] != getattr(cfg, k):
                    raise ImportError_(
                        f"{where} was trained with {k}={getattr(cfg, k)} but the given config says "
                        f"{d[k]}."
                    )
            cfg = config
        model = quantize_gru(obj["gru"], config=cfg, head=obj.get("head"), **overrides)
        mean, std = obj.get("input_mean"), obj.get("input_std")
        for key, v in (("input_mean", mean), ("input_std", std)):
            if v is not None and not isinstance(v, torch.Tensor):
                raise ImportError_(f"{where} has an '{key}' of type {type(v).__name__}; expected "
                                   "a tensor or None.")
        try:
            artifacts.check_input_stats(mean, std, model.config.input_size, where)
        except artifacts.ManifestError as e:
            raise ImportError_(str(e)) from None
        model.input_mean, model.input_std = mean, std
        model.meta = dict(obj.get("meta") or {})
        return model
    model = quantize_gru(obj, config=config, **overrides)
    model.meta = {"source": where}
    return model


def manifest_meta(model: QuantizedModel) -> dict:
    return json.loads(json.dumps(model.meta, default=str))
