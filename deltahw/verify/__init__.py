"""Verification harness of the generated core, usable from an installed deltahw.

* :mod:`deltahw.verify.vectors`: configurations (:class:`~deltahw.verify.vectors.CoreCase`),
  scenarios and their expectations from the golden model and the cycle model, written as a vectors
  document (JSON);
* :mod:`deltahw.verify.sim`: generate, build once per configuration (cached), run a vectors
  document in cocotb on Icarus or Verilator (:func:`~deltahw.verify.sim.build_core`,
  :func:`~deltahw.verify.sim.run_scenario`);
* :mod:`deltahw.verify.tb` and :mod:`deltahw.verify.cocotb_core`: the cocotb side (testbench with
  stream source/sink, bus master, scoreboard; the runner of a vectors document), loaded by the
  simulator's Python.

The RTL regression (``rtl_tests/``), ``make fuzz`` and the RTL benchmark
(:mod:`deltahw.bench.rtl`) all run through this package. Submodules are imported on demand: the
cocotb side imports no torch, the pytest side no cocotb until it builds.
"""

__all__: list[str] = []
