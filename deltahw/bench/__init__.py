"""Benchmarks: ``python -m deltahw.bench [--quick] --out docs/benchmarks``.

Measures, for the shipped models on their test data, the operation reduction and accuracy (golden
model), the RTL cycles per timestep from the hardware counters in simulation (Verilator), the
utilisation and clock of the board builds, and a CPU reference; and puts them next to published
delta-RNN accelerators (:mod:`deltahw.bench.published`).
"""
