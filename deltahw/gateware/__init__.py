"""Amaranth gateware of the delta-GRU accelerator (one component per block)."""

from dataclasses import dataclass
from typing import ClassVar

#: Attributes of a flip-flop that duplicates another on purpose (one copy per group of consumers,
#: to cut a high fanout): ``keep`` on its wire, which the board builds turn into ``keep`` on the
#: driving flip-flop (``deltahw.build``: ``KEEP_FF_SCRIPT``) so that Yosys does not merge the
#: copies back into one (``opt_merge`` merges flip-flops with the same inputs, and ``keep`` on a
#: wire does not stop it).
KEEP = {"keep": 1}


@dataclass(frozen=True)
class Forms:
    """The implementation forms the generator picks per FPGA family: the same function and the
    same cycles (the cycle model does not see them), different LUTs and timing.

    * ``logic_compares``: the activation's and the head read-out's compares with constants as
      AND/OR logic (:func:`deltahw.gateware.activation.ge_const`) instead of carry chains;
    * ``plain_h_encoders``: the two h delta encoders subtract, then compare (``|v - vhat| >=
      theta``: two carry chains in series after the new h) instead of registering ``vhat -/+
      theta`` a cycle ahead (one chain after the new h: :class:`~.encoder.DeltaEncoder`'s
      ``vhat_ahead``), which costs two adders and 52 flip-flops per element;
    * ``state_in_block_ram``: the h state memories in block RAM (``ram_style``).

    Xilinx 7-series (``"series7"``) gets all three: its 6-input LUTs make the logic forms cheap,
    its LUTs are the resource the A7-35T runs out of, and no timing analysis runs there (no
    Vivado; the xc7 clock is not measured). Every other family (the ECP5, whose post-route clock
    is measured and routing-bound, and plain Verilog or simulation) gets the timing forms.
    """

    logic_compares: bool = False
    plain_h_encoders: bool = False
    state_in_block_ram: bool = False

    #: The Amaranth platform family (``platform.family``) that gets the LUT-saving forms.
    LUT_SAVING_FAMILY: ClassVar[str] = "series7"

    @classmethod
    def for_family(cls, family) -> "Forms":
        """The forms for an Amaranth platform family (``None``: simulation, plain Verilog)."""
        x = family == cls.LUT_SAVING_FAMILY
        return cls(logic_compares=x, plain_h_encoders=x, state_in_block_ram=x)

    @classmethod
    def for_platform(cls, platform) -> "Forms":
        return cls.for_family(getattr(platform, "family", None))
