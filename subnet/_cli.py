"""Shared plumbing for subnet's command-line tools: one-line errors and exit codes."""

from __future__ import annotations

import sys
import traceback
from collections.abc import Callable

__all__ = ["EXIT_BAD_INPUT", "EXIT_INTERNAL", "progress_bar", "run_main"]

EXIT_OK = 0
EXIT_INTERNAL = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 130


def progress_bar(total: int, desc: str, unit: str, enabled: bool = True, initial: int = 0):
    """A tqdm progress bar on stderr: redrawn often on a terminal, every 30 s in a log file."""
    from tqdm.auto import tqdm

    interactive = sys.stderr.isatty()
    return tqdm(total=total, initial=initial, desc=desc, unit=unit, disable=not enabled,
                file=sys.stderr, dynamic_ncols=interactive,
                mininterval=0.2 if interactive else 30.0)


def run_main(body: Callable[[], int | None], prog: str,
             log_internal: Callable[[str], str | None] | None = None) -> int:
    """Runs a CLI body and maps what it raises to an exit code.

    ``ValueError`` and ``TypeError`` are bad input: one line on stderr, exit 2, no traceback.
    ``KeyboardInterrupt`` exits 130. Anything else is an internal error: exit 1, with the
    traceback written by ``log_internal`` (which returns where it wrote it) or printed.

    Args:
        body: The command's work; returns an exit code or None for 0.
        prog: The program name used in messages.
        log_internal: Optional callable taking the formatted traceback and returning the path
            it was saved to.

    Returns:
        The exit code.
    """
    try:
        code = body()
        return EXIT_OK if code is None else int(code)
    except (ValueError, TypeError) as err:
        message = " ".join(str(err).split()) or type(err).__name__
        print(f"{prog}: error: {message}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except Exception as err:  # the last resort of a command-line tool
        trace = traceback.format_exc()
        where = log_internal(trace) if log_internal is not None else None
        if where:
            print(f"{prog}: internal error: {err!r}; traceback saved to {where}", file=sys.stderr)
        else:
            print(trace, file=sys.stderr)
            print(f"{prog}: internal error: {err!r}", file=sys.stderr)
        return EXIT_INTERNAL
