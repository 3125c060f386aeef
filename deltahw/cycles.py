"""Cycle model of the delta-GRU datapath: the one place that says how long a timestep takes.

The golden model calls :func:`run_cycles` on its fired-delta counts and the RTL's cycle counter
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
  consume the new h values as they leave the pipeline, so encoding costs no extra cycles; where
  a column takes more cycles than the accumulators' write latency (and a beat is a row group),
  the first beats run inside the MAC phase's last column, reading their sums out of the MAC
  pipeline (:func:`act_capture`, :func:`captures`);
* the head (the head slot, below): its MAC phase and ``ceil(O/A)`` read-out beats (the read-out
  pipeline finishes on its own, ``READOUT_STAGES``).

**The window and the deferred head.** Call the last layer's activation drain after its last
beat the timestep's **window** (``ACT_DRAIN`` cycles, W). In the cycle of that last beat the
schedule decides: if the next input vector is in and continues the sequence, the next
timestep's x phase (layer 0's x columns of t+1 do not depend on h_t) and this timestep's head
run in windows: the head of t is **deferred** to the window of t+1. The window of t runs

1. its **head slot**: the head of t-1 (deferred) and its read-out, ``S = head_slot`` cycles; if
   that head was not deferred (it ran in place, below), the slot is kept empty for as many
   cycles (a pad: the model must not depend on where a head ran); no slot on a sequence's first
   timestep;
2. then the x phase of t+1, if its input is in: from the slot's last cycle on (its fetch beside
   the read-out's last beat, which the read-out engine issues on its own; the MAC array is free
   then), or from the window's first cycle without a slot.

The timestep closes when the drain and the slot are both done, after ``max(W, S)`` window
cycles; the x phase's cycles after that are t+1's, so t+1 pays ``max(0, x_phase - (max(W, S) -
S + 1))`` for its x phase after a slot (its first cycle is the slot's last), ``max(0, x_phase -
W)`` without one (:func:`x_phase_hidden`), a sequence's first timestep (after the sequence
reset, with nothing to overlap) the whole x phase. Then the h phase of t+1 follows; when the x
phase's last cycle is one of t+1's own (it ran past the window, or had no window) and the x
phase had columns of at least 2 cycles, the h phase's fetch (or its empty phase) runs in that
last cycle and costs nothing (:func:`h_fetch_merged`). When the x phase was over by the
window's last cycle (or ends in it, with columns), the h phase's fetch runs in the window's
last cycle instead, hidden as the x phase is, if the h queue's first entry is known there
(:func:`h_fetch_in_window`): with more than one layer always; with one, the last activation
beat's deltas are still a cycle from its count then, so the fetch runs there if an h delta of
an earlier beat fired, or none at all (``h0_early``: the golden model's count of the fired h
units outside the last beat, :func:`h0_early_units`). The output
of t leaves during the window of t+1, which needs no further input: no host can deadlock.

A head that is not deferred (the input of t+1 was not in, or starts a new sequence, or never
comes: the hardware cannot tell those apart) **runs in place** after its timestep closed: its
cycles are stall cycles (the output's flush, :func:`flush_cycles`), not compute cycles. A late
input's x phase runs alone, its first ``x_phase_hidden`` cycles as stall cycles (the overlap it
lost, :func:`lost_overlap`, the h fetch the window's last cycle would have taken included).
So the compute cycles of every timestep are a function of the fired counts (with one layer,
``h0_early`` too) and of the sequence's structure only, whatever the input timing: a
sequence-level function (the head slots need the head counts of the two previous timesteps,
:func:`window_slots`, :func:`run_cycles`); the input timing shows in ``STALL_TOTAL``.

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
    "act_read_lag",
    "act_capture",
    "captures",
    "mac_drain",
    "layer_mac_drain",
    "head_mac_drain",
    "weight_words_read",
    "mac_phase_fixed",
    "x_phase",
    "NO_SLOT",
    "head_phase",
    "head_slot",
    "flush_cycles",
    "window_slots",
    "x_phase_hidden",
    "lost_overlap",
    "h_fetch_merged",
    "h0_early_units",
    "h_fetch_in_window",
    "lockstep_stall",
    "timestep_phases",
    "timestep_cycles",
    "run_cycles",
    "mac_issue_cycles",
    "floor_cycles",
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


def act_read_lag(config: DeltaGRUConfig) -> int:
    """How many row groups a layer's activation beat reads ahead of its place: the most, over
    the beats b, of (the last row group beat b reads) - b. 0 where a beat reads one group (3A <=
    P: beat b reads group b // (P / 3A) <= b); with split accumulators (``Layout.acc_split`` k >
    1) beat b reads groups kb .. kb + k - 1, the last of them issued kb + k - 1 cycles into the
    last column, but read b cycles after the first beat: the activation waits for it
    (:func:`mac_drain`)."""
    from .layout import Layout

    lay = Layout(config)
    k, C = lay.acc_split, lay.groups
    per_group = max(1, config.lanes // (3 * config.act_width))
    return max(min(k * (b // per_group) + k - 1, C - 1) - b
               for b in range(ceil_div(config.hidden_size, config.act_width)))


def act_capture(config: DeltaGRUConfig) -> int:
    """Activation beats of a layer that run inside its MAC phase's last column (**capture**),
    ``G = ceil(3H/P) - ACC_WRITE_LATENCY`` where a beat is one row group (``P = 3A``, no split
    accumulators) and that is positive, else 0.

    Beat b reads row group b, which the last column issues in its cycle b: the accumulator
    memory holds the new sum ``ACC_WRITE_LATENCY`` cycles later, but the memory's one read port
    is the issues' until the column's last cycle, so after a column of more than
    ``ACC_WRITE_LATENCY`` cycles the first beats would wait for the port, not for their sums.
    Those beats, b = 0 .. G - 1, are issued in the column's cycles ``ACC_WRITE_LATENCY + b``
    and take the words the last column updated out of its pipeline instead (``MacArray.acc_cap``:
    the sum issued then, registered), the c lanes' other accumulator (MX beside an h column, MCH
    beside an x column) through its own read port, which that column does not use; the rest of
    the beats follow the column as before. So a layer's activation ends ``G`` cycles earlier
    when its last MAC phase had columns (:func:`captures` says which layers do). 0 with
    ``config.capture`` off (a part without room for the selects: ``deltahw.build``)."""
    from .layout import Layout

    lay = Layout(config)
    if not config.capture or lay.acc_split != 1 or config.lanes != 3 * config.act_width:
        return 0
    return max(0, column_cost(config) - ACC_WRITE_LATENCY)


def captures(config: DeltaGRUConfig, layer: int) -> bool:
    """Whether layer ``layer``'s activation captures (:func:`act_capture`) after a MAC phase
    with columns: where the configuration allows it, every layer but the last of a network
    without a head (that one writes the output FIFO, whose room is only known after its MAC
    phase: a beat issued before would have to wait for it, and its cycles would depend on the
    host)."""
    return act_capture(config) > 0 and (config.has_head or layer < config.num_layers - 1)


def mac_drain(cost: int, lag: int = 0) -> int:
    """Cycles after a layer's MAC phase's last issue before its activation may start: its first
    beat reads its last row group ``lag`` cycles ahead of the beats' order
    (:func:`act_read_lag`), which the last column issued ``cost - 1 - lag``... cycles before its
    last issue (0 when cost >= 3 + lag)."""
    return max(0, ACC_WRITE_LATENCY + lag - cost)


def layer_mac_drain(config: DeltaGRUConfig) -> int:
    """:func:`mac_drain` of a layer's MAC phase: the drain every layer phase (layer 0's x and h
    phases included) ends with."""
    return mac_drain(column_cost(config), act_read_lag(config))


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


def mac_phase_fixed(n, cost: int, block=0, lag: int = 0):
    """The fixed cycles of a MAC phase of ``block`` (a layer number, or :data:`HEAD`) with ``n``
    fired columns (int, numpy or torch array) of ``cost`` cycles each: the fetch
    (:func:`phase_fetch`) and drain (:func:`mac_drain` with the layers' ``lag``,
    :func:`act_read_lag`; :func:`head_mac_drain`), or ``EMPTY_MAC_PHASE`` when nothing
    fired."""
    fired = n > 0
    drain = head_mac_drain(cost) if block is HEAD else mac_drain(cost, lag)
    return EMPTY_MAC_PHASE + fired * (phase_fetch(block) + drain - EMPTY_MAC_PHASE)


def x_phase(config: DeltaGRUConfig, fired_x0):
    """Cycles of layer 0's x phase with ``fired_x0`` fired input columns, run alone."""
    cc = column_cost(config)
    return fired_x0 * cc + mac_phase_fixed(fired_x0, cc, 0, act_read_lag(config))


#: ``slot_head`` of a window with no head slot (a sequence's first timestep, a model without a
#: head): :func:`window_slots`.
NO_SLOT = -1


def _min(a, b):
    """``min`` that works on ints and numpy/torch integer arrays."""
    return a - (a - b) * (a > b)


def _max0(a):
    """``max(0, a)`` on ints and numpy/torch integer arrays."""
    return a * (a > 0)


def head_phase(config: DeltaGRUConfig, n):
    """Cycles of the head's MAC phase with ``n`` fired columns (its fetch, or the empty phase's
    cycle, and its columns; it does not drain: :func:`head_mac_drain`)."""
    hc = head_column_cost(config)
    return n * hc + mac_phase_fixed(n, hc, HEAD)


def head_slot(config: DeltaGRUConfig, slot_head):
    """``S``: cycles of a window's head slot holding the head phase of ``slot_head`` fired
    columns and its ``ceil(O/A)`` read-out beats; 0 for :data:`NO_SLOT` or without a head. The
    same cycles are a head's flush when it runs in place (:func:`flush_cycles`)."""
    if not config.has_head:
        return 0 * slot_head
    has = slot_head >= 0
    n = slot_head * has
    return has * (head_phase(config, n) + ceil_div(config.output_size, config.act_width))


def flush_cycles(config: DeltaGRUConfig, fired_head):
    """Stall cycles of a head run in place (module docstring: its timestep was not followed by
    an input in time, or was a sequence's last): its MAC phase and read-out beats."""
    return head_slot(config, fired_head)


def window_slots(fired_head, first):
    """``(slot_head, slot_head_prev)`` of every timestep of a run: the head columns of the head
    slot in the timestep's window (the previous timestep's head) and in the previous timestep's
    window, :data:`NO_SLOT` where there is none (the timestep, or the previous one, starts a
    sequence). ``fired_head`` and ``first`` are numpy or torch arrays with the timesteps of each
    sequence in order along the last axis, each sequence starting with ``first`` (a golden
    run's (B, T), or the flat sequence-major arrays of a split)."""
    if hasattr(fired_head, "roll"):  # torch
        import torch

        slot = torch.where(first, NO_SLOT, torch.roll(fired_head, 1, dims=-1))
        return slot, torch.where(first, NO_SLOT, torch.roll(slot, 1, dims=-1))
    import numpy as np

    fired_head, first = np.asarray(fired_head), np.asarray(first, dtype=bool)
    slot = np.where(first, NO_SLOT, np.roll(fired_head, 1, axis=-1))
    return slot, np.where(first, NO_SLOT, np.roll(slot, 1, axis=-1))


def x_phase_hidden(config: DeltaGRUConfig, fired_x0, first, slot_head_prev=NO_SLOT):
    """Cycles of layer 0's x phase hidden in the previous timestep's window: what the head slot
    there (``slot_head_prev``: :func:`window_slots`) leaves of the window, the x phase starting
    in the slot's last cycle, which is in the window: ``min(x_phase, max(ACT_DRAIN, S) - S +
    1)``, ``min(x_phase, ACT_DRAIN)`` without a slot (S = 0); 0 on the first timestep of a
    sequence (``first``: bool, or a bool array/tensor that broadcasts). Without overlap (a late
    input) the same cycles are stall cycles; either way they are not compute cycles of the
    timestep."""
    xp = x_phase(config, fired_x0)
    s = head_slot(config, slot_head_prev)
    has = _as_int(s > 0)
    lim = has * (_max0(ACT_DRAIN - s) + 1) + (1 - has) * ACT_DRAIN
    return _min(xp, lim) * (1 - _as_int(first))


def h_fetch_merged(config: DeltaGRUConfig, fired_x0, first, slot_head_prev=NO_SLOT):
    """1 where layer 0's h phase's fetch (its ``FAST_FETCH`` cycle, or the empty phase's) runs in
    the last cycle of the x phase, else 0: that cycle is a compute cycle of the timestep (the x
    phase did not all hide in the window: ``x_phase > x_phase_hidden``; so the window has
    closed and the h queue is final), the x phase had columns, and a column takes at least 2
    cycles (the h queue's entry 1 is read while the first h column issues). Arguments as
    :func:`x_phase_hidden`."""
    if column_cost(config) < 2:
        return 0 * fired_x0
    over = x_phase(config, fired_x0) - x_phase_hidden(config, fired_x0, first, slot_head_prev)
    return _as_int((over > 0) & (fired_x0 > 0))


def h0_early_units(config: DeltaGRUConfig) -> int:
    """How many of layer 0's h units have their fired deltas counted in its h queue in the
    window's last cycle: all H with more than one layer (layer 0's activation ran long before),
    else those of every activation beat but the last, ``(ceil(H/A) - 1) * A`` (the last beat's
    deltas are then in the queue's input registers, counted a cycle later). The golden model
    counts the fired ones among units ``0 .. h0_early_units - 1`` (``GoldenResult.h0_early``)."""
    if config.num_layers > 1:
        return config.hidden_size
    return (ceil_div(config.hidden_size, config.act_width) - 1) * config.act_width


def h_fetch_in_window(config: DeltaGRUConfig, fired_x0, fired_h0, h0_early, first,
                      slot_head_prev=NO_SLOT):
    """1 where layer 0's h phase's fetch (its ``FAST_FETCH`` cycle, or the empty phase's) runs in
    the window's last cycle, the previous timestep's closing cycle, else 0 (its cycle is then
    hidden, as the x phase's are). It does when the x phase was over by then (it ended before
    that cycle, or in it with columns: the fetch then runs beside its last issue, as in
    :func:`h_fetch_merged`), a column takes at least 2 cycles, and the h queue's first entry is
    known in that cycle: its count there holds the deltas of ``h0_early`` of the ``fired_h0``
    fired h columns (:func:`h0_early_units`; the rest arrive a cycle later), so the phase starts
    if that count is not 0 (its first entry is stored; the schedule reads the final count a cycle
    later), or if nothing fired at all (the queue's input registers hold no delta either). Not on
    a sequence's first timestep (no window before it). ``fired_h0`` and ``h0_early`` may be
    ``None`` with more than one layer (all of layer 0's deltas are counted then)."""
    if column_cost(config) < 2:
        return 0 * fired_x0
    xp = x_phase(config, fired_x0)
    s = head_slot(config, slot_head_prev)
    has = _as_int(s > 0)
    lim = has * (_max0(ACT_DRAIN - s) + 1) + (1 - has) * ACT_DRAIN
    fits = (xp < lim) | ((xp == lim) & (fired_x0 > 0))
    if config.num_layers > 1:
        return _as_int(fits) * (1 - _as_int(first))
    if h0_early is None or fired_h0 is None:
        raise ValueError("The cycle model of a one-layer network needs layer 0's fired h columns "
                         "and h0_early (those among cycles.h0_early_units: GoldenResult.fired_h, "
                         "GoldenResult.h0_early); got None.")
    known = (h0_early > 0) | (fired_h0 == 0)
    return _as_int(fits & known) * (1 - _as_int(first))


def lost_overlap(config: DeltaGRUConfig, fired_x0, first, slot_head_prev=NO_SLOT, *,
                 fired_h0=None, h0_early=None):
    """Stall cycles of a timestep whose input vector came late (after the previous timestep's
    last activation beat): the part of its x phase the previous window would have hidden,
    :func:`x_phase_hidden` (0 on a sequence's first timestep), and the h phase's fetch where
    that window's last cycle would have taken it (:func:`h_fetch_in_window`, with layer 0's
    fired h columns ``fired_h0`` and ``h0_early``). The previous timestep's head then ran in
    place too: :func:`flush_cycles`, counted for that one."""
    return (x_phase_hidden(config, fired_x0, first, slot_head_prev)
            + h_fetch_in_window(config, fired_x0, fired_h0, h0_early, first, slot_head_prev))


def lockstep_stall(config: DeltaGRUConfig, fired_x0, fired_head, first, *, fired_h0=None,
                   h0_early=None):
    """Stall cycles of every timestep of a sequence fed one timestep at a time (each input sent
    only after the previous output was read): every input is late (:func:`lost_overlap`, with
    the slot of the window it missed) and every head runs in place (:func:`flush_cycles`).
    Arrays along the last axis, as :func:`window_slots` takes them; ``fired_h0`` / ``h0_early``
    as :func:`h_fetch_in_window` takes them (needed with one layer)."""
    _, slot_prev = window_slots(fired_head, first)
    return (lost_overlap(config, fired_x0, first, slot_prev, fired_h0=fired_h0,
                         h0_early=h0_early) + flush_cycles(config, fired_head))


def _as_int(flag):
    """A bool (or bool numpy array / torch tensor) as 0/1 integers."""
    if isinstance(flag, (bool, int)):
        return int(flag)
    if hasattr(flag, "long"):  # torch
        return flag.long()
    return flag.astype("int64")


def timestep_phases(config: DeltaGRUConfig, fired_per_layer, *, fired_x0, first, h0_early=None,
                    slot_head=NO_SLOT, slot_head_prev=NO_SLOT) -> dict:
    """The cycles of one timestep split into phases that add up to :func:`timestep_cycles`.

    ``mac_issue``: column issue cycles (the layers', and the head slot's); ``mac_fixed``:
    fetch/drain (or the empty-phase cycle) of every MAC phase (layer 0's x and h phases counted
    separately, the head slot's); ``act``: activation beats (+ the head slot's read-out beats);
    ``act_fixed``: activation pipeline drains; ``overlap`` (<= 0): minus the cycles hidden in the
    windows, layer 0's x phase in the previous one (:func:`x_phase_hidden`), its h phase's fetch
    there too (:func:`h_fetch_in_window`), the head slot in this one (``min(ACT_DRAIN,
    S)``), and each layer's activation beats that ran in its MAC phase's last column
    (:func:`act_capture`). ``fired_per_layer`` is a sequence of L counts (x + h
    columns of each layer; ints, or numpy/torch integer arrays that broadcast);
    ``fired_x0`` the x columns of layer 0 (part of ``fired_per_layer[0]``); ``first``: the
    timestep starts a sequence; ``h0_early``: layer 0's fired h columns among the first
    :func:`h0_early_units` (``GoldenResult.h0_early``; needed with one layer, where the window's
    last cycle has not counted the last beat's deltas yet); ``slot_head`` / ``slot_head_prev``:
    the head columns in this
    timestep's window and in the previous one (:func:`window_slots`; ignored without a head).
    The timestep's own head runs in the next timestep's window (or in place, as stall), so its
    columns are not an argument.
    """
    cc, lag = column_cost(config), act_read_lag(config)
    nb = ceil_div(config.hidden_size, config.act_width)
    issue, fixed, act, act_fixed, captured = 0, 0, 0, 0, 0
    for l, n in enumerate(fired_per_layer):
        issue = issue + n * cc
        if l == 0:  # the x phase, then the h phase (its fetch perhaps in the x phase's last cycle)
            fixed = (fixed + mac_phase_fixed(fired_x0, cc, 0, lag)
                     + mac_phase_fixed(n - fired_x0, cc, 0, lag)
                     - h_fetch_merged(config, fired_x0, first, slot_head_prev))
        else:
            fixed = fixed + mac_phase_fixed(n, cc, l, lag)
        act = act + nb
        act_fixed = act_fixed + ACT_DRAIN
        if captures(config, l):  # beats in the last column of the phase before (if it had one)
            before = n - fired_x0 if l == 0 else n
            captured = captured + act_capture(config) * _as_int(before > 0)
    slot = 0
    if config.has_head:
        hc = head_column_cost(config)
        has = slot_head >= 0
        n = slot_head * has
        issue = issue + n * hc
        fixed = fixed + has * mac_phase_fixed(n, hc, HEAD)
        act = act + has * ceil_div(config.output_size, config.act_width)
        slot = head_slot(config, slot_head)
    hidden = (x_phase_hidden(config, fired_x0, first, slot_head_prev) + _min(slot, ACT_DRAIN)
              + h_fetch_in_window(config, fired_x0, fired_per_layer[0] - fired_x0, h0_early,
                                  first, slot_head_prev))
    return {"mac_issue": issue, "mac_fixed": fixed, "act": act, "act_fixed": act_fixed,
            "overlap": -hidden - captured}


def timestep_cycles(config: DeltaGRUConfig, fired_per_layer, *, fired_x0, first, h0_early=None,
                    slot_head=NO_SLOT, slot_head_prev=NO_SLOT):
    """Compute cycles of one timestep from the fired columns of each layer (x + h), of layer 0's
    x columns (``fired_x0``), whether it starts a sequence (``first``), layer 0's early-counted h
    columns (``h0_early``, :func:`timestep_phases`) and the head slots of its window and of the
    previous one (``slot_head``, ``slot_head_prev``: :func:`window_slots`).

    All arguments may be ints or broadcastable integer (bool for ``first``) arrays/tensors.
    """
    p = timestep_phases(config, fired_per_layer, fired_x0=fired_x0, first=first,
                        h0_early=h0_early, slot_head=slot_head, slot_head_prev=slot_head_prev)
    return p["mac_issue"] + p["mac_fixed"] + p["act"] + p["act_fixed"] + p["overlap"]


def run_cycles(config: DeltaGRUConfig, fired_per_layer, fired_head, *, fired_x0, first,
               h0_early=None):
    """:func:`timestep_cycles` of every timestep of a run (arrays along the last axis, as
    :func:`window_slots` takes them), the head slots derived from ``fired_head``."""
    slot, slot_prev = window_slots(fired_head, first)
    return timestep_cycles(config, fired_per_layer, fired_x0=fired_x0, first=first,
                           h0_early=h0_early, slot_head=slot, slot_head_prev=slot_prev)


def mac_issue_cycles(config: DeltaGRUConfig, fired_per_layer, fired_head=0):
    """Column issue cycles of a timestep's own columns and its own head (``MAC_BUSY`` counts them
    wherever they run: the head's in the next window or in place)."""
    cc = column_cost(config)
    total = 0
    for n in fired_per_layer:
        total = total + n * cc
    if config.has_head:
        total = total + fired_head * head_column_cost(config)
    return total


def floor_cycles(config: DeltaGRUConfig) -> int:
    """Cycles of a timestep in which nothing fires, inside a sequence (its window and the
    previous one hold a head slot with no columns): the least a timestep costs."""
    slot = 0 if config.has_head else NO_SLOT
    return int(timestep_cycles(config, [0] * config.num_layers, fired_x0=0, first=False,
                               h0_early=0, slot_head=slot, slot_head_prev=slot))


def dense_cycles(config: DeltaGRUConfig) -> int:
    """Cycles of a timestep in which every delta fires (Theta = 0), inside a sequence (not its
    first timestep, nor the second: both windows hold a whole head): the reference the speedups
    are measured against."""
    cols = dense_columns(config)
    slot = config.hidden_size if config.has_head else NO_SLOT
    return int(timestep_cycles(config, cols, fired_x0=cols[0] - config.hidden_size, first=False,
                               h0_early=h0_early_units(config), slot_head=slot,
                               slot_head_prev=slot))


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
