"""Cycle model of the delta-GRU datapath: the one place that says how long a timestep takes.

The golden model calls :func:`timestep_cycles` on its fired-delta counts and the RTL's cycle counter
must give the same number for every timestep (the cocotb regression checks it). The pipeline depths
below are derived from the latencies the gateware blocks export (``ActivationPipe.LATENCY``,
``MacArray.READ_LATENCY`` / ``ACC_WRITE_LATENCY``, ``DeltaQueue.READ_LATENCY`` / ``COUNT_LATENCY``):
change a block's pipeline and its constant, and the core's waits and this model follow.
``tests/test_gateware.py`` checks that every drain is the minimum: one cycle less breaks the
bit-exact results.

A timestep runs these phases on one MAC array (the input encoder works ahead on the next input
vector in parallel, so its time is hidden and not counted):

* per block (layer l, then the head if any): a **MAC** phase over the block's n fired columns.
  With n > 0 it costs ``fetch`` cycles to fetch the first queue entry (``FAST_FETCH`` for the
  phases that read one queue, layer 0's x and h phases and the head: the first entry is in a
  register of its queue; ``MAC_FETCH`` for layers 1.., which sweep their x then h queue and
  address the first h entry from the x count: :func:`phase_fetch`), then ``cost`` cycles per
  column back to back (``cost = ceil(3H/P)`` for a layer, ``ceil(O/P)`` for the head: the
  accumulators forward their sums, so a column may touch the words the previous one is still
  writing), then ``mac_drain(cost) = max(0, ACC_WRITE_LATENCY - cost)`` cycles until the last
  column's first accumulator word is readable by the activation; the head's read-out reads the
  accumulators through the MAC array's forwarding (``MacArray.mx_fwd``), which sees a sum the cycle
  after its issue, so the head's phase drains ``head_mac_drain(cost) = max(0,
  FWD_ACC_WRITE_LATENCY - cost)`` = 0 cycles. With n = 0 it costs ``EMPTY_MAC_PHASE`` cycle
  (reading the queue counts). Layers 1.. sweep their x then h columns in one phase; layer 0 has
  two: the **x phase** over the input deltas (:func:`x_phase`), then the **h phase** over its
  recurrent deltas;
* per layer: **ACT**, ``ceil(H/A)`` beats of A units, then ``ACT_DRAIN`` while the pipeline drains;
  the h delta encoders (for this layer's next step and for the next layer's or the head's input)
  consume the new h values as they leave the pipeline, so encoding costs no extra cycles;
* the head: ``ceil(O/A)`` read-out beats (the read-out pipeline finishes after the timestep
  closes, ``READOUT_STAGES``).

**Read-out overlapped with the next h phase.** The read-out beats read the head's accumulator
words; the first cycles of a MAC phase (reading the queue counts, fetching the first entry) touch
no accumulator. So when the next timestep's x phase already ran (overlapped, below), its layer-0 h
phase starts during the read-out's last beats: ``min(ceil(O/A), fetch)`` of them, ``fetch`` being
``FAST_FETCH`` if any h column fired, else the ``EMPTY_MAC_PHASE`` cycle
(:func:`readout_hidden`). The h queue is complete (its count is final since the drain before the
head's phase). Those cycles belong to the timestep that reads out (its read-out beats); the next
timestep's h phase is that much shorter. A sequence's first timestep has nothing to overlap with;
a late input loses this overlap too (stall cycles, :func:`lost_overlap`).

**Overlap across timesteps.** Layer 0's x columns of timestep t+1 do not depend on h_t, so while
the last layer's activation of timestep t drains, the x phase of t+1 already runs on the MAC array
(the accumulator words it writes were all read by layer 0's activation beats of t). The drain's
``ACT_DRAIN`` cycles belong to timestep t; the x phase's cycles past them (if it is longer) to
timestep t+1. With a head, when the x phase runs past the drain, its last cycle is also the head's
first MAC cycle (its ``FAST_FETCH``, or the whole empty phase; the head's queue is complete
then), counted for timestep t: the x phase's cycles past ``x_hide_limit``
= ``ACT_DRAIN`` + 1 are t+1's. So a timestep that is not the first of its sequence pays ``max(0,
x_phase - x_hide_limit)`` for its x phase, the first one (after the sequence reset, with nothing to
overlap) the whole x phase. When the next input vector is not in when the last activation beat
issues, the schedule falls back: drain, head, read-out, close the timestep; the next timestep's x
phase then runs alone, and its first ``min(x_phase, x_hide_limit)`` cycles are **stall** cycles
(the overlap the late input lost), not compute cycles. So the compute cycles of every timestep are
a function of its fired counts and of whether it starts a sequence only, whatever the input timing;
the input timing shows in ``STALL_TOTAL`` (:func:`lost_overlap` per late timestep).

The timestep closes in its last cycle (the counters latch there). Cycles spent waiting for output
back-pressure, or lost to a late input as above, are stall cycles, counted separately by the
hardware and not part of this model; cycles waiting with nothing to do are not counted at all.

The ideal for P lanes and A activation units is ``sum_l n_l * ceil(3H/P) + L * ceil(H/A)``
(+ head: ``n_o * ceil(O/P) + ceil(O/A)``): MAC and activation work only, no fetch or drain.
"""

from __future__ import annotations

from .config import DeltaGRUConfig, ceil_div
from .gateware.activation import ActivationPipe
from .gateware.mac import MacArray
from .gateware.queue import DeltaQueue
from .gateware.readout import HeadReadout

__all__ = [
    "MAC_FETCH",
    "FAST_FETCH",
    "HEAD",
    "phase_fetch",
    "ACC_WRITE_LATENCY",
    "FWD_ACC_WRITE_LATENCY",
    "EMPTY_MAC_PHASE",
    "ACT_DRAIN",
    "FETCH_ADDRESS_STAGE",
    "READOUT_STAGES",
    "column_cost",
    "head_column_cost",
    "mac_drain",
    "head_mac_drain",
    "weight_words_read",
    "mac_phase_fixed",
    "x_phase",
    "x_hide_limit",
    "x_phase_hidden",
    "readout_hidden",
    "lost_overlap",
    "timestep_phases",
    "timestep_cycles",
    "dense_cycles",
    "ideal_cycles",
    "dense_columns",
    "reset_cycles",
]

#: Cycles the schedule (``deltahw/gateware/schedule.py``) spends on a MAC phase's first queue
#: entry besides the queue read: its weight address is registered (the queue -> column address
#: arithmetic gets its own cycle).
FETCH_ADDRESS_STAGE = 1
#: Cycles from the start of a MAC phase to the first issue: read the queue counts and put entry 0
#: on the queue read port, then register its weight address.
MAC_FETCH = DeltaQueue.READ_LATENCY + FETCH_ADDRESS_STAGE
#: The same for a MAC phase that reads one queue (layer 0's x or h phase, the head): the queue
#: keeps its entry 0 in a register (``DeltaQueue.first_index``), so the counts are read and entry
#: 0's weight address registered in one cycle, while the read port fetches entry 1.
FAST_FETCH = FETCH_ADDRESS_STAGE
#: Cycles from issuing an accumulator word (read, multiply, add, write back) until a read-out of
#: that word sees the new sum. Back-to-back updates of the same word are forwarded, so this only
#: delays the read-out after a MAC phase (``mac_drain``), not the columns.
ACC_WRITE_LATENCY = MacArray.ACC_WRITE_LATENCY
#: The same for the head's read-out, which reads the accumulators through the MAC array's
#: forwarding (``MacArray.mx_fwd``): an issue's sum is there for a read addressed the next cycle.
FWD_ACC_WRITE_LATENCY = MacArray.FWD_ACC_WRITE_LATENCY
#: Cycles of a MAC phase in which no column fired (the counts are read, nothing is fetched).
EMPTY_MAC_PHASE = 1
#: Cycles after the last activation issue (cycle c) until the next MAC phase may read the queue
#: counts: the accumulators are read (``MacArray.READ_LATENCY``), the last beat leaves the
#: activation pipeline (``ActivationPipe.LATENCY``) at c + 1 + LATENCY, where it is written to the h
#: memory and delta-encoded into the queues, whose counts include it ``DeltaQueue.COUNT_LATENCY``
#: cycles later; the drain is every cycle before that one. The h queue read by the next timestep
#: needs the same drain, so a layer with no next block drains too.
ACT_DRAIN = (MacArray.READ_LATENCY + ActivationPipe.LATENCY + DeltaQueue.COUNT_LATENCY - 1)
#: Stages of the head read-out after the accumulator read: the rescaled beat is registered, then
#: written to the output FIFO. They run on after the timestep closes (nothing the next timestep
#: does before its own read-out touches them), so the read-out costs only its beats.
READOUT_STAGES = MacArray.FWD_READ_LATENCY + HeadReadout.LATENCY


def column_cost(config: DeltaGRUConfig) -> int:
    """Cycles per fired layer column: one row group of P rows per cycle."""
    return ceil_div(3 * config.hidden_size, config.lanes)


def head_column_cost(config: DeltaGRUConfig) -> int:
    """Cycles per fired head column."""
    return ceil_div(config.output_size, config.lanes)


def mac_drain(cost: int) -> int:
    """Cycles after a layer's MAC phase's last issue before its activation may start (0 when
    cost >= 3)."""
    return max(0, ACC_WRITE_LATENCY - cost)


def head_mac_drain(cost: int) -> int:
    """Cycles after the head's MAC phase's last issue before its read-out may start: 0 (the
    read-out's forwarded read sees the last sum the next cycle)."""
    return max(0, FWD_ACC_WRITE_LATENCY - cost)


#: ``block`` argument of :func:`phase_fetch` and :func:`mac_phase_fixed` for the head's phase.
HEAD = "head"


def phase_fetch(block) -> int:
    """Cycles before a MAC phase's first issue: ``FAST_FETCH`` for the phases that read one queue
    (layer 0's x and h phases, ``block`` 0, and the head), ``MAC_FETCH`` for layers 1.."""
    return FAST_FETCH if block is HEAD or block == 0 else MAC_FETCH


def mac_phase_fixed(n, cost: int, block=0):
    """The fixed cycles of a MAC phase of ``block`` (a layer number, or :data:`HEAD`) with ``n``
    fired columns (int, numpy or torch array) of ``cost`` cycles each: the fetch
    (:func:`phase_fetch`) and drain (:func:`mac_drain`, :func:`head_mac_drain`), or
    ``EMPTY_MAC_PHASE`` when nothing fired."""
    fired = n > 0
    drain = head_mac_drain(cost) if block is HEAD else mac_drain(cost)
    return EMPTY_MAC_PHASE + fired * (phase_fetch(block) + drain - EMPTY_MAC_PHASE)


def x_phase(config: DeltaGRUConfig, fired_x0):
    """Cycles of layer 0's x phase with ``fired_x0`` fired input columns, run alone."""
    cc = column_cost(config)
    return fired_x0 * cc + mac_phase_fixed(fired_x0, cc, 0)


def x_hide_limit(config: DeltaGRUConfig) -> int:
    """The most cycles of layer 0's overlapped x phase that are not the next timestep's:
    ``ACT_DRAIN`` (they run beside the previous timestep's drain), + 1 with a head (the head's
    ``FAST_FETCH`` cycle runs in the x phase's last cycle when that is past the drain; module
    docstring)."""
    return ACT_DRAIN + (1 if config.has_head else 0)


def x_phase_hidden(config: DeltaGRUConfig, fired_x0, first):
    """Cycles of layer 0's x phase hidden behind the previous timestep's last activation drain
    (and, with a head, its first MAC cycle): ``min(x_phase, x_hide_limit)``, 0 on the first
    timestep of a sequence (``first``: bool, or a bool array/tensor that broadcasts). Without
    overlap (a late input) the same cycles are stall cycles; either way they are not compute
    cycles of the timestep."""
    xp = x_phase(config, fired_x0)
    lim = x_hide_limit(config)
    hidden = xp - (xp - lim) * (xp > lim)  # min() that works on ints and arrays
    return hidden * (1 - _as_int(first))


def readout_hidden(config: DeltaGRUConfig, fired_h0, first):
    """Cycles of layer 0's h phase hidden behind the previous timestep's head read-out (module
    docstring): ``min(ceil(O/A), FAST_FETCH)`` when ``fired_h0`` > 0 h columns fired, else
    ``min(ceil(O/A), EMPTY_MAC_PHASE)``; 0 without a head or on the first timestep of a
    sequence. Ints, or numpy/torch arrays that broadcast (``first`` bool)."""
    if not config.has_head:
        return 0 * fired_h0
    nbo = ceil_div(config.output_size, config.act_width)
    full, empty = min(nbo, phase_fetch(0)), min(nbo, EMPTY_MAC_PHASE)
    hidden = empty + (full - empty) * (fired_h0 > 0)
    return hidden * (1 - _as_int(first))


def lost_overlap(config: DeltaGRUConfig, fired_x0, fired_h0, first):
    """Stall cycles of a timestep whose input vector came late (after the previous timestep's
    last activation beat): the overlaps it lost, :func:`x_phase_hidden` and
    :func:`readout_hidden` (0 on a sequence's first timestep)."""
    return x_phase_hidden(config, fired_x0, first) + readout_hidden(config, fired_h0, first)


def _as_int(flag):
    """A bool (or bool numpy array / torch tensor) as 0/1 integers."""
    if isinstance(flag, (bool, int)):
        return int(flag)
    if hasattr(flag, "long"):  # torch
        return flag.long()
    return flag.astype("int64")


def timestep_phases(config: DeltaGRUConfig, fired_per_layer, fired_head=0, *, fired_x0,
                    first) -> dict:
    """The cycles of one timestep split into phases that add up to :func:`timestep_cycles`.

    ``mac_issue``: column issue cycles; ``mac_fixed``: fetch/drain (or the empty-phase cycle) of
    every MAC phase (layer 0's x and h phases counted separately); ``act``: activation beats (+
    the head's read-out beats); ``act_fixed``: activation pipeline drains; ``overlap`` (<= 0):
    minus the cycles of layer 0's x phase hidden behind the previous timestep's drain
    (:func:`x_phase_hidden`). ``fired_per_layer`` is a sequence of L counts (x + h columns of each
    layer; ints, or numpy/torch integer arrays that broadcast); ``fired_head`` likewise;
    ``fired_x0`` the x columns of layer 0 (part of ``fired_per_layer[0]``); ``first``: the
    timestep starts a sequence.
    """
    cc = column_cost(config)
    nb = ceil_div(config.hidden_size, config.act_width)
    issue, fixed, act, act_fixed = 0, 0, 0, 0
    for l, n in enumerate(fired_per_layer):
        issue = issue + n * cc
        if l == 0:  # the x phase, then the h phase
            fixed = fixed + mac_phase_fixed(fired_x0, cc, 0) + mac_phase_fixed(n - fired_x0, cc, 0)
        else:
            fixed = fixed + mac_phase_fixed(n, cc, l)
        act = act + nb
        act_fixed = act_fixed + ACT_DRAIN
    if config.has_head:
        hc = head_column_cost(config)
        issue = issue + fired_head * hc
        fixed = fixed + mac_phase_fixed(fired_head, hc, HEAD)
        act = act + ceil_div(config.output_size, config.act_width)
    return {"mac_issue": issue, "mac_fixed": fixed, "act": act, "act_fixed": act_fixed,
            "overlap": -lost_overlap(config, fired_x0, fired_per_layer[0] - fired_x0, first)}


def timestep_cycles(config: DeltaGRUConfig, fired_per_layer, fired_head=0, *, fired_x0, first):
    """Compute cycles of one timestep from the fired columns of each layer (x + h), of the head,
    and of layer 0's x columns (``fired_x0``); ``first``: the timestep starts a sequence.

    All arguments may be ints or broadcastable integer (bool for ``first``) arrays/tensors.
    """
    p = timestep_phases(config, fired_per_layer, fired_head, fired_x0=fired_x0, first=first)
    return p["mac_issue"] + p["mac_fixed"] + p["act"] + p["act_fixed"] + p["overlap"]


def dense_cycles(config: DeltaGRUConfig) -> int:
    """Cycles of a timestep in which every delta fires (Theta = 0), inside a sequence (not its
    first timestep): the reference the speedups are measured against."""
    cols = dense_columns(config)
    return int(timestep_cycles(config, cols, config.hidden_size if config.has_head else 0,
                               fired_x0=cols[0] - config.hidden_size, first=False))


def ideal_cycles(config: DeltaGRUConfig, fired_per_layer, fired_head=0):
    """The lower bound for P lanes and A activation units: MAC work plus activation work only."""
    C = column_cost(config)
    total = 0
    for n in fired_per_layer:
        total = total + n * C + ceil_div(config.hidden_size, config.act_width)
    if config.has_head:
        total = total + fired_head * head_column_cost(config)
        total = total + ceil_div(config.output_size, config.act_width)
    return total


def weight_words_read(config: DeltaGRUConfig, fired_per_layer, fired_head=0):
    """Weight-memory words the MAC array reads in a timestep: every issue cycle reads one weight
    per lane (P words, lanes past the end of a partial row group included), so a fired layer
    column costs ``column_cost * P`` words and a fired head column ``head_column_cost * P``.
    The weights actually used are the MACs (3H per layer column, O per head column); the
    difference is the padding of partial row groups. This is the delta network paper's memory
    cost measure (Neil et al. 2017: a delta network fetches only the fired columns)."""
    total = 0
    for n in fired_per_layer:
        total = total + n * column_cost(config) * config.lanes
    if config.has_head:
        total = total + fired_head * head_column_cost(config) * config.lanes
    return total


def dense_columns(config: DeltaGRUConfig) -> list[int]:
    """Columns per layer when every delta fires (Theta = 0)."""
    return [config.layer_input_size(l) + config.hidden_size for l in range(config.num_layers)]


def reset_cycles(config: DeltaGRUConfig) -> int:
    """Cycles of the sequence-reset phase (accumulators reloaded with biases, states cleared): one
    bias word and one state word per cycle, announced a cycle ahead of the phase's cycles; the
    last bias word is written ``MacArray.LOAD_AHEAD`` cycles after its announcement, in the
    phase's last cycle at the latest (not part of a timestep's compute cycles)."""
    from .layout import Layout

    lay = Layout(config)
    return max(lay.acc_depth + MacArray.LOAD_AHEAD - 1,
               ceil_div(config.hidden_size, config.act_width)) + 1
