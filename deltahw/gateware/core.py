"""The delta-GRU accelerator core: input encoder, delta queues, MAC array, activation unit,
state memories, controller, register block and performance counters.

Protocol (``docs/architecture.md``): input vectors arrive on ``i`` as ceil(I/E) beats of E values
(``first`` on a sequence's first beat resets the sequence state); each timestep's result leaves on
``o`` as ceil(W/A) beats of A values (``last`` on the final one); the ``bus`` reaches the registers
of :mod:`deltahw.regmap`.

Schedule of a timestep (the cycle model of :mod:`deltahw.cycles` counts exactly these cycles):

* The **input encoder** compares E elements per cycle with the last transmitted input and packs
  the fired (index, delta) pairs into a double-buffered queue. It works ahead: while the core
  computes step t it already encodes x_{t+1} into the other buffer.
* Per layer: **MAC** phase over the layer's fired x columns then h columns (2 cycles to fetch the
  first entry, C = ceil(3H/P) cycles per column back to back, ``max(0, 3 - C)`` cycles to drain;
  a phase in which nothing fired takes 1 cycle); then **ACT** phase, A units per cycle through the
  activation pipeline (7 cycles from issue to write-back, one more until the fired deltas are
  stored in the queues).
  As each beat of new h values leaves the pipeline it is delta-encoded twice, against this layer's
  last transmitted h (feeding this layer's h queue for the next timestep) and against the next
  layer's (or the head's) last transmitted input (feeding its x queue for this timestep).
* Head: MAC over its fired columns (ceil(O/P) cycles each), then a read-out of ceil(O/A) beats into
  the output FIFO.
* The timestep closes in its last cycle (counters latch) and the next one starts in the following
  cycle when its input vector is in.

The output FIFO holds two timesteps of output beats. Before the phase that writes it the core waits
until there is room for one timestep (the host has read all but at most one earlier timestep);
those cycles are stall cycles, not compute cycles. With the output always read there are none.
"""

from __future__ import annotations

from amaranth import Array, Const, Module, Mux, Signal, signed
from amaranth.lib import data, fifo, memory, stream, wiring
from amaranth.lib.wiring import In, Out

from .. import cycles, regmap
from ..config import DeltaGRUConfig, ceil_div
from ..layout import Layout
from .activation import ActivationPipe, round_shift, saturate_to
from .encoder import DeltaEncoder
from .mac import MacArray
from .queue import DeltaQueue
from .registers import BusSignature, RegisterBlock

__all__ = ["DeltaGRUCore", "BusSignature", "input_layout", "output_layout"]

def input_layout(config: DeltaGRUConfig) -> data.StructLayout:
    return data.StructLayout(
        {"data": data.ArrayLayout(signed(config.act.bits), config.enc_width), "first": 1}
    )


def output_layout(config: DeltaGRUConfig) -> data.StructLayout:
    return data.StructLayout(
        {"data": data.ArrayLayout(signed(config.act.bits), config.act_width), "last": 1}
    )


def _depth(n: int) -> int:
    """Memory depth of at least 2 words (a 1-word memory has a zero-width address in Verilog)."""
    return max(n, 2)


def _bits(n: int) -> int:
    """Unsigned width that can hold values 0..n-1 (at least 1)."""
    return max(1, (n - 1).bit_length())


class DeltaGRUCore(wiring.Component):
    """A delta-GRU accelerator for one :class:`DeltaGRUConfig`.

    ``weight_init``/``bias_init`` (per-bank word lists, from :mod:`deltahw.export`) initialise the
    parameter memories in simulation; with ``init_files=True`` the generated Verilog instead loads
    ``weights_bank{b}.mem``/``biases_bank{b}.mem`` with ``$readmemh``.

    ``drain_trim`` (tests only) shortens the core's waits by the given cycles, ``{"act": n,
    "mac": n, "head_mac": n}``: the test that every drain is the minimum that stays bit-exact.
    """

    def __init__(
        self, config: DeltaGRUConfig, *, weight_init=None, bias_init=None, init_files=False,
        drain_trim=None,
    ):
        self.config = config
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

    def elaborate(self, platform):  # noqa: C901 - one controller, read top to bottom
        m = Module()
        cfg, lay = self.config, self.layout
        I, H, L, O = cfg.input_size, cfg.hidden_size, cfg.num_layers, cfg.output_size
        P, E, A, ab = cfg.lanes, cfg.enc_width, cfg.act_width, cfg.act.bits
        head = cfg.has_head
        C, Ch = lay.groups, lay.head_groups
        nbi = ceil_div(I, E)  # input beats per vector
        nb = ceil_div(H, A)  # activation beats per layer
        nbo = ceil_div(cfg.output_width, A)  # output beats per timestep
        act = signed(ab)
        delta_bits = cfg.delta_bits
        n_targets = L if head else L - 1  # x queues fed by activation: layers 1..L-1 (+ head)

        m.submodules.mac = mac = MacArray(
            cfg, weight_init=self.weight_init, bias_init=self.bias_init, init_files=self.init_files
        )

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
        cycles_last = Signal(32)
        cycles_total = Signal(32)
        stall_total = Signal(32)
        timesteps = Signal(32)
        mac_busy = Signal(32)
        fired_x = [Signal(16, name=f"fired_x{l}") for l in range(L)]
        fired_h = [Signal(16, name=f"fired_h{l}") for l in range(L)]
        fired_head = Signal(16)
        step_cycles = Signal(32)  # compute cycles of the running timestep

        # ---- input encoder (works ahead into a double-buffered queue) ----------------------------
        xq0 = DeltaQueue(width=E, depth=I, index_bits=_bits(I), delta_bits=delta_bits, buffers=2)
        m.submodules.xq0 = xq0
        m.submodules.enc_in = enc_in = DeltaEncoder(width=E, act_bits=ab)
        xhat0 = memory.Memory(shape=data.ArrayLayout(act, E), depth=_depth(nbi), init=[])
        m.submodules.xhat0 = xhat0
        # Transparent: with one beat per vector (E >= I) the next vector reads a word in the same
        # cycle the previous vector writes it back.
        xhat0_w = xhat0.write_port()
        xhat0_r = xhat0.read_port(transparent_for=(xhat0_w,))

        full = [Signal(name="buf_full0"), Signal(name="buf_full1")]
        reset_tag = [Signal(name="buf_reset0"), Signal(name="buf_reset1")]
        wbuf = Signal()  # buffer the encoder fills
        rbuf = Signal()  # buffer the core reads
        in_beat = Signal(_bits(nbi))
        vec_clear = Signal()  # the vector being received starts a sequence
        release = Signal()  # core done with buffer rbuf (pulse)

        w_full = Mux(wbuf, full[1], full[0])
        m.d.comb += self.i.ready.eq(~w_full)
        accept = self.i.valid & self.i.ready
        is_first_beat = in_beat == 0
        clear_now = Mux(is_first_beat, self.i.payload.first, vec_clear)
        m.d.comb += xhat0_r.addr.eq(in_beat)
        # Stage 1 of the input encoder: compare with the last transmitted values and push.
        s1 = Signal(
            data.StructLayout(
                {
                    "valid": 1,
                    "beat": _bits(nbi),
                    "buf": 1,
                    "clear": 1,
                    "data": data.ArrayLayout(act, E),
                    "last": 1,
                    "first": 1,
                }
            )
        )
        m.d.sync += [
            s1.valid.eq(accept),
            s1.beat.eq(in_beat),
            s1.buf.eq(wbuf),
            s1.clear.eq(clear_now),
            s1.data.eq(self.i.payload.data),
            s1.last.eq(in_beat == nbi - 1),
            s1.first.eq(is_first_beat),
        ]
        with m.If(accept):
            m.d.sync += vec_clear.eq(clear_now)
            with m.If(in_beat == nbi - 1):
                m.d.sync += [in_beat.eq(0), wbuf.eq(~wbuf)]
            with m.Else():
                m.d.sync += in_beat.eq(in_beat + 1)
        in_range = Signal(E)
        for e in range(E):
            m.d.comb += in_range[e].eq(s1.beat * E + e < I)
        m.d.comb += [
            enc_in.v.eq(s1.data),
            enc_in.vhat.eq(xhat0_r.data),
            enc_in.theta.eq(theta_x[0]),
            enc_in.clear.eq(s1.clear),
            enc_in.in_range.eq(in_range),
            xhat0_w.addr.eq(s1.beat),
            xhat0_w.data.eq(enc_in.new_vhat),
            xhat0_w.en.eq(s1.valid),
            xq0.w_valid.eq(Mux(s1.valid, enc_in.fire, 0)),
            xq0.w_first.eq(s1.valid & s1.first),
            xq0.w_buf.eq(s1.buf),
            xq0.w_delta.eq(enc_in.delta),
        ]
        for e in range(E):
            m.d.comb += xq0.w_index[e].eq(s1.beat * E + e)
        for b in range(2):
            with m.If(s1.valid & s1.last & (s1.buf == b)):
                m.d.sync += [full[b].eq(1), reset_tag[b].eq(s1.clear)]
            with m.Elif(release & (rbuf == b)):
                m.d.sync += full[b].eq(0)
        with m.If(release):
            m.d.sync += rbuf.eq(~rbuf)
        r_full = Mux(rbuf, full[1], full[0])
        r_reset = Mux(rbuf, reset_tag[1], reset_tag[0])

        # ---- per-layer state memories and queues -------------------------------------------------
        layer = Signal(range(L + 1))  # L = the head
        beat_bits = _bits(nb)
        h_r, h_w, hhat_r, hhat_w, hq = [], [], [], [], []
        for l in range(L):
            hm = memory.Memory(shape=data.ArrayLayout(act, A), depth=_depth(nb), init=[])
            hh = memory.Memory(shape=data.ArrayLayout(act, A), depth=_depth(nb), init=[])
            m.submodules[f"h{l}"], m.submodules[f"hhat{l}"] = hm, hh
            h_r.append(hm.read_port()), h_w.append(hm.write_port())
            hhat_r.append(hh.read_port()), hhat_w.append(hh.write_port())
            q = DeltaQueue(width=A, depth=H, index_bits=_bits(H), delta_bits=delta_bits)
            m.submodules[f"hq{l}"] = q
            hq.append(q)
        xt_r, xt_w, xq = [], [], []  # x encoders fed by activation: target t+1 (layer t+1 or head)
        for t in range(n_targets):
            xm = memory.Memory(shape=data.ArrayLayout(act, A), depth=_depth(nb), init=[])
            m.submodules[f"xhat{t + 1}"] = xm
            xt_r.append(xm.read_port()), xt_w.append(xm.write_port())
            q = DeltaQueue(width=A, depth=H, index_bits=_bits(H), delta_bits=delta_bits)
            m.submodules[f"xq{t + 1}"] = q
            xq.append(q)

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
        ]
        out_room = ofifo.level <= out_depth - 1 - nbo  # room for one timestep of beats

        # ---- controller --------------------------------------------------------------------------
        # Constants per block (layers 0..L-1, head = L), selected by `layer`.
        def table(values, width=None):
            width = width or max(1, max(int(v).bit_length() for v in values))
            return Array(Const(int(v), width) for v in values)

        blocks = L + 1 if head else L
        in_sizes = [cfg.layer_input_size(l) for l in range(L)] + ([0] if head else [])
        groups = [C] * L + ([Ch] if head else [])
        costs = [cycles.column_cost(cfg)] * L + ([cycles.head_column_cost(cfg)] if head else [])
        assert costs == groups, "a column issues one row group per cycle"
        trim = self.drain_trim
        drains = [cycles.mac_drain(c) - trim.get("mac", 0) for c in costs[:L]]
        if head:
            drains.append(cycles.mac_drain(costs[L]) - trim.get("head_mac", 0))
        act_drain = cycles.ACT_DRAIN - trim.get("act", 0)
        assert min(drains) >= 0 and act_drain >= 1, "a drain cannot be trimmed below zero"
        t_wbase = table([lay.weight_base[b] for b in range(blocks)])
        t_isize = table(in_sizes)
        t_groups = table(groups)
        t_drain = table(drains)
        t_mxbase = table([lay.mx_base[b] for b in range(blocks)])
        t_mchbase = table([C * min(b, L - 1) for b in range(blocks)])

        nx = Signal(16)  # entries of the block's x queue
        nh = Signal(16)  # entries of the block's h queue
        x_counts = [xq0.count[rbuf]] + [q.count[0] for q in xq]
        m.d.comb += nx.eq(Array(x_counts)[layer] if blocks > 1 else x_counts[0])
        h_counts = [q.count[0] for q in hq] + ([Const(0, 1)] if head else [])
        m.d.comb += nh.eq(Array(h_counts)[layer] if blocks > 1 else h_counts[0])
        n_total = nx + nh

        e = Signal(16)  # entry whose column is being swept
        g = Signal(16)  # row-group cycle within the current column
        cur_h = Signal()  # current entry is an h column
        cur_base = Signal(mac.wabits + 1)
        cur_delta = Signal(signed(delta_bits))
        fetch_h = Signal()  # the entry on the queues' read ports comes from the h queue
        q_raddr = Signal(16)
        cnt = Signal(16)  # generic phase counter
        act_k = Signal(_bits(max(1, P // (3 * A))))  # lane block of the current activation beat
        act_g = Signal(16)

        # Queue reads: every queue gets the same address; the data are selected by (layer, fetch_h).
        # The controller keeps one entry of look-ahead: while column e is swept, entry e+1 sits on
        # the read ports and its weight address is registered in the column's last cycle, so the
        # queue -> column address arithmetic never shares a cycle with the BRAM address.
        m.d.comb += [xq0.r_addr.eq(q_raddr), xq0.r_buf.eq(rbuf)]
        for q in hq + xq:
            m.d.comb += q.r_addr.eq(q_raddr)
        x_idx = Array([xq0.r_index] + [q.r_index for q in xq])
        x_dl = Array([xq0.r_delta] + [q.r_delta for q in xq])
        h_idx = Array([q.r_index for q in hq] + ([Const(0, 1)] if head else []))
        h_dl = Array([q.r_delta for q in hq] + ([Const(0, 1)] if head else []))
        q_index = Mux(fetch_h, h_idx[layer], x_idx[layer])
        q_delta = Mux(fetch_h, h_dl[layer], x_dl[layer])
        col = q_index + Mux(fetch_h, t_isize[layer], 0)
        # Column -> word address (registered by take_fetched, so the multiplier has a cycle).
        fetched_base = t_wbase[layer] + col * t_groups[layer]

        def fetch(index):
            """Put entry `index` (of the concatenated x then h lists) on the queues' read ports."""
            m.d.comb += q_raddr.eq(Mux(index < nx, index, index - nx))
            m.d.sync += fetch_h.eq(index >= nx)

        def take_fetched():
            m.d.sync += [cur_base.eq(fetched_base), cur_delta.eq(q_delta), cur_h.eq(fetch_h)]

        m.d.comb += [
            mac.w_addr.eq(cur_base + g),
            mac.acc_addr.eq(t_mxbase[layer] + g),
            mac.ch_addr.eq(t_mchbase[layer] + g),
            mac.use_ch.eq(cur_h),
            mac.delta.eq(cur_delta),
        ]

        # Activation pipeline and its delay line of (valid, beat): stage 1 holds the accumulator
        # and h words read at issue, stage LATENCY + 1 the new h values.
        assert MacArray.READ_LATENCY == 1, "the h memory read (1 cycle) is aligned with MX's"
        act_lat = ActivationPipe.LATENCY
        m.submodules.act = actp = ActivationPipe(cfg, tag_bits=beat_bits)
        act_issue = Signal()
        act_beat = Signal(beat_bits)
        dl = [
            Signal(
                data.StructLayout({"valid": 1, "beat": beat_bits, "k": len(act_k)}),
                name=f"act_d{i}",
            )
            for i in range(act_lat + 2)
        ]
        m.d.comb += [dl[0].valid.eq(act_issue), dl[0].beat.eq(act_beat), dl[0].k.eq(act_k)]
        for i in range(act_lat + 1):
            m.d.sync += dl[i + 1].eq(dl[i])
        m.d.comb += [mac.mch_addr.eq(t_mchbase[layer] + act_g)]
        for l in range(L):
            m.d.comb += [h_r[l].addr.eq(act_beat), hhat_r[l].addr.eq(dl[act_lat].beat)]
        for t in range(n_targets):
            m.d.comb += xt_r[t].addr.eq(dl[act_lat].beat)
        # Stage 1: pick each unit's gates out of the lanes of its lane block.
        d1 = dl[1]
        with m.Switch(d1.k):
            for k in range(P // (3 * A)):
                with m.Case(k):
                    for i in range(A):
                        lane = 3 * A * k + 3 * i
                        m.d.comb += [
                            actp.m_r[i].eq(mac.mx_data[lane]),
                            actp.m_u[i].eq(mac.mx_data[lane + 1]),
                            actp.m_cx[i].eq(mac.mx_data[lane + 2]),
                            actp.m_ch[i].eq(mac.mch_data[lane // 3]),
                        ]
        h_prev = Array([p.data.as_value() for p in h_r])
        m.d.comb += [
            actp.valid.eq(d1.valid),
            actp.tag.eq(d1.beat),
            actp.h_prev.eq(h_prev[layer] if L > 1 else h_r[0].data),
        ]
        # Output stage: write h, delta-encode it twice, emit it if it is the network output.
        dN = dl[act_lat + 1]
        unit_ok = Signal(A)
        for i in range(A):
            m.d.comb += unit_ok[i].eq(dN.beat * A + i < H)
        m.submodules.enc_h = enc_h = DeltaEncoder(width=A, act_bits=ab)
        m.submodules.enc_x = enc_x = DeltaEncoder(width=A, act_bits=ab)
        hhat_data = Array([p.data.as_value() for p in hhat_r])
        m.d.comb += [
            enc_h.v.eq(actp.h),
            enc_h.vhat.eq(hhat_data[layer] if L > 1 else hhat_r[0].data),
            enc_h.theta.eq(Array(theta_h)[layer] if L > 1 else theta_h[0]),
            enc_h.in_range.eq(unit_ok),
        ]
        if n_targets:
            xt_data = Array([p.data.as_value() for p in xt_r])
            tgt_theta = Array(theta_x[1:] + ([theta_head] if head else []))
            m.d.comb += [
                enc_x.v.eq(actp.h),
                enc_x.vhat.eq(xt_data[layer]),
                enc_x.theta.eq(tgt_theta[layer]),
                enc_x.in_range.eq(unit_ok),
            ]
        act_out = Signal()  # an activation beat leaves the pipeline this cycle
        m.d.comb += act_out.eq(dN.valid)
        resetting = Signal()
        reset_addr = Signal(16)
        # During a sequence reset the h queues are filled as the h encoder would fill them for
        # h = hhat = 0: a zero delta fires only when the threshold is 0 (dense reference).
        enc_beat = Mux(resetting, reset_addr, dN.beat)
        reset_ok = Signal(A)
        for i in range(A):
            m.d.comb += reset_ok[i].eq(resetting & (reset_addr * A + i < H))
        for q in hq + xq:
            for i in range(A):
                m.d.comb += q.w_index[i].eq(enc_beat * A + i)
        for l in range(L):
            sel = act_out & (layer == l)
            m.d.comb += [
                h_w[l].addr.eq(Mux(resetting, reset_addr, dN.beat)),
                h_w[l].data.eq(Mux(resetting, 0, actp.h)),
                h_w[l].en.eq(Mux(resetting, reset_addr < nb, sel)),
                hhat_w[l].addr.eq(Mux(resetting, reset_addr, dN.beat)),
                hhat_w[l].data.eq(Mux(resetting, 0, enc_h.new_vhat)),
                hhat_w[l].en.eq(Mux(resetting, reset_addr < nb, sel)),
                hq[l].w_valid.eq(Mux(sel, enc_h.fire, Mux(theta_h[l] == 0, reset_ok, 0))),
                hq[l].w_delta.eq(Mux(resetting, 0, enc_h.delta.as_value())),
                hq[l].w_first.eq((sel & (dN.beat == 0)) | (resetting & (reset_addr == 0))),
            ]
        for t in range(n_targets):
            sel = act_out & (layer == t)
            m.d.comb += [
                xt_w[t].addr.eq(Mux(resetting, reset_addr, dN.beat)),
                xt_w[t].data.eq(Mux(resetting, 0, enc_x.new_vhat)),
                xt_w[t].en.eq(Mux(resetting, reset_addr < nb, sel)),
                xq[t].w_valid.eq(Mux(sel, enc_x.fire, 0)),
                xq[t].w_delta.eq(enc_x.delta),
                xq[t].w_first.eq((sel & (dN.beat == 0)) | (resetting & (reset_addr == 0))),
            ]
        out_push_act = Signal()
        if not head:
            m.d.comb += out_push_act.eq(act_out & (layer == L - 1))
            for i in range(A):
                m.d.comb += out_data.data[i].eq(Mux(unit_ok[i], actp.h[i], 0))
            m.d.comb += [out_data.last.eq(dN.beat == nb - 1), ofifo.w_en.eq(out_push_act)]

        # Head read-out pipeline: MX words -> rescale -> output FIFO.
        ro_issue = Signal()
        ro_beat = Signal(_bits(nbo))
        ro_k = Signal(_bits(max(1, P // A)))
        ro1 = Signal(data.StructLayout({"valid": 1, "beat": _bits(nbo), "k": len(ro_k)}))
        ro2 = Signal.like(ro1)
        m.d.sync += [ro1.valid.eq(ro_issue), ro1.beat.eq(ro_beat), ro1.k.eq(ro_k), ro2.eq(ro1)]
        if head:
            y = Signal(data.ArrayLayout(act, A))
            with m.Switch(ro1.k):
                for k in range(P // A):
                    with m.Case(k):
                        for i in range(A):
                            mv = mac.mx_data[A * k + i]
                            m.d.sync += y[i].eq(saturate_to(round_shift(mv, cfg.weight.frac), ab))
            for i in range(A):
                m.d.comb += out_data.data[i].eq(Mux(ro2.beat * A + i < O, y[i], 0))
            m.d.comb += [out_data.last.eq(ro2.beat == nbo - 1), ofifo.w_en.eq(ro2.valid)]

        # MX read address: activation beats and head read-out both read through mx_addr.
        m.d.comb += mac.mx_addr.eq(t_mxbase[layer] + act_g)

        counting = Signal()  # this cycle is a compute cycle of the running timestep
        stalling = Signal()
        final_block = L if head else L - 1

        step_done = Signal()  # last compute cycle of the timestep: counters latch

        def start_step():
            """Leave the timestep's last cycle (or IDLE): start the next one if its input is in."""
            m.d.sync += [layer.eq(0), ro_beat.eq(0), ro_k.eq(0)]
            with m.If(r_full):
                with m.If(r_reset):
                    m.d.sync += reset_addr.eq(0)
                    m.next = "RESET"
                with m.Else():
                    m.next = "MAC_FETCH"
            with m.Else():
                m.next = "IDLE"

        def finish_step():
            m.d.comb += step_done.eq(1)
            m.d.sync += [cycles_last.eq(step_cycles + 1), timesteps.eq(timesteps + 1)]
            start_step()

        def mac_done():
            """The block's MAC phase ends this cycle: on to its activation or read-out."""
            with m.If(layer == 0):
                m.d.comb += release.eq(1)  # the input vector's queue has been read
            with m.If((layer == final_block) & ~out_room):
                m.next = "WAIT_OUT"
            with m.Elif(layer == L):
                m.next = "OUT_RUN"
            with m.Else():
                m.next = "ACT_RUN"

        with m.FSM(name="ctrl"):
            with m.State("IDLE"):
                start_step()
            with m.State("RESET"):
                # Accumulators <- biases, h / last-transmitted values <- 0, queues emptied.
                m.d.comb += [
                    resetting.eq(1),
                    mac.load.eq(reset_addr < lay.acc_depth),
                    mac.load_addr.eq(reset_addr),
                ]
                m.d.sync += reset_addr.eq(reset_addr + 1)
                with m.If(reset_addr == cycles.reset_cycles(cfg) - 1):
                    m.next = "MAC_FETCH"
            with m.State("MAC_FETCH"):
                m.d.comb += counting.eq(1)
                fetch(0)
                m.d.sync += [e.eq(0), g.eq(0), cnt.eq(0), act_g.eq(0), act_k.eq(0), act_beat.eq(0)]
                for l in range(L):
                    with m.If(layer == l):
                        m.d.sync += [fired_x[l].eq(nx), fired_h[l].eq(nh)]
                if head:
                    with m.If(layer == L):
                        m.d.sync += fired_head.eq(nx)
                with m.If(n_total == 0):
                    mac_done()  # cycles.EMPTY_MAC_PHASE
                with m.Else():
                    m.next = "MAC_FETCH2"
            with m.State("MAC_FETCH2"):
                m.d.comb += counting.eq(1)
                take_fetched()
                fetch(1)
                m.next = "MAC_RUN"
            with m.State("MAC_RUN"):
                m.d.comb += [counting.eq(1), mac.issue.eq(1)]
                # The entry taken in a column's last cycle was addressed the cycle before: in
                # the column's previous cycle, or (one-cycle columns) in the previous column's.
                last_g = g == t_groups[layer] - 1
                fetch(Mux(last_g, e + 2, e + 1))
                with m.If(last_g):
                    m.d.sync += [g.eq(0), e.eq(e + 1)]
                    take_fetched()
                    with m.If(e + 1 == n_total):
                        with m.If(t_drain[layer] == 0):
                            mac_done()
                        with m.Else():
                            m.next = "MAC_DRAIN"
                with m.Else():
                    m.d.sync += g.eq(g + 1)
            with m.State("MAC_DRAIN"):
                # Until the last column's first accumulator word is readable (cycles.mac_drain).
                m.d.comb += counting.eq(1)
                m.d.sync += cnt.eq(cnt + 1)
                with m.If(cnt == t_drain[layer] - 1):
                    m.d.sync += cnt.eq(0)
                    mac_done()
            with m.State("WAIT_OUT"):
                m.d.comb += stalling.eq(1)
                with m.If(out_room):
                    m.next = "OUT_RUN" if head else "ACT_RUN"
            with m.State("ACT_RUN"):
                m.d.comb += [counting.eq(1), act_issue.eq(1)]
                m.d.sync += act_beat.eq(act_beat + 1)
                with m.If(act_k == P // (3 * A) - 1):
                    m.d.sync += [act_k.eq(0), act_g.eq(act_g + 1)]
                with m.Else():
                    m.d.sync += act_k.eq(act_k + 1)
                with m.If(act_beat == nb - 1):
                    m.d.sync += cnt.eq(0)
                    m.next = "ACT_DRAIN"
            with m.State("ACT_DRAIN"):
                m.d.comb += counting.eq(1)
                m.d.sync += cnt.eq(cnt + 1)
                with m.If(cnt == act_drain - 1):
                    m.d.sync += [cnt.eq(0), layer.eq(layer + 1)]
                    if head:
                        m.next = "MAC_FETCH"
                    else:
                        with m.If(layer == L - 1):
                            finish_step()
                        with m.Else():
                            m.next = "MAC_FETCH"
            with m.State("OUT_RUN"):
                m.d.comb += [counting.eq(1), ro_issue.eq(1)]
                m.d.sync += ro_beat.eq(ro_beat + 1)
                with m.If(ro_k == P // A - 1):
                    m.d.sync += [ro_k.eq(0), act_g.eq(act_g + 1)]
                with m.Else():
                    m.d.sync += ro_k.eq(ro_k + 1)
                with m.If(ro_beat == nbo - 1):
                    # The read-out pipeline (cycles.READOUT_STAGES) finishes on its own while
                    # the next timestep fetches its first column.
                    finish_step()

        with m.If(step_done):
            m.d.sync += step_cycles.eq(0)
        with m.Elif(counting):
            m.d.sync += step_cycles.eq(step_cycles + 1)
        with m.If(counting):
            m.d.sync += cycles_total.eq(cycles_total + 1)
        with m.If(stalling):
            m.d.sync += stall_total.eq(stall_total + 1)
        with m.If(mac.issue):
            m.d.sync += mac_busy.eq(mac_busy + 1)

        # ---- register block ports ----------------------------------------------------------------
        busy = Signal()
        m.d.comb += busy.eq(counting | stalling | resetting)
        status = regs["STATUS"]
        m.d.comb += [
            status.busy.eq(busy),
            status.input_ready.eq(r_full),
            status.out_pending.eq(self.o.valid),
            regs["CYCLES_LAST"].eq(cycles_last),
            regs["CYCLES_TOTAL"].eq(cycles_total),
            regs["STALL_TOTAL"].eq(stall_total),
            regs["TIMESTEPS"].eq(timesteps),
            regs["MAC_BUSY"].eq(mac_busy),
            regs["FIRED_HEAD_LAST"].eq(fired_head),
        ]
        for l in range(L):
            m.d.comb += [regs[f"FIRED_LAST{l}"].x.eq(fired_x[l]),
                         regs[f"FIRED_LAST{l}"].h.eq(fired_h[l])]
        # After the counters' increments above: a clear in the same cycle wins.
        with m.If(regs.strobe("CTRL") & regs["CTRL"].clear_counters):
            m.d.sync += [
                cycles_total.eq(0),
                stall_total.eq(0),
                timesteps.eq(0),
                mac_busy.eq(0),
            ]
        m.d.comb += [
            mac.p_kind.eq(regs["PARAM_SEL"].kind),
            mac.p_lane.eq(regs["PARAM_SEL"].lane),
            mac.p_addr.eq(regs["PARAM_ADDR"]),
            mac.p_data.eq(regs["PARAM_DATA"]),
            mac.p_we.eq(regs.strobe("PARAM_DATA")),
        ]
        return m
