"""Register map of the accelerator's control bus: the one description used by the RTL register
block (:class:`deltahw.gateware.registers.RegisterBlock` unfolds it), the Python host driver, the
regression's expectations, the generated C header (``firmware/``), the config's limits
(:data:`deltahw.config.LIMITS`: a value the host reads back must fit its field) and the docs.
Fields pack and unpack through :meth:`Register.pack` / :meth:`Register.unpack`, which refuse values
that do not fit; nothing else states a field's shift or width.

The bus is 32 bits wide and word addressed. A read returns data one cycle after ``r_en``; a write
takes effect on the cycle ``w_en`` is high. Registers are described by :class:`Register`; the map is
built for a config by :func:`register_map` (threshold and counter registers repeat per layer).

Parameter memories (weights and biases) are written one lane value at a time: write ``PARAM_SEL``
(memory kind and lane), ``PARAM_ADDR`` (word address in the lane's memory), then ``PARAM_DATA``;
the write happens when ``PARAM_DATA`` is written and ``PARAM_ADDR`` then increments, so a column of
values streams through consecutive ``PARAM_DATA`` writes. Write parameters only while the core is
idle (``STATUS.busy`` = 0).
"""

from __future__ import annotations

from dataclasses import dataclass

from .errors import DeltahwError

__all__ = ["Register", "Field", "RegmapError", "register_map", "by_name", "ID_MAGIC", "VERSION",
           "PARAM_KIND_WEIGHT", "PARAM_KIND_BIAS", "MAX_LAYERS", "BUS_DATA_BITS", "BUS_ADDR_BITS",
           "to_word", "c_header"]

#: Value of the ID register: ASCII "DHW1".
ID_MAGIC = 0x44485731
#: Interface version of this register map.
VERSION = 1
PARAM_KIND_WEIGHT = 0
PARAM_KIND_BIAS = 1
#: Width of the control bus's data word: every register, and every value written to PARAM_DATA.
BUS_DATA_BITS = 32
#: Width of the control bus's word address.
BUS_ADDR_BITS = 8
#: Per-layer registers repeat at 0x20 + 2 l (THETA_X/THETA_H) and 0x30 + l (FIRED_LAST): the
#: threshold pairs of 8 layers fill 0x20..0x2F, up to the first FIRED_LAST register.
LAYER_THETA_BASE = 0x20
LAYER_FIRED_BASE = 0x30
MAX_LAYERS = (LAYER_FIRED_BASE - LAYER_THETA_BASE) // 2
_WORD_MASK = (1 << BUS_DATA_BITS) - 1


class RegmapError(DeltahwError, ValueError):
    """A value does not fit the register field (or bus word) it is meant for."""


@dataclass(frozen=True)
class Field:
    """``width`` bits at bit ``offset`` of a register word."""

    name: str
    offset: int
    width: int
    doc: str

    @property
    def max(self) -> int:
        """Largest value the field holds."""
        return (1 << self.width) - 1

    @property
    def mask(self) -> int:
        """The field's bits in the register word."""
        return self.max << self.offset


@dataclass(frozen=True)
class Register:
    """One 32-bit register. ``fields`` split the word; a register without fields is one value.

    ``increments_on``: the register (a plain counter-like value) increments by one after each write
    to the named register (PARAM_ADDR after PARAM_DATA).
    """

    name: str
    addr: int
    access: str  # "r", "w", "rw"
    doc: str
    fields: tuple[Field, ...] = ()
    increments_on: str | None = None

    def field(self, name: str) -> Field:
        for f in self.fields:
            if f.name == name:
                return f
        raise RegmapError(f"Register {self.name} has no field {name!r}; its fields are "
                          f"{', '.join(f.name for f in self.fields) or 'none'}.")

    def pack(self, **values: int) -> int:
        """The register word holding ``values`` (field name -> value; missing fields are 0).

        Raises :class:`RegmapError` for an unknown field or a value that does not fit its field.
        """
        word = 0
        for name, v in values.items():
            f = self.field(name)
            v = int(v)
            if not 0 <= v <= f.max:
                raise RegmapError(f"{self.name}.{name} is {f.width} bits wide (0 to {f.max}); "
                                  f"got {v}.")
            word |= v << f.offset
        return word

    def unpack(self, word: int) -> dict[str, int]:
        """Field name -> value of a register word read from the device.

        Raises :class:`RegmapError` when ``word`` is not a 32-bit word or sets bits outside the
        register's fields (a register with no fields is one whole-word value).
        """
        word = int(word)
        if not 0 <= word <= _WORD_MASK:
            raise RegmapError(f"A {self.name} word is {BUS_DATA_BITS} bits; got {word}.")
        if not self.fields:
            return {"value": word}
        used = 0
        for f in self.fields:
            used |= f.mask
        if word & ~used:
            raise RegmapError(f"{self.name} reads 0x{word:08X}, which sets bits outside its fields "
                              f"(mask 0x{used:08X}): it is not a register of this map.")
        return {f.name: (word & f.mask) >> f.offset for f in self.fields}

    def get(self, word: int, name: str) -> int:
        """One field of a register word (see :meth:`unpack`)."""
        return self.unpack(word)[name]


def register_map(num_layers: int) -> list[Register]:
    """All registers for a design with ``num_layers`` layers, ordered by address."""
    regs = [
        Register("ID", 0x00, "r", "Magic number 0x44485731 ('DHW1')."),
        Register("VERSION", 0x01, "r", "Register-map version."),
        Register("SHAPE0", 0x02, "r", "Network shape.", (
            Field("input_size", 0, 16, "I"), Field("hidden_size", 16, 16, "H"))),
        Register("SHAPE1", 0x03, "r", "Network shape and hardware parameters.", (
            Field("num_layers", 0, 4, "L"), Field("output_size", 4, 12, "O (0 = no head)"),
            Field("lanes", 16, 11, "P"), Field("act_width_log2", 27, 3, "log2 A"))),
        Register("STATUS", 0x04, "r", "Core status.", (
            Field("busy", 0, 1, "a timestep is being computed"),
            Field("input_ready", 1, 1, "an encoded input vector is waiting"),
            Field("out_pending", 2, 1, "output beats are waiting to be read"))),
        Register("CTRL", 0x05, "w", "Control strobes.", (
            Field("clear_counters", 0, 1, "write 1 to zero the performance counters"),)),
        Register("THETA_HEAD", 0x06, "rw", "Threshold of the head's input delta encoder (LSBs)."),
        Register("CYCLES_LAST", 0x10, "r", "Compute cycles of the last finished timestep."),
        Register("CYCLES_TOTAL", 0x11, "r", "Compute cycles since the counters were cleared."),
        Register("STALL_TOTAL", 0x12, "r",
                 "Cycles lost to the streams since the counters were cleared: waiting for output "
                 "space, and the overlap a late input vector lost (deltahw.cycles)."),
        Register("TIMESTEPS", 0x13, "r", "Timesteps finished since the counters were cleared."),
        Register("MAC_BUSY", 0x14, "r", "Cycles the MAC array issued work since cleared."),
        Register("FIRED_HEAD_LAST", 0x15, "r", "Deltas fired into the head in the last timestep."),
        Register("PARAM_SEL", 0x18, "rw", "Parameter memory selection.", (
            Field("kind", 0, 1, "0 = weights, 1 = biases"), Field("lane", 8, 11, "MAC lane"))),
        Register("PARAM_ADDR", 0x19, "rw", "Word address in the selected lane's memory.",
                 increments_on="PARAM_DATA"),
        Register("PARAM_DATA", 0x1A, "w",
                 "Value to write (two's complement, low bits); writing it stores the value and "
                 "increments PARAM_ADDR."),
    ]
    if not 1 <= num_layers <= MAX_LAYERS:
        raise RegmapError(f"The register map has room for 1 to {MAX_LAYERS} layers; got "
                          f"{num_layers}.")
    for l in range(num_layers):
        regs.append(Register(f"THETA_X{l}", LAYER_THETA_BASE + 2 * l, "rw",
                             f"Layer {l} input delta threshold (LSBs of the act format)."))
        regs.append(Register(f"THETA_H{l}", LAYER_THETA_BASE + 2 * l + 1, "rw",
                             f"Layer {l} hidden delta threshold (LSBs of the act format)."))
        regs.append(Register(f"FIRED_LAST{l}", LAYER_FIRED_BASE + l, "r",
                             f"Layer {l} fired deltas in the last timestep.", (
                                 Field("x", 0, 16, "input deltas"),
                                 Field("h", 16, 16, "hidden deltas"))))
    return sorted(regs, key=lambda r: r.addr)


def to_word(value: int) -> int:
    """``value`` as a bus word: two's complement for a negative value.

    Raises :class:`RegmapError` when ``value`` does not fit ``BUS_DATA_BITS`` bits, signed or
    unsigned (a wider value would lose its high bits on the bus).
    """
    value = int(value)
    if not -(1 << (BUS_DATA_BITS - 1)) <= value <= _WORD_MASK:
        raise RegmapError(f"The control bus carries {BUS_DATA_BITS}-bit words; the value {value} "
                          "does not fit.")
    return value & _WORD_MASK


def by_name(num_layers: int) -> dict[str, Register]:
    """:func:`register_map` as a dict keyed by register name."""
    return {r.name: r for r in register_map(num_layers)}


def c_header(num_layers: int, guard: str = "DELTAHW_REGS_H") -> str:
    """C header with register addresses and field shifts/masks for ``firmware/``."""
    lines = [
        "/* Generated by deltahw.regmap: do not edit. Register map version "
        f"{VERSION}. */",
        f"#ifndef {guard}",
        f"#define {guard}",
        "",
        f"#define DELTAHW_ID_MAGIC 0x{ID_MAGIC:08X}u",
        f"#define DELTAHW_REGMAP_VERSION {VERSION}u",
        f"#define DELTAHW_PARAM_KIND_WEIGHT {PARAM_KIND_WEIGHT}u",
        f"#define DELTAHW_PARAM_KIND_BIAS {PARAM_KIND_BIAS}u",
        f"#define DELTAHW_BUS_DATA_BITS {BUS_DATA_BITS}u",
        "",
    ]
    for r in register_map(num_layers):
        lines.append(f"/* {r.doc} ({r.access}) */")
        lines.append(f"#define DELTAHW_REG_{r.name} 0x{r.addr:02X}u")
        for f in r.fields:
            lines.append(f"#define DELTAHW_{r.name}_{f.name.upper()}_SHIFT {f.offset}u")
            lines.append(f"#define DELTAHW_{r.name}_{f.name.upper()}_MASK "
                         f"0x{f.mask:08X}u")
            lines.append(f"#define DELTAHW_{r.name}_{f.name.upper()}_WIDTH {f.width}u")
    lines += ["", f"#endif /* {guard} */", ""]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------------
# Registers of the AXI4 wrapper (deltahw.gateware.axi): a window of words after the core's 256.
# On the AXI4-Lite slave, byte address = word address x 4 for both windows.
__all__ += ["AXI_WRAPPER_BASE", "axi_register_map", "axi_by_name"]

#: First word address of the AXI wrapper's registers (byte address 0x400).
AXI_WRAPPER_BASE = 0x100
_IRQ_FIELDS = (
    Field("timestep_done", 0, 1, "a timestep's last output beat left on m_axis"),
    Field("sequence_done", 1, 1, "... and its input packet had TUSER[1] (sequence end)"),
    Field("framing_error", 2, 1, "an input TLAST was missing or not on a timestep's last beat"),
)


def axi_register_map() -> list[Register]:
    """The AXI wrapper's registers (word addresses from :data:`AXI_WRAPPER_BASE`)."""
    return [
        Register("IRQ_STATUS", AXI_WRAPPER_BASE, "rw",
                 "Interrupt events (sticky); write 1 to a bit to clear it.", _IRQ_FIELDS),
        Register("IRQ_ENABLE", AXI_WRAPPER_BASE + 1, "rw",
                 "Events that drive the irq output (irq = OR of STATUS & ENABLE).", _IRQ_FIELDS),
    ]


def axi_by_name() -> dict[str, Register]:
    return {r.name: r for r in axi_register_map()}
