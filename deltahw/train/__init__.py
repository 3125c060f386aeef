"""Delta-network training: datasets, the float trainable DeltaGRU, the training CLI, evaluation.

* :mod:`deltahw.train.data` - ``fsdd`` and ``watch`` datasets with fixed seeded splits.
* :mod:`deltahw.train.module` - :class:`DeltaGRU`, the float module that tracks the golden model.
* :mod:`deltahw.train.train` - ``python -m deltahw.train`` (dense stage, then delta stage).
* :mod:`deltahw.train.evaluate` - accuracy and op reduction through the golden model, sweeps, plots.

See ``docs/training.md``.
"""

from .data import DATASETS, Dataset, DatasetError, load_dataset
from .module import DeltaGRU, DeltaGRUOutput

__all__ = ["DATASETS", "Dataset", "DatasetError", "load_dataset", "DeltaGRU", "DeltaGRUOutput"]
