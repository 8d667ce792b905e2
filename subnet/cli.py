"""Plumbing for command-line tools, subnet's and scripts built on it (``analyses/``): an
``ArgumentParser`` whose errors are one line, :func:`run_main` (exit 2 with one line for bad
input, 1 with the traceback saved for an internal error, 130 when interrupted), progress bars.

Kept free of TensorFlow (and of any subnet module that imports it), so that ``--help``,
``--version`` and argument errors answer at once.
"""

from __future__ import annotations

import argparse
import contextlib
import errno
import sys
import traceback
import warnings
from collections.abc import Callable

from subnet.errors import InputError, clean

__all__ = ["EXIT_BAD_INPUT", "EXIT_INTERNAL", "ArgumentParser", "HelpFormatter", "byte_count",
           "progress_bar", "run_main"]

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130

# Failures of the user's file system rather than of subnet: named in one line, exit 2.
_ENVIRONMENT_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES, errno.EPERM,
                       errno.ENOTDIR, errno.EISDIR, errno.ENAMETOOLONG, errno.ELOOP,
                       errno.EMFILE, errno.ENFILE}
_ENVIRONMENT_HINTS = {errno.ENOSPC: "free some space or choose another folder",
                      errno.EDQUOT: "free some space or choose another folder",
                      errno.EROFS: "choose a writable folder",
                      errno.EACCES: "check its permissions or choose another folder",
                      errno.EPERM: "check its permissions or choose another folder",
                      errno.ENOTDIR: "a part of the path is a file; choose another path",
                      errno.EISDIR: "it is a folder; give a file",
                      errno.ENAMETOOLONG: "choose a shorter path"}


class ArgumentParser(argparse.ArgumentParser):
    """argparse, with usage errors as one line (``prog: error: ...``, exit 2) instead of the
    whole usage block, and a pointer to ``--help``."""

    def error(self, message: str):
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {clean(message)} (see --help)\n")


class HelpFormatter(argparse.HelpFormatter):
    """Adds "(default: X)" where the help does not already say it and there is a default."""

    def _get_help_string(self, action):
        text = action.help or ""
        if "default" in text or action.default in (None, False, argparse.SUPPRESS) or \
                not action.option_strings:
            return text
        default = action.default
        if isinstance(default, (list, tuple)):
            default = ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in default)
        return f"{text} (default: {default})"


_BYTE_SUFFIXES = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def byte_count(text: str) -> int:
    """An argparse type: a positive number of bytes, written as an int (``2000000000``) or with
    a binary suffix K, M, G or T (``512M`` is 512 x 2**20 bytes, ``2G`` 2 x 2**30; ``2GB`` and
    ``2GiB`` mean the same)."""
    value = text.strip().upper().removesuffix("B").removesuffix("I")
    scale = _BYTE_SUFFIXES.get(value[-1:], 1)
    digits = value[:-1] if scale > 1 else value
    if not (digits.isascii() and digits.isdigit()) or int(digits) < 1:
        raise argparse.ArgumentTypeError(
            f"expected a positive number of bytes such as 2000000000, 512M or 2G; received "
            f"{clean(text, limit=100)!r}")
    return int(digits) * scale


byte_count.__name__ = "byte count"  # argparse names the type in its messages


def progress_bar(total: int | None, desc: str, unit: str, enabled: bool = True,
                 initial: int = 0):
    """A tqdm progress bar on stderr: redrawn often on a terminal, every 30 s in a log file
    (``total`` None: a count without an end)."""
    from tqdm.auto import tqdm

    interactive = sys.stderr.isatty()
    return tqdm(total=total, initial=initial, desc=desc, unit=unit, disable=not enabled,
                file=sys.stderr, dynamic_ncols=interactive,
                mininterval=0.2 if interactive else 30.0)


def environment_message(err: OSError) -> str | None:
    """One line for an ``OSError`` caused by the user's file system (full disk, read-only,
    permissions, a file where a folder should be), naming the path; None for any other."""
    if err.errno not in _ENVIRONMENT_ERRNOS:
        return None
    where = err.filename if err.filename is not None else "a file"
    reason = err.strerror or errno.errorcode.get(err.errno, str(err.errno))
    hint = _ENVIRONMENT_HINTS.get(err.errno, "check the path")
    return f"cannot write or read {clean(where)!s}: {reason}; {hint}."


def run_main(body: Callable[[], int | None], prog: str,
             log_internal: Callable[[str], str | None] | None = None) -> int:
    """Runs a CLI body and maps what it raises to an exit code.

    :class:`subnet.errors.InputError` (subnet's own validation) is bad input, and so is an
    ``OSError`` from the user's file system (full disk, read-only folder, permissions): one line on
    stderr, exit 2, no traceback. ``KeyboardInterrupt`` exits 130. Anything else, a plain
    ``ValueError`` included, is an internal error: exit 1, with the traceback written by
    ``log_internal`` (which returns where it wrote it) or printed. Warnings the body raises
    (those Python's filters let through) are shown as one line each, ``prog: warning: ...``,
    without the file and source line Python adds.

    Args:
        body: The command's work; returns an exit code or None for 0.
        prog: The program name used in messages.
        log_internal: Optional callable taking the formatted traceback and returning the path
            it was saved to.

    Returns:
        The exit code.
    """
    try:
        with one_line_warnings(prog):
            code = body()
        return EXIT_OK if code is None else int(code)
    except InputError as err:
        message = " ".join(clean(err).split()) or type(err).__name__
        print(f"{prog}: error: {message}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except OSError as err:
        message = environment_message(err)
        if message is None:
            return _internal(err, prog, log_internal)
        print(f"{prog}: error: {message}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except Exception as err:  # the last resort of a command-line tool
        return _internal(err, prog, log_internal)


@contextlib.contextmanager
def one_line_warnings(prog: str):
    """Within the block, a warning Python shows is written as ``prog: warning: message``
    (control characters escaped), not as ``file:line: Category: message`` and a source line.

    Only the format changes (``warnings.formatwarning``): which warnings are shown is still up
    to Python's filters, and a caller that records warnings still records them.
    """
    def one_line(message, category, filename, lineno, line=None):
        return f"{prog}: warning: {' '.join(clean(message).split())}\n"

    saved = warnings.formatwarning
    warnings.formatwarning = one_line
    try:
        yield
    finally:
        warnings.formatwarning = saved


def _internal(err: BaseException, prog: str,
              log_internal: Callable[[str], str | None] | None) -> int:
    trace = traceback.format_exc()
    where = None
    if log_internal is not None:
        try:
            where = log_internal(trace)
        except Exception:  # the log itself could not be written: print the traceback instead
            where = None
    summary = clean(repr(err), limit=500)
    if where:
        print(f"{prog}: internal error (a bug in subnet): {summary}; traceback saved to "
              f"{clean(where)}", file=sys.stderr)
    else:
        print(trace, file=sys.stderr)
        print(f"{prog}: internal error (a bug in subnet): {summary}", file=sys.stderr)
    return EXIT_INTERNAL
