"""``python -m subnet.record``: a record (or one shard of it), and the merge of shards.

From the command line::

    python -m subnet.record MODEL --dataset D --out DIR [--masks N] [--examples N] [--seed S]
        [--rate R] [--shard I/K] [--resume] [--ray ADDRESS]
    python -m subnet.record merge OUT SHARD_DIR [SHARD_DIR ...]

Shard I of K (0 <= I < K) records masks floor(I N / K) .. floor((I + 1) N / K) - 1 of the N,
so K shards, on one machine or a Slurm array
(``--shard $SLURM_ARRAY_TASK_ID/$SLURM_ARRAY_TASK_COUNT``), merge into exactly the record one
process makes. The record is of the model with its dropout
off, on the first ``--examples`` test examples, as ``python -m subnet.analyze`` records it.
``--ray ADDRESS`` evaluates the chunks (of the whole record or of a shard) as Ray tasks on a
local instance (``local``) or a running cluster (``auto``, ``ray://HOST:PORT``) while this
process writes them: the same record, chunk file for chunk file (:mod:`subnet.distributed`).

``--out`` (and the merge's ``OUT``) must be new, empty, or a record folder subnet made (marked
``subnet.record``; a folder holding nothing but a record with a valid ``meta.json``, from before
record folders were marked, is adopted). Any other folder is refused in one line, exit 2, before
anything is written; ``--resume`` refuses it as "no record to resume". While a record or a merge
writes, the folder is locked: a second writer is refused at once (:mod:`subnet._outdir`).
"""

from __future__ import annotations

import sys
from pathlib import Path

from subnet.errors import InputError, clean
from subnet.keep import KeepProbabilities
from subnet.record.files import check_record_folder, claim_record_folder, holds_record
from subnet.record.rates import choose_keep, keep_of_record, parse_rate
from subnet.record.run import record_masks
from subnet.record.storage import MaskRecord

# TensorFlow is imported where it is used, so that `python -m subnet.record --help` and argument
# errors answer at once.

#: Training examples (the last ones of the training split) python -m subnet.record calibrates
#: the keep probabilities on, as python -m subnet.analyze's default ``selection_examples``.
CALIBRATION_EXAMPLES = 1000


def shard_range(n_masks: int, shard: str) -> range:
    """Masks of shard ``"I/K"`` of ``n_masks``: floor(I n / K) .. floor((I + 1) n / K) - 1.

    Raises:
        InputError: If ``shard`` is not ``I/K`` with 0 <= I < K <= n_masks.
    """
    try:
        index, count = (int(part) for part in str(shard).split("/"))
    except ValueError:
        raise InputError(f"--shard must be I/K, e.g. 0/4 (shard I of K, counted from 0). "
                         f"Received: {shard!r}") from None
    if not 0 <= index < count <= n_masks:
        raise InputError(f"--shard {index}/{count}: expected 0 <= I < K <= --masks ({n_masks}).")
    return range(index * n_masks // count, (index + 1) * n_masks // count)


def _parse(argv):
    from subnet.cli import ArgumentParser, HelpFormatter

    parser = ArgumentParser(
        prog="python -m subnet.record", formatter_class=HelpFormatter,
        description="Records which random subnetworks (unit masks) predict which test examples, "
                    "or one shard of that record; 'python -m subnet.record merge OUT SHARD...' "
                    "joins shards.",
        epilog="Exit codes: 0 done, 2 bad input (one line), 1 internal error, 130 interrupted.")
    parser.add_argument("model", help="the trained classifier, a .keras or .h5 file")
    parser.add_argument("--out", required=True,
                        help="the record folder: new, empty, or a record subnet made (with "
                             "--resume, the record to continue); any other folder is refused")
    parser.add_argument("--dataset", required=True, help="mnist, fashion_mnist or PATH.npz")
    parser.add_argument("--data-dir", default=None, help="folder with the dataset's IDX files")
    parser.add_argument("--masks", type=int, default=1500, help="masks in the whole record")
    parser.add_argument("--examples", type=int, default=1000,
                        help="test examples (the first N) each mask is evaluated on")
    parser.add_argument("--seed", type=int, default=0, help="seed of the masks")
    parser.add_argument("--rate", default="auto",
                        help="auto (default): the model's own dropout rates where every site "
                             "has a Dropout and masks at them are not near chance, else one "
                             "keep probability calibrated on the last "
                             f"{CALIBRATION_EXAMPLES} training examples (never the test set) "
                             "so that random subnetworks sit halfway between chance and the "
                             "whole model; or R, a dropout rate in (0, 1) for sites with no "
                             "Dropout layer after them")
    parser.add_argument("--shard", default=None, help="I/K: record shard I of K only")
    parser.add_argument("--backend", choices=("auto", "fast", "graph", "reference"), default="auto")
    parser.add_argument("--resume", action="store_true", help="continue an interrupted record")
    parser.add_argument("--ray", default=None, metavar="ADDRESS",
                        help="evaluate the chunks as Ray tasks: 'local' starts Ray on this "
                             "machine, 'auto' joins the cluster this machine belongs to, or a "
                             "ray://HOST:PORT address (needs pip install 'subnet[ray]'); "
                             "'processes' or 'processes:N': N worker processes here")
    parser.add_argument("--chunk-size", type=int, default=64,
                        help="masks per chunk file (and per Ray task)")
    parser.add_argument("--trust-model", action="store_true",
                        help="allow code inside the model file (Lambda layers) to run")
    parser.add_argument("--quiet", action="store_true", help="no progress output")
    return parser.parse_args(argv)


def _record_command(args) -> int:
    import json

    # Everything that needs no model is checked first, before TensorFlow loads.
    for name, value, low in (("masks", args.masks, 1), ("examples", args.examples, 1),
                             ("seed", args.seed, 0), ("chunk-size", args.chunk_size, 1)):
        if value < low:
            raise InputError(f"--{name} must be at least {low}. Received: {value}")
    rate = parse_rate(args.rate)
    masks = shard_range(args.masks, args.shard) if args.shard else range(args.masks)
    out = Path(args.out)
    check_record_folder(out, resume=args.resume, name="--out")
    if not args.resume and holds_record(out):
        raise InputError(f"--out {clean(str(out))!r} already holds a record; add --resume to "
                         "continue it, or choose another --out.")

    from subnet._quiet import quiet_tensorflow_warnings

    quiet_tensorflow_warnings()  # imports TensorFlow
    from subnet.data import load_dataset
    from subnet.distributed import executor_from_address
    from subnet.models import load_model, with_dropout

    model = load_model(args.model, trust=args.trust_model)
    deterministic = with_dropout(model, on=False)
    choose_keep(deterministic, 0.5 if rate == "auto" else rate,  # model problems first
                rates_from=model)
    shape = tuple(model.inputs[0].shape[1:])
    # Only the test examples recorded are read (memory follows --examples, not the file).
    data = load_dataset(args.dataset, data_dir=args.data_dir, n_test=args.examples,
                        layout_3d="sequences" if len(shape) == 2 else "images")
    n = min(args.examples, len(data.x_test))
    keep = _cli_keep(deterministic, model, rate, data, out, args)
    # The folder is claimed here, so that its refusals name --out; record_masks claims it again.
    with claim_record_folder(out, resume=args.resume, name="--out"), \
            executor_from_address(args.ray) as executor:
        # The same record python -m subnet.analyze makes: dropout off, the first n test examples.
        record = record_masks(deterministic, data.x_test[:n], data.y_test[:n],
                              args.masks, seed=args.seed, rate=keep, out=out,
                              resume=args.resume, masks=masks, backend=args.backend,
                              chunk_size=args.chunk_size, progress=not args.quiet,
                              executor=executor)
    print(json.dumps({"out": str(out), "masks": [masks.start, masks.stop],
                      "n_masks": int(record.n_masks), "n_examples": int(record.n_examples),
                      "complete": bool(record.is_complete), "backend": record.meta["backend"],
                      "keep": keep.keep, "keep_source": keep.source, "rescale": keep.rescale,
                      "executor": executor.name}))
    return 0


def _cli_keep(model, parent, rate, data, out: Path, args) -> KeepProbabilities:
    """The keep probabilities of the command's record: those of the record being continued
    (--resume with --rate auto), else :func:`choose_keep` on the last
    :data:`CALIBRATION_EXAMPLES` training examples, with the masks' seed."""
    if args.resume and rate == "auto" and holds_record(out) and (out / "meta.json").is_file():
        return keep_of_record(MaskRecord.load(out).meta)
    x = y = held_out = None
    if rate == "auto" and data.x_train is not None and len(data.x_train) >= 10:
        k = min(CALIBRATION_EXAMPLES, len(data.x_train))
        x, y = data.x_train[-k:], data.y_train[-k:]
        held_out = f"the last {k} training examples (never the test set)"
    keep, _ = choose_keep(model, rate, x, y, seed=args.seed, held_out=held_out,
                          rates_from=parent)
    return keep


def _merge_command(argv) -> int:
    import json

    if len(argv) < 2:
        raise InputError("usage: python -m subnet.record merge OUT SHARD_DIR [SHARD_DIR ...]")
    out, shards = argv[0], argv[1:]
    check_record_folder(out, name="OUT")
    # Claimed here so that its refusals name OUT; MaskRecord.merge claims it again, and a merge
    # refused there (shards that differ) leaves no folder behind.
    with claim_record_folder(out, name="OUT"):
        merged = MaskRecord.merge(shards, out)
    print(json.dumps({"out": str(out), "shards": len(shards), "n_masks": int(merged.n_masks),
                      "complete": bool(merged.is_complete)}))
    return 0


def main(argv=None) -> int:
    """Entry point of ``python -m subnet.record``; returns the exit code."""
    from subnet.cli import run_main

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["merge"]:
        return run_main(lambda: _merge_command(argv[1:]), "subnet.record")
    try:
        args = _parse(argv)
    except SystemExit as exit_:  # --help or a usage error (already printed)
        return int(exit_.code or 0)
    return run_main(lambda: _record_command(args), "subnet.record")


if __name__ == "__main__":
    sys.exit(main())
