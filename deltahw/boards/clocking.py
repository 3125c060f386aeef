"""Clock generation from a board oscillator: Xilinx 7-series MMCM and Lattice ECP5 PLL.

When the requested clock equals the oscillator frequency no PLL is used. The parameter solvers are
plain Python (tested without synthesis) and raise a full-sentence ``ValueError`` when a frequency
cannot be reached within ``tolerance``.
"""

from amaranth.hdl import ClockDomain, Const, Elaboratable, Instance, Module, Signal
from amaranth.lib import io
from amaranth.lib.cdc import ResetSynchronizer

__all__ = ["mmcm_params", "ecp5_pll_params", "ClockGen"]


def mmcm_params(f_in: float, f_out: float, tolerance: float = 0.005,
                vco_range=(600e6, 1200e6)) -> dict:
    """Integer MMCME2 settings (``mult``, ``div``, ``odiv``, ``f_out``) closest to ``f_out``."""
    best = None
    for div in range(1, 11):
        f_pfd = f_in / div
        if not 10e6 <= f_pfd <= 450e6:
            continue
        for mult in range(2, 65):
            vco = f_pfd * mult
            if not vco_range[0] <= vco <= vco_range[1]:
                continue
            odiv = max(1, min(128, round(vco / f_out)))
            got = vco / odiv
            err = abs(got - f_out) / f_out
            if best is None or err < best[0] - 1e-12:
                best = (err, dict(mult=mult, div=div, odiv=odiv, f_out=got, vco=vco))
    if best is None or best[0] > tolerance:
        near = "" if best is None else f" (closest: {best[1]['f_out'] / 1e6:.3f} MHz)"
        raise ValueError(f"The MMCM cannot make {f_out / 1e6:g} MHz from {f_in / 1e6:g} MHz "
                         f"within {100 * tolerance:g}%{near}.")
    return best[1]


def ecp5_pll_params(f_in: float, f_out: float, tolerance: float = 0.005) -> dict:
    """EHXPLLL settings (``clki_div``, ``clkfb_div``, ``clkop_div``, ``f_out``), CLKOP feedback."""
    best = None
    for clki_div in range(1, 129):
        f_pfd = f_in / clki_div
        if f_pfd < 3.125e6:
            break
        for clkfb_div in range(1, 81):
            got = f_pfd * clkfb_div
            for clkop_div in range(1, 129):
                vco = got * clkop_div
                if vco < 400e6:
                    continue
                if vco > 800e6:
                    break
                err = abs(got - f_out) / f_out
                if best is None or err < best[0] - 1e-12:
                    best = (err, dict(clki_div=clki_div, clkfb_div=clkfb_div,
                                      clkop_div=clkop_div, f_out=got, vco=vco))
                break
    if best is None or best[0] > tolerance:
        near = "" if best is None else f" (closest: {best[1]['f_out'] / 1e6:.3f} MHz)"
        raise ValueError(f"The ECP5 PLL cannot make {f_out / 1e6:g} MHz from {f_in / 1e6:g} MHz "
                         f"within {100 * tolerance:g}%{near}.")
    return best[1]


class ClockGen(Elaboratable):
    """Drives the clock and reset of ``domain`` at ``f_out`` from the platform's oscillator ``osc``
    (the domain itself is defined by the caller, at the top of the design).

    ``family`` is ``"xc7"`` or ``"ecp5"``. ``reset`` (an optional active-high button) and the PLL's
    lock hold the domain in reset through a reset synchronizer. With ``f_out == f_osc`` the
    oscillator drives the domain directly.
    """

    def __init__(self, family: str, osc: str, f_osc: float, f_out: float, reset=None,
                 domain: ClockDomain | None = None):
        if family not in ("xc7", "ecp5"):
            raise ValueError(f"Unknown FPGA family {family!r}; expected 'xc7' or 'ecp5'.")
        self.family, self.osc, self.f_osc, self.f_out, self.reset = family, osc, f_osc, f_out, reset
        self.domain = domain
        self.params = None
        if abs(f_out - f_osc) > 1:
            self.params = (mmcm_params(f_osc, f_out) if family == "xc7"
                           else ecp5_pll_params(f_osc, f_out))
            self.f_out = self.params["f_out"]

    def elaborate(self, platform):
        m = Module()
        cd = self.domain
        m.submodules.osc_buf = osc = io.Buffer("i", platform.request(self.osc, 0, dir="-"))
        clk_in = osc.i
        locked = Signal(init=1)
        p = self.params
        if p is None:
            m.d.comb += cd.clk.eq(clk_in)
        elif self.family == "xc7":
            fb, unbuf = Signal(), Signal()
            locked = Signal()
            m.submodules.mmcm = Instance(
                "MMCME2_BASE",
                p_BANDWIDTH="OPTIMIZED", p_CLKIN1_PERIOD=round(1e9 / self.f_osc, 3),
                p_CLKFBOUT_MULT_F=float(p["mult"]), p_DIVCLK_DIVIDE=p["div"],
                p_CLKOUT0_DIVIDE_F=float(p["odiv"]), p_CLKOUT0_PHASE=0.0,
                p_CLKOUT0_DUTY_CYCLE=0.5,
                i_CLKIN1=clk_in, i_CLKFBIN=fb, o_CLKFBOUT=fb, o_CLKOUT0=unbuf,
                o_LOCKED=locked, i_PWRDWN=Const(0), i_RST=Const(0))
            m.submodules.bufg = Instance("BUFG", i_I=unbuf, o_O=cd.clk)
        else:
            locked = Signal()
            m.submodules.pll = Instance(
                "EHXPLLL",
                p_PLLRST_ENA="DISABLED", p_INTFB_WAKE="DISABLED", p_STDBY_ENABLE="DISABLED",
                p_DPHASE_SOURCE="DISABLED", p_OUTDIVIDER_MUXA="DIVA",
                p_CLKOP_ENABLE="ENABLED", p_CLKOP_DIV=p["clkop_div"],
                p_CLKOP_CPHASE=p["clkop_div"] - 1, p_CLKOP_FPHASE=0,
                p_CLKI_DIV=p["clki_div"], p_FEEDBK_PATH="CLKOP", p_CLKFB_DIV=p["clkfb_div"],
                a_FREQUENCY_PIN_CLKI=f"{self.f_osc / 1e6:.6f}",
                a_FREQUENCY_PIN_CLKOP=f"{self.f_out / 1e6:.6f}",
                a_ICP_CURRENT="12", a_LPF_RESISTOR="8", a_MFG_ENABLE_FILTEROPAMP="1",
                a_MFG_GMCREF_SEL="2",
                i_RST=Const(0), i_STDBY=Const(0), i_CLKI=clk_in, i_CLKFB=cd.clk,
                i_PHASESEL0=Const(0), i_PHASESEL1=Const(0), i_PHASEDIR=Const(1),
                i_PHASESTEP=Const(1), i_PHASELOADREG=Const(1), i_PLLWAKESYNC=Const(0),
                i_ENCLKOP=Const(0), o_CLKOP=cd.clk, o_LOCK=locked)
        # No explicit constraint on the PLL output: Vivado and nextpnr derive it from the
        # oscillator's constraint and the PLL parameters.
        rst = ~locked
        if self.reset is not None:
            rst = rst | self.reset
        m.submodules.reset_sync = ResetSynchronizer(rst, domain=cd.name)
        return m
