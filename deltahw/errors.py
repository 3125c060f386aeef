"""The one base class of deltahw's own errors.

Every error the project raises for a bad input, a failed tool or a device fault subclasses
:class:`DeltahwError`, so a command-line entry point catches it once and prints its message as one
full sentence (``error: ...``) with no traceback. Subclasses keep their historical second base
(``ValueError`` for bad inputs, ``RuntimeError`` for failed steps) so existing ``except`` clauses
keep working.
"""

from __future__ import annotations

__all__ = ["DeltahwError"]


class DeltahwError(Exception):
    """Base class of every error deltahw raises on purpose (bad input, failed tool, device)."""
