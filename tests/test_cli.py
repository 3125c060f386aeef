"""The command lines agree with each other, checked mechanically on their argparse parsers.

Every ``python -m deltahw.<tool>`` parser is captured (``ArgumentParser.parse_args`` is replaced by
one that hands the parser back), so the checks see exactly what ``--help`` shows:

* the output folder is ``--out`` everywhere (an older spelling only as a hidden alias);
* a command that takes a model takes it as the positional argument ``model`` (``--model`` only as
  build's hidden deprecated alias), with ``--allow-clipping`` and ``--trust-pickle``;
* a command that takes a model also takes ``--theta-x/--theta-h/--theta-head`` in real units, and
  applies them;
* bad input ends in one ``error:`` sentence and no traceback.

A new tool with an argparse parser fails the inventory test until it is added to the table here.
"""

from __future__ import annotations

import argparse
import importlib
import re
from pathlib import Path

import numpy as np
import pytest
import torch

from deltahw.config import DeltaGRUConfig
from deltahw.model import load_model, save_checkpoint

REPO = Path(__file__).resolve().parent.parent

# tool -> (module, argv prefix: for host, the subcommand)
TOOLS = {
    "export": ("deltahw.export", []),
    "generate": ("deltahw.generate", []),
    "build": ("deltahw.build", []),
    "train": ("deltahw.train.train", []),
    "act_width": ("deltahw.train.act_width", []),
    "calibrate": ("deltahw.calibrate", []),
    "simulate": ("deltahw.simulate", []),
    "golden": ("deltahw.golden", []),
    "host load": ("deltahw.host", ["load"]),
    "host run": ("deltahw.host", ["run"]),
    "bench": ("deltahw.bench.run", []),
    "skip": ("deltahw.bench.skip", []),
    "stream": ("deltahw.bench.stream", []),
    "fuzz": ("deltahw.verify.fuzz", []),
    "soc.sim": ("deltahw.soc.sim", []),
    "link_faults": ("deltahw.link_faults", []),
}
# Commands that take a model (a file or folder to read).
MODEL_TOOLS = {"export", "generate", "build", "calibrate", "simulate", "golden", "host load",
               "host run", "soc.sim"}
# Commands that write a folder. golden and simulate write one output file (--output FILE.npy).
FOLDER_TOOLS = {"export", "generate", "build", "train", "calibrate", "bench", "skip", "stream",
                "fuzz",
                "soc.sim", "link_faults"}
# Old spellings kept as hidden aliases: (tool, flag).
DEPRECATED = {("build", "--output"), ("build", "--model")}
# Thresholds are set by the user everywhere a model is taken, except where the tool chooses them.
THRESHOLD_TOOLS = (MODEL_TOOLS - {"calibrate"}) | {"train"}
OTHER_OUT_SPELLINGS = {"--output", "--output-dir", "--outdir", "--out-dir", "--output-folder",
                       "-o"}


class _Captured(Exception):
    def __init__(self, parser):
        self.parser = parser


def _parser(tool: str, monkeypatch) -> argparse.ArgumentParser:
    """The parser ``tool``'s ``main`` builds (for host: the subcommand's)."""
    module, sub = TOOLS[tool]
    main = importlib.import_module(module).main

    def capture(self, args=None, namespace=None):
        raise _Captured(self)

    monkeypatch.setattr(argparse.ArgumentParser, "parse_args", capture)
    with pytest.raises(_Captured) as info:
        main([])
    ap = info.value.parser
    for name in sub:
        (action,) = [a for a in ap._actions if isinstance(a, argparse._SubParsersAction)]
        ap = action.choices[name]
    return ap


def _options(ap) -> dict[str, argparse.Action]:
    return dict(ap._option_string_actions)


def _visible(action) -> bool:
    return action.help != argparse.SUPPRESS


def test_every_argparse_tool_is_in_the_table():
    found = set()
    for path in (REPO / "deltahw").rglob("*.py"):
        rel = ".".join(path.relative_to(REPO).with_suffix("").parts)
        if rel == "deltahw.bench.analysis":  # the parser of the analyses below, not a tool
            continue
        text = path.read_text()
        if "argparse.ArgumentParser(" in text or "return analysis_main(" in text:
            found.add(rel)
    assert found == {module for module, _ in TOOLS.values()}


@pytest.mark.parametrize("tool", sorted(FOLDER_TOOLS))
def test_the_output_folder_is_out(tool, monkeypatch):
    opts = _options(_parser(tool, monkeypatch))
    assert "--out" in opts and _visible(opts["--out"])
    assert "folder" in opts["--out"].help
    for flag in OTHER_OUT_SPELLINGS & opts.keys():
        assert (tool, flag) in DEPRECATED, f"{tool} spells its output folder {flag}"
        assert not _visible(opts[flag]), f"{tool}'s deprecated {flag} is shown in --help"


@pytest.mark.parametrize("tool", sorted(MODEL_TOOLS))
def test_the_model_is_the_positional_argument(tool, monkeypatch):
    ap = _parser(tool, monkeypatch)
    positionals = [a for a in ap._actions if not a.option_strings]
    assert [a.dest for a in positionals][:1] == ["model"]
    assert positionals[0].help and "model" in positionals[0].help
    opts = _options(ap)
    if "--model" in opts:
        assert (tool, "--model") in DEPRECATED and not _visible(opts["--model"])
    for flag in ("--allow-clipping", "--trust-pickle"):
        assert flag in opts and opts[flag].nargs == 0, f"{tool} lacks {flag}"
    assert "--config" in opts or tool in ("generate", "build", "soc.sim")  # a JSON config model


@pytest.mark.parametrize("tool", sorted(THRESHOLD_TOOLS))
def test_thresholds_in_real_units(tool, monkeypatch):
    opts = _options(_parser(tool, monkeypatch))
    for flag in ("--theta-x", "--theta-h", "--theta-head"):
        assert flag in opts, f"{tool} lacks {flag}"
        assert "real units" in opts[flag].help, f"{tool} {flag}: say the unit"


def test_train_reads_a_pickled_init_only_with_trust_pickle(tmp_path, monkeypatch):
    """``--init`` of a whole saved ``nn.GRU``: refused with a pointer to ``--trust-pickle``, read
    with it."""
    from deltahw.train import train as ttrain

    opts = _options(_parser("train", monkeypatch))
    assert "--init" in opts and "--trust-pickle" in opts
    torch.manual_seed(0)
    gru = torch.nn.GRU(I, H)
    torch.save(gru, tmp_path / "whole.pt")
    base = DeltaGRUConfig(I, H, 1, O)
    with pytest.raises(ttrain.TrainError, match="pass --trust-pickle if you trust the file"):
        ttrain._load_init(tmp_path / "whole.pt", base)
    state, head, note = ttrain._load_init(tmp_path / "whole.pt", base, trust_pickle=True)
    assert head is None and "no Linear head" in note
    assert all(torch.equal(state[k], v) for k, v in gru.state_dict().items())


def test_the_same_loading_help_everywhere(monkeypatch):
    helps = {tool: _options(_parser(tool, monkeypatch))["--trust-pickle"].help
             for tool in sorted(MODEL_TOOLS)}
    assert len(set(helps.values())) == 1, helps


# --------------------------------------------------------------------------------------------------
# Behaviour behind the flags
I, H, O = 3, 6, 2


@pytest.fixture
def ckpt(tmp_path):
    torch.manual_seed(0)
    gru, head = torch.nn.GRU(I, H), torch.nn.Linear(H, O)
    path = tmp_path / "m.pt"
    save_checkpoint(path, DeltaGRUConfig(I, H, 1, O), gru.state_dict(), head.state_dict(),
                    input_mean=torch.zeros(I), input_std=torch.ones(I))
    return path


class _Stop(Exception):
    pass


THETAS = ["--theta-x", "0.25", "--theta-h", "0.5", "--theta-head", "0.125"]


def _check_thresholds(model):
    lsb = model.config.act.lsb
    assert model.config.theta_x == (round(0.25 / lsb),)
    assert model.config.theta_h == (round(0.5 / lsb),)
    assert model.config.theta_head == round(0.125 / lsb)
    assert model.config.theta_h[0] > 0


def test_export_applies_thresholds(ckpt, tmp_path, capsys):
    from deltahw.export import main

    assert main([str(ckpt), "--out", str(tmp_path / "exp"), *THETAS]) == 0
    _check_thresholds(load_model(tmp_path / "exp"))


@pytest.mark.parametrize("tool, entry, extra", [
    ("generate", "generate", []),
    ("build", "build_model", ["--board", "arty_a7"]),
])
def test_generate_and_build_apply_thresholds(ckpt, tmp_path, monkeypatch, tool, entry, extra):
    import importlib

    mod = importlib.import_module(f"deltahw.{tool}")
    seen = []

    def fake(model, *args, **kw):
        seen.append(model)
        raise _Stop

    monkeypatch.setattr(mod, entry, fake)
    with pytest.raises(_Stop):
        mod.main([str(ckpt), *extra, "--out", str(tmp_path / tool), *THETAS])
    _check_thresholds(seen[0])


def test_soc_sim_applies_thresholds(ckpt, tmp_path, monkeypatch):
    from deltahw.soc import sim

    seen = []

    def fake(model, index=0):
        seen.append(model)
        raise _Stop

    monkeypatch.setattr(sim, "default_sequence", fake)
    with pytest.raises(_Stop):
        sim.main([str(ckpt), "--out", str(tmp_path / "s"), *THETAS])
    _check_thresholds(seen[0])


def test_host_run_writes_new_thresholds_without_reloading(ckpt, tmp_path, monkeypatch, capsys):
    """``host run MODEL --theta-x ...`` (no --load) changes only the device's thresholds, and the
    golden model it compares with runs at the same thresholds."""
    from deltahw import host
    from deltahw.linksim import FaultyLine, RefDevice, Schedule

    model = load_model(ckpt)
    line = FaultyLine(RefDevice(model.config, deadline=1000.0), Schedule())
    dev = host.Device(line, timeout=0.05, retries=3, quiet_time=0.005)
    dev.connect()
    dev.load_model(model)  # the device holds the weights at the model's own thresholds (0)
    calls = []
    real = dev.set_thresholds

    def spy(*a, **kw):
        calls.append(a)
        return real(*a, **kw)

    monkeypatch.setattr(dev, "set_thresholds", spy)
    monkeypatch.setattr(dev, "load_model", None)  # must not be called
    monkeypatch.setattr(dev, "close", lambda: None)
    monkeypatch.setattr(host.Device, "open", staticmethod(lambda port, **kw: dev))
    x = torch.cumsum(torch.randn(7, I, generator=torch.Generator().manual_seed(1)), 0).numpy()
    np.save(tmp_path / "x.npy", x)
    args = ["--port", "sim", "run", str(ckpt), "--input", str(tmp_path / "x.npy"), *THETAS]
    assert host.main(args) == 0, capsys.readouterr().err
    assert "outputs match the golden model" in capsys.readouterr().out
    lsb = model.config.act.lsb
    assert calls == [((round(0.25 / lsb),), (round(0.5 / lsb),), round(0.125 / lsb))]


def test_calibrate_takes_the_loading_options(ckpt, tmp_path, monkeypatch, capsys):
    from deltahw import calibrate

    seen = {}
    real = calibrate.load_model

    def spy(path, **kw):
        seen.update(kw)
        return real(path, **kw)

    monkeypatch.setattr(calibrate, "load_model", spy)
    monkeypatch.setattr(calibrate, "calibrate", lambda *a, **kw: (_ for _ in ()).throw(_Stop()))
    np.savez(tmp_path / "v.npz", X=np.zeros((4, I)), lengths=np.array([2, 2]), y=np.array([0, 1]))
    with pytest.raises(_Stop):
        calibrate.main([str(ckpt), "--data", str(tmp_path / "v.npz"), "--out",
                        str(tmp_path / "c"), "--allow-clipping", "--trust-pickle"])
    assert seen["allow_clipping"] is True and seen["trust_pickle"] is True


def test_calibrate_force_replaces_a_foreign_folder_but_never_an_input(ckpt, tmp_path):
    from deltahw.calibrate import CalibrationError, _check_out

    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(CalibrationError, match="did not write.*--force"):
        _check_out(other, [ckpt])
    _check_out(other, [ckpt], force=True)
    # The folder is replaced whole: one holding an input is refused, with or without --force.
    with pytest.raises(CalibrationError, match="would overwrite the input"):
        _check_out(tmp_path, [ckpt], force=True)


# --------------------------------------------------------------------------------------------------
# Bad input: one ``error:`` sentence, no traceback
def _bad_cases(tmp_path):
    missing = str(tmp_path / "missing.pt")
    x = str(tmp_path / "x.npy")
    np.save(x, np.zeros((3, I)))
    return {
        "export": ("deltahw.export", [missing, "--out", str(tmp_path / "o")]),
        "generate": ("deltahw.generate", [missing, "--out", str(tmp_path / "o")]),
        "build": ("deltahw.build", [missing, "--board", "arty_a7", "--no-synth", "--out",
                                    str(tmp_path / "o")]),
        "calibrate": ("deltahw.calibrate", [missing, "--data", str(tmp_path / "v.npz"), "--out",
                                            str(tmp_path / "o")]),
        "simulate": ("deltahw.simulate", [missing, "--input", x]),
        "golden": ("deltahw.golden", [missing, "--input", x, "--output", str(tmp_path / "y.npy")]),
        "host load": ("deltahw.host", ["--port", "/dev/null", "load", missing]),
        "host run": ("deltahw.host", ["--port", "/dev/null", "run", missing, "--input", x]),
        "soc.sim": ("deltahw.soc.sim", [missing, "--out", str(tmp_path / "o")]),
        "train": ("deltahw.train.train", ["--data", str(tmp_path / "missing.npz"), "--out",
                                          str(tmp_path / "o")]),
        "train --init": ("deltahw.train.train", ["--dataset", "fsdd", "--init", missing,
                                                 "--out", str(tmp_path / "o"), "--limit", "4",
                                                 "--quiet"]),
    }


@pytest.mark.parametrize("case", ["export", "generate", "build", "calibrate", "simulate", "golden",
                                  "host load", "host run", "soc.sim", "train", "train --init"])
def test_a_missing_model_or_data_file_is_one_error_sentence(case, tmp_path, monkeypatch, capsys):
    module, argv = _bad_cases(tmp_path)[case]
    monkeypatch.chdir(tmp_path)
    assert importlib.import_module(module).main(argv) == 2
    cap = capsys.readouterr()
    assert re.fullmatch(r"error: [^\n]*\n", cap.err), cap.err
    assert "missing" in cap.err and "Traceback" not in cap.err + cap.out
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("module", ["deltahw.export", "deltahw.generate", "deltahw.build",
                                    "deltahw.soc.sim"])
def test_a_bad_threshold_is_one_error_sentence(module, ckpt, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    argv = [str(ckpt), "--out", str(tmp_path / "o"), "--theta-h", "0.1,abc"]
    if module == "deltahw.build":
        argv += ["--board", "arty_a7", "--no-synth"]
    assert importlib.import_module(module).main(argv) == 2
    err = capsys.readouterr().err
    assert re.fullmatch(r"error: [^\n]*--theta-h takes finite thresholds[^\n]*\n", err), err
    assert not (tmp_path / "o").exists()
