"""Sparse MAC array: P lanes sweeping fired weight columns into the pre-activation accumulators.

Each lane owns an accumulator memory MX (and the c-gate lanes a second one, MCH), reads one weight
per cycle from its weight bank and does ``M[addr] += w * delta`` (layout: :mod:`deltahw.layout`).
All lanes share the weight word address; the lanes of a bank read one wide BRAM word.
"""

from __future__ import annotations

from amaranth import Array, Cat, Module, Mux, Signal, signed
from amaranth.lib import data, memory, wiring
from amaranth.lib.wiring import In, Out

from ..artifacts import bias_bank_name, weight_bank_name
from ..config import DeltaGRUConfig, ceil_div
from ..layout import Layout
from ..regmap import PARAM_KIND_BIAS, PARAM_KIND_WEIGHT
from . import KEEP
from .ram import ParamRAM

__all__ = ["MacArray"]


class MacArray(wiring.Component):
    """P multiply-accumulate lanes with their weight, bias and accumulator memories.

    Issue (one row group of one column per cycle): with ``issue`` high, every lane reads weight word
    ``w_addr`` and accumulator ``acc_addr`` (MX) or ``ch_addr`` (MCH, c-gate lanes when ``use_ch``),
    registers the weight out of the block RAM, multiplies it by ``delta`` (multiplier inputs and
    output registered) and writes the sum back three cycles after the issue. Throughput: one issue
    per cycle, any address sequence: an issue that reads a word one of the two previous issues is
    still writing takes that sum from the pipeline instead (forwarding), so consecutive columns may
    touch the same word every cycle (a head with O <= P); so does a forwarded read-out. Latency:
    the write lands at the end of the cycle 3 after the issue; a read-out of the word addressed
    ``ACC_WRITE_LATENCY`` cycles after the issue sees it (``cycles.ACC_WRITE_LATENCY`` is this
    constant).

    Read-out (when not issuing): ``mx_addr``/``mch_addr`` address all lanes' accumulators;
    ``mx_data``/``mch_data`` hold the words ``READ_LATENCY`` cycles later, registered;
    ``mx_word``/``mch_word`` are the same words one cycle earlier, straight out of the memories'
    asynchronous read at the registered address (the activation selects its gates from these into
    registers of its own: the route from the lanes to the units then runs in the read's cycle,
    which has no logic but the LUT-RAM read, instead of in front of the activation's rounding
    chain). These see an issue's sum only from ``ACC_WRITE_LATENCY`` cycles after the issue.

    Forwarded read-out (the head read-out): ``mx_fwd`` holds the MX word addressed by ``mx_addr``
    ``FWD_READ_LATENCY`` cycles later, taken where an issue takes its old sum (the lane's stage-3
    register, with the same forwarding), so it includes every issue before the cycle it was
    addressed in: a read-out may address a word in the cycle right after the last issue
    (``FWD_ACC_WRITE_LATENCY``), one cycle of latency later than ``mx_data``, with no drain.

    Capture (``capture``, the activation's beats inside a MAC phase's last column:
    ``cycles.act_capture``): ``acc_cap`` holds every lane's new sum of the issue
    ``CAPTURE_LATENCY`` cycles ago (the stage-3 sum, registered), so an activation beat
    reads the words that issue updated ``ACC_WRITE_LATENCY`` + 1 cycles after it, as it would
    through the memory, while the memory's read port is still the issues'. The word the
    issue does not touch in a c lane (MX beside an h column, MCH beside an x column) is read
    through that memory's own port, addressed by ``mx_addr`` / ``mch_addr`` in an issue cycle
    too (``mx_word`` / ``mch_word``, as a read-out): an issue only takes the port of the
    memory it updates.

    Split accumulators (``Layout.acc_split`` k > 1, when 3A > P): each lane's MX (and MCH) is k
    LUT RAMs, word ``a`` in memory ``a % k`` at row ``a // k``. An issue reads and writes one word
    (its memory selected by the address's low bits, registered with it; the write enables decoded
    into registers per bank), the read-out reads all k at one row: ``mx_word`` / ``mch_word`` hold
    k words per lane, memory-major (memory j's lanes at jP ..), an activation beat's k row groups
    side by side; ``mx_data`` / ``mch_data`` and ``mx_fwd`` hold the addressed word, as with k =
    1. Latencies unchanged.

    Timing: the accumulator memories are LUT RAM, one cell per 4 bits of every lane (hundreds of
    cells), so their read address comes straight from flip-flops: the issue's (or read-out's)
    address is registered, and the memory is read in the following cycle (``READ_LATENCY`` 2; an
    issue reads its old sum one cycle after it is issued, when the issue 3 before has written).

    Bias load (sequence reset): ``load_next`` with ``load_addr_next`` announce, ``LOAD_AHEAD`` (2)
    cycles ahead, a load of bias word ``load_addr_next``: then the word is read, and one cycle later
    it is written, aligned to the accumulator format, to MX (addresses below the MX depth) or MCH.
    One word per cycle. The two are registered once for the array, next to the schedule that
    decodes them, then once per bank, so that the bias memories' read address comes from a
    flip-flop next to them: one shared load address decoded by the schedule and routed to every
    bank's bias memory was the ECP5's critical path at 70 MHz (15.5 ns of routing), and with the
    per-bank registers only, the schedule's decode in front of that route was (11.5 ns of routing,
    lead21-3; docs/benchmarks/fmax).

    Parameter writes: ``p_we`` writes ``p_data`` into lane ``p_lane`` of the weight (``p_kind`` 0)
    or bias (1) memory at ``p_addr``. Latency: the write lands at the end of the cycle
    ``PARAM_WRITE_LATENCY`` (2) after the one ``p_we`` is high; a read issued from the cycle after
    that sees it. Throughput: one write per cycle. The write is registered twice on its way: once
    for the whole array (``p_we`` is the bus decoder's combinational strobe, straight from the
    bus master's state), then once per bank (the bank's lane enables, address and data), so that
    each register drives only its own bank's memories instead of one strobe fanning out to every
    lane's write enable (the ECP5's critical path before: 14.4 ns of routing). Loading is not part
    of a timestep: the two cycles are not in the cycle model, and nothing reads a parameter
    memory before the write lands: the bus has no parameter read-back, and a run's first read (its
    bias load) comes 3 cycles after its input vector's last beat is accepted (``r_full`` 2 cycles
    after it, the core starts the cycle after that; ``InputFrontEnd``), so even a beat accepted in
    the cycle of the last ``PARAM_DATA`` write runs with the new parameters.
    """

    #: Cycles from ``mx_addr``/``mch_addr`` to ``mx_data``/``mch_data`` (address register, then
    #: the memory's read register).
    READ_LATENCY = 2
    #: Cycles from an issue until a read-out addressing the accumulator word it updates sees the
    #: new sum (written at the end of the cycle 3 after the issue, read one cycle after addressing).
    ACC_WRITE_LATENCY = 3
    #: Cycles from ``mx_addr`` to ``mx_fwd`` (address register, memory read register, the
    #: forwarding select's register: the stages an issue's old sum passes).
    FWD_READ_LATENCY = 3
    #: Cycles from an issue until a forwarded read-out (``mx_fwd``) addressing the word it
    #: updates sees the new sum: the next cycle, as for the next issue.
    FWD_ACC_WRITE_LATENCY = 1
    #: Cycles from an issue to its lanes' new sums in ``acc_cap`` (with ``capture``): the
    #: stage-3 sum, registered.
    CAPTURE_LATENCY = 4
    #: Cycles by which ``load_next``/``load_addr_next`` lead the bias memory's read (the sequence
    #: reset lasts long enough for the last word's write: ``cycles.reset_cycles``).
    LOAD_AHEAD = 2
    #: Cycles from ``p_we`` until the parameter memory holds the word (the end of that cycle):
    #: an array-wide register, then one per bank.
    PARAM_WRITE_LATENCY = 2

    def __init__(self, config: DeltaGRUConfig, *, weight_init=None, bias_init=None,
                 init_files=False, capture=False):
        self.config = config
        self.capture = capture
        self.layout = lay = Layout(config)
        P = config.lanes
        assert not capture or (lay.acc_split == 1 and P == 3 * config.act_width), (
            "capture: an activation beat is one row group")
        self.weight_init, self.bias_init, self.init_files = weight_init, bias_init, init_files
        self.wabits = max(1, (lay.weight_depth - 1).bit_length())
        self.mxbits = max(1, (lay.mx_depth - 1).bit_length())
        self.mchbits = max(1, (lay.mch_depth - 1).bit_length())
        self.babits = max(1, (lay.acc_depth - 1).bit_length())
        acc = signed(config.acc_bits)
        super().__init__({
            "issue": In(1),
            "w_addr": In(self.wabits),
            "acc_addr": In(self.mxbits),
            "ch_addr": In(self.mchbits),
            "use_ch": In(1),
            "delta": In(signed(config.delta_bits)),
            "mx_addr": In(self.mxbits),
            "mch_addr": In(self.mchbits),
            "mx_data": Out(data.ArrayLayout(acc, P)),
            "mch_data": Out(data.ArrayLayout(acc, P // 3)),
            "mx_word": Out(data.ArrayLayout(acc, lay.acc_split * P)),
            "mx_fwd": Out(data.ArrayLayout(acc, P)),
            "mch_word": Out(data.ArrayLayout(acc, lay.acc_split * P // 3)),
            # (with ``capture``) every lane's sum of the issue CAPTURE_LATENCY cycles ago
            **({"acc_cap": Out(data.ArrayLayout(acc, P))} if capture else {}),
            "load_next": In(1),
            "load_addr_next": In(self.babits),
            "p_we": In(1),
            "p_kind": In(1),
            "p_lane": In(range(P)),
            "p_addr": In(max(self.wabits, self.babits)),
            "p_data": In(32),
        })

    def elaborate(self, platform):
        m = Module()
        cfg, lay = self.config, self.layout
        P, G = cfg.lanes, cfg.lanes_per_bank
        ks = lay.acc_split  # accumulator memories per lane (Layout.acc_split)
        lo_bits = ks.bit_length() - 1  # the word address bits that select the memory
        wb, bb = cfg.weight.bits, cfg.bias.bits
        bias_shift = cfg.acc_frac - cfg.bias.frac

        # ---- parameter memories ------------------------------------------------------------------
        # The parameter write, registered for the whole array (stage 1), then per bank (stage 2,
        # decoded into the bank's lane enables), right before the memories: see the docstring.
        # Only the enables are reset (a reset cancels a write in flight); the rest is reset-less,
        # off the reset net like every data register of the array.
        pbits = max(wb, bb)
        pw1_we = Signal()
        pw1 = Signal(data.StructLayout({"kind": 1, "lane": range(P), "addr": len(self.p_addr),
                                        "data": pbits}), reset_less=True)
        m.d.sync += [pw1_we.eq(self.p_we), pw1.kind.eq(self.p_kind), pw1.lane.eq(self.p_lane),
                     pw1.addr.eq(self.p_addr), pw1.data.eq(self.p_data[:pbits])]
        weights, biases = [], []
        # The bias load: registered for the whole array, then one copy per bank (kept apart,
        # KEEP), LOAD_AHEAD cycles after it is announced.
        assert self.LOAD_AHEAD == 2, "one array register, then one per bank"
        load_a = Signal(name="load_a")
        load_addr_a = Signal(self.babits, name="load_addr_a", reset_less=True)
        m.d.sync += [load_a.eq(self.load_next), load_addr_a.eq(self.load_addr_next)]
        load, load_addr = [], []
        for b in range(lay.num_banks):
            load.append(Signal(name=f"load_b{b}", attrs=KEEP))
            load_addr.append(Signal(self.babits, name=f"load_addr_b{b}", reset_less=True,
                                    attrs=KEEP))
            m.d.sync += [load[b].eq(load_a), load_addr[b].eq(load_addr_a)]
        for b in range(lay.num_banks):
            wr = ParamRAM(lanes=G, lane_bits=wb, depth=lay.weight_depth,
                          init=None if self.weight_init is None else self.weight_init[b],
                          init_file=weight_bank_name(b) if self.init_files else None)
            br = ParamRAM(lanes=G, lane_bits=bb, depth=lay.acc_depth,
                          init=None if self.bias_init is None else self.bias_init[b],
                          init_file=bias_bank_name(b) if self.init_files else None)
            m.submodules[f"weights{b}"], m.submodules[f"biases{b}"] = wr, br
            lane_sel = Signal(G, name=f"p_lane_sel{b}")
            for i in range(G):
                m.d.comb += lane_sel[i].eq(pw1.lane == b * G + i)
            we_w = Signal(G, name=f"p_we_w{b}")
            we_b = Signal(G, name=f"p_we_b{b}")
            addr2 = Signal(len(self.p_addr), name=f"p_addr{b}", reset_less=True)
            data2 = Signal(pbits, name=f"p_data{b}", reset_less=True)
            m.d.sync += [
                we_w.eq(Mux(pw1_we & (pw1.kind == PARAM_KIND_WEIGHT), lane_sel, 0)),
                we_b.eq(Mux(pw1_we & (pw1.kind == PARAM_KIND_BIAS), lane_sel, 0)),
                addr2.eq(pw1.addr), data2.eq(pw1.data),
            ]
            m.d.comb += [
                wr.r_addr.eq(self.w_addr), br.r_addr.eq(load_addr[b]),
                wr.w_addr.eq(addr2), br.w_addr.eq(addr2),
                wr.w_data.eq(Cat(*[data2[:wb]] * G)),
                br.w_data.eq(Cat(*[data2[:bb]] * G)),
                wr.w_en.eq(we_w), br.w_en.eq(we_b),
            ]
            for i in range(G):
                weights.append(wr.r_data[i * wb:(i + 1) * wb].as_signed())
                biases.append(br.r_data[i * bb:(i + 1) * bb].as_signed())

        # ---- pipeline registers shared by all lanes ----------------------------------------------
        # Stage k holds the issue of k cycles ago: 1 weight out of the block RAM (registered into
        # w2), 2 multiply (into prod3), 3 add and write back.
        s1 = Signal(data.StructLayout({"valid": 1, "use_ch": 1, "acc": self.mxbits,
                                       "ch": self.mchbits, "delta": signed(cfg.delta_bits)}))
        s2 = Signal.like(s1)
        s3 = Signal.like(s1)
        # A read-out cycle (no issue) enters stage 1 too, as an invalid entry with its MX address:
        # it writes nothing, but the forwarding below gives it the sums of the two issues before
        # it, in old3 (``mx_fwd``), exactly as it does for an issue.
        m.d.sync += [s1.valid.eq(self.issue), s1.use_ch.eq(self.use_ch & self.issue),
                     s1.acc.eq(Mux(self.issue, self.acc_addr, self.mx_addr)),
                     s1.ch.eq(self.ch_addr), s1.delta.eq(self.delta),
                     s2.eq(s1), s3.eq(s2)]

        # Forwarding: an issue reads its accumulator word in stage 1 (address registered at the
        # issue), when the issue 3 before has just written its own; the two issues before it have
        # not (they write in their stage 3). Their sums are taken from the pipeline instead, from
        # `total` / `total4` when entering stage 3 (the most recent first: it already includes the
        # older one). The match flags are computed a cycle ahead and registered, so the wide
        # selects are driven straight from flip-flops.
        def same_word(a, b, kind_matters):
            if not kind_matters:  # r/u lanes always update MX at `acc`
                return a.valid & (a.acc == b.acc)
            return a.valid & (a.use_ch == b.use_ch) & Mux(b.use_ch, a.ch == b.ch, a.acc == b.acc)

        # The flags are registered per bank (below), like the other signals every lane uses.
        same1 = {kind: same_word(s2, s1, kind) for kind in (False, True)}  # issue t-1
        same2 = {kind: same_word(s3, s1, kind) for kind in (False, True)}  # issue t-2
        # The read addresses (issue or read-out) are registered (per bank, below): the memories
        # are read from flip-flops in the next cycle.

        # The signals every lane uses, one register per bank (kept apart in synthesis,
        # deltahw.gateware.KEEP), so that each drives its bank's 4-odd lanes instead of all P lanes
        # spread over the die. The ECP5 critical path after the parameter-write fix was the shared
        # s2.delta into a multiplier input (8.0 ns of routing, 16.0 ns in all; the delta is now
        # registered per lane, below, as a bank's copy was still too far from some); the accumulator
        # read address, the write address/enable (a select of the bias load and stage 3, straight
        # into every lane's LUT-RAM write port) and the bias-load select are the same kind of net.
        # Each copy holds, in the same cycle, the value of the shared signal it replaces: stage-2
        # copies are registered from stage 1, stage-3 copies are the select of stage 2 and of the
        # load inputs, registered (the bias load writes the cycle after its read, as before), so
        # the array's latency is unchanged. The forwarding flags (one pair per lane kind) select
        # every lane's 30-odd-bit old sum: per bank too.
        # The MCH read port is an issue's in its cycle (with ``capture``, only an h column's).
        issue_ch = self.issue & self.use_ch if self.capture else self.issue
        bank = []
        for b in range(lay.num_banks):
            c = {
                # stage 2
                "use_ch2": Signal(),
                # the read addresses (as rd_mx / rd_ch)
                "rd_mx": Signal(self.mxbits, reset_less=True),
                "rd_ch": Signal(self.mchbits, reset_less=True),
                **({"rd_mx_c": Signal(self.mxbits, reset_less=True)} if self.capture else {}),
                # stage 3: the bias load's select, the write addresses and enables
                "load3": Signal(),
                "w_mx": Signal(self.mxbits, reset_less=True),
                "w_ch": Signal(self.mchbits, reset_less=True),
                "en_mx": Signal(),     # r/u lanes' MX write
                "en_mx_c": Signal(),   # c lanes' MX write
                "en_ch": Signal(),     # c lanes' MCH write
                # stage 3's forwarding flags (entering stage 3), r/u lanes and c lanes
                "fwd1_0": Signal(), "fwd2_0": Signal(), "fwd1_1": Signal(), "fwd2_1": Signal(),
            }
            for k, sig in c.items():
                sig.name = f"{k}_b{b}"
                sig.attrs.update(KEEP)
            ld, la = load[b], load_addr[b]
            load_mx = la < lay.mx_depth
            la_ch = (la - lay.mx_depth)[:self.mchbits]
            m.d.sync += [
                c["use_ch2"].eq(s1.use_ch),
                c["rd_mx"].eq(Mux(self.issue, self.acc_addr, self.mx_addr)),
                c["rd_ch"].eq(Mux(issue_ch, self.ch_addr, self.mch_addr)),
                c["load3"].eq(ld),
                c["w_mx"].eq(Mux(ld, la, s2.acc)),
                c["w_ch"].eq(Mux(ld, la_ch, s2.ch)),
                c["en_mx"].eq(Mux(ld, load_mx, s2.valid)),
                c["en_mx_c"].eq(Mux(ld, load_mx, s2.valid & ~s2.use_ch)),
                c["en_ch"].eq(Mux(ld, ~load_mx, s2.valid & s2.use_ch)),
            ]
            if self.capture:
                # The c lanes' MX read address: a read-out's beside an h column's issue (the
                # issue reads their MCH), see the docstring.
                m.d.sync += c["rd_mx_c"].eq(Mux(self.issue & ~self.use_ch, self.acc_addr,
                                                self.mx_addr))
            if ks > 1:
                # Split accumulators: each memory's write enable, the enables above with the
                # word address's low bits decoded, registered here like them, so the LUT RAMs'
                # write enables still come straight from flip-flops.
                kinds = {  # enable -> (its load condition, its issue condition, the address)
                    "en_mx": (load_mx, s2.valid, (la, s2.acc)),
                    "en_mx_c": (load_mx, s2.valid & ~s2.use_ch, (la, s2.acc)),
                    "en_ch": (~load_mx, s2.valid & s2.use_ch, (la_ch, s2.ch)),
                }
                for key, (on_load, on_issue, (a_load, a_issue)) in kinds.items():
                    for j in range(ks):
                        en = Signal(name=f"{key}{j}_b{b}", attrs=KEEP)
                        m.d.sync += en.eq(Mux(ld, on_load & (a_load[:lo_bits] == j),
                                              on_issue & (a_issue[:lo_bits] == j)))
                        c[f"{key}{j}"] = en
            for kind in (False, True):
                m.d.sync += [c[f"fwd1_{int(kind)}"].eq(same1[kind]),
                             c[f"fwd2_{int(kind)}"].eq(same2[kind])]
            bank.append(c)

        acc_shape = signed(cfg.acc_bits)
        mx_words, mch_words, fwd_words, cap_words = [], [], [], []
        # The asynchronous read-out words, memory-major: mx_async[j][p] (k = 1: one memory).
        mx_async = [[] for _ in range(ks)]
        mch_async = [[] for _ in range(ks)]

        def acc_memory(name, depth, rd):
            """A lane's split accumulator (MX or MCH): ``ks`` > 1 LUT RAMs (Layout.acc_split),
            each read asynchronously at the registered row. Returns the ks words read (memory
            order), the word ``rd`` addresses, and ``write(addr, enables, data)`` that connects
            the write ports: each memory takes ``data`` at ``addr``'s row when its enable is
            high."""
            words, ports = [], []
            for j in range(ks):
                mem = memory.Memory(shape=acc_shape, depth=max(ceil_div(depth, ks), 2), init=[])
                m.submodules[f"{name}_{j}"] = mem
                r, w = mem.read_port(domain="comb"), mem.write_port()
                m.d.comb += r.addr.eq(rd[lo_bits:])
                words.append(r.data)
                ports.append(w)

            def write(addr, enables, data):
                for w, en in zip(ports, enables):
                    m.d.comb += [w.addr.eq(addr[lo_bits:]), w.data.eq(data), w.en.eq(en)]
            return words, Array(words)[rd[:lo_bits]], write

        def enables(key, c):
            """The bank's write enables of one kind, one per memory of a lane."""
            return [c[key]] if ks == 1 else [c[f"{key}{j}"] for j in range(ks)]

        for p in range(P):
            is_c = p % 3 == 2
            c = bank[p // G]
            # The read: asynchronous at the registered address, then the data register (what a
            # synchronous read port maps to; written out to give the activation the word too).
            if ks == 1:  # (written out: the shipped configurations' netlist as before)
                mx = memory.Memory(shape=acc_shape, depth=max(lay.mx_depth, 2), init=[])
                m.submodules[f"mx{p}"] = mx
                mx_r, mx_w = mx.read_port(domain="comb"), mx.write_port()
                m.d.comb += mx_r.addr.eq(c["rd_mx_c" if self.capture and is_c else "rd_mx"])
                words, word = [mx_r.data], mx_r.data

                def mx_write(addr, en, data, mx_w=mx_w):
                    m.d.comb += [mx_w.addr.eq(addr), mx_w.data.eq(data), mx_w.en.eq(en[0])]
            else:
                words, word, mx_write = acc_memory(f"mx{p}", lay.mx_depth, c["rd_mx"])
            mx_q = Signal(acc_shape, name=f"mx_q{p}", reset_less=True)
            m.d.sync += mx_q.eq(word)
            mx_words.append(mx_q)
            for j in range(ks):
                mx_async[j].append(words[j])
            # The old sum, out of the memory in stage 2.
            old2 = Signal(acc_shape, name=f"old2_{p}")
            m.d.comb += old2.eq(mx_q)
            if is_c:
                if ks == 1:
                    mch = memory.Memory(shape=acc_shape, depth=max(lay.mch_depth, 2), init=[])
                    m.submodules[f"mch{p}"] = mch
                    ch_r, ch_w = mch.read_port(domain="comb"), mch.write_port()
                    m.d.comb += ch_r.addr.eq(c["rd_ch"])
                    ch_words, ch_word = [ch_r.data], ch_r.data

                    def ch_write(addr, en, data, ch_w=ch_w):
                        m.d.comb += [ch_w.addr.eq(addr), ch_w.data.eq(data), ch_w.en.eq(en[0])]
                else:
                    ch_words, ch_word, ch_write = acc_memory(f"mch{p}", lay.mch_depth,
                                                             c["rd_ch"])
                ch_q = Signal(acc_shape, name=f"mch_q{p}", reset_less=True)
                m.d.sync += ch_q.eq(ch_word)
                mch_words.append(ch_q)
                for j in range(ks):
                    mch_async[j].append(ch_words[j])
                with m.If(c["use_ch2"]):
                    m.d.comb += old2.eq(ch_q)
            f1, f2 = c[f"fwd1_{int(is_c)}"], c[f"fwd2_{int(is_c)}"]
            # The lane's data registers (w2, prod3, old3, total4) are reset-less: the valid bits in
            # s1..s3 and the forwarding flags are reset, and these are only used with them; ~90
            # flip-flops per lane off the reset net (a high-fanout net on the ECP5).
            # Stage 1 -> 2: the weight leaves the block RAM into a register (w2) while the old
            # sum is read.
            w2 = Signal(signed(wb), name=f"w2_{p}", reset_less=True)
            # The delta, registered once per lane (kept apart, KEEP), beside its multiplier: one
            # register per bank driving its lanes' multipliers was routed to a multiplier placed
            # 42 columns away (the ECP5's critical path at 73.06 MHz, 5.7 ns of routing in front
            # of the multiplier's 3.9 ns, docs/benchmarks/fmax lead17-2). The long route is now
            # from stage 1 to this register, with no logic on it.
            delta2 = Signal(signed(cfg.delta_bits), name=f"delta2_{p}", reset_less=True,
                            attrs=KEEP)
            # Stage 2 -> 3: the product is registered (multiplier inputs and output both in
            # flip-flops).
            prod3 = Signal(signed(cfg.weight.bits + cfg.delta_bits), name=f"prod3_{p}",
                           reset_less=True)
            old3 = Signal(acc_shape, name=f"old3_{p}", reset_less=True)
            fwd_words.append(old3)
            # Stage 3: both sums are signed; the memory write keeps the low acc_bits (no overflow,
            # see numerics.accumulator_bits_needed).
            total = Signal(acc_shape, name=f"total_{p}")
            total4 = Signal(acc_shape, name=f"total4_{p}", reset_less=True)
            m.d.comb += total.eq(old3 + prod3)
            cap_words.append(total4)
            m.d.sync += [
                w2.eq(weights[p]),
                delta2.eq(s1.delta),
                prod3.eq(w2 * delta2),
                old3.eq(Mux(f1, total, Mux(f2, total4, old2))),
                total4.eq(total),
            ]
            # Stage 3's write (or the bias load's, one cycle after its read): see the bank copies.
            bias_val = biases[p] << bias_shift
            mx_write(c["w_mx"], enables("en_mx_c" if is_c else "en_mx", c),
                     Mux(c["load3"], bias_val, total))
            if is_c:
                ch_write(c["w_ch"], enables("en_ch", c), Mux(c["load3"], bias_val, total))
        # One assignment of the whole read-out vector (per-lane slices make Icarus re-evaluate the
        # full vector on every lane's change: 25x slower simulation of a 48-lane array).
        if self.capture:
            m.d.comb += self.acc_cap.as_value().eq(Cat(*cap_words))
        m.d.comb += [self.mx_data.as_value().eq(Cat(*mx_words)),
                     self.mch_data.as_value().eq(Cat(*mch_words)),
                     self.mx_word.as_value().eq(Cat(*[w for ws in mx_async for w in ws])),
                     self.mx_fwd.as_value().eq(Cat(*fwd_words)),
                     self.mch_word.as_value().eq(Cat(*[w for ws in mch_async for w in ws]))]
        return m
