# amaranth: UnusedElaboratable=no
# (the clock generator of a board top that is never elaborated, see deltahw/build.py)
"""Boards deltahw builds for: platform classes, FPGA part totals and the board top level.

A :class:`Board` names its ``amaranth-boards`` platform per variant, the oscillator, the build
flow (``vivado`` for Xilinx 7-series, with open-source Yosys synthesis when Vivado is missing;
``trellis`` for ECP5: Yosys + nextpnr-ecp5 + ecppack to a bitstream), the default clock and baud
rate. :class:`BoardTop` puts :class:`~deltahw.boards.top.UARTTop` on the board's pins.
"""

from dataclasses import dataclass, field, replace

from amaranth.hdl import ClockDomain, Elaboratable, Module
from amaranth.lib import io

from ..gateware.uart import uart_divisor
from .clocking import ClockGen
from .top import LED_NAMES, UARTTop

__all__ = ["Part", "Board", "BOARDS", "PARTS", "BoardTop", "get_board", "LED_NAMES"]


@dataclass(frozen=True)
class Part:
    """Resource totals of an FPGA part.

    ``bram_kbits`` is the size of one block RAM as counted in reports (Xilinx: RAMB36 = 36 kbit,
    counted in halves as RAMB18; ECP5: EBR = 18 kbit). ``luts`` counts LUT6 (Xilinx) or LUT4 (ECP5).
    """

    name: str
    family: str
    luts: int
    ffs: int
    brams: int
    bram_kbits: int
    dsps: int
    dsp_name: str
    bram_name: str


PARTS = {
    "xc7a35t": Part("xc7a35t", "xc7", 20800, 41600, 50, 36, 90, "DSP48E1", "RAMB36"),
    "xc7a100t": Part("xc7a100t", "xc7", 63400, 126800, 135, 36, 240, "DSP48E1", "RAMB36"),
    "LFE5U-25F": Part("LFE5U-25F", "ecp5", 24288, 24288, 56, 18, 28, "MULT18X18D", "EBR"),
    "LFE5U-45F": Part("LFE5U-45F", "ecp5", 43848, 43848, 108, 18, 72, "MULT18X18D", "EBR"),
    "LFE5U-85F": Part("LFE5U-85F", "ecp5", 83640, 83640, 208, 18, 156, "MULT18X18D", "EBR"),
}
# The ECP5-5G 85F: the LFE5U-85F's fabric (the same totals) with 5 Gb/s SERDES, sold in the -8
# speed grade.
PARTS["LFE5UM5G-85F"] = replace(PARTS["LFE5U-85F"], name="LFE5UM5G-85F")


@dataclass(frozen=True)
class Board:
    name: str
    title: str
    flow: str  # "vivado" or "trellis"
    osc: str  # oscillator resource name
    osc_hz: float
    reset: str | None  # reset button resource (active high after the platform's inversion)
    variants: dict = field(default_factory=dict)  # variant -> (platform module attr, part name)
    default_variant: str = ""
    default_clock_mhz: float = 100.0
    default_baud: int = 1_000_000
    led_count: int = 4

    def platform(self, variant: str | None = None):
        variant = self.resolve_variant(variant)
        module_name, cls_name = self.variants[variant][0]
        import importlib

        module = importlib.import_module(f"amaranth_boards.{module_name}")
        return getattr(module, cls_name)()

    def part(self, variant: str | None = None) -> Part:
        return PARTS[self.variants[self.resolve_variant(variant)][1]]

    def resolve_variant(self, variant) -> str:
        variant = self.default_variant if variant is None else str(variant)
        if variant not in self.variants:
            raise ValueError(f"Board {self.name} has variants {sorted(self.variants)}; "
                             f"got {variant!r}.")
        return variant


BOARDS = {
    "arty_a7": Board(
        "arty_a7", "Digilent Arty A7", "vivado", "clk100", 100e6, "rst",
        variants={"35": (("arty_a7", "ArtyA7_35Platform"), "xc7a35t"),
                  "100": (("arty_a7", "ArtyA7_100Platform"), "xc7a100t")},
        default_variant="35", default_clock_mhz=100.0, default_baud=1_000_000),
    "ulx3s": Board(
        "ulx3s", "Radiona ULX3S", "trellis", "clk25", 25e6, None,
        variants={"85": (("ulx3s", "ULX3S_85F_Platform"), "LFE5U-85F"),
                  "45": (("ulx3s", "ULX3S_45F_Platform"), "LFE5U-45F"),
                  "25": (("ulx3s", "ULX3S_25F_Platform"), "LFE5U-25F")},
        # 66.67 MHz (25 MHz / 3 x 8 / 6, exactly 200/3): session 23's deferred head (51e5f24)
        # meets it, 66.69 MHz post-route at this target (lead23-4), and missed 70 and 68.75
        # (69.18, 68.54: lead23-2/-3; docs/benchmarks/fmax). Before: 70 MHz (sessions 17-22:
        # 78.57 MHz at it with 63c6499, lead17-7; 71.16 / 70.59 with 940c252, lead21-7/-8), 75
        # MHz (sessions 13-16), 70 MHz (session 12), 75 MHz (sessions 10-11), 66.67 MHz
        # (sessions 7-9), 62.5 MHz (session 6), 60 MHz (session 5).
        default_variant="85", default_clock_mhz=66.67, default_baud=1_000_000),
    # The ECP5's fastest speed grade (-8; the ULX3S is -6). Its UART pins reach the on-board
    # FTDI only after two resistor jumpers are moved and the FTDI's channel B is set to UART
    # (the board's user manual, section 6.2); the 12 MHz oscillator feeds the PLL.
    "ecp5_evn": Board(
        "ecp5_evn", "Lattice ECP5-5G Evaluation Board", "trellis", "clk12", 12e6, "rst",
        variants={"85": (("ecp5_5g_evn", "ECP55GEVNPlatform"), "LFE5UM5G-85F")},
        # 100 MHz = 12 MHz / 3 x 25: the shipped fsdd core (P=48, A=16) closes at it, 109.55 MHz
        # post-route at this target (lead22-5), 102.02 at 90 MHz (lead22-4; docs/benchmarks/fmax,
        # session 22).
        default_variant="85", default_clock_mhz=100.0, default_baud=1_000_000),
}


def get_board(name: str) -> Board:
    if name not in BOARDS:
        raise ValueError(f"Unknown board {name!r}; deltahw builds for {sorted(BOARDS)}.")
    return BOARDS[name]


class BoardTop(Elaboratable):
    """The accelerator on a board: clocking from the oscillator, UART pins, status LEDs."""

    def __init__(self, board: Board, config, *, clock_mhz: float, baud: int, rx_depth=1024):
        self.board = board
        self.config = config
        self.clockgen = ClockGen(board.part().family, board.osc, board.osc_hz, clock_mhz * 1e6)
        self.clock_hz = self.clockgen.f_out
        self.baud = baud
        self.divisor = uart_divisor(self.clock_hz, baud)
        self.rx_depth = rx_depth

    def elaborate(self, platform):
        m = Module()
        m.domains.sync = self.clockgen.domain = ClockDomain("sync")
        # Pins through io buffers (platform.request without dir="-" is deprecated in Amaranth 0.5).
        if self.board.reset is not None:
            m.submodules.reset_buf = rst = io.Buffer("i", platform.request(self.board.reset, 0,
                                                                           dir="-"))
            self.clockgen.reset = rst.i
        m.submodules.clockgen = self.clockgen
        m.submodules.top = top = UARTTop(self.config, divisor=self.divisor,
                                         clock_hz=self.clock_hz, init_files=True,
                                         rx_depth=self.rx_depth)
        uart = platform.request("uart", 0, dir="-")
        m.submodules.uart_rx = rx = io.Buffer("i", uart.rx)
        m.submodules.uart_tx = tx = io.Buffer("o", uart.tx)
        m.d.comb += [top.uart_rx.eq(rx.i), tx.o.eq(top.uart_tx)]
        for n in range(min(self.board.led_count, len(top.leds))):
            m.submodules[f"led{n}"] = led = io.Buffer("o", platform.request("led", n, dir="-"))
            m.d.comb += led.o.eq(top.leds[n])
        return m
