"""Delta-network training: datasets, the float trainable DeltaGRU, the training CLI, evaluation.

* :mod:`deltahw.train.data` - ``fsdd`` and ``watch`` datasets with fixed seeded splits; task kinds.
* :mod:`deltahw.train.userdata` - the user's own data (``.npz``, ``(x, y)`` sequences, torch
  ``Dataset``), validated and split.
* :mod:`deltahw.train.module` - :class:`DeltaGRU`, the float module that tracks the golden model.
* :mod:`deltahw.train.train` - :func:`fit` and ``python -m deltahw.train`` (dense stage, or a
  given dense GRU, then delta stage).
* :mod:`deltahw.train.evaluate` - task metrics and op reduction through the golden model, sweeps.

See ``docs/training.md``.
"""

from .data import (
    CLASSIFICATION,
    DATASETS,
    STEP_CLASSIFICATION,
    STEP_REGRESSION,
    TASKS,
    Dataset,
    DatasetError,
    load_dataset,
    task_of,
)
from .module import DeltaGRU, DeltaGRUOutput
from .train import FitResult, TrainError, fit
from .userdata import make_dataset, read_npz, write_npz

__all__ = ["DATASETS", "TASKS", "CLASSIFICATION", "STEP_CLASSIFICATION", "STEP_REGRESSION",
           "Dataset", "DatasetError", "load_dataset", "task_of", "make_dataset", "read_npz",
           "write_npz", "DeltaGRU", "DeltaGRUOutput", "fit", "FitResult", "TrainError"]
