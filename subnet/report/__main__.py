"""``python -m subnet.report RESULTS.json [--out DIR] [--formats html,pdf]``.

Regenerates the HTML and PDF reports from a results.json written by ``python -m subnet.analyze``.
Bad input (an unreadable file, a results dict missing a key) gives one line and exit code 2.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path

from subnet._cli import run_main
from subnet.errors import InputError
from subnet.report import FORMATS, write_reports

PROG = "python -m subnet.report"


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=PROG, description="Write the HTML and PDF reports of a results.json.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("results", type=Path, help="the results.json file")
    parser.add_argument("--out", type=Path, default=None,
                        help="directory for report.html and report.pdf (default: the "
                             "directory of RESULTS)")
    parser.add_argument("--formats", default=",".join(FORMATS),
                        help="comma-separated formats to write")
    return parser.parse_args(argv)


def load_results(path: Path) -> dict:
    """Reads a results.json file.

    Args:
        path: The file.

    Returns:
        The parsed dict.

    Raises:
        ValueError: If the file cannot be read or is not a JSON object.
    """
    try:
        results = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise InputError(f"Could not read results from '{path}': {err}") from err
    if not isinstance(results, dict):
        raise InputError(f"'{path}' must hold a JSON object (a results dict). Received: "
                         f"{type(results).__name__}")
    return results


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command.

    Args:
        argv: Command-line arguments (default: ``sys.argv[1:]``).

    Returns:
        The exit code: 0, 2 for bad input, 1 for an internal error.
    """
    args = _parse_args(argv)

    def body() -> None:
        results = load_results(args.results)
        out = args.out if args.out is not None else args.results.parent
        for path in write_reports(results, out, args.formats).values():
            print(path)

    return run_main(body, PROG)


if __name__ == "__main__":
    sys.exit(main())
