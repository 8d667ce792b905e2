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

import subnet
from subnet._outdir import MARKER
from subnet.cli import ArgumentParser, HelpFormatter, run_main
from subnet.errors import InputError, clean
from subnet.report import FORMATS, write_reports

PROG = "python -m subnet.report"


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = ArgumentParser(
        prog=PROG, description="Write the HTML and PDF reports of a results.json.",
        formatter_class=HelpFormatter)
    parser.add_argument("--version", action="version", version=f"subnet {subnet.__version__}")
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


def _check_not_foreign(out: Path, formats: Sequence[str]) -> None:
    """subnet replaces a report only in a folder it made (marked by subnet.analyze)."""
    if (out / MARKER).is_file():
        return
    existing = [f"report.{f}" for f in formats if (out / f"report.{f}").exists()]
    if existing:
        raise InputError(f"{clean(str(out / existing[0]))!r} exists and was not written by "
                         "subnet (the folder has no subnet marker); give --out a new or empty "
                         "folder.")


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the command.

    Args:
        argv: Command-line arguments (default: ``sys.argv[1:]``).

    Returns:
        The exit code: 0, 2 for bad input, 1 for an internal error.
    """
    try:
        args = _parse_args(argv)
    except SystemExit as exit_:  # --help, --version, or a usage error (already printed)
        return int(exit_.code or 0)

    def body() -> None:
        results = load_results(args.results)
        out = args.out if args.out is not None else args.results.parent
        formats = [f.strip() for f in args.formats.split(",") if f.strip()]
        _check_not_foreign(out, formats)
        for path in write_reports(results, out, formats).values():
            print(clean(str(path)))

    return run_main(body, PROG)


if __name__ == "__main__":
    sys.exit(main())
