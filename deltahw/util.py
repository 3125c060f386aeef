"""Small shared helpers: atomic file and folder writes, signals, and the CLI error wrapper.

Every output of a deltahw tool is written to a temporary path next to its destination and renamed
into place, so an interrupted or failed run never leaves a half-written file or folder. Temporary
names carry the writing process's id (``.NAME.<pid>.<random>.tmp``), so a later run removes the
ones a killed run (SIGKILL, power loss) could not clean up itself.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
from contextlib import contextmanager
from pathlib import Path

from .errors import DeltahwError

__all__ = [
    "OutputError",
    "Terminated",
    "atomic_write_bytes",
    "atomic_write_text",
    "atomic_dir",
    "remove_stale_temps",
    "check_output_file",
    "terminate_on_signals",
    "run_cli",
    "add_model_arguments",
    "add_threshold_arguments",
    "add_loading_arguments",
]


class OutputError(DeltahwError, ValueError):
    """An output path cannot be written (wrong type, no permission, protected folder)."""


class Terminated(BaseException):
    """Raised in the main thread when the process receives SIGTERM (like KeyboardInterrupt for
    SIGINT), so that ``finally`` clauses remove temporary files and stop child tools."""

    def __init__(self, signum: int = signal.SIGTERM):
        super().__init__(f"terminated by {signal.Signals(signum).name}")
        self.signum = signum


def _default_mode(mode: int) -> int:
    """``mode`` as a plain ``open``/``mkdir`` would create it under the current umask.

    ``tempfile`` creates private files (0600) and folders (0700); a renamed temporary must end up
    with the permissions the user expects of an ordinary output file or folder.
    """
    mask = os.umask(0)
    os.umask(mask)
    return mode & ~mask


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def remove_stale_temps(path: Path) -> list[Path]:
    """Remove ``.NAME.<pid>.*.tmp`` siblings of ``path`` whose writing process no longer exists.

    Only names of the form this module creates are touched, and only when the process id in the
    name is dead, so a concurrent run's temporary is never removed. Returns what was removed.
    """
    path = Path(path)
    removed = []
    try:
        candidates = list(path.parent.glob(f".{path.name}.*.tmp"))
    except OSError:
        return removed
    for tmp in candidates:
        rest = tmp.name[len(path.name) + 2 : -len(".tmp")]
        pid = rest.split(".", 1)[0]
        if not pid.isdigit() or int(pid) == os.getpid() or _pid_alive(int(pid)):
            continue
        if tmp.is_dir() and not tmp.is_symlink():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        removed.append(tmp)
    return removed


def _os_error(path: Path, e: OSError) -> OutputError:
    return OutputError(f"Cannot write {path}: {e.strerror or e} (choose a writable location).")


def check_output_file(path: Path, what: str = "output file") -> Path:
    """Refuse an output file path that is an existing folder or whose parent is not a folder."""
    path = Path(path)
    if path.is_dir():
        raise OutputError(f"The {what} {path} is an existing folder; expected a file name.")
    for parent in path.parents:
        if parent.exists():
            if not parent.is_dir():
                raise OutputError(f"The {what} {path} cannot be created: {parent} is a file, not "
                                  "a folder.")
            break
    return path


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder, then rename."""
    path = check_output_file(Path(path))
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.",
                                   suffix=".tmp")
    except OSError as e:
        raise _os_error(path, e) from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, _default_mode(0o666))
        os.replace(tmp, path)
    except OSError as e:
        Path(tmp).unlink(missing_ok=True)
        raise _os_error(path, e) from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write_bytes(path, text.encode())


@contextmanager
def atomic_dir(path: Path):
    """Yield a temporary folder next to ``path``; on success it replaces ``path`` in one rename.

    On any error (or KeyboardInterrupt / :class:`Terminated`) the temporary folder is removed and
    an existing ``path`` is left untouched. Callers decide beforehand whether ``path`` may be
    replaced (see :func:`deltahw.artifacts.output_dir`).
    """
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise OutputError(f"The output folder {path} is an existing file; expected a folder.")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(path)
        old = path.with_name(f".{path.name}.old")
        if old.exists() and not path.exists():
            old.rename(path)  # a previous run died between its two renames: restore the folder
        tmp = Path(tempfile.mkdtemp(dir=path.parent, prefix=f".{path.name}.{os.getpid()}.",
                                    suffix=".tmp"))
    except OSError as e:
        raise _os_error(path, e) from None
    try:
        yield tmp
        tmp.chmod(_default_mode(0o777))
        if path.exists():
            if old.exists():
                shutil.rmtree(old)
            path.rename(old)
            try:
                tmp.rename(path)
            except BaseException:
                old.rename(path)  # put the previous folder back before reporting the failure
                raise
            shutil.rmtree(old)
        else:
            tmp.rename(path)
    except OSError as e:
        shutil.rmtree(tmp, ignore_errors=True)
        raise _os_error(path, e) from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


@contextmanager
def terminate_on_signals():
    """Turn SIGTERM (and SIGHUP) into :class:`Terminated` in the main thread while active."""
    def handler(signum, frame):
        raise Terminated(signum)

    sigs = [signal.SIGTERM] + ([signal.SIGHUP] if hasattr(signal, "SIGHUP") else [])
    try:
        old = {s: signal.signal(s, handler) for s in sigs}
    except ValueError:  # not the main thread: leave signal handling alone
        yield
        return
    try:
        yield
    finally:
        for s, h in old.items():
            signal.signal(s, h)


def run_cli(body, *args) -> int:
    """Run a command-line entry point's ``body(*args)``; print project errors as one sentence.

    :class:`DeltahwError` (bad input, failed tool) prints ``error: <message>`` and returns its
    ``code`` attribute or 2; an interruption (Ctrl-C, SIGTERM) prints what happened and returns
    130 / 143 after the ``finally`` clauses on the way have removed temporaries.
    """
    try:
        with terminate_on_signals():
            return body(*args)
    except DeltahwError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        code = getattr(e, "code", 2)
        return code if isinstance(code, int) and 1 <= code < 126 else 2
    except KeyboardInterrupt:
        print("error: interrupted (Ctrl-C); nothing half-written was left behind.",
              file=sys.stderr, flush=True)
        return 130
    except Terminated as e:
        print(f"error: {e}; nothing half-written was left behind.", file=sys.stderr, flush=True)
        return 128 + e.signum
    except OSError as e:  # a file system or device failure no check foresaw: still one sentence
        where = f" ({e.filename})" if e.filename else ""
        print(f"error: {e.strerror or e}{where}.", file=sys.stderr, flush=True)
        return 2


# --------------------------------------------------------------------------------------------------
# The command lines' shared arguments (argparse only: the host driver builds its parser with them
# without importing torch's or Amaranth's side of the project).
def add_model_arguments(ap: argparse.ArgumentParser) -> None:
    """The model (positional), ``--config``, the thresholds and the loading options."""
    ap.add_argument(
        "model", help="exported model folder, deltahw checkpoint or GRU state dict (.pt)"
    )
    ap.add_argument("--config", help="JSON config (formats, thresholds, lanes) for a plain GRU")
    add_threshold_arguments(ap)
    add_loading_arguments(ap)


def add_threshold_arguments(ap: argparse.ArgumentParser) -> None:
    """``--theta-x``, ``--theta-h`` and ``--theta-head`` in real units, for every command that
    takes a model (:func:`deltahw.golden.apply_threshold_arguments` applies them)."""
    ap.add_argument("--theta-x", help="input-delta thresholds in real units, e.g. 0.05 or 0.05,0.1 "
                                      "(one for all layers or one per layer; default: the model's)")
    ap.add_argument("--theta-h", help="hidden-delta thresholds in real units (default: the "
                                      "model's)")
    ap.add_argument("--theta-head", help="the head's input-delta threshold in real units "
                                         "(default: the model's)")


def add_loading_arguments(ap: argparse.ArgumentParser) -> None:
    """``--allow-clipping`` and ``--trust-pickle``, for every command that imports a model."""
    ap.add_argument("--allow-clipping", action="store_true",
                    help="accept a model that quantization clips heavily (more than 1 %% of its "
                         "parameters or 10 %% of one tensor) or rounds to all-zero weights")
    ap.add_argument("--trust-pickle", action="store_true",
                    help="unpickle arbitrary Python objects (e.g. a whole saved nn.Module) from "
                         "the model file; only for files you trust, as unpickling can run code")
