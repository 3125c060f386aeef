"""The register block of the accelerator: the control bus decoded into the registers that a
:mod:`deltahw.regmap` description lists (in the spirit of Glasgow's ``gateware/registers.py`` and
amaranth-soc: the description is the one source, the block unfolds it).

Every register of the description becomes one port of :class:`RegisterBlock`, named after the
register in lower case (``THETA_X0`` -> ``theta_x0``); a register with fields has a
:class:`~amaranth.lib.data.FlexibleLayout` port whose members are its fields at their bit offsets
(``regs.param_sel.lane``), so nothing outside :mod:`deltahw.regmap` states a field's shift or width.
"""

from __future__ import annotations

from amaranth import Const, Module, Signal, unsigned
from amaranth.lib import data, wiring
from amaranth.lib.wiring import In, Out

from .. import regmap
from ..regmap import BUS_ADDR_BITS, BUS_DATA_BITS, Register

__all__ = ["BusSignature", "RegisterBlock", "register_shape", "port_name"]

#: Register bus, seen from the master: word address, 32-bit data, read data one cycle later.
BusSignature = wiring.Signature(
    {
        "addr": Out(BUS_ADDR_BITS),
        "w_data": Out(BUS_DATA_BITS),
        "w_en": Out(1),
        "r_en": Out(1),
        "r_data": In(BUS_DATA_BITS),
    }
)


def register_shape(reg: Register, width: int = BUS_DATA_BITS):
    """Shape of ``reg``'s port: its fields as a 32-bit layout, or ``width`` bits if it has none."""
    if not reg.fields:
        return unsigned(width)
    return data.FlexibleLayout(
        BUS_DATA_BITS, {f.name: data.Field(unsigned(f.width), f.offset) for f in reg.fields}
    )


def port_name(reg: Register | str) -> str:
    """Port of a register: its name in lower case."""
    return (reg if isinstance(reg, str) else reg.name).lower()


class RegisterBlock(wiring.Component):
    """Decodes the control bus into the registers of ``registers`` (a :func:`regmap.register_map`).

    Ports, per register (``name`` = the register's name in lower case):

    * ``access="r"`` with a value in ``constants`` (``{name: int or {field: value}}``, packed with
      :meth:`Register.pack`, so a value that does not fit its field is refused here): no port.
    * other ``"r"`` registers: ``name: In(shape)``, the value the bus reads.
    * ``"rw"``: ``name: Out(shape)``, the stored value; ``storage={name: (width, init)}`` sets the
      width (fewer than 32 bits: a write keeps the low bits, a read returns them zero-extended) and
      the reset value. A register with ``increments_on`` adds one after each write to that register
      (in the same cycle as that write, so the write sees the address before the increment).
    * ``"w"``: ``name: Out(shape)`` (the bus's write data) and ``name_w: Out(1)``, high in the cycle
      the register is written.

    Latency: a write takes effect at the end of the cycle ``w_en`` is high (the ``_w`` strobe is
    combinational in that cycle); a read returns ``r_data`` in the cycle after ``r_en``
    (registered), 0 for an address that is not a readable register. Throughput: one access per
    cycle.
    """

    def __init__(self, registers, *, constants=None, storage=None):
        self.registers = {r.name: r for r in registers}
        constants, storage = dict(constants or {}), dict(storage or {})
        unknown = (set(constants) | set(storage)) - set(self.registers)
        if unknown:
            raise ValueError(f"RegisterBlock got values for unknown registers {sorted(unknown)}.")
        self.constants = {}
        for name, value in constants.items():
            reg = self.registers[name]
            if reg.access != "r":
                raise ValueError(f"Register {name} is {reg.access!r}; only read-only registers "
                                 "can be constants.")
            word = reg.pack(**value) if isinstance(value, dict) else int(value)
            if not 0 <= word < 1 << BUS_DATA_BITS:
                raise regmap.RegmapError(f"{name} is {BUS_DATA_BITS} bits wide; got {word}.")
            self.constants[name] = word
        self.storage = {}
        for name, reg in self.registers.items():
            if reg.access == "rw":
                width, init = storage.get(name, (BUS_DATA_BITS, 0))
                if reg.fields:
                    width = BUS_DATA_BITS
                if not 1 <= width <= BUS_DATA_BITS:
                    raise ValueError(f"Register {name} stores 1 to {BUS_DATA_BITS} bits; "
                                     f"got {width}.")
                if not 0 <= int(init) < 1 << width:
                    raise regmap.RegmapError(f"{name} holds {width} bits; its reset value "
                                             f"{init} does not fit.")
                self.storage[name] = (width, int(init))
            elif name in storage:
                raise ValueError(f"Register {name} is {reg.access!r}; only read-write registers "
                                 "have storage.")
        for name, reg in self.registers.items():
            if reg.increments_on and self.registers.get(reg.increments_on) is None:
                raise ValueError(f"{name} increments on {reg.increments_on}, which is not in the "
                                 "register map.")
        members = {"bus": In(BusSignature)}
        for name, reg in self.registers.items():
            port = port_name(reg)
            if reg.access == "r":
                if name not in self.constants:
                    members[port] = In(register_shape(reg))
            elif reg.access == "rw":
                width, init = self.storage[name]
                if reg.fields:
                    members[port] = Out(register_shape(reg))
                else:
                    members[port] = Out(register_shape(reg, width), init=init)
            elif reg.access == "w":
                members[port] = Out(register_shape(reg))
                members[f"{port}_w"] = Out(1)
            else:
                raise ValueError(f"Register {name} has access {reg.access!r}; expected 'r', 'rw' "
                                 "or 'w'.")
        super().__init__(members)

    def __getitem__(self, name: str):
        """The port of register ``name`` (the map's name, e.g. ``regs["THETA_X0"]``)."""
        return getattr(self, port_name(name))

    def strobe(self, name: str):
        """The write strobe of write-only register ``name``."""
        return getattr(self, f"{port_name(name)}_w")

    def elaborate(self, platform):
        m = Module()
        bus = self.bus
        written = {name: Signal(name=f"{port_name(name)}_written") for name in self.registers}
        for name, reg in self.registers.items():
            m.d.comb += written[name].eq(bus.w_en & (bus.addr == reg.addr))
            if reg.access == "w":
                m.d.comb += [self[name].eq(bus.w_data), self.strobe(name).eq(written[name])]
        for name, reg in self.registers.items():
            if reg.access != "rw":
                continue
            width, _ = self.storage[name]
            port = self[name]
            value = port.as_value() if reg.fields else port
            # Bits outside the register's fields are not stored (they read as 0).
            kept = sum(f.mask for f in reg.fields) if reg.fields else (1 << width) - 1
            with m.If(written[name]):
                m.d.sync += value.eq(bus.w_data & kept)
            if reg.increments_on:
                with m.Elif(written[reg.increments_on]):
                    m.d.sync += value.eq(value + 1)
        with m.If(bus.r_en):
            m.d.sync += bus.r_data.eq(0)
            with m.Switch(bus.addr):
                for name, reg in self.registers.items():
                    if reg.access == "w":
                        continue
                    if name in self.constants:
                        value = Const(self.constants[name], BUS_DATA_BITS)
                    else:
                        port = self[name]
                        value = port.as_value() if reg.fields else port
                    with m.Case(reg.addr):
                        m.d.sync += bus.r_data.eq(value)
        return m
