"""The LiteX SoC: VexRiscv, integrated ROM (the firmware) and SRAM, UART, timer, and the deltahw
core as a Wishbone slave (:class:`~deltahw.soc.wishbone.DeltaGRUWishbone`, instantiated from its
generated Verilog, module ``deltahw_wb``).

One class, :class:`DeltahwSoC`, for both targets, so the simulated SoC is the board's:

* ``target="sim"``: LiteX's Verilator simulation platform (clock from the ``clocker`` module, the
  UART on ``serial2console``, a ``sim_finish`` CSR the firmware writes to end the run);
* ``target="arty_a7"``: the Digilent Arty A7 (``litex_boards.platforms.digilent_arty``): 100 MHz
  oscillator -> S7PLL -> sys clock, the USB-UART at 115200 baud, the red reset button.

Memory map (LiteX's defaults plus one region): ROM at 0x00000000, SRAM at 0x10000000, the deltahw
window at :data:`DELTAHW_ORIGIN` (uncached I/O, 4 KB), CSRs at 0xF0000000.
"""

from __future__ import annotations

from pathlib import Path

from migen import ClockDomain, ClockSignal, Instance, ResetSignal, Signal

from litex.build.generic_platform import Pins, Subsignal
from litex.gen import LiteXModule
from litex.soc.integration.soc import SoCRegion
from litex.soc.integration.soc_core import SoCCore
from litex.soc.interconnect import wishbone

from .wishbone import WB_ADDR_BITS, WB_TOP_NAME, WishboneSignature

__all__ = ["DeltahwSoC", "make_platform", "DELTAHW_ORIGIN", "SRAM_SIZE", "TARGETS",
           "UART_BAUD", "CPU_VARIANT"]

#: Base of the deltahw window (LiteX's I/O region for VexRiscv is 0x80000000-0xFFFFFFFF).
DELTAHW_ORIGIN = 0x9000_0000
SRAM_SIZE = 0x4000
TARGETS = ("sim", "arty_a7")
UART_BAUD = 115200
#: VexRiscv "standard": RV32IM, 4 KB instruction and data caches, the LiteX default.
CPU_VARIANT = "standard"

_SIM_IO = [
    ("sys_clk", 0, Pins(1)),
    ("sys_rst", 0, Pins(1)),
    ("serial", 0,
        Subsignal("source_valid", Pins(1)),
        Subsignal("source_ready", Pins(1)),
        Subsignal("source_data", Pins(8)),
        Subsignal("sink_valid", Pins(1)),
        Subsignal("sink_ready", Pins(1)),
        Subsignal("sink_data", Pins(8))),
]


def make_platform(target: str, variant: str = "a7-35"):
    """LiteX platform of a target (``sim`` or ``arty_a7``)."""
    if target == "sim":
        from litex.build.sim import SimPlatform

        return SimPlatform("SIM", _SIM_IO)
    if target == "arty_a7":
        from litex_boards.platforms import digilent_arty

        return digilent_arty.Platform(variant=variant, toolchain="vivado")
    raise ValueError(f"Unknown SoC target {target!r}; expected one of {', '.join(TARGETS)}.")


class _ArtyCRG(LiteXModule):
    """100 MHz oscillator -> S7PLL -> sys; the CPU_RESET button (active low) resets the PLL."""

    def __init__(self, platform, sys_clk_freq):
        from litex.soc.cores.clock import S7PLL

        self.rst = Signal()
        self.cd_sys = ClockDomain()
        self.pll = pll = S7PLL(speedgrade=-1)
        self.comb += pll.reset.eq(~platform.request("cpu_reset") | self.rst)
        pll.register_clkin(platform.request("clk100"), 100e6)
        pll.create_clkout(self.cd_sys, sys_clk_freq)
        platform.add_false_path_constraints(self.cd_sys.clk, pll.clkin)


class DeltahwSoC(SoCCore):
    """VexRiscv SoC with the deltahw core at :data:`DELTAHW_ORIGIN`.

    ``rtl_sources``: the generated Verilog of ``deltahw_wb`` and its RAM module (the ``.mem`` files
    are found by ``$readmemh`` next to the simulation / in the Vivado project). ``rom_size``: bytes
    of the integrated ROM that will hold the firmware (filled later with :meth:`init_rom`).
    """

    def __init__(self, platform, target: str, sys_clk_freq: float, rtl_sources, rom_size: int):
        SoCCore.__init__(
            self, platform, sys_clk_freq,
            ident="deltahw SoC", ident_version=False,
            cpu_type="vexriscv", cpu_variant=CPU_VARIANT,
            integrated_rom_size=rom_size, integrated_sram_size=SRAM_SIZE,
            uart_name="sim" if target == "sim" else "serial", uart_baudrate=UART_BAUD,
            timer_uptime=True,
        )
        if target == "sim":  # migen's CRG: the clocker's clock and a power-on reset (VexRiscv
            from migen.genlib.io import CRG  # has no initial values: it needs a reset pulse)

            self.crg = CRG(platform.request("sys_clk"))
        else:
            self.crg = _ArtyCRG(platform, sys_clk_freq)
        if target == "sim":
            platform.add_debug(self, reset=0)  # sim_trace, sim_marker, sim_finish CSRs

        wb = wishbone.Interface(data_width=32, address_width=32, addressing="word")
        self.bus.add_slave("deltahw", wb, SoCRegion(origin=DELTAHW_ORIGIN,
                                                    size=4 << WB_ADDR_BITS, cached=False))
        ports = {"i_clk": ClockSignal("sys"), "i_rst": ResetSignal("sys")}
        for name, member in WishboneSignature.members.items():
            direction = "i" if member.flow.name == "Out" else "o"  # master outputs enter the slave
            ports[f"{direction}_wb__{name}"] = getattr(wb, name)
        self.specials += Instance(WB_TOP_NAME, **ports)
        for src in rtl_sources:
            platform.add_source(str(Path(src).resolve()))
