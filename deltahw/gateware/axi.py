"""AXI4 interfaces of the accelerator: AXI4-Stream data in and out, AXI4-Lite registers, interrupt.

:class:`DeltaGRUAxi` wraps :class:`~deltahw.gateware.core.DeltaGRUCore` through its native ports
only (``i``/``o`` streams and the register ``bus``, ``docs/architecture.md``); the Verilog top
level :class:`DeltaGRUAxiTop` (module ``deltahw_axi``, written by
``python -m deltahw.generate MODEL --out DIR --interface axi``) adds the AXI clock and active-low
reset. Port names follow the Xilinx convention (``s_axis_tdata``, ``s_axil_awaddr`` ...), so
Vivado's IP packager infers the three interfaces.

AXI4-Stream framing (one packet = one timestep, on both sides):

* ``s_axis`` (input): ceil(I/E) beats per timestep. ``TDATA`` holds E lanes of ``lane_bits`` =
  8 * ceil(act.bits / 8) bits (byte-aligned), element e of the beat in lane e
  (``TDATA[e*lane_bits +: lane_bits]``, element index = beat * E + e), two's complement in the
  act format; only the low ``act.bits`` bits of a lane are used (send it sign-extended). Lanes past
  I in a timestep's last beat are ignored. ``TLAST`` marks the timestep's last beat; a ``TLAST``
  elsewhere (or missing) sets ``IRQ_STATUS.framing_error`` (the core counts beats itself, so the
  data are still taken). ``TUSER[0]`` = sequence start (resets h, the last-transmitted values and
  the accumulators before this timestep), ``TUSER[1]`` = sequence end; both are sampled on the
  packet's first beat (keep them constant over the packet).
* ``m_axis`` (output): ceil(W/A) beats per timestep (W = output_size with a head, else
  hidden_size), A lanes of ``lane_bits`` bits each, sign-extended; lanes past W are 0. ``TLAST``
  on the timestep's last beat. ``TUSER`` repeats the input packet's two flags on every beat of
  that timestep's output packet, so a consumer sees where sequences start and end.

AXI4-Lite slave (32-bit data, ``AXIL_ADDR_BITS``-bit byte address): byte address = word address
x 4. Words 0x00..0xFF are the core's registers (:func:`deltahw.regmap.register_map`, e.g.
``CYCLES_LAST`` at word 0x10 = byte 0x40), including run-time weight/bias loading through
``PARAM_SEL``/``PARAM_ADDR``/``PARAM_DATA`` and the thresholds; words from
:data:`deltahw.regmap.AXI_WRAPPER_BASE` (0x100 = byte 0x400) are this wrapper's
(:func:`deltahw.regmap.axi_register_map`: ``IRQ_STATUS``, write 1 to clear, and ``IRQ_ENABLE``).
Unmapped words read 0. Only whole-word writes exist: a write with ``WSTRB`` != 0b1111 changes
nothing and is answered ``SLVERR``; everything else is answered ``OKAY``. ``AWPROT``/``ARPROT`` are
ignored.

``irq`` (level, active high) = OR of the ``IRQ_STATUS`` bits enabled in ``IRQ_ENABLE``; it rises
the cycle after the event: ``timestep_done`` when a timestep's last output beat is transferred on
``m_axis``, ``sequence_done`` when that timestep's packet had ``TUSER[1]``, ``framing_error`` as
above.

Latency and throughput: both streams pass straight through to the core (no added latency, one beat
per cycle each, the core's own buffering: two input vectors, two timesteps of output). AXI4-Lite:
a write (AW and W together) is accepted in one cycle and takes effect at the end of it, its B
response is valid in the next cycle; a read (AR) is accepted in one cycle and its R response is
valid in the next. With ``BREADY``/``RREADY`` held high a master can issue one write or one read
per cycle; when a read and a write arrive together they alternate.
"""

from __future__ import annotations

from amaranth import ClockDomain, ClockSignal, Module, ResetSignal, Shape, Signal
from amaranth.lib import fifo, wiring
from amaranth.lib.wiring import In, Out

from .. import regmap
from ..config import DeltaGRUConfig, ceil_div
from .core import DeltaGRUCore
from .registers import BusSignature

__all__ = [
    "AxiStreamSignature",
    "AxiLiteSignature",
    "AxiLiteBridge",
    "DeltaGRUAxi",
    "DeltaGRUAxiTop",
    "AXIL_ADDR_BITS",
    "AXIS_USER_BITS",
    "AXI_TOP_NAME",
    "lane_bits",
    "stream_geometry",
    "axi_ports",
]

AXI_TOP_NAME = "deltahw_axi"
#: TUSER bits on both streams: bit 0 sequence start, bit 1 sequence end.
AXIS_USER_BITS = 2
USER_FIRST, USER_END = 0, 1
#: The core's word addresses (``BusSignature``), then the wrapper's window of the same size.
_CORE_WORD_BITS = Shape.cast(BusSignature.members["addr"].shape).width
assert regmap.AXI_WRAPPER_BASE == 1 << _CORE_WORD_BITS, "the wrapper window follows the core's"
#: Byte address width of the AXI4-Lite slave: core window + wrapper window, 4 bytes per word.
AXIL_ADDR_BITS = _CORE_WORD_BITS + 1 + 2
#: Nominal flags FIFO depth: timesteps between an input packet's first beat and its output's
#: last beat (two input buffers, one timestep computing, two in the output FIFO, plus margin). The
#: input is held back when it is full, so a smaller value costs speed, never correctness.
_FLAG_DEPTH = 8


def lane_bits(config: DeltaGRUConfig) -> int:
    """Bits per stream lane: the act format's width rounded up to whole bytes."""
    return 8 * ceil_div(config.act.bits, 8)


def stream_geometry(config: DeltaGRUConfig) -> dict:
    """Lane and packet sizes of both streams (for the manifest, drivers and testbenches)."""
    lb = lane_bits(config)
    return {
        "lane_bits": lb,
        "elem_bits": config.act.bits,
        "in_lanes": config.enc_width,
        "in_tdata_bits": config.enc_width * lb,
        "in_beats_per_timestep": ceil_div(config.input_size, config.enc_width),
        "out_lanes": config.act_width,
        "out_tdata_bits": config.act_width * lb,
        "out_beats_per_timestep": ceil_div(config.output_width, config.act_width),
        "tuser_bits": AXIS_USER_BITS,
        "tuser": {"sequence_start": USER_FIRST, "sequence_end": USER_END},
        "axil_addr_bits": AXIL_ADDR_BITS,
        "axil_byte_address": "word address x 4",
        "wrapper_base_word": regmap.AXI_WRAPPER_BASE,
    }


class AxiStreamSignature(wiring.Signature):
    """AXI4-Stream, seen from the source: TDATA, TVALID, TREADY, TLAST, TUSER (no TKEEP/TID)."""

    def __init__(self, data_bits: int, user_bits: int = AXIS_USER_BITS):
        super().__init__(
            {
                "tdata": Out(data_bits),
                "tvalid": Out(1),
                "tready": In(1),
                "tlast": Out(1),
                "tuser": Out(user_bits),
            }
        )


class AxiLiteSignature(wiring.Signature):
    """AXI4-Lite with 32-bit data, seen from the master."""

    def __init__(self, addr_bits: int = AXIL_ADDR_BITS):
        super().__init__(
            {
                "awaddr": Out(addr_bits),
                "awprot": Out(3),
                "awvalid": Out(1),
                "awready": In(1),
                "wdata": Out(32),
                "wstrb": Out(4),
                "wvalid": Out(1),
                "wready": In(1),
                "bresp": In(2),
                "bvalid": In(1),
                "bready": Out(1),
                "araddr": Out(addr_bits),
                "arprot": Out(3),
                "arvalid": Out(1),
                "arready": In(1),
                "rdata": In(32),
                "rresp": In(2),
                "rvalid": In(1),
                "rready": Out(1),
            }
        )


RESP_OKAY, RESP_SLVERR = 0b00, 0b10


class AxiLiteBridge(wiring.Component):
    """AXI4-Lite slave to a simple word bus (the core's bus protocol, with a wider address).

    ``bus``: ``addr`` (word address = AXI byte address >> 2), ``w_data``, ``w_en`` (the write
    happens in that cycle), ``r_en`` (``r_data`` must be valid in the next cycle and held until the
    next ``r_en``). A write is accepted when AW and W are both valid (AXI allows a slave to wait
    for both); at most one write and one read response are outstanding, and a new request is taken
    in the cycle its predecessor's response is. Latency: B and R one cycle after acceptance.
    """

    def __init__(self, addr_bits: int = AXIL_ADDR_BITS):
        self.addr_bits = addr_bits
        super().__init__(
            {
                "axil": In(AxiLiteSignature(addr_bits)),
                "bus": Out(
                    wiring.Signature(
                        {
                            "addr": Out(addr_bits - 2),
                            "w_data": Out(32),
                            "w_en": Out(1),
                            "r_en": Out(1),
                            "r_data": In(32),
                        }
                    )
                ),
            }
        )

    def elaborate(self, platform):
        m = Module()
        ax, bus = self.axil, self.bus
        bvalid = Signal()
        rvalid = Signal()
        read_next = Signal()  # when both a read and a write are pending, take the read next
        w_pending = ax.awvalid & ax.wvalid & (~bvalid | ax.bready)
        r_pending = ax.arvalid & (~rvalid | ax.rready)
        do_w = Signal()
        do_r = Signal()
        m.d.comb += [
            do_w.eq(w_pending & ~(r_pending & read_next)),
            do_r.eq(r_pending & ~do_w),
            ax.awready.eq(do_w),
            ax.wready.eq(do_w),
            ax.arready.eq(do_r),
            ax.bvalid.eq(bvalid),
            ax.rvalid.eq(rvalid),
            ax.rdata.eq(bus.r_data),
            ax.rresp.eq(RESP_OKAY),
        ]
        whole = ax.wstrb == 0b1111
        with m.If(do_w):
            m.d.comb += [bus.addr.eq(ax.awaddr[2:]), bus.w_data.eq(ax.wdata), bus.w_en.eq(whole)]
            m.d.sync += bvalid.eq(1)
            with m.If(~whole):
                m.d.sync += ax.bresp.eq(RESP_SLVERR)
            with m.Else():
                m.d.sync += ax.bresp.eq(RESP_OKAY)
        with m.Elif(ax.bready):
            m.d.sync += bvalid.eq(0)
        with m.If(do_r):
            m.d.comb += [bus.addr.eq(ax.araddr[2:]), bus.r_en.eq(1)]
            m.d.sync += rvalid.eq(1)
        with m.Elif(ax.rready):
            m.d.sync += rvalid.eq(0)
        with m.If(w_pending & r_pending):
            m.d.sync += read_next.eq(do_w)
        return m


class DeltaGRUAxi(wiring.Component):
    """The accelerator core with AXI4-Stream in/out, an AXI4-Lite slave and an interrupt.

    Runs in the ``sync`` domain (synchronous active-high reset); the module docstring states the
    framing, lanes, address map, latency and throughput. Parameters as for
    :class:`~deltahw.gateware.core.DeltaGRUCore`.
    """

    def __init__(self, config: DeltaGRUConfig, **core_kwargs):
        self.config = config
        self.core_kwargs = core_kwargs
        self.geometry = stream_geometry(config)
        g = self.geometry
        super().__init__(
            {
                "s_axis": In(AxiStreamSignature(g["in_tdata_bits"])),
                "m_axis": Out(AxiStreamSignature(g["out_tdata_bits"])),
                "s_axil": In(AxiLiteSignature()),
                "irq": Out(1),
            }
        )

    def elaborate(self, platform):
        m = Module()
        cfg, g = self.config, self.geometry
        lb, ab = g["lane_bits"], cfg.act.bits
        m.submodules.core = core = DeltaGRUCore(cfg, **self.core_kwargs)
        m.submodules.axil = axil = AxiLiteBridge()
        wiring.connect(m, wiring.flipped(self.s_axil), axil.axil)

        # ---- register windows: the core's words, then the wrapper's ------------------------------
        wregs = regmap.axi_by_name()
        irq_fields = wregs["IRQ_STATUS"]
        bits = {f.name: f.offset for f in irq_fields.fields}
        n_irq = max(f.offset + f.width for f in irq_fields.fields)
        irq_status = Signal(n_irq)
        irq_enable = Signal(n_irq)
        in_core = axil.bus.addr < regmap.AXI_WRAPPER_BASE
        m.d.comb += [
            core.bus.addr.eq(axil.bus.addr[:_CORE_WORD_BITS]),
            core.bus.w_data.eq(axil.bus.w_data),
            core.bus.w_en.eq(axil.bus.w_en & in_core),
            core.bus.r_en.eq(axil.bus.r_en & in_core),
        ]
        read_core = Signal()
        wrapper_rdata = Signal(32)
        with m.If(axil.bus.r_en):
            m.d.sync += [read_core.eq(in_core), wrapper_rdata.eq(0)]
            with m.Switch(axil.bus.addr):
                with m.Case(wregs["IRQ_STATUS"].addr):
                    m.d.sync += wrapper_rdata.eq(irq_status)
                with m.Case(wregs["IRQ_ENABLE"].addr):
                    m.d.sync += wrapper_rdata.eq(irq_enable)
        with m.If(read_core):
            m.d.comb += axil.bus.r_data.eq(core.bus.r_data)
        with m.Else():
            m.d.comb += axil.bus.r_data.eq(wrapper_rdata)

        # ---- input stream ------------------------------------------------------------------------
        nbi = g["in_beats_per_timestep"]
        in_beat = Signal(range(max(nbi, 2)))
        m.submodules.flags = flags = fifo.SyncFIFO(width=AXIS_USER_BITS, depth=_FLAG_DEPTH)
        s, o = self.s_axis, self.m_axis
        first_beat = in_beat == 0
        m.d.comb += [
            s.tready.eq(core.i.ready & (~first_beat | flags.w_rdy)),
            core.i.valid.eq(s.tvalid & (~first_beat | flags.w_rdy)),
            core.i.payload.first.eq(s.tuser[USER_FIRST]),
            flags.w_data.eq(s.tuser),
        ]
        for e in range(cfg.enc_width):
            m.d.comb += core.i.payload.data[e].eq(s.tdata[e * lb : e * lb + ab])
        in_take = s.tvalid & s.tready
        m.d.comb += flags.w_en.eq(in_take & first_beat)
        framing_error = Signal()
        with m.If(in_take):
            last_beat = in_beat == nbi - 1
            with m.If(last_beat):
                m.d.sync += in_beat.eq(0)
            with m.Else():
                m.d.sync += in_beat.eq(in_beat + 1)
            m.d.comb += framing_error.eq(s.tlast != last_beat)

        # ---- output stream -----------------------------------------------------------------------
        m.d.comb += [
            o.tvalid.eq(core.o.valid & flags.r_rdy),
            core.o.ready.eq(o.tready & flags.r_rdy),
            o.tlast.eq(core.o.payload.last),
            o.tuser.eq(flags.r_data),
        ]
        for e in range(cfg.act_width):
            m.d.comb += o.tdata[e * lb : (e + 1) * lb].eq(core.o.payload.data[e])
        step_out = o.tvalid & o.tready & core.o.payload.last
        m.d.comb += flags.r_en.eq(step_out)

        # ---- interrupt ---------------------------------------------------------------------------
        events = Signal(n_irq)
        m.d.comb += [
            events[bits["timestep_done"]].eq(step_out),
            events[bits["sequence_done"]].eq(step_out & flags.r_data[USER_END]),
            events[bits["framing_error"]].eq(framing_error),
        ]
        clear = Signal(n_irq)
        with m.If(axil.bus.w_en):
            with m.Switch(axil.bus.addr):
                with m.Case(wregs["IRQ_STATUS"].addr):
                    m.d.comb += clear.eq(axil.bus.w_data)
                with m.Case(wregs["IRQ_ENABLE"].addr):
                    m.d.sync += irq_enable.eq(axil.bus.w_data)
        # An event in the cycle of a write-1-to-clear wins: it is not lost.
        new_status = (irq_status & ~clear) | events
        m.d.sync += [irq_status.eq(new_status), self.irq.eq((new_status & irq_enable).any())]
        return m


class DeltaGRUAxiTop(wiring.Component):
    """Verilog top level ``deltahw_axi``: :class:`DeltaGRUAxi` clocked by ``aclk`` with the
    active-low synchronous reset ``aresetn`` (AXI convention)."""

    def __init__(self, config: DeltaGRUConfig, **core_kwargs):
        self.inner = DeltaGRUAxi(config, **core_kwargs)
        members = dict(self.inner.signature.members)
        members["aclk"] = In(1)
        members["aresetn"] = In(1)
        super().__init__(members)

    def elaborate(self, platform):
        m = Module()
        m.domains.sync = ClockDomain("sync")
        m.d.comb += [ClockSignal("sync").eq(self.aclk), ResetSignal("sync").eq(~self.aresetn)]
        m.submodules.axi = inner = self.inner
        for name in ("s_axis", "m_axis", "s_axil"):
            wiring.connect(m, wiring.flipped(getattr(self, name)), getattr(inner, name))
        m.d.comb += self.irq.eq(inner.irq)
        return m


def axi_ports(top: DeltaGRUAxiTop) -> dict:
    """Verilog port names with one underscore (``s_axis_tdata``): Vivado infers the interfaces."""
    from amaranth.hdl import _ir

    ports = {}
    for path, member, value in top.signature.flatten(top):
        direction = _ir.PortDirection.Input if member.flow == In else _ir.PortDirection.Output
        ports["_".join(map(str, path))] = (value, direction)
    return ports
