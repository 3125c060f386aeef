"""The delta-GRU accelerator core: the datapath that connects its components.

Components (each with its latency and throughput in its docstring):

* :class:`~deltahw.gateware.frontend.InputFrontEnd`: input stream -> delta encoder ->
  double-buffered x queue of layer 0 (works ahead on the next input vector);
* :class:`~deltahw.gateware.schedule.Schedule`: **the schedule** (which phase of which block runs
  in every cycle; :mod:`deltahw.cycles` counts exactly its cycles). To change *when* things
  happen, read that file, not this one;
* :class:`~deltahw.gateware.mac.MacArray`: P lanes sweeping fired weight columns into the
  accumulators;
* :class:`~deltahw.gateware.activation.ActivationPipe`: A units per cycle of the GRU update, whose
  outputs are written to the h memories and delta-encoded twice (this layer's h queue for the
  next timestep, the next layer's or the head's x queue for this one);
* :class:`~deltahw.gateware.readout.HeadReadout`: head accumulators -> output beats;
* :class:`~deltahw.gateware.registers.RegisterBlock` (from :mod:`deltahw.regmap`) and
  :class:`~deltahw.gateware.counters.PerfCounters`.

Protocol (``docs/architecture.md``): input vectors arrive on ``i`` as ceil(I/E) beats of E values
(``first`` on a sequence's first beat resets the sequence state); each timestep's result leaves on
``o`` as ceil(W/A) beats of A values (``last`` on the final one); the ``bus`` reaches the registers
of :mod:`deltahw.regmap`.

The output FIFO holds two timesteps of output beats. Before the phase that writes it the schedule
waits until there is room for one timestep (the host has read all but at most one earlier
timestep); those cycles are stall cycles, not compute cycles. With the output always read there
are none.
"""

from __future__ import annotations

from amaranth import Array, Const, Module, Mux, Signal, signed
from amaranth.lib import data, fifo, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from .. import cycles, regmap
from ..config import DeltaGRUConfig, ceil_div
from ..layout import Layout
from . import KEEP, Forms
from .activation import ActivationPipe
from .counters import PerfCounters
from .encoder import DeltaEncoder
from .frontend import InputFrontEnd, bits_for, column_bits, input_layout, mem_depth
from .mac import MacArray
from .queue import DeltaQueue
from .readout import HeadReadout, output_layout
from .registers import BusSignature, RegisterBlock
from .schedule import Schedule

__all__ = ["DeltaGRUCore", "BusSignature", "input_layout", "output_layout"]

_depth, _bits = mem_depth, bits_for


def state_memory_attrs(forms: Forms) -> dict:
    """Synthesis attributes of the per-layer state memories (h, and the last-transmitted h of
    each h encoder): block RAM with ``forms.state_in_block_ram`` (Xilinx 7-series parts), the
    synthesis tool's choice elsewhere.

    Each is ``A`` words wide and ``ceil(H/A)`` deep with one synchronous read port, so block RAM
    reads them with the same one-cycle latency as LUT RAM (nothing in the schedule changes). As
    LUT RAM they take ``ceil(16 A / 6)`` RAM32M each (A=16: 3 x 43 RAM32M = 516 LUTs, 2.7 % of the
    A7-35T), as block RAM a few of its 50 BRAM36, of which the design uses under half. On the ECP5
    the LUTs are plentiful and an EBR's clock-to-output delay would sit at the start of the h
    encoders' paths, so they stay the tool's choice there (LUT RAM).
    """
    return {"ram_style": "block"} if forms.state_in_block_ram else {}


class DeltaGRUCore(wiring.Component):
    """A delta-GRU accelerator for one :class:`DeltaGRUConfig`.

    ``weight_init``/``bias_init`` (per-bank word lists, from :mod:`deltahw.export`) initialise the
    parameter memories in simulation; with ``init_files=True`` the generated Verilog instead loads
    ``weights_bank{b}.mem``/``biases_bank{b}.mem`` with ``$readmemh``.

    ``drain_trim`` (tests only) is passed to the :class:`Schedule`: it shortens the waits by the
    given cycles, to show that each is the minimum that stays bit-exact.

    ``forms`` (:class:`~deltahw.gateware.Forms`) picks the implementation forms; ``None``: the
    elaborating platform's family's (the board builds). The simulations elaborate with no
    platform, so a test passes ``Forms.for_family("series7")`` to simulate the Xilinx forms.
    """

    def __init__(
        self, config: DeltaGRUConfig, *, weight_init=None, bias_init=None, init_files=False,
        drain_trim=None, forms: Forms | None = None,
    ):
        self.config = config
        self.forms = forms
        self.drain_trim = dict(drain_trim or {})
        self.layout = Layout(config)
        self.weight_init, self.bias_init, self.init_files = weight_init, bias_init, init_files
        super().__init__(
            {
                "i": In(stream.Signature(input_layout(config))),
                "o": Out(stream.Signature(output_layout(config))),
                "bus": In(BusSignature),
            }
        )

    def elaborate(self, platform):
        m = Module()
        cfg, lay = self.config, self.layout
        forms = self.forms if self.forms is not None else Forms.for_platform(platform)
        I, H, L, O = cfg.input_size, cfg.hidden_size, cfg.num_layers, cfg.output_size
        P, A, ab = cfg.lanes, cfg.act_width, cfg.act.bits
        head = cfg.has_head
        C = lay.groups
        nb = ceil_div(H, A)  # activation beats per layer
        nbo = ceil_div(cfg.output_width, A)  # output beats per timestep
        act = signed(ab)
        delta_bits = cfg.delta_bits
        n_targets = L if head else L - 1  # x queues fed by activation: layers 1..L-1 (+ head)

        # Capture (cycles.act_capture): the first activation beats of a layer run in its MAC
        # phase's last column and take its sums out of the MAC pipeline (``mac.acc_cap``).
        capture = cycles.act_capture(cfg) > 0
        m.submodules.mac = mac = MacArray(
            cfg, weight_init=self.weight_init, bias_init=self.bias_init, init_files=self.init_files,
            capture=capture,
        )
        m.submodules.sched = sched = Schedule(cfg, drain_trim=self.drain_trim)
        layer = sched.block  # the block (layer, or L = the head) the schedule is in

        # ---- registers (the block unfolds deltahw.regmap; its ports are wired at the end) ------
        theta_storage = {"THETA_HEAD": (ab, cfg.theta_head)}
        for l in range(L):
            theta_storage[f"THETA_X{l}"] = (ab, cfg.theta_x[l])
            theta_storage[f"THETA_H{l}"] = (ab, cfg.theta_h[l])
        m.submodules.regs = regs = RegisterBlock(
            regmap.register_map(L),
            constants={
                "ID": regmap.ID_MAGIC,
                "VERSION": regmap.VERSION,
                "SHAPE0": {"input_size": I, "hidden_size": H},
                "SHAPE1": {"num_layers": L, "output_size": O, "lanes": P,
                           "act_width_log2": A.bit_length() - 1},
            },
            storage=theta_storage,
        )
        wiring.connect(m, wiring.flipped(self.bus), regs.bus)
        theta_x = [regs[f"THETA_X{l}"] for l in range(L)]
        theta_h = [regs[f"THETA_H{l}"] for l in range(L)]
        theta_head = regs["THETA_HEAD"]

        # ---- where each queue's columns are in the weight memory ---------------------------------
        # Every queue stores, for a fired element k, its column's first weight word,
        # ``origin + k * stride`` (deltahw.layout: a column is ``stride`` row groups from the
        # block's x or h origin), computed when the entry is written; the read side then goes
        # queue -> select -> column address register with no multiply-add (the ECP5's critical
        # path at 100 MHz, head queue read -> ``x_base`` -> ``cur_base``, docs/benchmarks/fmax).
        blocks = L + 1 if head else L
        in_sizes = [cfg.layer_input_size(l) for l in range(L)] + ([0] if head else [])
        groups = [C] * L + ([lay.head_groups] if head else [])
        x_origin = [(lay.weight_base[b], groups[b]) for b in range(blocks)]  # block b's x columns
        h_origin = [(lay.weight_base[l] + in_sizes[l] * C, C) for l in range(L)]

        # ---- input front end (works ahead into a double-buffered queue) --------------------------
        m.submodules.front = front = InputFrontEnd(cfg, column=x_origin[0])
        wiring.connect(m, wiring.flipped(self.i), front.i)
        m.d.comb += [front.theta.eq(theta_x[0]), front.release.eq(sched.release),
                     sched.r_full.eq(front.r_full), sched.r_reset.eq(front.r_reset)]


        # ---- per-layer state memories and queues -------------------------------------------------
        beat_bits = _bits(nb)
        h_r, h_w, hhat_r, hhat_w, hq = [], [], [], [], []
        state_attrs = state_memory_attrs(forms)
        for l in range(L):
            hm = memory.Memory(shape=data.ArrayLayout(act, A), depth=_depth(nb), init=[],
                               attrs=state_attrs)
            hh = memory.Memory(shape=data.ArrayLayout(act, A), depth=_depth(nb), init=[],
                               attrs=state_attrs)
            m.submodules[f"h{l}"], m.submodules[f"hhat{l}"] = hm, hh
            h_r.append(hm.read_port()), h_w.append(hm.write_port())
            hhat_r.append(hh.read_port()), hhat_w.append(hh.write_port())
            q = DeltaQueue(width=A, depth=H, index_bits=column_bits(*h_origin[l], H),
                           delta_bits=delta_bits)
            m.submodules[f"hq{l}"] = q
            hq.append(q)
        xt_r, xt_w, xq = [], [], []  # x encoders fed by activation: target t+1 (layer t+1 or head)
        for t in range(n_targets):
            xm = memory.Memory(shape=data.ArrayLayout(act, A), depth=_depth(nb), init=[],
                               attrs=state_attrs)
            m.submodules[f"xhat{t + 1}"] = xm
            xt_r.append(xm.read_port()), xt_w.append(xm.write_port())
            # The head's x queue has two buffers: the last layer's activation of a timestep
            # fills one while the head of the previous timestep, deferred, reads the other
            # (deltahw.gateware.schedule: the window).
            is_head = head and t == L - 1
            q = DeltaQueue(width=A, depth=H, index_bits=column_bits(*x_origin[t + 1], H),
                           delta_bits=delta_bits, buffers=2 if is_head else 1)
            m.submodules[f"xq{t + 1}"] = q
            xq.append(q)
            if is_head:
                m.d.comb += [q.w_buf.eq(sched.head_wbuf), q.r_buf.eq(sched.head_rbuf)]

        # ---- output FIFO -------------------------------------------------------------------------
        ol = output_layout(cfg)
        # A timestep's output beats are written back to back, unchecked, once there is room for all
        # of them. Two timesteps' worth: the next timestep may start (and, with nothing fired,
        # reach its output phase) while the previous one's beats are still leaving. One spare
        # entry: SyncFIFOBuffered's inner FIFO (depth - 1) is what must not overflow.
        out_depth = 2 * nbo + 1
        m.submodules.ofifo = ofifo = fifo.SyncFIFOBuffered(width=ol.size, depth=out_depth)
        out_data = Signal(ol)
        m.d.comb += [
            self.o.valid.eq(ofifo.r_rdy),
            self.o.payload.eq(ofifo.r_data),
            ofifo.r_en.eq(self.o.ready),
            ofifo.w_data.eq(out_data),
            sched.out_room.eq(ofifo.level <= out_depth - 1 - nbo),  # room for one timestep
        ]

        # ---- MAC columns: queue entry -> weight column -------------------------------------------
        # Constants per block (layers 0..L-1, head = L), selected by the schedule's block.
        def table(values):
            width = max(1, max(int(v).bit_length() for v in values))
            return Array(Const(int(v), width) for v in values)

        t_mxbase = table([lay.mx_base[b] for b in range(blocks)])
        t_mchbase = table([lay.mx_base[min(b, L - 1)] for b in range(blocks)])

        nx = Signal(16)  # entries of the block's x queue
        nh = Signal(16)  # entries of the block's h queue
        x_counts = [front.count] + [q.count[q.r_buf] if q.buffers == 2 else q.count[0]
                                    for q in xq]
        m.d.comb += nx.eq(Array(x_counts)[layer] if blocks > 1 else x_counts[0])
        h_counts = [q.count[0] for q in hq] + ([Const(0, 1)] if head else [])
        m.d.comb += nh.eq(Array(h_counts)[layer] if blocks > 1 else h_counts[0])
        m.d.comb += [sched.nx.eq(nx), sched.nh.eq(nh), sched.h0_before.eq(hq[0].w_before),
                     sched.h0_pending.eq(hq[0].w_pending)]

        g = sched.g
        cur_h = Signal()  # current entry is an h column
        cur_delta = Signal(signed(delta_bits))
        fetch_h = Signal()  # the entry on the queues' read ports comes from the h queue

        # Queue reads: the data are selected by (block, fetch_h). The schedule keeps one entry of
        # look-ahead: while column e is swept, entry e+1 sits on the read ports and its weight
        # address is registered (``take``) in the column's last cycle, so the queue -> column
        # address arithmetic never shares a cycle with the BRAM address.
        # The x queues are read at the entry's index, the h queues at its index minus the x
        # count: the schedule gives both a cycle ahead and each queue registers its own copy (no
        # arithmetic before the LUT RAMs).
        m.d.comb += front.r_addr_next.eq(sched.q_addr_next)
        m.d.sync += fetch_h.eq(sched.q_h)
        for t, q in enumerate(xq):
            is_head = head and t == L - 1
            m.d.comb += q.r_addr_next.eq(sched.q_addr_head_next if is_head else sched.q_addr_next)
        for q in hq:
            m.d.comb += q.r_addr_next.eq(sched.q_addr_h_next)
        x_dl = Array([front.r_delta] + [q.r_delta for q in xq])
        h_dl = Array([q.r_delta for q in hq] + ([Const(0, 1)] if head else []))
        q_delta = Mux(fetch_h, h_dl[layer], x_dl[layer])

        # Column -> word address, registered by take: the queues hold it (``x_origin``,
        # ``h_origin`` above), so it is one select of the entries on the read ports.
        x_base = [front.r_index] + [q.r_index for q in xq]
        h_base = [q.r_index for q in hq] + ([Const(0, 1)] if head else [])  # the head: no h
        fetched_base = Mux(fetch_h, Array(h_base)[layer], Array(x_base)[layer])
        # A fast phase's first column (schedule: ``take_first``): entry 0 of the block's queue out
        # of its first-entry register, no read.
        x_first = [front] + xq
        h_first = hq + ([None] if head else [])

        def first_of(queues, field):
            vals = [Const(0, 1) if q is None else getattr(q, field) for q in queues]
            return Array(vals)[layer] if blocks > 1 else vals[0]

        first_base = Mux(sched.first_h, first_of(h_first, "first_index"),
                         first_of(x_first, "first_index"))
        first_delta = Mux(sched.first_h, first_of(h_first, "first_delta"),
                          first_of(x_first, "first_delta"))
        # The column's sources, by priority: (strobe, weight address, delta, h column).
        takes = [(sched.take_first, first_base, first_delta, sched.first_h),
                 (sched.take, fetched_base, q_delta, fetch_h)]
        for i, (strobe, _, dlt, is_h) in enumerate(takes):
            with (m.If if i == 0 else m.Elif)(strobe):
                m.d.sync += [cur_delta.eq(dlt), cur_h.eq(is_h)]
        # The weight word address (the column's first word + the row group ``g``), kept in a
        # register so that it reaches the weight BRAMs with no adder in between (the ECP5's
        # critical path at 85 MHz: ``g`` -> adder -> every bank's address): a column's first
        # word with ``take`` (the schedule's ``g`` is 0 in the next cycle), one word further
        # with every other issue (``g`` + 1). A wrong word would change the results: the core
        # regressions (tests/test_gateware.py, rtl_tests) compare every output with the golden
        # model.
        w_addr = Signal(mac.wabits)
        for i, (strobe, base, _, _) in enumerate(takes):
            with (m.If if i == 0 else m.Elif)(strobe):
                m.d.sync += w_addr.eq(base)
        with m.Elif(sched.issue):
            m.d.sync += w_addr.eq(w_addr + 1)

        m.d.comb += [
            mac.issue.eq(sched.issue),
            mac.w_addr.eq(w_addr),
            mac.acc_addr.eq(t_mxbase[layer] + g),
            mac.ch_addr.eq(t_mchbase[layer] + g),
            mac.use_ch.eq(cur_h),
            mac.delta.eq(cur_delta),
        ]
        # Sequence reset: accumulators <- biases, one word per cycle. ``resetting`` is decoded
        # from the schedule's state and selects between reset and normal data in front of the
        # MAC's load, every state memory's write port and every queue's inputs (some 500
        # flip-flops and LUT-RAM inputs over the die; the ECP5's critical path at 100 MHz: 9.9
        # ns of routing from the decode to one h memory's write data). Each group of consumers
        # has its own copy instead, a flip-flop registered from ``resetting_next`` (the same
        # value in the same cycle), kept apart (KEEP).
        # ``reset_addr`` likewise (it addressed every state memory's write port and, through the
        # MAC's bias load, every bank's bias memory: 15.5 ns of routing on the ECP5 at 70 MHz):
        # a copy per group of consumers, registered from ``reset_addr_next``, no wider than the
        # reset phase needs.
        ra_bits = bits_for(cycles.reset_cycles(cfg))

        def resetting_copy(name):
            copy = Signal(name=f"resetting_{name}", attrs=KEEP)
            m.d.sync += copy.eq(sched.resetting_next)
            return copy

        def reset_addr_copy(name):
            copy = Signal(ra_bits, name=f"reset_addr_{name}", reset_less=True, attrs=KEEP)
            m.d.sync += copy.eq(sched.reset_addr_next)
            return copy

        # The MAC registers its own copies (per bank) from the values of the next cycle.
        m.d.comb += [
            mac.load_next.eq(sched.resetting_next & (sched.reset_addr_next < lay.acc_depth)),
            mac.load_addr_next.eq(sched.reset_addr_next),
        ]

        # ---- activation --------------------------------------------------------------------------
        act_issue, act_beat, act_k, act_g = (sched.act_issue, sched.act_beat, sched.act_k,
                                             sched.rd_group)
        # Activation pipeline and its delay line of (valid, beat): stage R (the accumulator read
        # latency) holds the accumulator words read at issue and the h words (addressed a cycle
        # later: the h memory's read takes one), stage R + LATENCY the new h values.
        rd_lat = MacArray.READ_LATENCY
        assert rd_lat >= 1, "the h memory read (1 cycle) is aligned with MX's"
        act_lat = ActivationPipe.LATENCY
        # Three copies of the new h: the h memories' write data (and the network output), the h
        # encoder, the x encoder (ActivationPipe: each its own registers, placed by its users).
        # Stage 1's compares as LUT logic on Xilinx 7-series parts only (ActivationPipe).
        m.submodules.act = actp = ActivationPipe(cfg, tag_bits=beat_bits, h_copies=2,
                                                 logic_compares=forms.logic_compares)
        h_out = [actp.h, actp.h_copy[0], actp.h_copy[1]]
        # The layer travels along: while the last layer drains, the schedule's block is already
        # layer 0 (the next timestep's overlapped x phase).
        # With capture, ``cap`` (the beat is a captured one) and ``cap_h`` (the column it is
        # captured from is an h column: its c lanes updated MCH, not MX) travel along too.
        cap_fields = {"cap": 1, "cap_h": 1} if capture else {}
        dl = [
            Signal(
                data.StructLayout({"valid": 1, "beat": beat_bits, "k": len(act_k),
                                   "layer": range(L + 1), **cap_fields}),
                name=f"act_d{i}",
            )
            for i in range(act_lat + rd_lat + 1)
        ]
        m.d.comb += [dl[0].valid.eq(act_issue), dl[0].beat.eq(act_beat), dl[0].k.eq(act_k),
                     dl[0].layer.eq(layer)]
        if capture:
            m.d.comb += [dl[0].cap.eq(sched.act_cap), dl[0].cap_h.eq(cur_h)]
        for i in range(act_lat + rd_lat):
            m.d.sync += dl[i + 1].eq(dl[i])
        m.d.comb += [mac.mch_addr.eq(t_mchbase[layer] + act_g)]
        # The h encoders take the last transmitted values a cycle ahead of the new h (vhat_ahead,
        # so only a compare follows the pipeline's output), read with one cycle of latency; in
        # their plain form (Forms.plain_h_encoders) in the new h's cycle.
        vhat_ahead = not forms.plain_h_encoders
        vhat_lead = DeltaEncoder.VHAT_AHEAD_LATENCY if vhat_ahead else 0
        vhat_at = rd_lat + act_lat - vhat_lead - 1
        for l in range(L):
            m.d.comb += [h_r[l].addr.eq(dl[rd_lat - 1].beat),
                         hhat_r[l].addr.eq(dl[vhat_at].beat)]
        for t in range(n_targets):
            m.d.comb += xt_r[t].addr.eq(dl[vhat_at].beat)
        # Stage R: each unit's gates, picked out of the lanes of its lane block. The select is
        # made in stage R - 1, from the words straight out of the accumulator memories
        # (``mac.mx_word``: the cycle of the read, which has no other logic), into registers of
        # the activation's own (``act_m_*``) that hold in stage R the word ``mx_data`` holds
        # then: the route from the lanes, spread over the die, to the units no longer sits in
        # front of the activation's rounding chain (the two together were the ECP5's critical
        # path at 70 MHz, 10.8 ns of routing, docs/benchmarks/fmax). The lane block ``k`` of
        # stage R - 1 is registered once per unit and gate from stage R - 2 (the same value in
        # the same cycle), each copy kept apart (KEEP) and placed by its select: one ``k``
        # flip-flop driving every unit's selects was routed over the die (4.3 ns of routing;
        # the critical path at 62.5 MHz).
        assert rd_lat >= 2, "the activation's gates are selected in the read's cycle"
        d1 = dl[rd_lat]
        # Lane blocks: unit i of block k reads lanes 3(Ak + i)... With split accumulators
        # (Layout.acc_split k > 1) the read-out words are memory-major (memory j's lanes are
        # words jP..jP + P - 1): a beat's k row groups side by side, one block of 3A words.
        blocks_k = range(max(1, lay.acc_split * P // (3 * A)))
        # Capture (P = 3A: one lane block): a captured beat's words come from the MAC pipeline
        # (``mac.acc_cap``, in the same cycle as a read's ``mx_word``: MacArray.CAPTURE_LATENCY
        # after the issue = ACC_WRITE_LATENCY + 1), but for the c lanes' word the column did not
        # update (cx beside an h column, ch beside an x column), which their own port read. The
        # selects are registered per unit and gate, like ``k``.
        assert not capture or (
            MacArray.CAPTURE_LATENCY == cycles.ACC_WRITE_LATENCY + rd_lat - 1), (
            "a captured beat issued ACC_WRITE_LATENCY cycles after its group takes acc_cap "
            "where a read takes mx_word")
        d0 = dl[rd_lat - 2]
        for i in range(A):
            gates = {
                "r": (actp.m_r[i], [mac.mx_word[3 * (A * k + i)] for k in blocks_k]),
                "u": (actp.m_u[i], [mac.mx_word[3 * (A * k + i) + 1] for k in blocks_k]),
                "cx": (actp.m_cx[i], [mac.mx_word[3 * (A * k + i) + 2] for k in blocks_k]),
                "ch": (actp.m_ch[i], [mac.mch_word[A * k + i] for k in blocks_k]),
            }
            if capture:
                caps = {"r": (mac.acc_cap[3 * i], d0.cap),
                        "u": (mac.acc_cap[3 * i + 1], d0.cap),
                        "cx": (mac.acc_cap[3 * i + 2], d0.cap & ~d0.cap_h),
                        "ch": (mac.acc_cap[3 * i + 2], d0.cap & d0.cap_h)}
            for gname, (dst, words) in gates.items():
                word_r = Signal.like(dst, name=f"act_m_{gname}{i}", reset_less=True)
                m.d.comb += dst.eq(word_r)
                if capture:
                    cap_word, cap_when = caps[gname]
                    sel = Signal(name=f"act_cap_{gname}{i}", reset_less=True, attrs=KEEP)
                    m.d.sync += sel.eq(cap_when)
                    m.d.sync += word_r.eq(Mux(sel, cap_word, words[0]))
                    continue
                k_copy = Signal(len(act_k), name=f"act_k_{gname}{i}", reset_less=True, attrs=KEEP)
                m.d.sync += k_copy.eq(dl[rd_lat - 2].k)
                with m.Switch(k_copy):
                    for k, word in enumerate(words):
                        with m.Case(k):
                            m.d.sync += word_r.eq(word)
        h_prev = Array([p.data.as_value() for p in h_r])
        m.d.comb += [
            actp.valid.eq(d1.valid),
            actp.tag.eq(d1.beat),
            actp.h_prev.eq(h_prev[d1.layer] if L > 1 else h_r[0].data),
        ]
        # Output stage: write h, delta-encode it twice, emit it if it is the network output.
        dN = dl[act_lat + rd_lat]
        act_layer = dN.layer  # the layer whose beat leaves the pipeline
        # The beat whose last transmitted values the h encoders take (a cycle ahead of dN, or dN).
        pre_layer = dl[act_lat + rd_lat - vhat_lead].layer
        unit_ok = Signal(A)
        for i in range(A):
            m.d.comb += unit_ok[i].eq(dN.beat * A + i < H)
        m.submodules.enc_h = enc_h = DeltaEncoder(width=A, act_bits=ab, vhat_ahead=vhat_ahead)
        m.submodules.enc_x = enc_x = DeltaEncoder(width=A, act_bits=ab, vhat_ahead=vhat_ahead)
        hhat_data = Array([p.data.as_value() for p in hhat_r])
        m.d.comb += [
            enc_h.v.eq(h_out[1]),
            enc_h.vhat.eq(hhat_data[pre_layer] if L > 1 else hhat_r[0].data),
            enc_h.theta.eq(Array(theta_h)[pre_layer] if L > 1 else theta_h[0]),
            enc_h.in_range.eq(unit_ok),
        ]
        if n_targets:
            xt_data = Array([p.data.as_value() for p in xt_r])
            tgt_theta = Array(theta_x[1:] + ([theta_head] if head else []))
            m.d.comb += [
                enc_x.v.eq(h_out[2]),
                enc_x.vhat.eq(xt_data[pre_layer]),
                enc_x.theta.eq(tgt_theta[pre_layer]),
                enc_x.in_range.eq(unit_ok),
            ]
        act_out = Signal()  # an activation beat leaves the pipeline this cycle
        m.d.comb += act_out.eq(dN.valid)
        # During a sequence reset the h queues are filled as the h encoder would fill them for
        # h = hhat = 0: a zero delta fires only when the threshold is 0 (dense reference).
        reset_ok = Signal(A)
        resetting, reset_addr = resetting_copy("ok"), reset_addr_copy("ok")
        for i in range(A):
            m.d.comb += reset_ok[i].eq(resetting & (reset_addr * A + i < H))
        # The h encoders' last-transmitted words are written back a cycle after the compare
        # (address, data and enable registered together, so the memory sees the same writes in
        # the same order, one cycle later): the new word's select after the fire compare then
        # ends at a flip-flop beside the encoder instead of at the LUT RAM's write data (the
        # ECP5's critical path at 100 MHz, h copy -> compare -> xhat1 write data,
        # docs/benchmarks/fmax). Safe: a word is read again only in the same layer's activation
        # of the next timestep, many cycles later (at least the activation drain).
        def write_late(port, name, addr, data_, en):
            wa = Signal.like(port.addr, name=f"{name}_wb_addr")
            wd = Signal(port.data.shape(), name=f"{name}_wb_data", reset_less=True)
            we = Signal(name=f"{name}_wb_en")
            m.d.sync += [wa.eq(addr), wd.eq(data_), we.eq(en)]
            m.d.comb += [port.addr.eq(wa), port.data.eq(wd), port.en.eq(we)]

        for qi, (q, (origin, stride)) in enumerate(zip(hq + xq, h_origin + x_origin[1:])):
            enc_beat = Mux(resetting_copy(f"qi{qi}"), reset_addr_copy(f"qi{qi}"), dN.beat)
            for i in range(A):  # the column's weight address (beat * A + i is the element)
                m.d.comb += q.w_index[i].eq(enc_beat * (A * stride) + (origin + i * stride))
        # The queues' fire bits: the compare, masked by "element i of a beat of this layer
        # leaves the pipeline" (``sel`` and ``unit_ok``), registered a cycle ahead from the stage
        # before, one copy per queue (KEEP), so the mask joins the compare's OR in one LUT. The
        # h encoder's compare -> the h queue's fire-bit registers was the ECP5's critical path
        # (13.44 ns, 4 LUT levels and 3 routes after the carry chains: docs/benchmarks/fmax
        # lead20-1).
        d_pre = dl[act_lat + rd_lat - 1]

        def fire_mask(layer, name):
            mask = Signal(A, name=f"fire_mask_{name}", attrs=KEEP)
            for i in range(A):
                m.d.sync += mask[i].eq(d_pre.valid & (d_pre.layer == layer)
                                       & (d_pre.beat * A + i < H))
            return mask

        for l in range(L):
            sel = act_out & (act_layer == l)
            resetting, reset_addr = resetting_copy(f"h{l}"), reset_addr_copy(f"h{l}")
            m.d.comb += [
                h_w[l].addr.eq(Mux(resetting, reset_addr, dN.beat)),
                h_w[l].data.eq(Mux(resetting, 0, h_out[0])),
                h_w[l].en.eq(Mux(resetting, reset_addr < nb, sel)),
            ]
            resetting, reset_addr = resetting_copy(f"hhat{l}"), reset_addr_copy(f"hhat{l}")
            write_late(hhat_w[l], f"hhat{l}", Mux(resetting, reset_addr, dN.beat),
                       Mux(resetting, 0, enc_h.new_vhat), Mux(resetting, reset_addr < nb, sel))
            resetting, reset_addr = resetting_copy(f"hq{l}"), reset_addr_copy(f"hq{l}")
            m.d.comb += [
                # = Mux(sel, enc_h.fire, Mux(theta_h[l] == 0, reset_ok, 0))
                hq[l].w_valid.eq((enc_h.over & fire_mask(l, f"hq{l}"))
                                 | Mux(sel | (theta_h[l] != 0), 0, reset_ok)),
                hq[l].w_delta.eq(Mux(resetting, 0, enc_h.diff.as_value())),
                hq[l].w_first.eq((sel & (dN.beat == 0)) | (resetting & (reset_addr == 0))),
            ]
        for t in range(n_targets):
            sel = act_out & (act_layer == t)
            resetting, reset_addr = resetting_copy(f"xt{t}"), reset_addr_copy(f"xt{t}")
            write_late(xt_w[t], f"xhat{t + 1}", Mux(resetting, reset_addr, dN.beat),
                       Mux(resetting, 0, enc_x.new_vhat), Mux(resetting, reset_addr < nb, sel))
            resetting, reset_addr = resetting_copy(f"xq{t}"), reset_addr_copy(f"xq{t}")
            m.d.comb += [
                xq[t].w_valid.eq(enc_x.over & fire_mask(t, f"xq{t}")),  # Mux(sel, fire, 0)
                xq[t].w_delta.eq(enc_x.diff),  # only fired entries are stored
                xq[t].w_first.eq((sel & (dN.beat == 0)) | (resetting & (reset_addr == 0))),
            ]
        out_push_act = Signal()
        if not head:
            m.d.comb += out_push_act.eq(act_out & (act_layer == L - 1))
            for i in range(A):
                m.d.comb += out_data.data[i].eq(Mux(unit_ok[i], h_out[0][i], 0))
            m.d.comb += [out_data.last.eq(dN.beat == nb - 1), ofifo.w_en.eq(out_push_act)]

        # ---- head read-out -----------------------------------------------------------------------
        if head:
            m.submodules.readout = ro = HeadReadout(cfg, logic_compares=forms.logic_compares)
            m.d.comb += [
                ro.issue.eq(sched.ro_issue),
                ro.beat.eq(sched.ro_beat),
                ro.k.eq(sched.ro_k),
                ro.mx_data.eq(mac.mx_fwd),
                out_data.eq(ro.out),
                ofifo.w_en.eq(ro.w_en),
            ]

        # MX read address: activation beats and head read-out both read through mx_addr. The
        # read-out has its own word counter and base: its last beats may overlap the next
        # timestep's h phase fetch (the schedule's block is then layer 0).
        if head:
            m.d.comb += mac.mx_addr.eq(Mux(sched.ro_issue, lay.mx_base[L] + sched.ro_group,
                                           t_mxbase[layer] + act_g))
        else:
            m.d.comb += mac.mx_addr.eq(t_mxbase[layer] + act_g)

        # ---- counters and register block ports ---------------------------------------------------
        m.submodules.counters = cnt = PerfCounters(cfg)
        m.d.comb += [
            cnt.counting.eq(sched.counting),
            cnt.stalling.eq(sched.stalling),
            cnt.step_done.eq(sched.step_done),
            cnt.issue.eq(sched.issue),
            cnt.latch_fired.eq(sched.latch_fired),
            cnt.latch_x0.eq(sched.latch_x0),
            cnt.block.eq(sched.latch_block),
            cnt.nx.eq(sched.latch_nx),
            cnt.nh.eq(nh),  # (= n_h in every phase that latches; and in a merged h fetch)
            cnt.clear.eq(regs.strobe("CTRL") & regs["CTRL"].clear_counters),
        ]
        busy = Signal()
        m.d.comb += busy.eq(sched.counting | sched.stalling
                            | sched.resetting)
        status = regs["STATUS"]
        m.d.comb += [
            status.busy.eq(busy),
            status.input_ready.eq(front.r_full),
            status.out_pending.eq(self.o.valid),
            regs["CYCLES_LAST"].eq(cnt.cycles_last),
            regs["CYCLES_TOTAL"].eq(cnt.cycles_total),
            regs["STALL_TOTAL"].eq(cnt.stall_total),
            regs["TIMESTEPS"].eq(cnt.timesteps),
            regs["MAC_BUSY"].eq(cnt.mac_busy),
            regs["FIRED_HEAD_LAST"].eq(cnt.fired_head),
        ]
        for l in range(L):
            m.d.comb += [regs[f"FIRED_LAST{l}"].x.eq(cnt.fired_x[l]),
                         regs[f"FIRED_LAST{l}"].h.eq(cnt.fired_h[l])]
        m.d.comb += [
            mac.p_kind.eq(regs["PARAM_SEL"].kind),
            mac.p_lane.eq(regs["PARAM_SEL"].lane),
            mac.p_addr.eq(regs["PARAM_ADDR"]),
            mac.p_data.eq(regs["PARAM_DATA"]),
            mac.p_we.eq(regs.strobe("PARAM_DATA")),
        ]
        return m
