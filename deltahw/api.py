"""The Python API: one object from a torch module, a state dict, a checkpoint or an exported folder.

    import deltahw
    net = deltahw.DeltaNetwork(my_gru_module, theta_x=0.05, theta_h=0.05, lanes=48)
    y = net.predict(x)                     # bit-exact golden model, float outputs (B, T, O)
    sim = net.simulate(x[:2, :20])         # the generated RTL on Verilator: outputs and counters
    net.export("out/model"); net.generate("out/rtl"); net.build("ulx3s", "out/build")
    print(net.summary())

Thresholds are in real units everywhere (``theta_x=0.05`` is 0.05 in the input's normalised units,
rounded half up to the act format's LSBs); hardware parameters are the config's names (``lanes``,
``enc_width``, ``act_width``, ``lanes_per_bank``, ``clock_mhz``). Every method is a thin call into
the module the command line uses (:mod:`deltahw.golden`, :mod:`deltahw.simulate`,
:mod:`deltahw.export`, :mod:`deltahw.generate`, :mod:`deltahw.build`, :mod:`deltahw.calibrate`).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from . import cycles
from .config import DeltaGRUConfig
from .errors import DeltahwError
from .golden import GoldenResult, run_golden
from .model import QuantizedModel, load_model
from .numerics import threshold_to_lsb

__all__ = ["DeltaNetwork", "APIError", "HARDWARE_KEYS"]

#: Hardware parameters the constructor and :meth:`DeltaNetwork.with_hardware` accept.
HARDWARE_KEYS = ("lanes", "lanes_per_bank", "enc_width", "act_width", "clock_mhz")


class APIError(DeltahwError, ValueError):
    """A bad argument to the Python API."""


def _lsb_list(value, fmt, name: str) -> tuple:
    """Real-unit thresholds (one, or one per layer) as act-format LSBs; the config checks the
    count (one for all layers, or one per layer)."""
    vals = list(value) if isinstance(value, (list, tuple)) else [value]
    try:
        return tuple(threshold_to_lsb(v, fmt) for v in vals)
    except ValueError as e:
        raise APIError(f"{name}: {e}") from None


def _is_plain(source) -> bool:
    """Whether ``source`` carries no deltahw config (a torch module or a plain state dict)."""
    if isinstance(source, torch.nn.Module):
        return True
    if isinstance(source, dict):
        return source.get("kind") is None
    p = Path(source)
    if p.is_file() and p.suffix in (".pt", ".pth"):
        try:
            obj = torch.load(p, map_location="cpu", weights_only=True)
        except Exception:  # noqa: BLE001 - load_model reports unreadable files
            return False
        return isinstance(obj, dict) and obj.get("kind") is None
    return False


class DeltaNetwork:
    """A delta-GRU network with its hardware configuration.

    Args:
        source: a ``torch.nn.GRU`` (or a module holding one and a ``Linear`` head), a state dict,
            a deltahw checkpoint path, an exported model folder, or a
            :class:`~deltahw.model.QuantizedModel`.
        theta_x, theta_h: thresholds in real units, one for all layers or one per layer.
        theta_head: the head's threshold in real units.
        config: a :class:`~deltahw.config.DeltaGRUConfig` (formats, hardware) for a plain GRU.
        verbose: print what was chosen for a plain GRU (thresholds, hardware parameters).
        **hardware: ``lanes``, ``lanes_per_bank``, ``enc_width``, ``act_width``, ``clock_mhz``.
    """

    def __init__(self, source, *, theta_x=None, theta_h=None, theta_head=None, config=None,
                 allow_clipping: bool = False, verbose: bool = True, **hardware):
        unknown = sorted(set(hardware) - set(HARDWARE_KEYS))
        if unknown:
            raise APIError(f"Unknown argument {unknown[0]!r}; hardware parameters are "
                           f"{', '.join(HARDWARE_KEYS)}.")
        self.source = source
        if isinstance(source, QuantizedModel):
            model = source
        else:
            model = load_model(source, config=config, allow_clipping=allow_clipping)
        self.model = model
        if hardware:
            self.model = self.with_hardware(**hardware).model
        self.model = self.with_thresholds(theta_x, theta_h, theta_head).model
        if verbose and not isinstance(source, QuantizedModel) and config is None and _is_plain(
                source):
            print(self.chosen_message(explicit_thresholds=theta_x is not None
                                      or theta_h is not None or theta_head is not None,
                                      explicit_hardware=bool(hardware)))

    # ------------------------------------------------------------------------------ configuration
    @property
    def config(self) -> DeltaGRUConfig:
        return self.model.config

    def thresholds(self) -> dict:
        """The thresholds in real units."""
        c = self.config
        lsb = c.act.lsb
        return {"theta_x": [t * lsb for t in c.theta_x], "theta_h": [t * lsb for t in c.theta_h],
                "theta_head": c.theta_head * lsb}

    def with_thresholds(self, theta_x=None, theta_h=None, theta_head=None) -> DeltaNetwork:
        """A copy with other thresholds (real units; ``None`` keeps the current one)."""
        c = self.config
        tx = None if theta_x is None else _lsb_list(theta_x, c.act, "theta_x")
        th = None if theta_h is None else _lsb_list(theta_h, c.act, "theta_h")
        if isinstance(theta_head, (list, tuple)) and len(theta_head) != 1:
            raise APIError(f"theta_head takes one threshold; got {len(theta_head)}.")
        to = None if theta_head is None else _lsb_list(theta_head, c.act, "theta_head")[0]
        new = c.with_thresholds(theta_x=tx, theta_h=th, theta_head=to)
        return self._copy(self.model.with_config(new))

    def with_hardware(self, **hardware) -> DeltaNetwork:
        """A copy with other hardware parameters (``lanes=48, enc_width=8, act_width=4`` ...)."""
        unknown = sorted(set(hardware) - set(HARDWARE_KEYS))
        if unknown:
            raise APIError(f"Unknown hardware parameter {unknown[0]!r}; they are "
                           f"{', '.join(HARDWARE_KEYS)}.")
        kw = dict(hardware)
        if "lanes" in kw and "lanes_per_bank" not in kw:
            kw["lanes_per_bank"] = None  # re-derived for the new lane count
        return self._copy(self.model.with_config(self.config.replace(**kw)))

    def _copy(self, model: QuantizedModel) -> DeltaNetwork:
        new = object.__new__(DeltaNetwork)
        new.source, new.model = self.source, model
        return new

    def chosen_message(self, explicit_thresholds: bool = False,
                       explicit_hardware: bool = False) -> str:
        """What was chosen for a plain GRU, and how to change it."""
        c, t = self.config, self.thresholds()
        th = (f"thresholds theta_x={t['theta_x']}, theta_h={t['theta_h']}, theta_head="
              f"{t['theta_head']:g}")
        if not explicit_thresholds:
            th += " (0: every delta fires, op reduction 1x, like the dense GRU)"
        hw = (f"hardware P={c.lanes} lanes, E={c.enc_width}, A={c.act_width}"
              + ("" if explicit_hardware else " (the config's defaults; the shipped models use "
                                               "P=48, E=8 and the A training chose for them, 8)"))
        return (f"deltahw: imported a plain torch GRU ({c.summary()}): {th}; {hw}. Change them "
                f"with DeltaNetwork(..., theta_x=0.1, theta_h=0.1, theta_head=0.1, lanes=48, "
                f"enc_width=8, act_width=8), net.with_thresholds(...), or choose thresholds on "
                f"validation data with net.calibrate(data) (python -m deltahw.calibrate; the "
                f"command lines take --theta-x/--theta-h/--theta-head and --lanes etc.).")

    # ------------------------------------------------------------------------------ running
    def quantize(self, x) -> torch.Tensor:
        """Float inputs (T, I) or (B, T, I) -> int64 act-format inputs (normalised if stored)."""
        return self._quantize(x)[0]

    def _quantize(self, x) -> tuple:
        """(int64 inputs, number of input values saturated to the act format)."""
        try:
            return self.model.quantize_input(torch.as_tensor(np.asarray(x)))
        except ValueError as e:
            raise APIError(str(e)) from None

    def run(self, x, lengths=None) -> GoldenResult:
        """The golden model with all its statistics (:class:`~deltahw.golden.GoldenResult`)."""
        return run_golden(self.model, self.quantize(x), lengths)

    def predict(self, x, lengths=None, raw: bool = False) -> np.ndarray:
        """Outputs of the bit-exact golden model: floats (or raw integers) shaped like ``x``
        with the feature axis replaced by the output width."""
        x_q = self.quantize(x)
        y = run_golden(self.model, x_q, lengths).outputs
        y = y[0] if x_q.dim() == 2 else y
        return y.numpy() if raw else (y.double() * self.config.act.lsb).numpy()

    def simulate(self, x, sim: str = "verilator", raw: bool = False, log=print) -> dict:
        """Run ``x`` (T, I) or (B, T, I) through the generated RTL in simulation.

        Returns ``{"outputs": array like predict's, "cycles", "fired_x", "fired_h",
        "fired_head", "mac_busy": per sequence and timestep, the hardware counters,
        "sim_cycles", "simulator", "input_saturated": input values saturated on quantization}``
        (``python -m deltahw.simulate`` writes these). The testbench has checked every output beat
        against the golden model and every counter against the cycle model; a difference raises
        :class:`deltahw.simulate.SimulationError`.
        """
        from .simulate import simulate_rtl

        x_q, clipped = self._quantize(x)
        seqs = [x_q] if x_q.dim() == 2 else list(x_q)
        res = simulate_rtl(self.model, seqs, sim=sim, log=log)
        y = torch.stack(res.outputs)
        y = y[0] if x_q.dim() == 2 else y
        out = y.numpy() if raw else (y.double() * self.config.act.lsb).numpy()
        return {"outputs": out, "cycles": res.cycles, "fired_x": res.fired_x,
                "fired_h": res.fired_h, "fired_head": res.fired_head, "mac_busy": res.mac_busy,
                "sim_cycles": res.sim_cycles, "simulator": res.simulator,
                "input_saturated": clipped}

    # ------------------------------------------------------------------------------ artefacts
    def export(self, out) -> Path:
        """BRAM init files and manifest into ``out`` (``python -m deltahw.export``)."""
        from .export import export_model

        export_model(self.model, out)
        return Path(out)

    def generate(self, out, lint: bool = False) -> Path:
        """The RTL, init files and manifest into ``out`` (``python -m deltahw.generate``)."""
        from .generate import generate, lint as run_lint

        generate(self.model, out)
        if lint:
            run_lint(out)
        return Path(out)

    def build(self, board: str, out, variant: str | None = None, synth: bool = True,
              clock_mhz: float | None = None, force: bool = False) -> dict:
        """Fit check, build tree and synthesis / bitstream for ``board`` into ``out``
        (:func:`deltahw.build.build_model`, what ``python -m deltahw.build`` runs after loading
        its model); returns the build report (also ``report.json`` / ``report.md`` in ``out``)."""
        from .build import build_model

        source = self.source if isinstance(self.source, (str, Path)) else None
        return build_model(self.model, board, variant=variant, out=out, clock_mhz=clock_mhz,
                           force=force, synth=synth, source=source)

    def calibrate(self, data, max_loss: float = 1.0, test_data=None, out=None,
                  progress=print) -> DeltaNetwork:
        """Choose thresholds on validation ``data`` (:func:`deltahw.calibrate.calibrate`);
        returns the network with them (and writes the calibration folder if ``out``)."""
        from .calibrate import calibrate, write_calibration

        cal = calibrate(self.model, data, max_loss=max_loss, test_data=test_data,
                        progress=progress)
        if out is not None:
            write_calibration(cal, out, source=self.source if isinstance(
                self.source, (str, Path)) else self.model)
        net = self._copy(cal.model)
        net.calibration = cal
        return net

    # ------------------------------------------------------------------------------ summary
    def summary(self) -> dict:
        """Shape, formats, thresholds, hardware, resource estimates and predicted cycles."""
        from .build import predicted_performance
        from .resources import estimate

        c = self.config
        out = {
            "network": {"input_size": c.input_size, "hidden_size": c.hidden_size,
                        "num_layers": c.num_layers, "output_size": c.output_size},
            "formats": {"act": c.act.name(), "weight": c.weight.name(), "bias": c.bias.name(),
                        "acc_bits": c.acc_bits, "sigmoid_in": c.sigmoid_in.name(),
                        "tanh_in": c.tanh_in.name()},
            "thresholds": self.thresholds(),
            "hardware": {k: getattr(c, k) for k in HARDWARE_KEYS},
            "cycles": {**predicted_performance(c, c.clock_mhz),
                       "column_cost": cycles.column_cost(c)},
            "resources": {},
        }
        from .boards import BOARDS, get_board

        for name in sorted(BOARDS):
            b = get_board(name)
            v = b.resolve_variant(None)
            part = b.part(v)
            est = estimate(c, part)
            out["resources"][f"{name}-{v}"] = {"part": part.name, **est.as_dict()}
        return out

    def __repr__(self) -> str:
        t = self.thresholds()
        return (f"DeltaNetwork({self.config.summary()}; theta_x={t['theta_x']}, "
                f"theta_h={t['theta_h']}, theta_head={t['theta_head']:g})")
