"""The verification harness is in the package: the bench needs no ``rtl_tests/`` on the path."""

import os
import subprocess
import sys
from pathlib import Path

import deltahw

PACKAGE_ROOT = Path(deltahw.__file__).resolve().parents[1]


def test_bench_imports_the_harness_from_the_package(tmp_path):
    code = (
        "import sys\n"
        "from deltahw.bench import rtl\n"
        "sim, vectors = rtl._rtl_imports()\n"
        "import deltahw.bench.cocotb_bench, deltahw.verify.cocotb_core, deltahw.verify.tb\n"
        "assert sim.__name__ == 'deltahw.verify.sim', sim.__name__\n"
        "assert vectors.__name__ == 'deltahw.verify.vectors', vectors.__name__\n"
        "bad = [p for p in sys.path if p.rstrip('/').endswith('rtl_tests')]\n"
        "assert not bad, bad\n"
        "print(sim.sim_build_root())\n"
    )
    env = dict(os.environ, PYTHONPATH=str(PACKAGE_ROOT), SIM_BUILD=str(tmp_path / "builds"))
    res = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                         capture_output=True, text=True)
    assert res.returncode == 0, res.stderr
    assert res.stdout.strip() == str((tmp_path / "builds").resolve())


def test_build_root_outside_a_checkout_is_a_cache(tmp_path, monkeypatch):
    from deltahw.verify import sim

    monkeypatch.delenv("SIM_BUILD", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    monkeypatch.setattr(sim, "PACKAGE_ROOT", tmp_path / "site-packages")
    assert sim.sim_build_root() == (tmp_path / "deltahw" / "sim_build").resolve()
