"""Cycle model of the delta-GRU datapath: the one place that says how long a timestep takes.

The golden model calls :func:`timestep_cycles` on its fired-delta counts and the RTL's cycle counter
must give the same number for every timestep (the cocotb regression checks it). The pipeline depths
below are those of the gateware in ``deltahw/gateware``; change them only together with it.

A timestep runs these phases back to back on one MAC array (the input encoder works ahead on the
next input vector in parallel, so its time is hidden and not counted):

* per layer l: **MAC** over the n_l fired columns (x and h deltas of the layer): each costs
  ``cc = max(ceil(3H/P), MAC_RMW_CYCLES)`` cycles, columns follow each other without bubbles, then
  the pipeline drains (``MAC_DRAIN``);
* per layer l: **ACT** over ``ceil(H/A)`` beats of A units, then the pipeline drains
(``ACT_DRAIN``);
  the h delta encoders (for this layer's next step and for the next layer's input) consume the new
  h values as they leave the pipeline, so encoding costs no extra cycles;
* the head (if any): MAC over its fired columns (``ceil(O/P)`` cycles each), then ``ceil(O/A)``
  read-out beats and ``OUT_DRAIN``;
* ``STEP_OVERHEAD`` cycles to start and close the timestep.

Cycles spent waiting for the input vector or for output back-pressure are stall cycles, counted
separately by the hardware and not part of this model. The ideal for P lanes is
``sum_l n_l * ceil(3H/P) + L * ceil(H/A)`` (+ head terms); the difference is a constant per layer.
"""

from __future__ import annotations

from .config import DeltaGRUConfig, ceil_div

__all__ = [
    "MAC_RMW_CYCLES",
    "MAC_DRAIN",
    "ACT_DRAIN",
    "OUT_DRAIN",
    "STEP_OVERHEAD",
    "column_cost",
    "head_column_cost",
    "timestep_cycles",
    "ideal_cycles",
    "reset_cycles",
]

#: Minimum distance, in cycles, between two updates of the same accumulator word (read, multiply,
#: add, write back). A column cannot be shorter than this.
MAC_RMW_CYCLES = 3
#: Cycles of a MAC phase besides its column sweeps: two to fetch the first queue entry and register
#: its weight address, two after the last issue until its accumulator write has landed.
MAC_DRAIN = 4
#: Cycles after the last activation issue until the last h value has been written and its fired
#: deltas stored in the queues (memory read 1, activation pipeline 6, queue input register 1).
ACT_DRAIN = 8
#: Cycles after the last head read-out issue until the last output beat is in the output buffer.
OUT_DRAIN = 2
#: Cycles per timestep besides the phases (closing the timestep: counters, input buffer release).
STEP_OVERHEAD = 1


def column_cost(config: DeltaGRUConfig) -> int:
    return max(ceil_div(3 * config.hidden_size, config.lanes), MAC_RMW_CYCLES)


def head_column_cost(config: DeltaGRUConfig) -> int:
    return max(ceil_div(config.output_size, config.lanes), MAC_RMW_CYCLES)


def timestep_cycles(config: DeltaGRUConfig, fired_per_layer, fired_head=0):
    """Compute cycles of one timestep from the fired columns of each layer (x + h) and of the head.

    ``fired_per_layer`` is a sequence of L counts (ints or broadcastable integer tensors).
    """
    cc = column_cost(config)
    act = ceil_div(config.hidden_size, config.act_width) + ACT_DRAIN
    total = STEP_OVERHEAD
    for n in fired_per_layer:
        total = total + n * cc + MAC_DRAIN + act
    if config.has_head:
        total = total + fired_head * head_column_cost(config) + MAC_DRAIN
        total = total + ceil_div(config.output_size, config.act_width) + OUT_DRAIN
    return total


def ideal_cycles(config: DeltaGRUConfig, fired_per_layer, fired_head=0):
    """The lower bound for P lanes and A activation units: MAC work plus activation work only."""
    C = ceil_div(3 * config.hidden_size, config.lanes)
    total = 0
    for n in fired_per_layer:
        total = total + n * C + ceil_div(config.hidden_size, config.act_width)
    if config.has_head:
        total = total + fired_head * ceil_div(config.output_size, config.lanes)
        total = total + ceil_div(config.output_size, config.act_width)
    return total


def dense_columns(config: DeltaGRUConfig) -> list[int]:
    """Columns per layer when every delta fires (Theta = 0)."""
    return [config.layer_input_size(l) + config.hidden_size for l in range(config.num_layers)]


def reset_cycles(config: DeltaGRUConfig) -> int:
    """Cycles of the sequence-reset phase (accumulators reloaded with biases, states cleared)."""
    from .layout import Layout

    lay = Layout(config)
    return max(lay.acc_depth, ceil_div(config.hidden_size, config.act_width)) + 1
