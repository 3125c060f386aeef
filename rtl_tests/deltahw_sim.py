"""Compatibility name for ``rtl_tests/test_host_e2e.py``: the harness is :mod:`deltahw.verify.sim`.

Import from :mod:`deltahw.verify.sim` in new code; this module only re-exports it.
"""

from deltahw.verify.sim import *  # noqa: F403
from deltahw.verify.sim import BUILD_ARGS, TIMESCALE, sim_build_root, simulator  # noqa: F401
