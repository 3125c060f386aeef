"""Amaranth gateware of the delta-GRU accelerator (one component per block)."""

#: Attributes of a flip-flop that duplicates another on purpose (one copy per group of consumers,
#: to cut a high fanout): ``keep`` on its wire, which the board builds turn into ``keep`` on the
#: driving flip-flop (``deltahw.build``: ``KEEP_FF_SCRIPT``) so that Yosys does not merge the
#: copies back into one (``opt_merge`` merges flip-flops with the same inputs, and ``keep`` on a
#: wire does not stop it).
KEEP = {"keep": 1}
