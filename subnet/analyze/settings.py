"""The settings of an analysis (:class:`Settings`), their limits and defaults, and the checks of
the command's values that need no model, made before TensorFlow is imported."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from subnet.errors import DataError, InputError, ModelFileError, RecordError, clean
from subnet.methods import accepted, cache_name, resolve

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
          "step_masks": 1_000_000, "uncertainty_passes": 10_000, "latency_repeats": 1000}
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
        methods: Comparison methods (:mod:`subnet.methods`; ``banzhaf``, the old key of
            ``banzhaf_iterative``, reads as it).
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
        latency_repeats: Timed calls of each subnetwork (and the whole model) when the
            comparison measures latency; the median is reported.
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
    latency_repeats: int = 20
    quick: bool = False
    protocol: str = "quick"
    time_budget: float | None = None
    calibration_examples: int | None = None
    sized: tuple | None = None

    @classmethod
    def quick_settings(cls, **changes) -> Settings:
        """Small settings for a first look, sized to :data:`QUICK_SECONDS` of stages."""
        base = dict(masks=300, examples=500, repeats=1, budgets=(1 / 4, 1 / 16),
                    methods=("banzhaf_iterative", "magnitude", "random"), finetune_epochs=0.1,
                    passes=3,
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
            isinstance(m, str) and resolve(m) in METHODS for m in self.methods),
              f"names among {', '.join(METHODS)}")
        # an old key reads as the key it has now (shown as given in the message above)
        object.__setattr__(self, "methods", tuple(dict.fromkeys(map(resolve, self.methods))))
        check("finetune_epochs", number(self.finetune_epochs) and
              0 <= self.finetune_epochs <= 100, "a number of epochs in [0, 100]")
        check("tolerance", number(self.tolerance) and 0 <= self.tolerance < 1,
              "a fraction in [0, 1) (on the command line: points in [0, 100))")
        count("selection_examples", 10)
        count("steps_per_halving", 1)
        count("step_masks", 20)
        count("latency_repeats", 1)
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
            if method in self.methods and "banzhaf_iterative" not in self.methods:
                raise InputError(f"Invalid value for --methods: {method} is built on the "
                                 "banzhaf_iterative subnetwork (its nonzero weights or its "
                                 "widths), so it needs banzhaf_iterative among the methods.")

    @property
    def seeds(self) -> list[int]:
        return [self.seed + i for i in range(self.repeats)]

    def cache_key(self) -> dict:
        """:meth:`to_dict` as work made with these settings is keyed by it: a renamed method by
        its old key (:func:`subnet.methods.cache_name`), so that folders made before the
        rename resume."""
        return {**self.to_dict(), "methods": [cache_name(m) for m in self.methods]}

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
         "steps_per_halving", "finetune_epochs", "passes", "uncertainty_passes",
         "latency_repeats")


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
    if address is None or address in ("local", "auto", "processes"):
        return
    if address.startswith("processes:"):
        count = address.partition(":")[2]
        if count.isdigit() and int(count) >= 1:
            return
    else:
        host, _, port = address.removeprefix("ray://").rpartition(":")
        if host and port.isdigit():
            return
    raise InputError(f"Invalid value for --ray: expected local, auto, HOST:PORT, "
                     f"ray://HOST:PORT, processes or processes:N. Received: "
                     f"{clean(address, limit=100)!r}")
