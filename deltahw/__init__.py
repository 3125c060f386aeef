"""deltahw: a generator of FPGA accelerators for delta recurrent networks (delta-GRU).

Main entry points:

* :class:`deltahw.config.DeltaGRUConfig` - network shape, fixed-point formats, hardware parameters.
* :func:`deltahw.model.load_model` - import a ``torch.nn.GRU``, a state dict, a deltahw checkpoint or
  an exported folder into a :class:`deltahw.model.QuantizedModel`.
* :func:`deltahw.golden.run_golden` - the bit-exact integer golden model.
* :func:`deltahw.export.export_model` - BRAM init files and manifest.
"""

__version__ = "0.1.0"
