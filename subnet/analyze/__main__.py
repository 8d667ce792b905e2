"""``python -m subnet.analyze MODEL``: the command line (argparse only).

Every value is checked before TensorFlow is imported; the pipeline is
:func:`subnet.analyze.analyze`.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import subnet
from subnet._io import atomic_write_text
from subnet._outdir import MARKER
from subnet._quiet import quiet_tensorflow_warnings
from subnet.analyze.runner import analyze
from subnet.analyze.settings import (
    FORMATS,
    METHODS,
    QUICK_SECONDS,
    SIZED,
    TEST_EXAMPLES,
    THOROUGH_METHODS,
    Settings,
    _check_formats,
    _check_paths,
    _check_ray_address,
)
from subnet.cli import ArgumentParser, HelpFormatter, byte_count, run_main
from subnet.distributed import executor_from_address
from subnet.errors import InputError, clean
from subnet.plan import parse_duration
from subnet.record import parse_rate


def _comma_list(kind, name: str):
    """An argparse type: a comma-separated list (``0.5,0.25``) of ``kind``."""
    def parse(text: str):
        items = [item.strip() for item in text.split(",") if item.strip()]
        if not items:
            raise argparse.ArgumentTypeError(f"{name} needs at least one value, comma-separated")
        try:
            return [kind(item) for item in items]
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{name} takes comma-separated {'numbers' if kind is float else 'names'} "
                f"(e.g. {'0.5,0.25' if kind is float else 'banzhaf_iterative,magnitude'}); "
                f"received {clean(text, limit=100)!r}") from None
    parse.__name__ = name  # argparse names the type in its messages
    return parse


def _rate(text: str):
    """An argparse type: ``auto`` or a dropout rate in (0, 1)."""
    try:
        return parse_rate(text)
    except InputError as err:
        raise argparse.ArgumentTypeError(
            str(err).removeprefix("Invalid value for --rate: ")) from None


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    d = Settings()
    parser = ArgumentParser(
        prog="python -m subnet.analyze",
        description="Do equally good subnetworks exist inside this trained classifier? Records "
                    "random dropout subnetworks, estimates each unit's importance, extracts and "
                    "fine-tunes pruned subnetworks, compares them with magnitude pruning, and "
                    "writes results.json, report.html and report.pdf.",
        epilog="Lists are comma-separated (--budgets 0.5,0.25 --methods "
               "banzhaf_iterative,magnitude). "
               "Exit codes: 0 done, 2 bad input (one line), 1 internal error (traceback saved), "
               "130 interrupted.",
        formatter_class=HelpFormatter)
    parser.add_argument("model", help="the trained classifier, a .keras or .h5 file")
    parser.add_argument("--version", action="version", version=f"subnet {subnet.__version__}")
    parser.add_argument("--dataset", default=None,
                        help="mnist, fashion_mnist or PATH.npz; default: inferred from the "
                             "model (input shape, then which dataset it classifies)")
    parser.add_argument("--data-dir", default=None,
                        help="folder with the dataset's IDX files; when given, the data is "
                             "read from there or not at all")
    parser.add_argument("--max-data-bytes", type=byte_count, default=None, metavar="BYTES",
                        help="the most bytes the data file's arrays may declare, decompressed, "
                             "e.g. 4G (default: 1G, subnet.data.MAX_BYTES); of the test "
                             f"examples only the first max(--examples, {TEST_EXAMPLES:,}) are "
                             "read")
    parser.add_argument("--masks", type=int, default=d.masks,
                        help="random masks (subnetworks) recorded on the test examples")
    parser.add_argument("--examples", type=int, default=d.examples,
                        help="test examples (the first N) each mask is evaluated on")
    parser.add_argument("--rate", type=_rate, default=d.rate,
                        help="auto (default): the model's own dropout rates where every site "
                             "has a Dropout and masks at them are not near chance, else one keep "
                             "probability calibrated on held-out training examples (the last "
                             "1,000, 500 with --quick; never the test set) so that random "
                             "subnetworks sit halfway between chance and the whole model; or R, "
                             "a dropout rate in (0, 1) for sites with no Dropout after them")
    parser.add_argument("--seed", type=int, default=d.seed,
                        help="base seed (masks, fine-tuning; comparison seeds count up from it)")
    parser.add_argument("--repeats", type=int, default=d.repeats,
                        help="seeds of the comparison (spread over seeds)")
    parser.add_argument("--budgets", type=_comma_list(float, "--budgets"),
                        default=list(d.budgets),
                        help="FLOP fractions of the dense model to prune to, comma-separated")
    parser.add_argument("--methods", type=_comma_list(str, "--methods"),
                        default=list(d.methods),
                        help=f"comparison methods, comma-separated, among: {', '.join(METHODS)}")
    parser.add_argument("--finetune-epochs", type=float, default=d.finetune_epochs,
                        help="fine-tuning budget of every subnetwork, in epochs")
    parser.add_argument("--tolerance", type=float, default=d.tolerance * 100,
                        help="accuracy points the answer's subnetwork may lose")
    parser.add_argument("--passes", type=int, default=d.passes,
                        help="passes with test-time dropout on (the blog's experiment)")
    parser.add_argument("--uncertainty-passes", type=int, default=d.uncertainty_passes,
                        help="passes of the test-time-dropout ensemble (and random unit "
                             "subnetworks) whose uncertainty is measured")
    parser.add_argument("--ood", default=d.ood,
                        help="out-of-distribution test images: auto (MNIST <-> Fashion-MNIST), "
                             "none, a data set name or PATH.npz")
    parser.add_argument("--out", default=None,
                        help="output folder, new or empty or made by subnet.analyze (default: "
                             "MODEL's name + '_analysis', beside it)")
    parser.add_argument("--formats", type=_comma_list(str, "--formats"),
                        default=list(FORMATS),
                        help="outputs, comma-separated, among html, pdf, json")
    parser.add_argument("--resume", action="store_true",
                        help="reuse the stages an interrupted run with the same settings finished")
    parser.add_argument("--record", default=None,
                        help="use this complete record (python -m subnet.record, or merged "
                             "shards) instead of recording; its masks and examples are used")
    parser.add_argument("--trust-model", action="store_true",
                        help="allow code inside the model file (Lambda layers) to run")
    parser.add_argument("--ray", default=None, metavar="ADDRESS",
                        help="run the record's chunks and the comparison's cells as Ray tasks: "
                             "'local' starts Ray on this machine, 'auto' joins the cluster this "
                             "machine belongs to, or a ray://HOST:PORT address (needs pip "
                             "install 'subnet[ray]'); 'processes' or 'processes:N' runs them "
                             "in N worker processes here, without Ray; the results are the "
                             "same")
    parser.add_argument("--protocol", choices=("quick", "thorough"), default="quick",
                        help="quick: cuts with a short fine-tune (minutes); thorough: gradual "
                             "prune-retrain, fine-tuned to saturation on a validation split, "
                             "distilled, with a Scratch-E control (hours; methods default to "
                             f"{','.join(THOROUGH_METHODS)})")
    parser.add_argument("--quick", action="store_true",
                        help="small settings for a first look, sized to the model's measured "
                             f"costs so that the stages take about {QUICK_SECONDS:.0f} s "
                             "(about 2 minutes in all on the blog's network); options given "
                             "explicitly still apply")
    parser.add_argument("--time-budget", type=_duration, default=None, metavar="DURATION",
                        help="seconds the stages may take, e.g. 90s, 30m, 2h: masks, examples, "
                             "held-out examples, fine-tuning epochs and passes not given "
                             "explicitly are sized from the model's measured costs to fit; "
                             "results.json and the report say what the budget bought")
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    return parser.parse_args(argv)


def _settings(args: argparse.Namespace, argv: Sequence[str]) -> Settings:
    given = {a.split("=")[0][2:].replace("-", "_") for a in argv if a.startswith("--")}
    fields = {"dataset": args.dataset, "masks": args.masks, "examples": args.examples,
              "rate": args.rate, "seed": args.seed, "repeats": args.repeats,
              "budgets": tuple(args.budgets), "methods": tuple(args.methods),
              "finetune_epochs": args.finetune_epochs, "tolerance": args.tolerance / 100,
              "passes": args.passes, "protocol": args.protocol,
              "uncertainty_passes": args.uncertainty_passes, "ood": args.ood,
              "time_budget": args.time_budget}
    if args.protocol == "thorough" and "methods" not in given:
        fields["methods"] = THOROUGH_METHODS
    # A time budget sizes what was not given explicitly.
    fields["sized"] = tuple(name for name in SIZED if name not in given)
    if args.quick:
        explicit = {k: v for k, v in fields.items()
                    if k in given or k in ("dataset", "sized")}
        return Settings.quick_settings(**explicit)
    return Settings(**fields)


def _duration(text: str) -> float:
    try:
        return parse_duration(text)
    except InputError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m subnet.analyze`` and ``subnet-analyze``; returns the exit code."""
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        args = _parse_args(argv)
    except SystemExit as exit_:  # --help, --version, or a usage error (already printed)
        return int(exit_.code or 0)
    quiet_tensorflow_warnings()  # TensorFlow itself is imported only once the values are checked
    model = Path(args.model)
    out = Path(args.out) if args.out else model.with_name(model.stem + "_analysis")

    def log_internal(trace: str) -> str | None:
        # Into --out only when subnet owns it; otherwise beside the other temporary files.
        if (out / MARKER).is_file():
            path = out / "analyze-error.log"
            atomic_write_text(path, trace)
            return str(path)
        fd, name = tempfile.mkstemp(prefix="subnet-analyze-error-", suffix=".log")
        with open(fd, "w", encoding="utf-8") as f:
            f.write(trace)
        return name

    def body() -> int:
        # Every value check that needs no model, before Ray or TensorFlow start (analyze()
        # checks the paths again; they cost nothing).
        settings = _settings(args, argv)
        _check_formats(args.formats)
        _check_ray_address(args.ray)
        _check_paths(model, settings, data_dir=args.data_dir, record=args.record)
        with executor_from_address(args.ray) as executor:
            analyze(model, out, settings, formats=args.formats,
                    resume=args.resume, trust_model=args.trust_model, data_dir=args.data_dir,
                    progress=not args.quiet, command=["python", "-m", "subnet.analyze", *argv],
                    record=args.record, executor=executor, max_data_bytes=args.max_data_bytes)
        return 0

    return run_main(body, prog="subnet.analyze", log_internal=log_internal)


if __name__ == "__main__":
    sys.exit(main())
