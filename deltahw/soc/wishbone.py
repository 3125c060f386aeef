"""The accelerator core as a 32-bit Wishbone slave: registers and both streams memory-mapped.

:class:`DeltaGRUWishbone` wraps :class:`~deltahw.gateware.core.DeltaGRUCore` through its native
ports only (the register ``bus`` and the ``i``/``o`` streams), so a soft CPU on a Wishbone bus
(LiteX's VexRiscv SoC, :mod:`deltahw.soc.litex_soc`) drives it with plain loads and stores. Why
Wishbone and not the AXI4 core through LiteX's AXI-Lite bridges: the LiteX SoC bus *is* Wishbone,
a CPU can only move a stream beat as register words anyway (there is no DMA here), and a direct
slave costs one bus cycle per access instead of the bridge's state machines; the AXI4 variant
(:mod:`deltahw.gateware.axi`) stays the path for Zynq/MicroBlaze designs.

Word map (byte address = word address x 4 from the slave's base; :func:`soc_register_map`):

* words ``0x000``-``0x0FF``: the core's registers (:func:`deltahw.regmap.register_map`), read and
  written exactly as on the native bus (weights/biases through ``PARAM_SEL``/``PARAM_ADDR``/
  ``PARAM_DATA``, thresholds, counters);
* ``STREAM_STATUS`` (``0x100``): ``in_full`` (the input beat staged by ``IN_PUSH`` has not been
  taken by the core yet: do not touch ``IN_DATA``), ``out_valid`` (an output beat is waiting in
  ``OUT_DATA``), ``out_last`` (that beat is its timestep's last), ``overrun`` (sticky: ``IN_PUSH``
  was written while ``in_full``; the push was ignored), ``underrun`` (sticky: ``OUT_POP`` was
  written with no beat waiting). Writing any value clears the two sticky bits;
* ``IN_PUSH`` (``0x101``, write): hands the beat in ``IN_DATA`` to the core, bit ``first`` =
  sequence start;
* ``OUT_POP`` (``0x102``, write): releases the output beat shown in ``OUT_DATA``;
* ``IN_DATA0``.. (from ``0x140``): the input beat, E elements of ``act.bits`` bits packed from
  bit 0 of word 0 (element e at bits ``[e*bits, (e+1)*bits)`` of the little-endian word array,
  as the C driver's HAL passes it);
* ``OUT_DATA0``.. (from ``0x180``, read): the waiting output beat, A elements packed the same way.

Unmapped words read 0 and ignore writes.

Wishbone: classic cycles (B4, ``cti``/``bte`` ignored, word addressing, 32-bit data; ``sel`` is
ignored: every write is a whole word, like the driver's). Latency: ``ack`` one cycle after
``stb`` (every access takes two cycles), never ``err``. Throughput: one access per two cycles.
The input beat is staged in ``IN_DATA``, so the core takes it while the CPU prepares the next one;
the core itself buffers two input vectors and two timesteps of output.
"""

from __future__ import annotations

from amaranth import Cat, Const, Module, Signal
from amaranth.lib import wiring
from amaranth.lib.wiring import In, Out

from .. import regmap
from ..config import DeltaGRUConfig, ceil_div
from ..regmap import Field, Register

__all__ = [
    "WishboneSignature",
    "DeltaGRUWishbone",
    "soc_register_map",
    "soc_c_header",
    "stream_words",
    "WB_ADDR_BITS",
    "WB_TOP_NAME",
    "SOC_WRAPPER_BASE",
    "IN_DATA_BASE",
    "OUT_DATA_BASE",
]

WB_TOP_NAME = "deltahw_wb"
#: Word address bits the slave decodes (its window is 2**WB_ADDR_BITS words = 4 KB).
WB_ADDR_BITS = 10
#: First word of the wrapper's registers: right after the core's 2**BUS_ADDR_BITS words.
SOC_WRAPPER_BASE = 1 << regmap.BUS_ADDR_BITS
IN_DATA_BASE = SOC_WRAPPER_BASE + 0x40
OUT_DATA_BASE = SOC_WRAPPER_BASE + 0x80
#: Most words a stream beat may have (the IN_DATA/OUT_DATA windows are this long).
MAX_BEAT_WORDS = 0x40

_STATUS_FIELDS = (
    Field("in_full", 0, 1, "the staged input beat has not been taken yet"),
    Field("out_valid", 1, 1, "an output beat is waiting in OUT_DATA"),
    Field("out_last", 2, 1, "the waiting output beat is its timestep's last"),
    Field("overrun", 3, 1, "sticky: IN_PUSH while in_full (ignored)"),
    Field("underrun", 4, 1, "sticky: OUT_POP with no beat waiting (ignored)"),
)


def stream_words(config: DeltaGRUConfig) -> tuple[int, int]:
    """32-bit words of an input beat and of an output beat (elements packed, no flag)."""
    return (ceil_div(config.enc_width * config.act.bits, 32),
            ceil_div(config.act_width * config.act.bits, 32))


def soc_register_map(config: DeltaGRUConfig) -> list[Register]:
    """The wrapper's registers (word addresses; the core's own map is below them)."""
    n_in, n_out = stream_words(config)
    if max(n_in, n_out) > MAX_BEAT_WORDS:
        raise ValueError(f"A stream beat of {max(n_in, n_out)} words does not fit the "
                         f"{MAX_BEAT_WORDS}-word data window; use a smaller enc_width/act_width.")
    regs = [
        Register("STREAM_STATUS", SOC_WRAPPER_BASE, "rw",
                 "Stream status; writing clears the sticky bits.", _STATUS_FIELDS),
        Register("IN_PUSH", SOC_WRAPPER_BASE + 1, "w", "Hand IN_DATA to the core.",
                 (Field("first", 0, 1, "sequence start"),)),
        Register("OUT_POP", SOC_WRAPPER_BASE + 2, "w", "Release the beat in OUT_DATA."),
    ]
    regs += [Register(f"IN_DATA{k}", IN_DATA_BASE + k, "rw", f"Input beat word {k}.")
             for k in range(n_in)]
    regs += [Register(f"OUT_DATA{k}", OUT_DATA_BASE + k, "r", f"Output beat word {k}.")
             for k in range(n_out)]
    return regs


def soc_c_header(config: DeltaGRUConfig, guard: str = "DELTAHW_SOC_REGS_H") -> str:
    """C header of the wrapper's word map (same style as :func:`deltahw.regmap.c_header`)."""
    n_in, n_out = stream_words(config)
    lines = ["/* Generated by deltahw.soc.wishbone: do not edit. */", f"#ifndef {guard}",
             f"#define {guard}", "", f"#define DELTAHW_SOC_IN_WORDS {n_in}u",
             f"#define DELTAHW_SOC_OUT_WORDS {n_out}u", ""]
    for r in soc_register_map(config):
        lines.append(f"#define DELTAHW_SOC_REG_{r.name} 0x{r.addr:03X}u")
        for f in r.fields:
            lines.append(f"#define DELTAHW_SOC_{r.name}_{f.name.upper()}_MASK 0x{f.mask:08X}u")
    lines += ["", f"#endif /* {guard} */", ""]
    return "\n".join(lines)


#: Wishbone B4 classic, seen from the master (LiteX's signal names; word address).
WishboneSignature = wiring.Signature({
    "adr": Out(30),
    "dat_w": Out(32),
    "dat_r": In(32),
    "sel": Out(4),
    "cyc": Out(1),
    "stb": Out(1),
    "ack": In(1),
    "we": Out(1),
    "cti": Out(3),
    "bte": Out(2),
    "err": In(1),
})


class DeltaGRUWishbone(wiring.Component):
    """The accelerator core behind a Wishbone slave ``wb`` (see the module docstring for the word
    map, protocol, latency and throughput). Core keyword arguments (``init_files``,
    ``weight_init``, ``bias_init``) are passed to :class:`DeltaGRUCore`."""

    def __init__(self, config: DeltaGRUConfig, **core_kwargs):
        self.config = config
        self.core_kwargs = core_kwargs
        self.registers = {r.name: r for r in soc_register_map(config)}
        super().__init__({"wb": In(WishboneSignature)})

    def elaborate(self, platform):
        from ..gateware.core import DeltaGRUCore

        m = Module()
        cfg, regs, wb = self.config, self.registers, self.wb
        n_in, n_out = stream_words(cfg)
        m.submodules.core = core = DeltaGRUCore(cfg, **self.core_kwargs)

        addr = Signal(WB_ADDR_BITS)
        m.d.comb += addr.eq(wb.adr[:WB_ADDR_BITS])
        access = Signal()  # the first cycle of a request: the access happens now, ack next cycle
        m.d.comb += access.eq(wb.cyc & wb.stb & ~wb.ack)
        ack = Signal()
        m.d.sync += ack.eq(access)
        m.d.comb += [wb.ack.eq(ack), wb.err.eq(0)]

        in_core = addr < SOC_WRAPPER_BASE
        m.d.comb += [
            core.bus.addr.eq(addr),
            core.bus.w_data.eq(wb.dat_w),
            core.bus.w_en.eq(access & wb.we & in_core),
            core.bus.r_en.eq(access & ~wb.we & in_core),
        ]

        # ---- streams --------------------------------------------------------------------------
        in_words = [Signal(32, name=f"in_data{k}") for k in range(n_in)]
        in_valid = Signal()
        in_first = Signal()
        in_bits = cfg.enc_width * cfg.act.bits
        m.d.comb += [
            core.i.valid.eq(in_valid),
            core.i.payload.data.as_value().eq(Cat(*in_words)[:in_bits]),
            core.i.payload.first.eq(in_first),
        ]
        with m.If(core.i.valid & core.i.ready):
            m.d.sync += in_valid.eq(0)
        out_bits = cfg.act_width * cfg.act.bits
        out_words = Cat(core.o.payload.data.as_value(), Const(0, 32 * n_out - out_bits))
        overrun, underrun = Signal(), Signal()
        status = regs["STREAM_STATUS"]
        status_word = Signal(32)
        m.d.comb += status_word.eq(
            (in_valid << status.field("in_full").offset)
            | (core.o.valid << status.field("out_valid").offset)
            | ((core.o.valid & core.o.payload.last) << status.field("out_last").offset)
            | (overrun << status.field("overrun").offset)
            | (underrun << status.field("underrun").offset)
        )

        write = access & wb.we
        with m.If(write & (addr == status.addr)):
            m.d.sync += [overrun.eq(0), underrun.eq(0)]
        with m.If(write & (addr == regs["IN_PUSH"].addr)):
            with m.If(in_valid):
                m.d.sync += overrun.eq(1)
            with m.Else():
                m.d.sync += [
                    in_valid.eq(1),
                    in_first.eq(wb.dat_w[regs["IN_PUSH"].field("first").offset]),
                ]
        with m.If(write & (addr == regs["OUT_POP"].addr)):
            with m.If(core.o.valid):
                m.d.comb += core.o.ready.eq(1)
            with m.Else():
                m.d.sync += underrun.eq(1)
        for k in range(n_in):
            with m.If(write & (addr == IN_DATA_BASE + k)):
                m.d.sync += in_words[k].eq(wb.dat_w)

        # ---- read data: the core's r_data is valid in the ack cycle; the wrapper's words are
        # sampled in the access cycle so both arrive together
        read_core = Signal()
        wrap_data = Signal(32)
        with m.If(access & ~wb.we):
            m.d.sync += [read_core.eq(in_core), wrap_data.eq(0)]
            with m.Switch(addr):
                with m.Case(status.addr):
                    m.d.sync += wrap_data.eq(status_word)
                for k in range(n_in):
                    with m.Case(IN_DATA_BASE + k):
                        m.d.sync += wrap_data.eq(in_words[k])
                for k in range(n_out):
                    with m.Case(OUT_DATA_BASE + k):
                        m.d.sync += wrap_data.eq(out_words[32 * k:32 * (k + 1)])
        m.d.comb += wb.dat_r.eq(0)
        with m.If(ack):
            m.d.comb += wb.dat_r.eq(wrap_data)
            with m.If(read_core):
                m.d.comb += wb.dat_r.eq(core.bus.r_data)
        return m


def verilog_source(config: DeltaGRUConfig, forms=None) -> str:
    """Verilog of the wrapper (module ``deltahw_wb``; parameters from the ``.mem`` files), in
    the implementation forms ``forms`` (:class:`deltahw.gateware.Forms`; ``None``: portable)."""
    from amaranth.back import verilog

    top = DeltaGRUWishbone(config, init_files=True, forms=forms)
    return verilog.convert(top, name=WB_TOP_NAME, emit_src=False)


__all__ += ["verilog_source"]
