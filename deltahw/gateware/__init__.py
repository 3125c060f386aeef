"""Amaranth gateware of the delta-GRU accelerator (one component per block)."""
