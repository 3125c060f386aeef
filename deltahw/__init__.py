"""deltahw: a generator of FPGA accelerators for delta recurrent networks (delta-GRU).

Main entry points:

* :class:`deltahw.DeltaNetwork` (:mod:`deltahw.api`) - the Python API: one object from a torch
  module, state dict, checkpoint or exported folder, with ``predict``, ``simulate``, ``export``,
  ``generate``, ``build``, ``calibrate`` and ``summary`` (``docs/api.md``).

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
__all__ = ["DeltaNetwork", "__version__"]


def __getattr__(name):
    # Imported on first use, so that ``import deltahw`` stays light and sets OMP_WAIT_POLICY
    # before anything imports torch.
    if name == "DeltaNetwork":
        from .api import DeltaNetwork

        return DeltaNetwork
    raise AttributeError(f"module 'deltahw' has no attribute {name!r}")
