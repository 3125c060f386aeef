"""A RISC-V SoC around the accelerator: LiteX, VexRiscv, the core as a Wishbone slave, the board's
UART and the C driver as firmware (:mod:`deltahw.soc.wishbone`, :mod:`deltahw.soc.litex_soc`,
:mod:`deltahw.soc.sim`). LiteX is imported only by the modules that need it."""

__all__: list[str] = []
