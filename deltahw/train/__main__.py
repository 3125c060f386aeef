"""``python -m deltahw.train``: see :mod:`deltahw.train.train`."""

import sys

from .train import main

sys.exit(main())
