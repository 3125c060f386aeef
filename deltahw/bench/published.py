"""Published figures of peer accelerators, with their chip, clock and workload, for side-by-side
tables. Sources: the papers cited in each entry (numbers as reported there, not re-measured).

Each entry's ``from_abstract`` lists the fields stated in the paper's abstract (checked when this
table was written); the others (clock, MAC units) are quoted from the papers' bodies without a
re-check here and are marked as such in the generated report. Derived values say how they were
derived (e.g. power = throughput / stated efficiency).
"""

from __future__ import annotations

__all__ = ["PUBLISHED"]

PUBLISHED = [
    {
        "name": "EdgeDRNN",
        "source": "Gao et al., IEEE JETCAS 2020 (AICAS 2020)",
        "chip": "Xilinx Zynq XC7Z007S (MiniZed)",
        "clock_mhz": 125,
        "arithmetic": "Q8.8 activations, Q1.7 weights (INT8), 24-bit accumulators",
        "weights": "off-chip DRAM, one burst per fired column",
        "workload": "2-layer delta-GRU, ~5M parameters (speech)",
        "mac_units": 8,
        "effective_gops": 20.2,
        "latency": "~0.5 ms per timestep",
        "power_w": 2.42,
        "notes": "wall-plug power; delta encoder one element per cycle",
        "from_abstract": ["chip", "workload", "effective_gops", "latency", "power_w"],
    },
    {
        "name": "DeltaRNN",
        "source": "Gao et al., FPGA 2018",
        "chip": "Xilinx Zynq-7100 (XC7Z100)",
        "clock_mhz": 125,
        "arithmetic": "16-bit activations, 8-bit weights",
        "weights": "on-chip BRAM",
        "workload": "1-layer 256-unit delta-GRU (TIDIGITS)",
        "mac_units": 768,
        "effective_gops": 1200.0,
        "latency": "-",
        "power_w": 7.3,
        "notes": "5.7x speedup over the dense update; 164 GOp/s/W (power derived from the two)",
        "from_abstract": ["chip", "workload", "effective_gops"],
    },
    {
        "name": "Spartus",
        "source": "Gao et al., IEEE TNNLS 2022",
        "chip": "Xilinx Zynq-7100 (XC7Z100)",
        "clock_mhz": 200,
        "arithmetic": "INT8 weights, 16-bit activations",
        "weights": "on-chip BRAM, structured-sparse (up to 96 % weight sparsity)",
        "workload": "delta-LSTM, 1024-unit layer, TIMIT; column-balanced weight pruning",
        "mac_units": None,
        "effective_gops": 9400.0,
        "latency": "~1 us per timestep (1024-unit layer)",
        "power_w": 8.5,
        "notes": "temporal (delta) and weight sparsity combined: 46x over its dense peak; "
                 "1.1 TOp/s/W (power derived from the two)",
        "from_abstract": ["chip", "workload", "effective_gops", "latency"],
    },
    {
        "name": "hls4ml GRU",
        "source": "hls4ml documentation (Vivado/Vitis HLS back ends)",
        "chip": "any Xilinx part via Vivado HLS",
        "clock_mhz": None,
        "arithmetic": "ap_fixed<16,6> default, 1024-entry sigmoid/tanh tables",
        "weights": "on-chip, fixed at synthesis (re-synthesis to change weights)",
        "workload": "dense GRU (no temporal sparsity); PyTorch import: 1 layer only",
        "mac_units": None,
        "effective_gops": None,
        "latency": "design-dependent (reuse factor)",
        "power_w": None,
        "notes": "no published delta-network support; needs Vivado past C simulation",
        "from_abstract": [],
    },
]
