"""deltahw: a generator of FPGA accelerators for delta recurrent networks (delta-GRU).

Main entry points:

* :class:`deltahw.config.DeltaGRUConfig` - network shape, fixed-point formats, hardware parameters.
* :func:`deltahw.model.load_model` - import a ``torch.nn.GRU``, a state dict, a deltahw checkpoint
or
  an exported folder into a :class:`deltahw.model.QuantizedModel`.
* :func:`deltahw.golden.run_golden` - the bit-exact integer golden model.
* :func:`deltahw.export.export_model` - BRAM init files and manifest.
"""

import os as _os

# torch's OpenMP threads spin-wait by default; on a shared or loaded machine that makes every
# parallel integer matmul of the golden model wait for parked threads (10x slower measured on the
# 2-core CI machine). Passive waiting costs nothing when the machine is idle. Must be set before
# torch is imported; an explicit user setting wins.
_os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

__version__ = "0.1.0"
