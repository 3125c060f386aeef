"""Hostile inputs: every case exits non-zero with one ``error:`` sentence, no traceback, nothing
half-written, nothing of the user's deleted and no code run.

The command-line cases run in subprocesses. The ones about code execution (a crafted ``.pt`` whose
unpickling would create a file) run each tool as ``python -m deltahw.<tool>``; the others are
grouped: one subprocess runs every case's ``main()`` in turn (each in its own folder, with its own
working directory and captured stdout/stderr), so the suite stays fast. Every case snapshots its
folder (names, sizes, contents) before and checks it is unchanged afterwards.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from deltahw.config import DeltaGRUConfig
from deltahw.export import export_model
from deltahw.model import CHECKPOINT_KIND, from_modules, save_checkpoint

REPO = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONPATH": str(REPO)}
I, H, O = 4, 6, 3


# --------------------------------------------------------------------------------------------------
# Material
class Payload:
    """Unpickling this creates the file ``path`` (what a crafted checkpoint could do)."""

    def __init__(self, path):
        self.path = str(path)

    def __reduce__(self):
        return (open, (self.path, "w"))


def _gru(seed=0):
    torch.manual_seed(seed)
    return torch.nn.GRU(I, H), torch.nn.Linear(H, O)


def _state_dict(scale=1.0):
    gru, head = _gru()
    sd = {f"gru.{k}": v.detach() * scale for k, v in gru.state_dict().items()}
    sd.update({f"fc.{k}": v.detach() for k, v in head.state_dict().items()})
    return sd


def _checkpoint(path, **edit):
    gru, head = _gru()
    cfg = DeltaGRUConfig(I, H, 1, O)
    save_checkpoint(path, cfg, gru.state_dict(), head.state_dict(),
                    input_mean=torch.zeros(I), input_std=torch.ones(I))
    if edit:
        obj = torch.load(path, weights_only=True)
        obj.update(edit)
        torch.save(obj, path)


def _evil(path, marker):
    torch.save({"kind": CHECKPOINT_KIND, "gru": Payload(marker)}, path)


def _export(folder):
    gru, head = _gru()
    export_model(from_modules(gru, head), folder)


def _edit_manifest(folder, fn):
    m = json.loads((folder / "manifest.json").read_text())
    fn(m)
    (folder / "manifest.json").write_text(json.dumps(m))


def _user_folder(folder):
    folder.mkdir()
    (folder / "notes.txt").write_text("the user's own notes\n")
    (folder / "data.npy").write_bytes(b"precious")


def _snapshot(root: Path) -> dict:
    """Every path under ``root`` with a digest of its contents (folders: None)."""
    snap = {}
    for p in sorted(root.rglob("*")):
        rel = str(p.relative_to(root))
        snap[rel] = None if p.is_dir() else hashlib.sha256(p.read_bytes()).hexdigest()
    return snap


# --------------------------------------------------------------------------------------------------
# The grouped cases: (id, module, argv, regex the error line must match, setup(folder))
# In argv, "{d}" is the case's folder.
def _setup_evil(d):
    _evil(d / "evil.pt", d / "PWNED")


def _setup_ckpt(**edit):
    return lambda d: _checkpoint(d / "m.pt", **edit)


def _setup_sd(sd_fn):
    return lambda d: torch.save(sd_fn(), d / "m.pt")


def _setup_config(text):
    def setup(d):
        (d / "c.json").write_text(text)
    return setup


def _setup_export(fn=None):
    def setup(d):
        _export(d / "exp")
        if fn:
            _edit_manifest(d / "exp", fn)
        np.save(d / "x.npy", np.zeros((5, I)))
    return setup


def _setup_inputs(make):
    def setup(d):
        _checkpoint(d / "m.pt")
        make(d)
    return setup


def _other_weight():
    sd = _state_dict()
    sd["other.weight"] = torch.zeros(5, H)
    return sd


def _whole_module(d):
    gru, head = _gru()
    seq = torch.nn.Sequential()
    seq.add_module("gru", gru)
    seq.add_module("fc", head)
    torch.save(seq, d / "m.pt")


def _set_cfg(key, value):
    def fn(m):
        m["config"][key] = value
    return fn


def _both(key, value):
    """Edit the config and make the manifest's formats agree with it (only the .mem headers
    still tell)."""
    def fn(m):
        from deltahw.artifacts import _formats

        m["config"][key] = value
        m["formats"] = _formats(DeltaGRUConfig.from_dict(m["config"]))
    return fn


def _x(shape, dtype=np.float64, fill=0.0):
    return lambda d: np.save(d / "x.npy", np.full(shape, fill, dtype=dtype))


def _npz(d):
    np.savez(d / "x.npz", x=np.zeros((5, I)))


def _obj_npy(d):
    np.save(d / "x.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)


def _golden(model="{d}/m.pt", inp="{d}/x.npy", out="{d}/y.npy", *extra):
    return ["deltahw.golden", [model, "--input", inp, "--output", out, *extra]]


def _file(d):
    _checkpoint(d / "m.pt")
    (d / "afile").write_text("not a folder\n")
    np.save(d / "x.npy", np.zeros((5, I)))


def _setup_evil_run(d):
    (d / "run").mkdir()
    _evil(d / "run" / "train_state.pt", d / "PWNED")


EVIL = (r"evil\.pt holds a pickled Python object \((builtins|io)\.open\), which deltahw does not "
        r"unpickle because loading it could run arbitrary code\. Save the weights instead: "
        r"torch\.save\(model\.state_dict\(\), 'model\.pt'\).*--trust-pickle")
GOOD_CFG = json.dumps({"input_size": I, "hidden_size": H})
CASES = [
    # ---- a crafted checkpoint never runs its payload (it would create {d}/PWNED) --------------
    ("evil-export", "deltahw.export", ["{d}/evil.pt", "--out", "{d}/o"], EVIL, _setup_evil),
    ("evil-golden", *_golden("{d}/evil.pt"), EVIL,
     lambda d: (_setup_evil(d), np.save(d / "x.npy", np.zeros((5, I))))),
    ("evil-generate", "deltahw.generate", ["{d}/evil.pt", "--out", "{d}/o"], EVIL, _setup_evil),
    ("evil-build", "deltahw.build", ["{d}/evil.pt", "--board", "arty_a7", "--out", "{d}/o"],
     EVIL, _setup_evil),
    ("evil-host", "deltahw.host", ["--port", "/dev/null", "load", "{d}/evil.pt"], EVIL,
     _setup_evil),
    ("evil-train-resume", "deltahw.train.train",
     ["--dataset", "fsdd", "--hidden", "8", "--out", "{d}/run", "--resume", "--quiet"],
     r"Cannot resume from .*train_state\.pt: it is not a training state this tool wrote",
     _setup_evil_run),
    # ---- checkpoints --------------------------------------------------------------------------
    ("ckpt-whole-module", "deltahw.export", ["{d}/m.pt", "--out", "{d}/o"],
     r"pickled Python object \(torch\.nn\.modules\.container\.Sequential\).*"
     r"torch\.save\(model\.state_dict\(\), 'model\.pt'\)", _whole_module),
    ("ckpt-other-weight", "deltahw.export", ["{d}/m.pt", "--out", "{d}/o"],
     r"does not use: \['other\.weight'\]", _setup_sd(_other_weight)),
    ("ckpt-heavy-clipping", "deltahw.export", ["{d}/m.pt", "--out", "{d}/o"],
     r"Quantization clips \d+ of \d+ parameters .*layer0\.w_\w: \d+ of \d+ .*--allow-clipping",
     _setup_sd(lambda: _state_dict(scale=20.0))),
    ("ckpt-all-zero-weights", "deltahw.export", ["{d}/m.pt", "--out", "{d}/o"],
     r"Every weight of layer0\.w_\w rounds to 0 in Q1\.7",
     _setup_sd(lambda: _state_dict(scale=1e-4))),
    ("ckpt-gru-none", "deltahw.export", ["{d}/m.pt", "--out", "{d}/o"],
     r"checkpoint whose 'gru' is NoneType; expected a dict of GRU tensors", _setup_ckpt(gru=None)),
    ("ckpt-config-list", "deltahw.export", ["{d}/m.pt", "--out", "{d}/o"],
     r"'config' is list; expected a config object", _setup_ckpt(config=[1, 2])),
    ("ckpt-std-zero", "deltahw.export", ["{d}/m.pt", "--out", "{d}/o"],
     r"input_std .* holds 0\.0; every standard deviation must be > 0",
     _setup_ckpt(input_std=torch.zeros(I))),
    ("ckpt-std-negative", "deltahw.export", ["{d}/m.pt", "--out", "{d}/o"],
     r"input_std .* holds -1\.0; every standard deviation must be > 0",
     _setup_ckpt(input_std=-torch.ones(I))),
    ("ckpt-mean-nan", "deltahw.export", ["{d}/m.pt", "--out", "{d}/o"],
     r"input_mean .* holds nan; every value must be finite",
     _setup_ckpt(input_mean=torch.full((I,), float("nan")))),
    ("ckpt-mean-length", "deltahw.export", ["{d}/m.pt", "--out", "{d}/o"],
     r"input_mean .* has 3 values; the model has input_size=4",
     _setup_ckpt(input_mean=torch.zeros(3))),
    ("ckpt-not-torch", "deltahw.export", ["{d}/m.pt", "--out", "{d}/o"],
     r"m\.pt is not a readable PyTorch file",
     lambda d: (d / "m.pt").write_bytes(b"\x00garbage" * 10)),
    ("ckpt-list", "deltahw.export", ["{d}/m.pt", "--out", "{d}/o"],
     r"m\.pt holds a list; expected a state dict or a deltahw checkpoint",
     lambda d: torch.save([1, 2], d / "m.pt")),
    # ---- configs ------------------------------------------------------------------------------
    ("cfg-act-string", "deltahw.generate", ["{d}/c.json", "--out", "{d}/o"],
     r"act must be a fixed-point format written \{\"bits\": B, \"frac\": F\} .*got 'Q8\.8'",
     _setup_config(json.dumps({"input_size": I, "hidden_size": H, "act": "Q8.8"}))),
    ("cfg-act-no-frac", "deltahw.generate", ["{d}/c.json", "--out", "{d}/o"],
     r"act must be a fixed-point format .*got \{'bits': 16\}",
     _setup_config(json.dumps({"input_size": I, "hidden_size": H, "act": {"bits": 16}}))),
    ("cfg-theta-null", "deltahw.generate", ["{d}/c.json", "--out", "{d}/o"],
     r"theta_x must be a list of integer thresholds .*got None",
     _setup_config(json.dumps({"input_size": I, "hidden_size": H, "theta_x": None}))),
    ("cfg-json-list", "deltahw.generate", ["{d}/c.json", "--out", "{d}/o"],
     r"A config must be a JSON object \{\.\.\.\}; .*c\.json holds an array",
     _setup_config("[1, 2]")),
    ("cfg-json-null", "deltahw.generate", ["{d}/c.json", "--out", "{d}/o"],
     r"A config must be a JSON object \{\.\.\.\}; .*c\.json holds null", _setup_config("null")),
    ("cfg-json-number", "deltahw.generate", ["{d}/c.json", "--out", "{d}/o"],
     r"A config must be a JSON object \{\.\.\.\}; .*c\.json holds a number", _setup_config("3")),
    ("cfg-json-invalid", "deltahw.generate", ["{d}/c.json", "--out", "{d}/o"],
     r"c\.json is not valid JSON", _setup_config("{nope")),
    ("cfg-export-config-list", "deltahw.export",
     ["{d}/m.pt", "--config", "{d}/c.json", "--out", "{d}/o"],
     r"A config must be a JSON object \{\.\.\.\}; .*c\.json holds an array",
     lambda d: (_setup_config("[]")(d), torch.save(_state_dict(), d / "m.pt"))),
    ("cfg-lanes-string", "deltahw.generate", ["{d}/c.json", "--out", "{d}/o"],
     r"lanes must be an integer from 3 to \d+[^;]*; got 'many'",
     _setup_config(json.dumps({"input_size": I, "hidden_size": H, "lanes": "many"}))),
    # ---- manifests (an exported folder given to golden) ---------------------------------------
    ("manifest-files-null", *_golden("{d}/exp"),
     r"'files' in .*manifest\.json must be an object .*got null",
     _setup_export(lambda m: m.update(files=None))),
    ("manifest-weight-frac", *_golden("{d}/exp"),
     r"formats\.weight = 'Q1\.7' but its config gives 'Q2\.6'",
     _setup_export(_set_cfg("weight", {"bits": 8, "frac": 6}))),
    ("manifest-act-frac", *_golden("{d}/exp"),
     r"formats\.act = 'Q8\.8' but its config gives 'Q9\.7'",
     _setup_export(_set_cfg("act", {"bits": 16, "frac": 7}))),
    ("manifest-weight-frac-consistent", *_golden("{d}/exp"),
     r"weights_bank0\.mem starts with .*Q1\.7.* but the manifest's config needs .*Q2\.6",
     _setup_export(_both("weight", {"bits": 8, "frac": 6}))),
    ("manifest-geometry", *_golden("{d}/exp"),
     r"geometry\.weight_depth = 1 but its config gives \d+",
     _setup_export(lambda m: m["geometry"].update(weight_depth=1))),
    ("manifest-std-zero", *_golden("{d}/exp"),
     r"input_std in the manifest .* holds 0; every standard deviation must be > 0",
     _setup_export(lambda m: m.update(input_mean=[0] * I, input_std=[0] * I))),
    ("manifest-mean-length", *_golden("{d}/exp"),
     r"input_mean in the manifest .* has 2 values; the model has input_size=4",
     _setup_export(lambda m: m.update(input_mean=[0, 0], input_std=[1, 1]))),
    ("manifest-list", *_golden("{d}/exp"),
     r"is not a deltahw model manifest \(kind=list\)",
     lambda d: (_setup_export()(d), (d / "exp" / "manifest.json").write_text("[]"))),
    # ---- inputs -------------------------------------------------------------------------------
    ("input-npz", *_golden(inp="{d}/x.npz"),
     r"x\.npz is an \.npz archive; --input takes one \.npy array", _setup_inputs(_npz)),
    ("input-T0", *_golden(), r"has shape \(0, 4\): no timesteps to run",
     _setup_inputs(_x((0, I)))),
    ("input-B0", *_golden(), r"has shape \(0, 5, 4\): no timesteps to run",
     _setup_inputs(_x((0, 5, I)))),
    ("input-nan", *_golden(), r"The inputs hold 20 NaN or infinite value\(s\)",
     _setup_inputs(_x((5, I), fill=np.nan))),
    ("input-object", *_golden(), r"x\.npy is not a readable \.npy file of numbers",
     _setup_inputs(_obj_npy)),
    ("input-ints", *_golden(), r"--input must hold floats .*got dtype int32",
     _setup_inputs(_x((5, I), dtype=np.int32))),
    ("input-shape", *_golden(), r"shape \(T, 4\) or \(B, T, 4\); got \(5, 3\)",
     _setup_inputs(_x((5, 3)))),
    ("theta-inf", *_golden("{d}/m.pt", "{d}/x.npy", "{d}/y.npy", "--theta-x", "inf"),
     r"--theta-x takes finite thresholds >= 0 .*got 'inf'", _setup_inputs(_x((5, I)))),
    ("theta-negative", *_golden("{d}/m.pt", "{d}/x.npy", "{d}/y.npy", "--theta-h", "-0.1"),
     r"--theta-h takes finite thresholds >= 0 .*got '-0\.1'", _setup_inputs(_x((5, I)))),
    ("theta-text", *_golden("{d}/m.pt", "{d}/x.npy", "{d}/y.npy", "--theta-x", "0.1,abc"),
     r"--theta-x takes finite thresholds .*got '0\.1,abc'", _setup_inputs(_x((5, I)))),
    # ---- output paths -------------------------------------------------------------------------
    ("out-golden-dir", *_golden(out="{d}"), r"--output file .* is an existing folder",
     _setup_inputs(_x((5, I)))),
    ("out-golden-under-file", *_golden(out="{d}/afile/y.npy"),
     r"cannot be created: .*afile is a file, not a folder", _file),
    ("out-golden-stats-dir", *_golden("{d}/m.pt", "{d}/x.npy", "{d}/y.npy", "--stats", "{d}"),
     r"--stats file .* is an existing folder", _setup_inputs(_x((5, I)))),
    ("out-golden-unwritable", *_golden(out="/sys/deltahw-hostile.npy"),
     r"Cannot write /sys/deltahw-hostile\.npy: .*choose a writable location",
     _setup_inputs(_x((5, I)))),
    ("out-export-unwritable", "deltahw.export", ["{d}/m.pt", "--out", "/sys/deltahw-hostile"],
     r"Cannot write /sys/deltahw-hostile: .*choose a writable location", _setup_ckpt()),
    ("out-export-user-folder", "deltahw.export", ["{d}/m.pt", "--out", "{d}/mine"],
     r"output folder .*mine already exists and is not a folder deltahw\.export wrote; refusing "
     r"to replace it .*--force", lambda d: (_checkpoint(d / "m.pt"), _user_folder(d / "mine"))),
    ("out-export-cwd", "deltahw.export", ["{d}/m.pt", "--out", "."],
     r"output folder \. is the working directory", _setup_ckpt()),
    ("out-export-cwd-force", "deltahw.export", ["{d}/m.pt", "--out", ".", "--force"],
     r"output folder \. is the working directory", _setup_ckpt()),
    ("out-export-input-folder", "deltahw.export", ["{d}/mine/m.pt", "--out", "{d}/mine",
                                                   "--force"],
     r"output folder .*mine holds the input .*m\.pt",
     lambda d: (_user_folder(d / "mine"), _checkpoint(d / "mine" / "m.pt"))),
    ("out-export-is-file", "deltahw.export", ["{d}/m.pt", "--out", "{d}/afile"],
     r"output folder .*afile is an existing file; expected a folder", _file),
    ("out-export-extra-files", "deltahw.export", ["{d}/m.pt", "--out", "{d}/exp"],
     r"holds files deltahw\.export did not write \(notes\.txt\)",
     lambda d: (_checkpoint(d / "m.pt"), _export(d / "exp"),
                (d / "exp" / "notes.txt").write_text("mine\n"))),
    ("out-generate-user-folder", "deltahw.generate", ["{d}/c.json", "--out", "{d}/mine"],
     r"mine already exists and is not a folder deltahw\.generate wrote",
     lambda d: (_setup_config(GOOD_CFG)(d), _user_folder(d / "mine"))),
    ("out-generate-export-folder", "deltahw.generate", ["{d}/c.json", "--out", "{d}/exp"],
     r"exp already exists and is the output of deltahw\.export; refusing",
     lambda d: (_setup_config(GOOD_CFG)(d), _export(d / "exp"))),
    ("out-generate-input-folder", "deltahw.generate", ["{d}/exp", "--out", "{d}/exp", "--force"],
     r"output folder .*exp holds the input", lambda d: _export(d / "exp")),
    ("out-build-user-folder", "deltahw.build",
     ["{d}/exp", "--board", "arty_a7", "--out", "{d}/mine", "--no-synth"],
     r"mine already exists and is not a folder deltahw\.build wrote",
     lambda d: (_export(d / "exp"), _user_folder(d / "mine"))),
    ("out-train-is-file", "deltahw.train.train",
     ["--dataset", "fsdd", "--hidden", "8", "--out", "{d}/afile", "--quiet"],
     r"--out .*afile is an existing file; expected a folder for the run",
     lambda d: (d / "afile").write_text("mine\n")),
    ("build-clock-0", "deltahw.build", ["--board", "arty_a7", "--clock-mhz", "0"],
     r"--clock-mhz must be from 10 to 400 MHz; got 0", None),
    ("build-clock-900", "deltahw.build", ["--board", "ulx3s", "--clock-mhz", "900"],
     r"--clock-mhz must be from 10 to 400 MHz; got 900", None),
    ("build-baud-0", "deltahw.build", ["--board", "arty_a7", "--baud", "0"],
     r"--baud must be from 300 to 25000000 at 100 MHz .*got 0", None),
    ("build-model-missing", "deltahw.build", ["{d}/nope", "--board", "arty_a7"],
     r"Cannot use model .*nope: Model path .*nope does not exist", None),
]

RUNNER = textwrap.dedent("""
    import contextlib, importlib, io, json, os, sys, traceback
    cases = json.loads(sys.argv[1])
    results = {}
    for case_id, module, argv, folder in cases:
        os.chdir(folder)
        out, err = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            try:
                rc = importlib.import_module(module).main(argv)
            except SystemExit as e:
                rc = e.code if isinstance(e.code, int) else 1
            except BaseException:
                rc, _ = "exception", err.write(traceback.format_exc())
        results[case_id] = {"rc": rc, "stderr": err.getvalue(), "stdout": out.getvalue()}
    print(json.dumps(results))
""")


@pytest.fixture(scope="module")
def grouped(tmp_path_factory):
    root = tmp_path_factory.mktemp("hostile")
    jobs, snaps = [], {}
    for case_id, module, argv, _match, setup in CASES:
        d = root / case_id
        d.mkdir()
        if setup:
            setup(d)
        snaps[case_id] = _snapshot(d)
        jobs.append([case_id, module, [a.replace("{d}", str(d)) for a in argv], str(d)])
    proc = subprocess.run([sys.executable, "-c", RUNNER, json.dumps(jobs)], env=ENV,
                          capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(proc.stdout.strip().splitlines()[-1])
    return root, snaps, results


def _assert_clean_error(rc, stderr, match):
    assert rc not in (0, "exception"), stderr
    assert "Traceback" not in stderr, stderr
    errors = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, stderr
    assert stderr.count("error:") == 1, stderr
    import re

    assert re.search(match, stderr, re.S), f"{match!r} not in {stderr!r}"


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_grouped_case(grouped, case):
    root, snaps, results = grouped
    case_id, _module, _argv, match, _setup = case
    res = results[case_id]
    _assert_clean_error(res["rc"], res["stderr"], match)
    # Nothing half-written, nothing of the user's deleted or changed, no code run.
    assert _snapshot(root / case_id) == snaps[case_id]
    assert not Path("/sys/deltahw-hostile").exists()


# --------------------------------------------------------------------------------------------------
# The same through the real entry point (python -m), once
def test_crafted_pickle_runs_no_code_through_python_m(tmp_path):
    _setup_evil(tmp_path)
    before = _snapshot(tmp_path)
    proc = subprocess.run([sys.executable, "-m", "deltahw.export", "evil.pt", "--out", "o"],
                          env=ENV, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert not (tmp_path / "PWNED").exists(), "the checkpoint's payload ran"
    _assert_clean_error(proc.returncode, proc.stderr, EVIL)
    assert _snapshot(tmp_path) == before


# --------------------------------------------------------------------------------------------------
# Output folders the tools themselves wrote are replaced; --force overrides; stale temporaries go
def test_tool_folders_are_replaced_and_force_overrides(tmp_path, monkeypatch):
    from deltahw.export import main as export_main

    _checkpoint(tmp_path / "m.pt")
    monkeypatch.chdir(tmp_path)
    assert export_main(["m.pt", "--out", "exp"]) == 0
    first = _snapshot(tmp_path / "exp")
    assert export_main(["m.pt", "--out", "exp", "--lanes", "24"]) == 0  # an earlier export
    assert _snapshot(tmp_path / "exp") != first
    _user_folder(tmp_path / "mine")
    assert export_main(["m.pt", "--out", "mine"]) == 2
    assert (tmp_path / "mine" / "notes.txt").exists()
    assert export_main(["m.pt", "--out", "mine", "--force"]) == 0
    assert not (tmp_path / "mine" / "notes.txt").exists()
    # A temporary left by a killed run (its process id is dead) is removed by the next run.
    stale = tmp_path / ".exp.999999999.abcd.tmp"
    stale.mkdir()
    (stale / "weights_bank0.mem").write_text("00\n")
    live = tmp_path / f".exp.{os.getppid()}.abcd.tmp"  # a live process's: left alone
    live.mkdir()
    assert export_main(["m.pt", "--out", "exp"]) == 0
    assert not stale.exists() and live.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [live.name, "exp", "m.pt", "mine"])


def test_heavy_clipping_is_allowed_on_request_and_reported(tmp_path, capsys):
    from deltahw.export import main as export_main

    torch.save(_state_dict(scale=20.0), tmp_path / "m.pt")
    assert export_main([str(tmp_path / "m.pt"), "--out", str(tmp_path / "o"),
                        "--allow-clipping"]) == 0
    out = capsys.readouterr().out
    assert "layer0.w_x:" in out and "saturated to the Q1.7 range" in out


# --------------------------------------------------------------------------------------------------
# Signals: SIGTERM leaves no temporary and no output; child tools die with their parent
def _wait_for(proc, text, timeout=120):
    t0, seen = time.monotonic(), ""
    while time.monotonic() - t0 < timeout:
        line = proc.stdout.readline()
        if not line:
            break
        seen += line
        if text in line:
            return seen
    raise AssertionError(f"{text!r} not printed; got {seen!r}")


def test_sigterm_during_generate_leaves_nothing(tmp_path):
    (tmp_path / "c.json").write_text(json.dumps({"input_size": 16, "hidden_size": 64}))
    proc = subprocess.Popen([sys.executable, "-m", "deltahw.generate", "c.json", "--out", "rtl"],
                            cwd=tmp_path, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)
    _wait_for(proc, "generating")
    time.sleep(0.5)  # inside the Verilog conversion, with the temporary folder open
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert "Traceback" not in err and err.count("error:") == 1
    assert "terminated by SIGTERM" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.json"]


def test_sigterm_stops_the_tool_process_group(tmp_path):
    """build.run_tool: the tool and its children die when deltahw is terminated."""
    script = textwrap.dedent(f"""
        import sys
        from deltahw.build import run_tool
        from deltahw.util import run_cli
        def body():
            print("started", flush=True)
            run_tool(["sh", "-c", "sleep 300 & echo $! > {tmp_path}/child.pid; wait"],
                     "{tmp_path}", "fake synthesis", "{tmp_path}/tool.log")
            return 0
        sys.exit(run_cli(body))
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], env=ENV, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    _wait_for(proc, "started")
    pidfile = tmp_path / "child.pid"
    t0 = time.monotonic()
    while not (pidfile.exists() and pidfile.read_text().strip()) and time.monotonic() - t0 < 30:
        time.sleep(0.05)
    child = int(pidfile.read_text())
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143 and "terminated by SIGTERM" in err, err
    _assert_dies(child)


def test_sigterm_while_the_tool_starts_still_stops_it(tmp_path):
    """build.run_tool: a SIGTERM that arrives while Popen is returning (before the wait) still
    kills the tool's process group. The child script sends it to itself at exactly that point."""
    script = textwrap.dedent(f"""
        import os, signal, subprocess, sys, time
        from deltahw.build import run_tool
        from deltahw.util import run_cli
        real = subprocess.Popen
        def popen(*a, **k):
            p = real(*a, **k)
            while not os.path.exists("{tmp_path}/child.pid"):
                time.sleep(0.01)
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.2)  # the handler would run here, before run_tool's try/finally
            return p
        subprocess.Popen = popen
        def body():
            run_tool(["sh", "-c", "sleep 300 & echo $! > {tmp_path}/child.pid; wait"],
                     "{tmp_path}", "fake synthesis", "{tmp_path}/tool.log")
            return 0
        sys.exit(run_cli(body))
    """)
    proc = subprocess.run([sys.executable, "-c", script], env=ENV, capture_output=True,
                          text=True, timeout=120)
    assert proc.returncode == 143 and "terminated by SIGTERM" in proc.stderr, proc.stderr
    child = int((tmp_path / "child.pid").read_text())
    _assert_dies(child)


def _assert_dies(child):
    """The tool's child ``child`` (a pid) is gone within 10 s; killed and reported otherwise."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < 10:
        if not _alive(child):
            return
        time.sleep(0.1)
    os.kill(child, signal.SIGKILL)
    raise AssertionError("the tool's child survived its parent")


def _alive(pid):
    """True while ``pid`` runs. A killed child reparented to a PID 1 that does not reap (as in
    containers) stays a zombie, which ``os.kill(pid, 0)`` still reports as present."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def test_interrupted_build_leaves_no_tree_and_reuse_keeps_no_stale_banks(tmp_path, monkeypatch):
    from deltahw import build
    from deltahw.util import Terminated

    _export(tmp_path / "exp")
    out = tmp_path / "b"
    args = ["--board", "arty_a7", "--no-synth", "--out", str(out)]
    assert build.main([str(tmp_path / "exp"), "--lanes", "24", *args]) == 0
    assert (out / "weights_bank5.mem").exists()  # 24 lanes / 4 per bank = 6 banks
    report = json.loads((out / "report.json").read_text())
    assert report["kind"] == "deltahw-build"
    before = _snapshot(out)
    real = build.write_model_files

    def killed(model, folder):  # SIGTERM arrives after the first files are written
        real(model, folder)
        raise Terminated()

    monkeypatch.setattr(build, "write_model_files", killed)
    assert build.main([str(tmp_path / "exp"), *args]) == 143
    assert _snapshot(out) == before  # the earlier build untouched, nothing half-written
    assert sorted(p.name for p in tmp_path.iterdir()) == ["b", "exp"]
    monkeypatch.undo()
    # A reused folder is replaced whole: 12 lanes / 4 per bank = 3 banks, no stale bank 3..5.
    assert build.main([str(tmp_path / "exp"), *args]) == 0
    assert (out / "weights_bank2.mem").exists() and not (out / "weights_bank3.mem").exists()


def test_build_cli_spellings(monkeypatch, capsys):
    """The model positional or --model; --out, or the deprecated --output."""
    from deltahw import build

    seen = []
    monkeypatch.setattr(build, "_main", lambda args: seen.append((args.model, args.out)) or 0)
    assert build.main(["m", "--board", "arty_a7", "--out", "o"]) == 0
    assert build.main(["--model", "m", "--board", "arty_a7", "--output", "o"]) == 0
    assert "--output is deprecated; use --out" in capsys.readouterr().err
    assert seen == [("m", "o"), ("m", "o")]
    with pytest.raises(SystemExit):
        build.main(["m", "--model", "other", "--board", "arty_a7"])
    assert "the model is given twice" in capsys.readouterr().err
