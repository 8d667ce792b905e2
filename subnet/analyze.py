"""``python -m subnet.analyze MODEL``: the whole pipeline in one command, with HTML and PDF reports.

It answers the blog's question for one trained classifier: how accuracy behaves under test-time
dropout, which units matter and how sure we are, how small a subnetwork can be and still match the
whole, and how that compares with magnitude pruning. Stages, each resumable with ``--resume``:

1. ``blog``: test accuracy with dropout off and on (element-wise, as Keras applies it), the class
   probabilities of a few test images across passes;
2. ``record``: random unit masks at the sites' keep probabilities on test examples
   (:func:`subnet.record_masks`), per-mask and per-example accuracy. The keep probabilities
   (``keep``, before ``blog``) are the model's own dropout rates where every site has a Dropout
   and masks at them are not near chance, else calibrated on held-out training examples
   (:func:`subnet.record.choose_keep`, :func:`subnet.calibrate_keep`), or ``--rate R``;
3. ``importance``: Banzhaf values with 95 % intervals and FDR-controlled significance,
   class-conditional importance and the interaction graph of the top units;
4. ``comparison``: subnetworks chosen by mask statistics, magnitude, random units and TFMOT at
   several FLOP budgets and seeds, one-shot and fine-tuned (:func:`subnet.compare`);
5. ``answer``: the smallest subnetwork within ``--tolerance`` of the whole, in sentences.

Outputs in ``--out``: ``results.json`` (every number, the config, seeds, versions and input
fingerprints), ``report.html``, ``report.pdf``, ``record/``, ``comparison.json``,
``subnetwork.keras`` (the answer's subnetwork) and ``models/``; each appears atomically.

Exit codes: 0 success; 2 bad input (one line, no traceback); 1 internal error (the traceback is
saved to ``DIR/analyze-error.log``); 130 interrupted.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import hashlib
import json
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

import subnet
from subnet._cli import ArgumentParser, HelpFormatter, byte_count, run_main
from subnet._io import atomic_write_bytes, atomic_write_text
from subnet._outdir import MARKER, claim
from subnet.errors import InputError, InputTypeError, clean
from subnet.methods import accepted, method_name
from subnet.record import NEAR_CHANCE, parse_rate
from subnet.results import SCHEMA_VERSION

__all__ = ["Settings", "analyze", "main"]

DATASETS = ("mnist", "fashion_mnist")
METHODS = accepted("quick")
FORMATS = ("html", "pdf", "json")
STAGES = ("keep", "blog", "record", "importance", "comparison", "uncertainty")
THOROUGH_METHODS = accepted("thorough", default=True)
# What a run writes in --out, and so all that a new run there may delete (see subnet._outdir).
_FINAL_OUTPUTS = ("results.json", "report.html", "report.pdf", "subnetwork.keras",
                  "analyze-error.log")
OUTPUTS = ("state", "record", "models", "comparison.json", *_FINAL_OUTPUTS)
# Upper bounds of the counts a user gives: far above any sensible run, low enough that a typo
# (an extra zero or ten) is refused before memory or hours are spent on it.
LIMITS = {"masks": 10_000_000, "examples": 1_000_000, "repeats": 100, "passes": 10_000,
          "seed": 2**32 - 1, "selection_examples": 1_000_000, "steps_per_halving": 100,
          "step_masks": 1_000_000, "uncertainty_passes": 10_000}
#: Test examples read besides ``--examples``: the blog's accuracies use the first
#: max(``--examples``, TEST_EXAMPLES) test examples (all of MNIST's 10,000), and no more are read
#: from the data file, however many it holds.
TEST_EXAMPLES = 10_000
#: The out-of-distribution set ``--ood auto`` takes for each built-in data set.
OOD_AUTO = {"mnist": "fashion_mnist", "fashion_mnist": "mnist"}


@dataclasses.dataclass(frozen=True)
class Settings:
    """Everything that decides an analysis' numbers (``--quick`` swaps in :meth:`quick_settings`).

    The defaults are sized for about ten minutes on two CPU cores (the blog's network: three
    budgets from 2x to 32x fewer FLOPs, one seed). For claims, give ``--repeats 3`` (spread over
    seeds), more budgets and a larger fine-tuning budget, as ``analyses/compare_blog_model.py``
    does.

    Attributes:
        dataset: ``mnist``, ``fashion_mnist`` or a ``.npz`` path; None infers it.
        masks: Random masks recorded on the test examples.
        examples: Test examples the masks are evaluated on.
        rate: ``"auto"`` (None is the same): the model's own dropout rates where every site
            has a Dropout and random subnetworks at them are not within 5 points of chance,
            else one keep probability calibrated on the last ``selection_examples`` training
            examples (:func:`subnet.record.choose_keep`); or a dropout rate in (0, 1) for sites
            with no Dropout after them.
        seed: Base seed; comparison seeds are ``seed, seed + 1, ...``.
        repeats: Seeds of the comparison.
        budgets: FLOP fractions of the comparison.
        methods: Comparison methods.
        finetune_epochs: Fine-tuning budget of every subnetwork, in epochs.
        tolerance: Accuracy (a fraction) the answer's subnetwork may lose against the whole.
        passes: Passes with test-time dropout on, for the blog's experiment.
        uncertainty_passes: Passes (and random unit subnetworks) of the uncertainty section's
            ensembles, measured on ``examples`` test examples.
        ood: Out-of-distribution test images for the uncertainty section: ``"auto"`` (MNIST
            for a Fashion-MNIST model and the reverse, none otherwise), ``"none"``, or a data
            set name or ``.npz`` path of the model's input shape.
        selection_examples: Training examples the comparison chooses units on.
        steps_per_halving: Steps per halving of the FLOPs of iterative mask-statistics pruning.
        step_masks: Masks per step of it.
        quick: Whether these are the ``--quick`` settings.
        time_budget: Seconds the stages may take (None: no budget): masks, examples, held-out
            examples, fine-tuning epochs and passes are sized from the model's measured costs
            so that each stage fits its share (:mod:`subnet.plan`); ``--quick`` sets
            :data:`QUICK_SECONDS`.
        calibration_examples: Held-out training examples the keep probabilities are
            calibrated on (None: ``selection_examples``).
        sized: The settings a time budget may change (None: all it sizes); the command line
            leaves out those given explicitly.
        protocol: ``"quick"`` (the comparison above: one-shot cuts and a short fine-tune) or
            ``"thorough"`` (the frontier protocol, :func:`subnet.frontier.compare_gradual`:
            gradual prune-retrain trajectories through the budgets, each subnetwork fine-tuned
            to saturation with early stopping on a validation split and distilled from the
            parent's dropout ensemble, beside a Scratch-E control; hours rather than minutes).
    """

    dataset: str | None = None
    masks: int = 1500
    examples: int = 1000
    rate: float | str | None = "auto"
    seed: int = 0
    repeats: int = 1
    budgets: tuple = (1 / 2, 1 / 8, 1 / 32)
    methods: tuple = accepted("quick", default=True)
    finetune_epochs: float = 0.25
    tolerance: float = 0.005
    passes: int = 5
    uncertainty_passes: int = 10
    ood: str = "auto"
    selection_examples: int = 1000
    steps_per_halving: int = 2
    step_masks: int = 250
    quick: bool = False
    protocol: str = "quick"
    time_budget: float | None = None
    calibration_examples: int | None = None
    sized: tuple | None = None

    @classmethod
    def quick_settings(cls, **changes) -> Settings:
        """Small settings for a first look, sized to :data:`QUICK_SECONDS` of stages."""
        base = dict(masks=300, examples=500, repeats=1, budgets=(1 / 4, 1 / 16),
                    methods=("banzhaf", "magnitude", "random"), finetune_epochs=0.1, passes=3,
                    uncertainty_passes=5, selection_examples=500, steps_per_halving=1,
                    step_masks=150, quick=True, time_budget=QUICK_SECONDS)
        return cls(**{**base, **changes})

    def __post_init__(self):
        for name in ("budgets", "methods", "sized"):  # lists welcome; stored as tuples
            if isinstance(getattr(self, name), list):
                object.__setattr__(self, name, tuple(getattr(self, name)))

        def check(name, ok, expected):
            if not ok:
                where = f"--{name.replace('_', '-')}" if name in _CLI_SETTINGS else \
                    f"Settings.{name}"
                value = getattr(self, name)
                if isinstance(value, tuple) and where.startswith("--"):  # as it was typed
                    shown = ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value)
                else:
                    shown = repr(value)
                raise InputError(f"Invalid value for {where}: expected {expected}. Received: "
                                 f"{clean(shown, limit=200)}")

        def count(name, low):
            high = LIMITS[name]
            check(name, _is_int(getattr(self, name)) and low <= getattr(self, name) <= high,
                  f"an int in [{low}, {high:,}]")

        def number(value) -> bool:
            return isinstance(value, (int, float, np.number)) and not isinstance(value, bool) \
                and bool(np.isfinite(value))

        if self.rate is None:
            object.__setattr__(self, "rate", "auto")
        count("masks", 20)
        count("examples", 10)
        check("rate", self.rate == "auto" or (number(self.rate) and 0 < self.rate < 1),
              "'auto' or a dropout rate in (0, 1)")
        count("seed", 0)
        count("repeats", 1)
        count("passes", 1)
        count("uncertainty_passes", 1)
        check("ood", isinstance(self.ood, str) and bool(self.ood),
              "'auto', 'none', a data set name or a .npz path")
        check("budgets", isinstance(self.budgets, tuple) and len(self.budgets) >= 1 and all(
            number(b) and 0 < b < 1 for b in self.budgets),
              "FLOP fractions in (0, 1), e.g. 0.5,0.25,0.125")
        check("methods", isinstance(self.methods, tuple) and len(self.methods) >= 1 and all(
            isinstance(m, str) for m in self.methods) and set(self.methods) <= set(METHODS),
              f"names among {', '.join(METHODS)}")
        check("finetune_epochs", number(self.finetune_epochs) and
              0 <= self.finetune_epochs <= 100, "a number of epochs in [0, 100]")
        check("tolerance", number(self.tolerance) and 0 <= self.tolerance < 1,
              "a fraction in [0, 1) (on the command line: points in [0, 100))")
        count("selection_examples", 10)
        count("steps_per_halving", 1)
        count("step_masks", 20)
        check("protocol", self.protocol in ("quick", "thorough"), "'quick' or 'thorough'")
        check("time_budget", self.time_budget is None or (
            number(self.time_budget) and 1 <= self.time_budget <= 30 * 86400),
              "None or seconds in [1, 2592000] (on the command line: 90s, 30m, 2h)")
        check("calibration_examples", self.calibration_examples is None or (
            _is_int(self.calibration_examples) and 10 <= self.calibration_examples <= 1_000_000),
              "None or an int in [10, 1,000,000]")
        check("sized", self.sized is None or (isinstance(self.sized, tuple) and set(
            self.sized) <= set(SIZED)), f"None or names among {', '.join(SIZED)}")
        if self.protocol == "thorough":
            gradual = accepted("thorough")
            check("methods", set(self.methods) <= set(gradual),
                  f"names among {', '.join(gradual)} for --protocol thorough")
        for method in ("tfmot", "reinit"):
            if method in self.methods and "banzhaf" not in self.methods:
                raise InputError(f"Invalid value for --methods: {method} is built on the banzhaf "
                                 "subnetwork (its nonzero weights or its widths), so it needs "
                                 "banzhaf among the methods.")

    @property
    def seeds(self) -> list[int]:
        return [self.seed + i for i in range(self.repeats)]

    def to_dict(self) -> dict:
        return {**dataclasses.asdict(self), "budgets": list(self.budgets),
                "methods": list(self.methods), "seeds": self.seeds}


# The settings the command line sets (an error about another names the Settings field).
_CLI_SETTINGS = {"protocol", "dataset", "masks", "examples", "rate", "seed", "repeats", "budgets",
                 "methods", "finetune_epochs", "tolerance", "passes", "quick",
                 "uncertainty_passes", "ood", "time_budget"}
#: Seconds of stages ``--quick`` plans for (TensorFlow's start, loading and the report come on
#: top: about 2 minutes in all on the blog's network).
QUICK_SECONDS = 75.0
#: The settings a time budget sizes (:mod:`subnet.plan`).
SIZED = ("calibration_examples", "masks", "examples", "selection_examples", "step_masks",
         "steps_per_halving", "finetune_epochs", "passes", "uncertainty_passes")


def _is_int(value) -> bool:
    return isinstance(value, (int, np.integer)) and not isinstance(value, bool)


def _exists(path) -> bool:
    try:
        return Path(path).exists()
    except (OSError, ValueError):  # a path the system cannot even look up: its reader says why
        return True


def _check_paths(model_path, settings: Settings, *, data_dir=None, record=None) -> None:
    """Refuses, before TensorFlow is imported, paths that do not exist: the model file,
    ``--dataset`` and ``--ood`` where they are not data set names, ``--data-dir``, ``--record``."""
    from subnet.data import KNOWN_DATASETS
    from subnet.errors import DataError, ModelFileError, RecordError

    if not _exists(model_path):
        raise ModelFileError(f"Model file not found: {clean(str(model_path))!r}. Check the path "
                             "(the MODEL argument: a .keras or .h5 file).")
    names = ", ".join(KNOWN_DATASETS)
    for option, value, words in (("--dataset", settings.dataset, ()),
                                 ("--ood", settings.ood, ("auto", "none"))):
        if value is None or value in words or \
                value.strip().lower().replace("-", "_") in KNOWN_DATASETS or _exists(value):
            continue
        raise DataError(f"{option} {clean(value, limit=200)!r}: unknown data set, and no such "
                        f"file; give {names}, or the path of a .npz file (or of a folder of IDX "
                        "files)" + (", or none." if option == "--ood" else "."))
    if data_dir is not None and not _exists(data_dir):
        raise DataError(f"--data-dir {clean(str(data_dir), limit=200)!r} does not exist; give the "
                        "folder that holds the data set's IDX files (or its .npz file), or leave "
                        "--data-dir out.")
    if record is not None and not Path(record).is_dir():
        raise RecordError(f"--record {clean(str(record), limit=200)!r} is not a folder; give the "
                          "folder python -m subnet.record wrote (its --out), or leave --record "
                          "out to record here.")


def _check_max_data_bytes(value) -> int | None:
    if value is not None and (not _is_int(value) or value < 1):
        raise InputError(f"Invalid value for --max-data-bytes (max_data_bytes): expected a "
                         f"positive number of bytes. Received: {clean(repr(value), limit=100)}")
    return None if value is None else int(value)


def _check_formats(formats) -> tuple:
    formats = tuple(formats)
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown:
        raise InputError(f"Invalid value for --formats: {unknown}; expected names among "
                         f"{', '.join(FORMATS)}, e.g. html,pdf,json.")
    return formats


def _check_ray_address(address: str | None) -> None:
    """Refuses a ``--ray`` value that is no address, before Ray or TensorFlow start."""
    if address is None or address in ("local", "auto"):
        return
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        raise InputError(f"Invalid value for --ray: expected local, auto, HOST:PORT or "
                         f"ray://HOST:PORT. Received: {clean(address, limit=100)!r}")


# --------------------------------------------------------------------------------- the pipeline

def analyze(model_path: str | Path, out: str | Path, settings: Settings | None = None, *,
            formats: Sequence[str] = FORMATS, resume: bool = False, trust_model: bool = False,
            data_dir: str | Path | None = None, progress: bool = True,
            command: Sequence[str] | None = None, record: str | Path | None = None,
            executor=None, max_data_bytes: int | None = None) -> dict:
    """Runs the whole analysis of one model file and writes results and reports.

    Args:
        model_path: A ``.keras`` or ``.h5`` classifier.
        out: Output folder (created).
        settings: A :class:`Settings` (default: the defaults).
        formats: Any of ``html``, ``pdf``, ``json`` (``results.json`` is always written).
        resume: Reuse the stages a previous run with the same settings, model and data finished.
        trust_model: Allow Lambda layers (code inside the model file) to run.
        data_dir: Folder with the dataset's IDX files, tried first.
        progress: Progress bars and stage lines on stderr.
        command: The command line, recorded in the results.
        record: A complete record of this model (dropout off) on the first test examples, made
            by ``python -m subnet.record`` (one process, or merged shards), used instead of
            recording: its masks and examples replace ``settings.masks`` and
            ``settings.examples``; its seed must be ``settings.seed``. It is copied into ``out``.
        executor: Where the record's chunks and the comparison's cells run
            (:mod:`subnet.distributed`): None here; a :class:`~subnet.distributed.RayExecutor`
            as Ray tasks. The results are the same.
        max_data_bytes: The most bytes the data set's arrays may declare, decompressed (None:
            :data:`subnet.data.MAX_BYTES`). Of its test split, only the first
            max(``settings.examples``, :data:`TEST_EXAMPLES`) examples are read.

    Returns:
        The results dict (as written to ``results.json``).

    Raises:
        ValueError: Bad input: missing or corrupt model, untrusted code, no maskable layer, a
            dataset that does not fit the model, bad settings.
    """
    settings = settings or Settings()
    if not isinstance(settings, Settings):
        raise InputTypeError(f"`settings` must be a subnet.analyze.Settings. Received: "
                             f"{type(settings).__name__}")
    formats = _check_formats(formats)
    model_path = Path(model_path)
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise InputError(f"--out {clean(str(out))!r} exists and is not a folder; choose a "
                         "folder.")
    log = _Log(progress)
    started = time.perf_counter()
    # Everything that can be wrong with the input is found before any work or any write, and
    # what needs no model before TensorFlow is imported (an error comes in a second).
    _check_paths(model_path, settings, data_dir=data_dir, record=record)
    max_data_bytes = _check_max_data_bytes(max_data_bytes)
    source = None
    if record is not None:
        source = _given_record(record, settings)
        settings = dataclasses.replace(settings, masks=source.n_masks,
                                       examples=source.n_examples)
    from subnet.models import load_model

    model = load_model(model_path, trust=trust_model)
    _check_budgets(model, 0.5, settings.budgets)  # model problems first, before loading data
    _check_methods(model, settings.methods)
    data, inferred = _dataset(model, settings, data_dir, log, max_data_bytes)
    settings = dataclasses.replace(settings, dataset=settings.dataset or inferred)
    settings = _fit_to_data(settings, data, log)
    ood_data = _ood_dataset(data, settings, max_data_bytes)
    if source is not None:
        _check_given_record(source, model, data, settings)
    _check_outputs(model, model_path, data, settings)
    log(f"model: {model.name} from {model_path}; data: {data.name} ({len(data.x_test)} test "
        f"examples, from {data.source})")

    with claim(out, "subnet.analyze", OUTPUTS, fresh=not resume):
        plan = None
        if settings.time_budget is not None:
            settings, plan = _planned(model, data, settings, out, resume, source, log)
        if source is not None and not (out / "record").exists():
            _copy_tree_atomic(Path(source.path), out / "record")
        return _run(model, model_path, out, settings, data, formats=formats,
                    resume=resume, trust_model=trust_model, progress=progress,
                    command=command, log=log, started=started, ood_data=ood_data,
                    executor=executor, plan=plan)


def _planned(model, data, settings: Settings, out: Path, resume: bool, source, log):
    """``settings`` sized to their time budget from the model's measured costs
    (:mod:`subnet.plan`), and the plan; a resumed run reuses the plan it made (its measured
    costs would differ, and with them the settings its finished stages were made with)."""
    from subnet.models import dropout_layers, with_dropout
    from subnet.plan import Plan, measure, plan

    asked = json.dumps(settings.to_dict(), sort_keys=True)
    saved = out / "state" / "plan.json"
    if resume and saved.is_file():
        stored = json.loads(saved.read_text())
        if stored.get("asked") == asked:
            made = Plan.from_dict(stored["plan"])
            log("time budget: the plan of the run being resumed")
            return dataclasses.replace(settings, **made.values), made
    sized = set(SIZED if settings.sized is None else settings.sized)
    if source is not None:  # a given record fixes its masks and examples
        sized -= {"masks", "examples"}
    deterministic = with_dropout(model, on=False)
    n_train = 0 if data.x_train is None else len(data.x_train)
    start = time.perf_counter()
    costs = measure(deterministic, data.x_test, data.x_train, data.y_train, seed=settings.seed)
    values = {name: getattr(settings, name) for name in SIZED}
    values["calibration_examples"] = min(values["calibration_examples"] or
                                         settings.selection_examples, max(n_train, 10))
    dropout = bool(dropout_layers(model))
    about = dict(n_train=n_train, n_test=len(data.x_test),
                 auto_keep=settings.rate == "auto" and not dropout, dropout=dropout,
                 methods=settings.methods,
                 budgets=settings.budgets, repeats=settings.repeats)
    made = plan(values, costs, settings.time_budget, grow=not settings.quick, **about)
    kept = {name: (made.values[name] if name in sized else values[name]) for name in SIZED}
    made = dataclasses.replace(
        made, values=kept, changes={k: v for k, v in made.changes.items() if k in sized})
    log(f"time budget {settings.time_budget:.0f} s: costs measured in "
        f"{time.perf_counter() - start:.1f} s (one masked evaluation "
        f"{costs.mask_example * 1e6:.0f} us, one training example "
        f"{costs.train_example * 1e6:.0f} us); " + (", ".join(
            f"{k} {a} -> {b:.3g}" if isinstance(b, float) else f"{k} {a} -> {b}"
            for k, (a, b) in made.changes.items()) or "nothing changed"))
    saved.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(saved, json.dumps({"asked": asked, "plan": made.to_dict()}))
    return dataclasses.replace(settings, **kept), made


def _copy_tree_atomic(source: Path, dest: Path) -> None:
    """Copies a folder beside ``dest`` and renames it into place, so ``dest`` appears whole."""
    import os
    import shutil
    import tempfile

    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        shutil.copytree(source, tmp, dirs_exist_ok=True)
        os.replace(tmp, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _given_record(path, settings: Settings):
    """The ``--record`` folder, checked to be a complete record of the settings' seed."""
    from subnet.errors import RecordError
    from subnet.masks import MaskRecord

    try:
        source = MaskRecord.load(path)
    except RecordError as err:
        reason = _file_terms(str(err)).rstrip(".")
        raise RecordError(f"--record {clean(str(path))}: {reason}. Give a folder that python -m "
                          "subnet.record wrote, or leave --record out to record here.") from None
    for what, n, low in (("masks", source.n_masks, 20), ("examples", source.n_examples, 10)):
        if not low <= n <= LIMITS[what]:
            raise RecordError(f"--record {clean(str(path))} holds {n:,} {what}; subnet.analyze "
                              f"needs {low} to {LIMITS[what]:,}. Record again with python -m "
                              f"subnet.record ... --{what} N (N in that range).")
    if not source.is_complete:
        raise RecordError(f"--record {clean(str(path))}: the record is incomplete; finish it "
                          "(python -m subnet.record ... --resume) or merge all its shards "
                          "first.")
    seed = int(source.meta["seed"])
    if seed != settings.seed:
        raise RecordError(f"--record {clean(str(path))} was made with seed {seed}; pass "
                          f"--seed {seed}.")
    return source


def _file_terms(message: str) -> str:
    """A record reader's message with the metadata keys written as in ``meta.json``
    (``n_masks``, ``sites[0].units``), not as the Python expression ``meta['n_masks']``."""
    import re

    def key_path(match: re.Match) -> str:
        parts = re.findall(r"\['([^']*)'\]|\[(\d+)\]", match.group(1))
        text = "".join(f".{name}" if name else f"[{index}]" for name, index in parts)
        return text.lstrip(".")

    return re.sub(r"`?meta((?:\['[^']*'\]|\[\d+\])+)`?", key_path, message)


def _check_outputs(model, model_path, data, settings: Settings) -> None:
    """Refuses a model whose outputs are not finite on the examples the analysis uses (NaN or
    infinite weights, or weights so large that they overflow), before any work."""
    from subnet._tf import keras

    n = min(settings.examples, len(data.x_test))
    bad = 0
    for start in range(0, n, 1000):  # eager calls: no tf.function traced for one look
        out = keras.ops.convert_to_numpy(model(data.x_test[start:min(n, start + 1000)],
                                               training=False))
        bad += int(np.sum(~np.isfinite(out).all(axis=-1)))
    if bad:
        raise InputError(f"The model in {clean(str(model_path))!r} gives NaN or infinite outputs "
                         f"on {bad:,} of the first {n:,} test examples of {data.name}: its "
                         "weights hold NaN or infinite values, or values so large that they "
                         "overflow float32 (a diverged training run gives such weights). Train "
                         "it again, or save the model from a checkpoint before it diverged.")


def _check_given_record(source, model, data, settings: Settings) -> None:
    """The ``--record`` must be of this model (dropout off) and these test examples."""
    from subnet.errors import RecordError
    from subnet.models import with_dropout
    from subnet.record import data_fingerprint, model_fingerprint

    if source.meta["model_fingerprint"] != model_fingerprint(with_dropout(model, on=False)):
        raise RecordError(f"--record {source.path} was made from other weights than this "
                          "model's; give the record of this model file, or leave --record out "
                          "to record here.")
    n = source.n_examples
    if n > len(data.x_test) or source.meta["data_fingerprint"] != data_fingerprint(
            data.x_test[:n], data.y_test[:n]):
        raise RecordError(f"--record {source.path} was made on other examples than the first "
                          f"{n} test examples of {data.name}; give the --dataset (and "
                          "--data-dir) it was recorded on, or leave --record out to record "
                          "here.")


def _run(model, model_path: Path, out: Path, settings: Settings, data, *, formats,
         resume: bool, trust_model: bool, progress: bool, command, log, started: float,
         ood_data=None, executor=None, plan=None) -> dict:
    """The stages of :func:`analyze`, in an output folder it has claimed and locked."""
    model_sha = hashlib.sha256(model_path.read_bytes()).hexdigest()
    key = hashlib.sha256(json.dumps([settings.to_dict(), model_sha, data.fingerprint()],
                                    sort_keys=True).encode()).hexdigest()[:16]
    state = _State(out, key, resume)
    timings: dict = {}
    earlier = state.get("timings") or {}  # seconds of the stages an earlier run finished
    reused: list = []

    def stage(name, compute):
        start = time.perf_counter()
        value = state.get(name)
        if value is None:
            log(f"stage {name} ...")
            value = compute()
            state.put(name, value)
            timings[name] = round(time.perf_counter() - start, 1)
            state.put("timings", {**earlier, **timings})
            log(f"stage {name}: done in {timings[name]:.1f} s")
        else:
            log(f"stage {name}: reused from an earlier run (--resume)")
            timings[name] = float(earlier.get(name, 0.0))
            reused.append(name)
        return value

    from subnet.keep import KeepProbabilities
    from subnet.models import with_dropout

    deterministic = with_dropout(model, on=False)
    record_dir = out / "record"
    chosen = stage("keep", lambda: _keep(model, deterministic, data, settings, record_dir))
    keep = KeepProbabilities.from_dict(chosen["keep"])
    rate = keep.rates
    blog = stage("blog", lambda: _blog(model, deterministic, data, settings, keep))
    recorded = stage("record", lambda: _record(deterministic, data, settings, keep, record_dir,
                                                progress, executor))
    importance = stage("importance", lambda: _importance(record_dir))
    comparison = stage("comparison", lambda: _comparison(deterministic, data, settings, keep,
                                                         out, progress, parent=model,
                                                         executor=executor))
    uncertainty = stage("uncertainty", lambda: _uncertainty(
        model, data, settings, rate, ood_data, _subnetwork_files(comparison, settings),
        trust=trust_model, rescale=keep.rescale))
    answer = _answer(comparison, settings, blog)
    answer["subnetwork"] = _save_subnetwork(answer, out)
    keep_section = _keep_section(chosen, recorded)
    sentence = _chance_sentence(keep_section)
    if sentence:  # one sentence, after the answer's own
        answer["sentences"] = [*answer.get("sentences", []), sentence]
    blog = {**blog, "mask_accuracy": recorded["mask_accuracy"], "record": recorded["record"]}
    if blog.get("accuracy_dropout_on_mean") is None:  # no Dropout layer: unit masks stand in
        accuracy = np.asarray(recorded["mask_accuracy"])
        blog.update(accuracy_dropout_on_mean=float(accuracy.mean()),
                    accuracy_dropout_on_std=float(accuracy.std(ddof=1)),
                    passes=len(accuracy), ensemble_accuracy=recorded["vote_accuracy"])
    results = {
        "schema_version": SCHEMA_VERSION, "subnet_version": subnet.__version__,
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": list(command) if command is not None else [],
        "config": {**settings.to_dict(), "formats": list(formats), "resume": resume,
                   "trust_model": trust_model, "rates": rate, "key": key},
        "versions": subnet.versions(),
        "inputs": {"model": {"path": str(model_path), "sha256": model_sha,
                             "bytes": model_path.stat().st_size},
                   "dataset": {"name": data.name, "source": str(data.source),
                               "layout": data.layout, "fingerprint": data.fingerprint(),
                               "n_train": 0 if data.x_train is None else len(data.x_train),
                               "n_test": len(data.x_test)}},
        # Each stage's seconds as computed, also when this run reused it; the total is the
        # computation behind these results: this run's plus the reused stages'.
        "timings": {**timings, "total": round(time.perf_counter() - started + sum(
            timings[name] for name in reused), 1)},
        "reused_stages": reused,
        "model": _model_summary(deterministic, rate),
        "keep": keep_section,
        "blog": blog,
        "robustness": recorded["robustness"],
        "importance": importance,
        "comparison": comparison,
        "uncertainty": uncertainty,
        "answer": answer,
        "plan": None if plan is None else plan.to_dict(),
    }
    results = _jsonable(results)
    from subnet.report.schema import validate_results

    try:  # a results.json that its own reader refuses is never written: that is a bug here
        validate_results(results)
    except InputError as err:
        raise RuntimeError(f"the results do not match their schema: {err}") from err
    atomic_write_text(out / "results.json", json.dumps(results, indent=1))
    wanted = [f for f in formats if f in ("html", "pdf")]
    if wanted:
        from subnet.report import write_reports

        log("writing reports ...")
        write_reports(results, out, formats=wanted)
    log(f"done in {time.perf_counter() - started:.0f} s: " + ", ".join(
        str(out / name) for name in ["results.json"] + [f"report.{f}" for f in wanted]))
    return results


class _Log:
    def __init__(self, enabled: bool):
        self.enabled = enabled

    def __call__(self, message: str) -> None:
        if self.enabled:  # names and paths come from files: no control characters reach the tty
            print(f"subnet.analyze: {clean(message)}", file=sys.stderr, flush=True)


class _State:
    """Finished stages as JSON files under ``DIR/state``, valid for one settings key."""

    def __init__(self, out: Path, key: str, resume: bool):
        self.dir = out / "state"
        self.key = key
        # A run that does not resume found its folder emptied of subnet's outputs by claim().
        if resume and (self.dir / "key").exists() and (self.dir / "key").read_text() != key:
            raise InputError(f"--resume: {clean(str(out))!r} holds an analysis with other "
                             "settings, model or data; drop --resume to start again, or choose "
                             "another --out.")
        if resume:  # the results of the run being resumed no longer describe this folder
            for name in _FINAL_OUTPUTS:
                (out / name).unlink(missing_ok=True)
        self.dir.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.dir / "key", key)

    def get(self, name: str):
        path = self.dir / f"{name}.json"
        return json.loads(path.read_text()) if path.exists() else None

    def put(self, name: str, value) -> None:
        atomic_write_text(self.dir / f"{name}.json", json.dumps(_jsonable(value)))


def _dataset(model, settings: Settings, data_dir, log, max_data_bytes: int | None = None):
    """Loads the dataset, inferring it from the model when not given; checks that it fits.

    Of the test split, the first max(``settings.examples``, :data:`TEST_EXAMPLES`) examples are
    read, however many the file holds."""
    from subnet.data import load_dataset

    shape = tuple(int(d) for d in model.inputs[0].shape[1:])
    limits = {"n_test": max(settings.examples, TEST_EXAMPLES), "max_bytes": max_data_bytes}
    if settings.dataset is not None:
        # A 3-D array in a .npz without a `layout` key is (N, L, C) sequences for a model that
        # takes (L, C), else (N, H, W) grayscale images.
        data = load_dataset(settings.dataset, data_dir=data_dir,
                            layout_3d="sequences" if len(shape) == 2 else "images", **limits)
        _check_fits(model, data, settings.dataset)
        return data, data.name
    candidates, failures = [], []
    for name in DATASETS:
        try:
            data = load_dataset(name, data_dir=data_dir, **limits)
        except InputError as err:
            failures.append(err)
            continue
        if tuple(data.input_shape) == shape:
            candidates.append(data)
    if not candidates and data_dir is not None and len(failures) == len(DATASETS):
        raise failures[-1]  # the folder the user named holds neither: say why
    if not candidates:
        raise InputError(f"No known dataset fits the model's input shape {shape} (known: "
                         f"{', '.join(DATASETS)}, 28x28x1); give --dataset PATH.npz.")
    if len(candidates) == 1:
        return candidates[0], candidates[0].name
    # Several datasets share the shape: the one the model classifies well is the one it was
    # trained on. Decided on 500 test examples; anything unclear asks the user.
    scores = {}
    for data in candidates:
        _check_fits(model, data, data.name)
        from subnet.extraction import accuracy

        scores[data.name] = accuracy(model, data.x_test[:500], data.y_test[:500])
    ranked = sorted(scores, key=scores.get, reverse=True)
    best, second = ranked[0], ranked[1]
    if scores[best] < 0.5 or scores[best] - scores[second] < 0.2:
        raise InputError(f"Cannot tell which dataset the model was trained on (accuracy on 500 "
                         f"test examples: {', '.join(f'{k} {v:.1%}' for k, v in scores.items())})"
                         f"; give --dataset.")
    log(f"dataset inferred: {best} (accuracy on 500 test examples: " + ", ".join(
        f"{k} {v:.1%}" for k, v in scores.items()) + ")")
    return next(d for d in candidates if d.name == best), best


def _check_budgets(model, rate: dict, budgets: Sequence[float]) -> None:
    """Refuses FLOP budgets below what one unit per site costs, before any work."""
    from subnet.engine.chain import sites
    from subnet.extraction import as_keep_set

    table = sites(model, rate)
    smallest = as_keep_set(model, {s.name: np.arange(s.units) == 0 for s in table})
    floor = smallest.flops / smallest.dense_flops
    low = [b for b in budgets if b < floor]
    if low:
        raise InputError(f"Invalid value for --budgets: {', '.join(f'{b:g}' for b in low)} "
                         f"{'is' if len(low) == 1 else 'are'} below {floor:.3g}, the FLOP "
                         "fraction of a subnetwork that keeps one unit per site; give budgets "
                         f"in [{floor:.3g}, 1).")


def _check_methods(model, methods: Sequence[str]) -> None:
    """Refuses, before any work, methods that cannot handle this model."""
    from subnet._tf import keras

    code = [layer.name for layer in model.layers if isinstance(layer, keras.layers.Lambda)]
    if "tfmot" in methods and code:
        raise InputError(f"Method tfmot rebuilds the model in tf_keras, which cannot carry the "
                         f"code of Lambda layer {code[0]!r}; leave tfmot out of --methods.")


def _fit_to_data(settings: Settings, data, log) -> Settings:
    """Settings as they will run on ``data``: checked against it, with what had to be changed
    said in the log and stored in the settings (so results.json tells what ran)."""
    from subnet.baselines import tfmot_available

    changes = {}
    fewest = 10  # the fewest test examples the masks may be evaluated on (Settings.examples)
    if len(data.x_test) < fewest:
        raise InputError(f"Dataset {data.name!r} ({clean(data.source, limit=300)}) has "
                         f"{len(data.x_test)} test example{'s' * (len(data.x_test) != 1)}; "
                         f"subnet.analyze evaluates its masks on at least {fewest}. Give a data "
                         f"set with {fewest} or more test examples (x_test, y_test).")
    if settings.examples > len(data.x_test):
        log(f"{data.name} has {len(data.x_test):,} test examples, fewer than the "
            f"{settings.examples:,} to evaluate masks on (--examples): using "
            f"{len(data.x_test):,}")
        changes["examples"] = len(data.x_test)
    if data.x_train is None:
        log(f"{data.name} has no training split: the comparison (which fine-tunes and chooses "
            "units on training examples) is skipped")
    else:
        n_train = len(data.x_train)
        if n_train <= settings.selection_examples:
            chosen = n_train // 5
            if chosen < 10:
                raise InputError(f"Dataset {data.name!r} ({clean(data.source, limit=300)}) has "
                                 f"{n_train} training examples; the comparison needs at least "
                                 "50 (it chooses units on a held-out fifth of them). Give a "
                                 "larger training split (x_train, y_train), or a test-only "
                                 "data set to skip the comparison.")
            log(f"{data.name} has {n_train:,} training examples: units are chosen on the last "
                f"{chosen:,} (a fifth) instead of {settings.selection_examples:,}")
            changes["selection_examples"] = chosen
        if "tfmot" in settings.methods and not tfmot_available():
            raise InputError("Method tfmot needs tensorflow-model-optimization and tf-keras: "
                             "pip install 'subnet[tfmot]', or leave tfmot out of --methods.")
    return dataclasses.replace(settings, **changes) if changes else settings


def _check_fits(model, data, name) -> None:
    shape = tuple(int(d) for d in model.inputs[0].shape[1:])
    if tuple(data.input_shape) != shape:
        raise InputError(f"The model takes inputs of shape {shape}, but dataset {name!r} has "
                         f"{data.layout} of shape {tuple(data.input_shape)}; choose the dataset "
                         "the model was trained on with --dataset.")
    classes = int(model.outputs[0].shape[-1])
    if classes < data.num_classes:
        raise InputError(f"The model has {classes} outputs, but dataset {name!r} has "
                         f"{data.num_classes} classes; choose the dataset the model was trained "
                         "on with --dataset.")
    if data.layout == "tokens":
        _check_token_ids(model, data, name)


def _check_token_ids(model, data, name) -> None:
    """Token ids go into an Embedding layer, and each must have a row in it."""
    from subnet._tf import keras

    embeddings = [layer for layer in model.layers if isinstance(layer, keras.layers.Embedding)]
    if not embeddings:
        raise InputError(f"Dataset {name!r} holds integer token ids (a 2-D integer x, or "
                         "layout='tokens'), but the model has no Embedding layer to look them "
                         "up; if x holds measurements or pixel values, store them as floats "
                         "(layout='features', pixels scaled to [0, 1]).")
    rows = int(embeddings[0].input_dim)
    largest = max(int(x.max()) for x in (data.x_train, data.x_test) if x is not None)
    if largest >= rows:
        raise InputError(f"Dataset {name!r} has token id {largest}, but the model's Embedding "
                         f"layer {embeddings[0].name!r} has {rows} rows (ids 0..{rows - 1}); "
                         "encode the text with the vocabulary the model was trained with.")


def _blog(model, deterministic, data, settings: Settings, keep) -> dict:
    """Test accuracy with dropout off and on; probability spread of a few test images."""
    from subnet.engine.mc import mc_dropout
    from subnet.extraction import accuracy
    from subnet.models import dropout_layers

    result = {"accuracy_dropout_off": accuracy(deterministic, data.x_test, data.y_test),
              "n_test": len(data.x_test), "accuracy_dropout_on_mean": None,
              "accuracy_dropout_on_std": None, "passes": settings.passes,
              "ensemble_accuracy": None, "dropout": "element-wise (Keras Dropout)"}
    picks = _example_picks(data.y_test)
    if dropout_layers(model):
        mc = mc_dropout(model, data.x_test, data.y_test, samples=settings.passes,
                        seed=settings.seed)
        summary = mc.summary()
        result.update(accuracy_dropout_on_mean=summary["accuracy"],
                      accuracy_dropout_on_std=summary["accuracy_std"],
                      ensemble_accuracy=summary["ensemble_accuracy"])
        probabilities = mc.probabilities[:, picks]
    else:
        from subnet.engine import make_backend
        from subnet.engine.chain import analyse_chain
        from subnet.masks import sample_masks
        from subnet.plan import BLOG_MASKS

        result["dropout"] = (f"unit masks at keep {_keep_words(keep)} (the model has no "
                             "Dropout layer)")
        chain = analyse_chain(deterministic, keep.rates)
        masks = sample_masks(chain.table.unit_keep(), settings.seed, range(BLOG_MASKS))
        engine = make_backend(chain)
        engine.set_site_scale(keep.site_scale(chain.table.names))
        probabilities = engine.probabilities(data.x_test[picks], masks)
    result["examples"] = [
        {"index": int(i), "label": int(data.y_test[i]), "image": _image(data.x_test[i]),
         "prob_mean": probabilities[:, k].mean(axis=0).tolist(),
         "prob_std": probabilities[:, k].std(axis=0).tolist()}
        for k, i in enumerate(picks)]
    return result


def _ood_dataset(data, settings: Settings, max_data_bytes: int | None = None):
    """The out-of-distribution test set of the uncertainty section (None for none), checked
    against the analysed data's example shape before any stage runs; only its first
    ``settings.examples`` test examples are read."""
    from subnet.data import load_dataset

    name = settings.ood
    if name == "none" or (name == "auto" and data.name not in OOD_AUTO):
        return None
    name = OOD_AUTO[data.name] if name == "auto" else name
    # --data-dir holds the analysed data set's files, not this one's.
    ood = load_dataset(name, n_test=settings.examples, max_bytes=max_data_bytes)
    if tuple(ood.x_test.shape[1:]) != tuple(data.x_test.shape[1:]):
        raise InputError(f"--ood {clean(name)}: its examples have shape "
                         f"{tuple(ood.x_test.shape[1:])}, the model's input "
                         f"{tuple(data.x_test.shape[1:])}; give a data set of the same shape, "
                         "or --ood none.")
    return ood.subset(n_test=min(settings.examples, len(ood.x_test)))


def _subnetwork_files(comparison: dict | None, settings: Settings) -> dict[str, str]:
    """{predictor name: model file} of the comparison's subnetworks of the first seed."""
    rows = [r for r in (comparison or {}).get("rows", [])
            if r.get("model_file") and r.get("seed") == settings.seed]
    return {f"subnetwork_{r['method']}@{r['budget_flops_fraction']:g}": r["model_file"]
            for r in rows}


def _uncertainty(model, data, settings: Settings, rate: dict, ood,
                 subnetworks: dict[str, str] | None = None, *, trust: bool = False,
                 rescale: bool = True) -> dict:
    """How good the network's uncertainty is (:func:`subnet.uncertainty`): the deterministic
    network, test-time dropout with 1 to ``uncertainty_passes`` passes, as many random unit
    subnetworks, and each extracted subnetwork (deterministic), on ``examples`` test examples,
    against the out-of-distribution set if any."""
    from subnet.models import dropout_layers
    from subnet.predictive import (
        SCORES,
        deterministic,
        dropout_passes,
        uncertainty,
        unit_subnetworks,
    )

    n = min(settings.examples, len(data.x_test))
    x, y = data.x_test[:n], data.y_test[:n]
    x_ood = None if ood is None else ood.x_test
    passes = settings.uncertainty_passes
    predictors: dict = {}

    def both(make):
        return make(x), (None if x_ood is None else make(x_ood))

    runs = {"deterministic": both(lambda v: deterministic(model, v))}
    if dropout_layers(model):
        p, q = both(lambda v: dropout_passes(model, v, passes, seed=settings.seed))
        for k in sorted({1, *[k for k in (2, 5, 10, 20, 50) if k < passes], passes}):
            runs[f"dropout_{k}"] = (p[:k], None if q is None else q[:k])
        ensemble = f"dropout_{passes}"
    else:
        ensemble = None
    runs[f"unit_subnetworks_{passes}"] = both(
        lambda v: unit_subnetworks(model, v, passes, rate=rate, seed=settings.seed,
                                   rescale=rescale))
    ensemble = ensemble or f"unit_subnetworks_{passes}"
    from subnet.models import load_model

    for name, path in (subnetworks or {}).items():
        if Path(path).exists():  # the comparison's own output (dropout already left out)
            small = load_model(path, trust=trust)
            runs[name] = both(lambda v, m=small: deterministic(m, v))
    results = {name: uncertainty(p, y, ood=q, resamples=200, seed=settings.seed)
               for name, (p, q) in runs.items()}
    for name, result in results.items():
        predictors[name] = {"passes": result.n_passes, "metrics": {
            k: v.to_dict() for k, v in result.metrics.items()},
            "reliability": result.reliability, "coverage": result.coverage}
    edges = np.linspace(0.0, float(np.log(data.num_classes)), 31)

    def histogram(values):
        return np.histogram(np.clip(values, 0, edges[-1]), bins=edges)[0].tolist()

    histograms = {}
    for name in ("deterministic", ensemble):
        result = results[name]
        entropy = result.scores["predictive_entropy"]
        histograms[name] = {"right": histogram(entropy[result.correct]),
                            "wrong": histogram(entropy[~result.correct]),
                            "ood": None if result.ood_scores is None else
                            histogram(result.ood_scores["predictive_entropy"])}
    # The blog's image-level view: the examples whose probabilities move most across passes.
    p = runs[ensemble][0]
    spread = p.std(axis=0).max(axis=-1)
    correct = results[ensemble].correct
    moving = []
    for right in (True, False):
        candidates = np.flatnonzero(correct == right)
        for i in candidates[np.argsort(-spread[candidates], kind="stable")][:3]:
            moving.append({"index": int(i), "label": int(y[i]), "right": bool(right),
                           "image": _image(x[i]), "prob_mean": p[:, i].mean(axis=0).tolist(),
                           "prob_std": p[:, i].std(axis=0).tolist()})
    return {"examples": n, "passes": passes, "ensemble": ensemble, "scores": list(SCORES),
            "ood": None if ood is None else {"name": ood.name, "fingerprint": ood.fingerprint(),
                                             "examples": len(ood.x_test)},
            "predictors": predictors, "entropy_edges": edges.tolist(),
            "entropy_histograms": histograms, "moving_examples": moving}


def _example_picks(labels: np.ndarray, count: int = 4) -> list[int]:
    """The first test example of the first ``count`` classes, starting with a 7 (the blog's)."""
    order = [7] + [c for c in range(int(labels.max()) + 1) if c != 7]
    picks = []
    for c in order:
        hits = np.flatnonzero(labels == c)
        if len(hits):
            picks.append(int(hits[0]))
        if len(picks) == count:
            break
    return picks


def _image(x: np.ndarray):
    """An example as a nested list for the report (images only), rounded to 2 decimals."""
    x = np.asarray(x)
    if x.ndim != 3 or x.shape[-1] not in (1, 3) or x.shape[0] * x.shape[1] > 64 * 64:
        return None
    image = x[..., 0] if x.shape[-1] == 1 else x
    return np.round(np.clip(image, 0, 1), 2).tolist()


def _keep_words(keep) -> str:
    """``q = 0.86, kept units not rescaled``: a KeepProbabilities in words."""
    values = sorted(set(keep.keep.values()))
    q = f"q = {values[0]:.3g}" if len(values) == 1 else \
        "q = " + ", ".join(f"{n} {v:.3g}" for n, v in keep.keep.items())
    return q + (", kept units scaled by 1/q" if keep.rescale else ", kept units not rescaled")


def _keep(model, deterministic, data, settings: Settings, record_dir: Path) -> dict:
    """The keep probabilities of the record (:func:`subnet.record.choose_keep`): those of a
    record already in ``record_dir`` (--record's copy), else chosen on the last
    ``selection_examples`` training examples (those the comparison holds out to choose units
    on; never the test set), with the settings' seed."""
    from subnet.record import choose_keep, keep_of_record

    if (record_dir / "meta.json").is_file():
        from subnet.masks import MaskRecord

        keep = keep_of_record(MaskRecord.load(record_dir).meta)
        return {"keep": keep.to_dict(), "check": None, "held_out": None,
                "how": "taken from the given record (--record)"}
    x = y = held_out = None
    if settings.rate == "auto" and data.x_train is not None and len(data.x_train) >= 10:
        n = min(settings.calibration_examples or settings.selection_examples,
                len(data.x_train))
        x, y = data.x_train[-n:], data.y_train[-n:]
        held_out = (f"the last {n} training examples (those the comparison holds out to choose "
                    "units on; never the test set)")
    keep, check = choose_keep(deterministic, settings.rate, x, y, seed=settings.seed,
                              held_out=held_out, rates_from=model)
    how = {"model": "the model's own dropout rates (kept units scaled by 1/q)",
           "given": f"--rate {settings.rate} for sites with no Dropout after them",
           "auto": "calibrated so that random subnetworks' mean accuracy sits halfway between "
                   "chance and the whole model"}[keep.source]
    return {"keep": keep.to_dict(), "check": check, "held_out": held_out, "how": how}


def _keep_section(chosen: dict, recorded: dict) -> dict:
    """results.json's ``keep``: the keep probabilities per site, their source, how they were
    chosen, the statistic they define, and the record's masked-accuracy distribution with
    chance and the whole model."""
    accuracy = np.asarray(recorded["mask_accuracy"], float)
    chance, whole = recorded.get("chance"), recorded.get("whole")
    mean = float(accuracy.mean())
    edges = np.linspace(0.0, 1.0, 41)
    distribution = {
        "examples": recorded["record"]["n_examples"], "masks": int(len(accuracy)),
        "chance": chance, "whole": whole, "mean": mean,
        "std": float(accuracy.std(ddof=1)) if len(accuracy) > 1 else 0.0,
        "quantiles": {str(q): float(np.quantile(accuracy, q))
                      for q in (0.0, 0.05, 0.25, 0.5, 0.75, 0.95, 1.0)},
        "histogram": {"edges": edges.tolist(),
                      "counts": np.histogram(np.clip(accuracy, 0, 1), edges)[0].tolist()},
        "position": None, "near_chance": None}
    if chance is not None and whole is not None:
        distribution["near_chance"] = bool(mean - chance < NEAR_CHANCE)
        if whole - chance > 0:
            distribution["position"] = float((mean - chance) / (whole - chance))
    q = sorted(set(chosen["keep"]["keep"].values()))
    return {**chosen["keep"], "how": chosen["how"], "held_out": chosen["held_out"],
            "model_rates_check": chosen["check"],
            "statistic": ("q-weighted Banzhaf value (a binomial semivalue: E[metric | unit "
                          "kept] - E[metric | unit dropped] over masks keeping each unit with "
                          f"probability q; q = {q[0]:.3g}" + (" to " + f"{q[-1]:.3g}"
                                                               if len(q) > 1 else "")
                          + "; Banzhaf at q = 0.5)"),
            "mask_accuracy": distribution}


def _chance_sentence(keep_section: dict) -> str | None:
    """The answer's sentence for a record whose random subnetworks' mean accuracy sits within
    :data:`subnet.record.NEAR_CHANCE` of chance (None otherwise)."""
    d = keep_section["mask_accuracy"]
    if not d.get("near_chance"):
        return None
    return (f"Random subnetworks at these keep probabilities sit near chance (mean accuracy "
            f"{d['mean']:.1%} against chance {d['chance']:.1%} and the whole model's "
            f"{d['whole']:.1%}), so the unit importances and the mask-statistics subnetworks "
            "rest on little information: record at a higher keep (--rate auto calibrates it).")


def _record(deterministic, data, settings: Settings, keep, record_dir: Path,
            progress: bool, executor=None) -> dict:
    from subnet.extraction import accuracy
    from subnet.record import record_masks

    n = min(settings.examples, len(data.x_test))
    x, y = data.x_test[:n], data.y_test[:n]
    # A record already there (--record's copy, or an interrupted run's) goes on with the
    # backend that made it.
    backend = "auto"
    if (record_dir / "meta.json").is_file():
        from subnet.masks import MaskRecord

        backend = MaskRecord.load(record_dir).meta.get("backend") or "auto"
    record = record_masks(deterministic, x, y, settings.masks, seed=settings.seed, rate=keep,
                          out=record_dir, resume=True, progress=progress, executor=executor,
                          backend=backend)
    share = record.example_accuracy()
    predicted = record.predicted
    classes = int(deterministic.outputs[0].shape[-1])
    votes = np.stack([np.bincount(predicted[:, j], minlength=classes)
                      for j in range(predicted.shape[1])])
    mode = votes.argmax(axis=1)
    hardest = np.argsort(share, kind="stable")[:12]
    return {
        "mask_accuracy": record.mask_accuracy().tolist(),
        "vote_accuracy": float(np.mean(mode == y)),
        "chance": float(np.bincount(y).max() / len(y)),
        "whole": float(accuracy(deterministic, x, y)),
        "record": {"n_masks": record.n_masks, "n_examples": record.n_examples,
                   "seed": settings.seed, "path": "record"},
        "robustness": {
            "share_correct": share.tolist(),
            "always_right": float(np.mean(share == 1.0)),
            "never_right": float(np.mean(share == 0.0)),
            "hardest": [{"index": int(i), "label": int(y[i]), "share_correct": float(share[i]),
                         "predicted_mode": int(mode[i]), "image": _image(x[i])}
                        for i in hardest]},
    }


def _importance(record_dir: Path, alpha: float = 0.05, top: int = 30) -> dict:
    from subnet.importance import estimate
    from subnet.importance.from_record import class_importance, interactions
    from subnet.masks import MaskRecord

    record = MaskRecord.load(record_dir)
    importance = estimate(record, "banzhaf")
    significant = (importance.qvalue < alpha) if importance.qvalue is not None else \
        np.zeros(importance.n_units, bool)
    sites = {}
    scores = importance.sites.split(importance.scores)
    lows = importance.sites.split(importance.ci_low)
    highs = importance.sites.split(importance.ci_high)
    flags = importance.sites.split(significant)
    for name in importance.sites.names:
        sites[name] = {"scores": scores[name].tolist(), "low": lows[name].tolist(),
                       "high": highs[name].tolist(),
                       "significant": [bool(v) for v in flags[name]]}
    labels = _unit_labels(importance.sites)
    result = {"method": "banzhaf", "metric": importance.details.get("metric", "accuracy"),
              "estimator": importance.details.get("estimator"), "n_masks": record.n_masks,
              "alpha": alpha, "sites": sites, "n_significant": int(significant.sum()),
              "class_conditional": None, "interactions": None, "notes": [],
              # which engine evaluated the masks, and why if not the one asked for
              "record_backend": record.meta.get("backend"),
              "record_backend_fallback": record.meta.get("backend_fallback")}
    chosen = importance.top(min(top, importance.n_units))
    try:
        by_class = class_importance(record)
        result["class_conditional"] = {
            "classes": [int(c) for c in by_class.details.get(
                "classes", range(by_class.scores.shape[0]))],
            "units": [labels[u] for u in chosen],
            "matrix": by_class.scores[:, chosen].tolist()}
    except ValueError as err:
        result["notes"].append(f"class-conditional importance not computed: {err}")
    try:
        graph = interactions(record, k=min(20, importance.n_units), importance=importance)
        result["interactions"] = {
            "nodes": [{"id": labels[n], "site": d["site"], "unit": d["unit"],
                       "score": d["score"]} for n, d in graph.nodes(data=True)],
            "edges": [{"source": labels[a], "target": labels[b], "weight": d["weight"],
                       "qvalue": d["qvalue"], "kind": d["kind"]}
                      for a, b, d in graph.edges(data=True)]}
    except ValueError as err:
        result["notes"].append(f"interactions not computed: {err}")
    return result


def _unit_labels(table) -> list[str]:
    return [f"{site.name}:{i}" for site in table for i in range(site.units)]


def _comparison(deterministic, data, settings: Settings, keep, out: Path,
                progress: bool, parent=None, executor=None) -> dict | None:
    """The comparison of the methods; mask statistics at ``keep`` (a KeepProbabilities: its
    keep probabilities and its rescaling, as the record was made)."""
    from subnet.comparison import compare

    if data.x_train is None:
        return None
    methods = list(settings.methods)
    if settings.protocol == "thorough":
        from subnet.frontier import compare_gradual
        from subnet.models import dropout_layers
        from subnet.protocol import Protocol

        protocol = Protocol.preset("thorough", budgets=tuple(settings.budgets),
                                   seeds=tuple(settings.seeds))
        result = compare_gradual(
            deterministic, data, methods, protocol, out=out / "frontier",
            models_dir=out / "models", progress=progress, executor=executor,
            teacher_model=parent if parent is not None and dropout_layers(parent) else None)
        return {**result.to_dict(), "summary": result.summary()}
    result = compare(deterministic, data, methods, settings.budgets, settings.seeds,
                     finetune_epochs=settings.finetune_epochs,
                     selection_examples=settings.selection_examples, n_masks=settings.masks,
                     steps_per_halving=settings.steps_per_halving,
                     step_masks=settings.step_masks, rate=keep,
                     reference_method="banzhaf" if "banzhaf" in methods else methods[0],
                     out=out / "comparison.json", models_dir=out / "models",
                     progress=progress, executor=executor)
    return {**result.to_dict(), "summary": result.summary()}


def _answer(comparison: dict | None, settings: Settings, blog: dict) -> dict:
    """The smallest subnetwork within the tolerance, per method and overall, in sentences.

    The bar is the whole network's better test accuracy, with dropout off or on (mean of single
    passes), so a subnetwork only counts as "as good" if it matches the whole at its best.
    """
    tol = settings.tolerance
    off, on = blog["accuracy_dropout_off"], blog.get("accuracy_dropout_on_mean")
    reference = max(off, on) if on is not None else off
    basis = "with test-time dropout on (mean of single passes)" if on is not None and on > off \
        else "with dropout off"
    if not comparison:
        return {"tolerance": tol, "dense_accuracy": reference, "smallest": None,
                "smallest_by_method": {}, "sentences": [
                    "No comparison was run (the dataset has no training data to fine-tune on)."]}
    dense = comparison["dense"]
    key = "accuracy_finetuned_mean" if settings.finetune_epochs > 0 or \
        settings.protocol == "thorough" else "accuracy_oneshot_mean"
    by_method: dict = {}
    validated = None
    if settings.protocol == "thorough":  # decided on the validation split, not the test set
        from subnet.frontier import smallest_on_validation

        validated = smallest_on_validation(comparison["rows"], dense["val_accuracy"], tol)
    for entry in comparison["summary"]:
        value = entry.get(key)
        if value is None:
            continue
        if validated is not None:
            if entry["budget_flops_fraction"] < validated.get(entry["method"], 2.0):
                continue
        elif value < reference - tol:
            continue
        best = by_method.get(entry["method"])
        size = "params" if entry["method"] == "tfmot" else "budget_flops_fraction"
        if best is None or (entry[size], -value) < (best[size], -best[key]):
            by_method[entry["method"]] = entry
    smallest_by_method = {m: (_describe(by_method[m], comparison, key) if m in by_method else
                              None) for m in settings.methods}
    # tfmot keeps the dense shape and reinit is not a part of the model: neither is a subnetwork.
    # The smallest budget any method meets; there, the best method by validation accuracy
    # (the thorough protocol's split) or, without one, by the measured accuracy. No method is
    # preferred by name.
    structured = [v for m, v in smallest_by_method.items() if v and m not in SHAPELESS]
    smallest = min(structured, key=lambda e: (e["budget_flops_fraction"],
                                              -_choice_accuracy(e)), default=None)
    best = None if smallest is not None else _most_accurate(comparison, key)
    chosen = smallest or best
    return {"tolerance": tol, "dense_accuracy": reference, "dense_accuracy_basis": basis,
            "dense_accuracy_dropout_off": off, "comparison_dense_accuracy": dense["accuracy"],
            "smallest": smallest, "smallest_by_method": smallest_by_method,
            "most_accurate": best, "chosen_by": _CHOSEN_BY[chosen is not None and
                                                        "val_accuracy_mean" in chosen],
            "measured_after": "fine-tuning" if key == "accuracy_finetuned_mean" else "one-shot",
            "model_file": chosen.get("model_file") if chosen else None,
            "dense_finetuned": dense.get("finetuned"),
            "sentences": _sentences(reference, basis, blog["n_test"], smallest,
                                    smallest_by_method, settings, key, dense.get("finetuned"))
            + _none_met(best, settings)}


#: Methods whose rows are not subnetworks: TFMOT keeps the dense shape; reinit is a control.
SHAPELESS = ("tfmot", "reinit")
_CHOSEN_BY = {True: "validation accuracy",
              False: "test accuracy (the quick protocol holds out no validation split)"}


def _choice_accuracy(entry: dict) -> float:
    """What the answer's subnetwork is chosen by: validation accuracy where the protocol
    measured it, else the measured (test) accuracy."""
    value = entry.get("val_accuracy_mean")
    return entry["accuracy_mean"] if value is None else value


def _most_accurate(comparison: dict, key: str) -> dict | None:
    """Where no method meets the tolerance: the most accurate subnetwork of any method and
    budget (by :func:`_choice_accuracy`; ties: the smaller budget) that has a model file."""
    entries = [e for e in comparison["summary"] if e["method"] not in SHAPELESS and
               e.get(key) is not None]
    described = [_describe(e, comparison, key) for e in entries]
    described = [d for d in described if d["model_file"]]
    return max(described, key=lambda d: (_choice_accuracy(d), -d["budget_flops_fraction"]),
               default=None)


def _none_met(best: dict | None, settings: Settings) -> list[str]:
    if best is None:
        return []
    return [f"No method met the tolerance, so subnetwork.keras is the most accurate subnetwork "
            f"found: {method_name(best['method'])} at {best['budget_flops_fraction']:.3g} of the "
            f"FLOPs ({best['flops_reduction']:.1f}x fewer), {_spread(best)}."]


def _save_subnetwork(answer: dict, out: Path) -> dict | None:
    """Copies the answer's subnetwork (the smallest within the tolerance or, where none met it,
    the most accurate one found: :func:`_answer` chose it) to ``out/subnetwork.keras``."""
    chosen = answer.pop("model_file", None)
    if chosen is None:
        return None
    within = answer.get("smallest") is not None
    _copy_atomic(out / chosen, out / "subnetwork.keras")
    method, budget, seed = Path(chosen).stem.rsplit("_", 2)
    return {"file": "subnetwork.keras", "method": method, "budget_flops_fraction": float(budget),
            "seed": int(seed), "within_tolerance": within}


def _describe(entry: dict, comparison: dict, key: str) -> dict:
    rows = [r for r in comparison["rows"] if r["method"] == entry["method"] and
            r["budget_flops_fraction"] == entry["budget_flops_fraction"]]
    first = min(rows, key=lambda r: r["seed"])
    return {"method": entry["method"], "budget_flops_fraction": entry["budget_flops_fraction"],
            "params": entry["params"], "flops": entry["flops"], "widths": first.get("widths"),
            "widths_per_seed": [r.get("widths") for r in rows],
            "accuracy_mean": entry[key], "accuracy_std": entry[key.replace("_mean", "_std")],
            "seeds": entry["seeds"],
            **({"val_accuracy_mean": float(np.mean([r["val_accuracy"] for r in rows]))}
               if all(r.get("val_accuracy") is not None for r in rows) else {}),
            "flops_reduction": comparison["dense"]["flops"] / entry["flops"],
            "params_reduction": comparison["dense"]["params"] / entry["params"],
            "model_file": f"models/{Path(first['model_file']).name}"
            if first.get("model_file") else None}


def _sentences(reference, basis, n_test, smallest, by_method, settings: Settings,
               key, dense_tuned: dict | None = None) -> list[str]:
    when = (f"after fine-tuning for {settings.finetune_epochs:g} epoch(s)"
            if key == "accuracy_finetuned_mean" else "without fine-tuning")
    if settings.protocol == "thorough":
        when = ("after gradual pruning with retraining and fine-tuning to saturation (the "
                "thorough protocol: early stopping on a validation split, distilled from the "
                "parent; the size chosen on the validation split)")
    tol = f"{settings.tolerance * 100:.2f} points"
    out = [f"The full network scores {reference:.2%} on {n_test:,} test examples {basis}."]
    if smallest is None:
        low = min(settings.budgets)
        out.append(f"No subnetwork at the budgets tried (down to {low:.3g} of the FLOPs) stayed "
                   f"within {tol} of it {when}; the network could not be trimmed that far here.")
    else:
        widths = ", ".join(f"{k} {v}" for k, v in (smallest["widths"] or {}).items())
        out.append(
            f"The smallest subnetwork within {tol} of it {when} was found by "
            f"{method_name(smallest['method'])}: {smallest['flops_reduction']:.1f}x fewer FLOPs "
            f"and {smallest['params_reduction']:.1f}x fewer parameters ({widths}), at "
            f"{_spread(smallest)}.")
    if dense_tuned and key == "accuracy_finetuned_mean":
        gap = smallest["accuracy_mean"] - dense_tuned["accuracy_mean"] if smallest else None
        out.append(
            f"The whole network given the same fine-tuning scores "
            f"{dense_tuned['accuracy_mean']:.2%}" + (
                f" ± {dense_tuned['accuracy_std'] * 100:.2f} points over "
                f"{len(dense_tuned['accuracy'])} seeds" if len(dense_tuned["accuracy"]) > 1
                else "") + (
                "" if gap is None else
                f"; the subnetwork is {abs(gap) * 100:.2f} points "
                f"{'above' if gap >= 0 else 'below'} it") + ".")
    for method in ("magnitude", "random", "tfmot", "reinit"):
        if method not in by_method:
            continue
        entry = by_method[method]
        if entry is None:
            out.append(f"{_NAMES[method]} reached no budget within {tol}.")
        elif method == "tfmot":
            out.append(f"{_NAMES[method]} kept that accuracy down to {entry['params']:,} nonzero "
                       "weights, but its model keeps the dense shape (no fewer FLOPs).")
        else:
            out.append(f"{_NAMES[method]} reached {entry['flops_reduction']:.1f}x fewer FLOPs at "
                       f"{_spread(entry)}.")
    if smallest is not None:
        verdict = (f"So, for this network: subnetworks with {smallest['flops_reduction']:.1f}x "
                   f"fewer FLOPs are as good as the whole, within {tol}")
        mask, magnitude = by_method.get("banzhaf"), by_method.get("magnitude")
        if "banzhaf" in by_method and "magnitude" in by_method:
            if mask is not None and (magnitude is None or mask["budget_flops_fraction"] <
                                     magnitude["budget_flops_fraction"]):
                verdict += "; mask statistics found smaller ones than magnitude pruning did"
            elif mask is not None and mask["budget_flops_fraction"] == \
                    magnitude["budget_flops_fraction"]:
                verdict += "; mask statistics and magnitude pruning reached the same budget"
            else:
                verdict += "; magnitude pruning found smaller ones than mask statistics did"
        low = min(settings.budgets)
        if smallest["budget_flops_fraction"] == low:
            verdict += f" (the smallest budget tried, {low:.3g} of the FLOPs: smaller may work)"
        out.append(verdict + ".")
    return out


def _spread(entry: dict) -> str:
    if entry["seeds"] > 1:
        return (f"{entry['accuracy_mean']:.2%} ± {entry['accuracy_std'] * 100:.2f} points over "
                f"{entry['seeds']} seeds")
    return f"{entry['accuracy_mean']:.2%} (one seed)"


_NAMES = {"magnitude": "Structured L1 magnitude pruning", "random": "Random units (the control)",
          "tfmot": "TFMOT magnitude pruning (unstructured)",
          "reinit": "A network of the mask-statistics widths trained from a fresh start"}


def _model_summary(model, rate: dict) -> dict:
    from subnet.engine.chain import analyse_chain
    from subnet.extraction import model_cost
    from subnet.models import original_names

    table = analyse_chain(model, rate).table
    cost = model_cost(model)
    # Names TensorFlow refuses were renamed on loading; the report shows the originals too.
    renamed = {internal: str(original) for internal, original in original_names(model).items()}
    return {"name": model.name, "original_names": renamed,
            "params": int(model.count_params()), "flops": int(cost["flops"]),
            "input_shape": [int(d) for d in model.inputs[0].shape[1:]],
            "classes": int(model.outputs[0].shape[-1]),
            "sites": [{"name": s.name, "kind": s.kind, "units": int(s.units),
                       "keep": float(s.keep), "dropout_rate": float(1 - s.keep),
                       "mask_layer": s.mask_layer} for s in table]}


def _copy_atomic(source: Path, dest: Path) -> None:
    atomic_write_bytes(dest, source.read_bytes())


def _jsonable(value):
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return _jsonable(value.tolist())
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


# --------------------------------------------------------------------------------------- CLI

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
                f"(e.g. {'0.5,0.25' if kind is float else 'banzhaf,magnitude'}); received "
                f"{clean(text, limit=100)!r}") from None
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
        epilog="Lists are comma-separated (--budgets 0.5,0.25 --methods banzhaf,magnitude). "
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
                             "install 'subnet[ray]'); the results are the same")
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
    from subnet.plan import parse_duration

    try:
        return parse_duration(text)
    except InputError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m subnet.analyze`` and ``subnet-analyze``; returns the exit code."""
    from subnet._quiet import quiet_tensorflow_warnings

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
        import tempfile

        fd, name = tempfile.mkstemp(prefix="subnet-analyze-error-", suffix=".log")
        with open(fd, "w", encoding="utf-8") as f:
            f.write(trace)
        return name

    def body() -> int:
        from subnet.distributed import executor_from_address

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
