"""Typed results: :func:`load_results` reads a whole ``results.json`` into a frozen
:class:`Results`, with typed sections where a section has a fixed shape.

``python -m subnet.analyze`` writes ``results.json`` (schema: :mod:`subnet.results_schema`, whose
names this module re-exports: :data:`SCHEMA_VERSION`, :func:`check_schema`,
:func:`schema_version`, :func:`import_pandas` and the others). :func:`load_results` reads every
schema version written so far (1: files without ``schema_version``; 2; 3: the current one), upgrades
an older one (:func:`~subnet.results_schema.upgrade_results`), checks it as the report does
(:func:`~subnet.results_schema.validate_results`) and returns:

* :class:`Results`: the provenance (``subnet_version``, ``created``, ``command``, ``versions``,
  ``inputs``, ``timings``), the :class:`Config`, the time budget's :class:`Plan`, the
  :class:`Keep` probabilities, the :class:`ComparisonSection` (its :class:`Dense` model and one
  :class:`ComparisonRow` per method, budget and seed) and the :class:`Answer` (with a
  :class:`Smallest` per method). The other sections (``model``, ``blog``, ``robustness``,
  ``importance``, ``uncertainty``) are the dicts the schema describes.

Every typed section keeps the keys it does not name in ``extra`` (nothing read is dropped) and
the order its keys were read in, so that ``to_dict()`` gives back what was read: for a file of
the current version, exactly its contents; for an older one, its upgrade. ``to_frame()`` is the
comparison's rows as a ``pandas.DataFrame`` (pandas is optional).

The sections are built on :mod:`subnet.sections`, whose :class:`~subnet.sections.MappingResult`
is also the base of the small results that read as the dicts they replaced
(:class:`~subnet.finetuning.FinetuneResult`, :class:`~subnet.measuring.Measurement`,
:class:`~subnet.structure.cost.Cost`).

Files are untrusted: :func:`load_results` reads at most :data:`MAX_RESULTS_BYTES`, parses JSON
only, and refuses anything that is not a results file in one line naming the problem and the
fix. Strings are kept as they were written (the report escapes what it shows).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar, Self

from subnet.errors import InputError, InputTypeError, clean
from subnet.results_schema import (
    SCHEMA_PATH,
    SCHEMA_VERSION,
    check_schema,
    describe_value,
    import_pandas,
    schema,
    schema_version,
    upgrade_results,
    validate_results,
    where_text,
)
from subnet.sections import ReadsAsDict, Section, optional, strings

__all__ = ["MAX_RESULTS_BYTES", "ROW_COLUMNS", "SCHEMA_PATH", "SCHEMA_VERSION", "Answer",
           "ComparisonRow", "ComparisonSection", "Config", "Dense", "Keep", "Plan", "Results",
           "Smallest", "check_schema", "describe_value", "import_pandas", "load_results",
           "schema", "schema_version", "upgrade_results", "validate_results", "where_text"]

MAX_RESULTS_BYTES = 256 * 2**20
"""The largest results file :func:`load_results` reads (bytes). A results.json with every image
is a few MB; a file over this is refused before it is read."""

ROW_COLUMNS = ("method", "budget_flops_fraction", "seed", "params", "flops", "accuracy_oneshot",
               "accuracy_finetuned")
"""The columns :meth:`Results.to_frame` puts first, in this order (as
:meth:`subnet.Comparison.to_frame`); the other fields of the rows follow."""

_HOW = "give the results.json that python -m subnet.analyze wrote (in its --out folder)"


@dataclasses.dataclass(frozen=True, kw_only=True)
class ComparisonRow(Section, ReadsAsDict):
    """One subnetwork of the comparison: a method at a budget and seed.

    Accuracies are fractions of the test set in [0, 1]; ``budget_flops_fraction`` is a fraction
    of the dense model's FLOPs. Fields after ``accuracy_finetuned`` are None where the row does
    not have them: ``sparsity``, ``dense_shape_params`` and ``nonzero_params`` are TFMOT's;
    ``val_accuracy`` to ``scratch_epochs_run`` are the gradual protocol's
    (:func:`subnet.compare_gradual`: validation accuracy, epochs fine-tuned, and the Scratch-E
    control of the same widths).
    """

    method: str
    budget_flops_fraction: float
    seed: int
    params: int
    flops: int
    accuracy_oneshot: float
    accuracy_finetuned: float | None = None
    widths: dict[str, int] | None = None
    allocation: str | None = None
    measure: dict[str, Any] | None = None
    finetune_seconds: float | None = None
    model_file: str | None = None
    extraction_mismatch: dict[str, Any] | None = None
    sparsity: float | None = None
    dense_shape_params: int | None = None
    nonzero_params: int | None = None
    val_accuracy: float | None = None
    finetune_epochs_run: int | None = None
    scratch_accuracy: float | None = None
    scratch_val_accuracy: float | None = None
    scratch_epochs_run: int | None = None

    _DEFINITION: ClassVar[str | None] = "row"
    _WHERE: ClassVar[str] = "row"


@dataclasses.dataclass(frozen=True, kw_only=True)
class Dense(Section, ReadsAsDict):
    """The dense model the comparison is against: its test accuracy (a fraction), parameters,
    FLOPs per example, size and latency (``measure``) and, where the dense model was fine-tuned
    alike, its accuracies (``finetuned``)."""

    accuracy: float
    params: int
    flops: int
    measure: dict[str, Any] | None = None
    finetuned: dict[str, Any] | None = None

    _WHERE: ClassVar[str] = "dense"


def _rows(value) -> tuple[ComparisonRow, ...]:
    return tuple(ComparisonRow._build(row) for row in value)


@dataclasses.dataclass(frozen=True, kw_only=True)
class ComparisonSection(Section):
    """results.json's ``comparison``: :meth:`subnet.Comparison.to_dict` with the summary.

    Attributes:
        dense: The dense model.
        rows: One :class:`ComparisonRow` per (method, budget, seed).
        config: The settings that produced the rows (None where not written).
        summary: Mean and standard deviation over seeds per (method, budget), as written.
        schema_version: As written inside the section (None in results.json, whose version is
            :attr:`Results.schema_version`).
    """

    dense: Dense
    rows: tuple[ComparisonRow, ...]
    config: dict[str, Any] | None = None
    summary: tuple[dict[str, Any], ...] | None = None
    schema_version: int | None = None

    _DECODE: ClassVar[dict[str, Callable[[Any], Any]]] = {
        "dense": Dense._build, "rows": _rows,
        "summary": optional(lambda v: tuple(copy.deepcopy(e) for e in v))}
    _DEFINITION: ClassVar[str | None] = "comparison"
    _WHERE: ClassVar[str] = "comparison"

    def to_frame(self):
        """The rows as a table; see :meth:`Results.to_frame`."""
        pd = _pandas()
        if not self.rows:
            return pd.DataFrame(columns=list(ROW_COLUMNS))
        frame = pd.json_normalize([row.to_dict() for row in self.rows], sep=".")
        rest = [c for c in frame.columns if c not in ROW_COLUMNS]
        return frame.reindex(columns=list(ROW_COLUMNS) + rest)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Smallest(Section):
    """The smallest subnetwork of a method within the answer's tolerance: its budget (fraction
    of the dense FLOPs), size, accuracy over seeds (mean and SD, fractions) and reductions
    (factors: dense / subnetwork)."""

    method: str
    budget_flops_fraction: float
    params: int
    flops: int
    accuracy_mean: float
    accuracy_std: float
    flops_reduction: float
    params_reduction: float
    widths: dict[str, int] | None = None
    seeds: int | None = None

    _DEFINITION: ClassVar[str | None] = "smallest"
    _WHERE: ClassVar[str] = "smallest"


_smallest = optional(Smallest._build)


@dataclasses.dataclass(frozen=True, kw_only=True)
class Answer(Section):
    """results.json's ``answer``: do equally good subnetworks exist?

    Attributes:
        tolerance: Accuracy (a fraction) a subnetwork may lose and still count as equally good.
        dense_accuracy: The dense model's accuracy the tolerance is measured from (a fraction).
        smallest: The smallest subnetwork within the tolerance over all methods, or None.
        smallest_by_method: The same per method (None for a method with none).
        sentences: The answer in English.
        subnetwork: The saved subnetwork (``file``, ``method``, ``budget_flops_fraction``,
            ``seed``, ``within_tolerance``), or None.
    """

    tolerance: float
    dense_accuracy: float
    smallest: Smallest | None
    smallest_by_method: dict[str, Smallest | None]
    sentences: tuple[str, ...]
    subnetwork: dict[str, Any] | None = None

    _DECODE: ClassVar[dict[str, Callable[[Any], Any]]] = {
        "smallest": _smallest, "sentences": strings,
        "smallest_by_method": lambda v: {k: _smallest(e) for k, e in v.items()}}
    _WHERE: ClassVar[str] = "answer"


@dataclasses.dataclass(frozen=True, kw_only=True)
class Keep(Section):
    """results.json's ``keep``: the keep probability q of every site the masks were drawn with.

    Attributes:
        keep: q per site, in (0, 1].
        source: ``model`` (the model's own dropout rates), ``given`` (--rate) or ``auto``
            (calibrated on held-out training examples).
        rescale: Whether kept units were scaled by 1/q.
        mask_accuracy: The record's masked-accuracy distribution, with chance and the whole
            model on the record's examples (fractions).
        statistic, how, held_out, calibration, model_rates_check: How q was chosen and what
            the importance is (None where not written).
    """

    keep: dict[str, float]
    source: str
    rescale: bool
    mask_accuracy: dict[str, Any]
    statistic: str | None = None
    how: str | None = None
    held_out: str | None = None
    calibration: dict[str, Any] | None = None
    model_rates_check: dict[str, Any] | None = None

    _WHERE: ClassVar[str] = "keep"


@dataclasses.dataclass(frozen=True, kw_only=True)
class Plan(Section):
    """results.json's ``plan``: what --time-budget (or --quick) bought (:mod:`subnet.plan`).

    Attributes:
        seconds: The budget, in seconds.
        costs: Measured unit costs in seconds (one masked evaluation, an engine build, a
            forward pass, one training example).
        values: The sized settings.
        changes: The settings the budget changed, ``{name: [as asked, as planned]}``.
        predicted: Predicted seconds per stage.
        fits: Whether the prediction fits the budget.
    """

    seconds: float
    costs: dict[str, float]
    values: dict[str, Any]
    changes: dict[str, list]
    predicted: dict[str, float]
    fits: bool

    _WHERE: ClassVar[str] = "plan"


@dataclasses.dataclass(frozen=True, kw_only=True)
class Config(Section):
    """results.json's ``config``: the analysis settings (``python -m subnet.analyze``'s
    options) and how the run was made. The settings every version wrote are typed (None where
    a file lacks one); the others (``passes``, ``formats``, ``resume``, ...) are in ``extra``.

    Attributes:
        dataset: The data set's name (None: chosen from the model).
        seed: The seed of the masks.
        seeds: The comparison's seeds.
        budgets: The comparison's budgets, fractions of the dense FLOPs.
        methods: The comparison's methods.
        masks: Masks recorded.
        examples: Test examples the masks are evaluated on.
        rate: The dropout rate asked for (a number, ``"auto"``, or None: the model's).
        rates: The keep probability per site used (or one number).
        tolerance: Accuracy a subnetwork may lose (a fraction).
        finetune_epochs: Fine-tuning budget per subnetwork, in epochs.
        quick: Whether --quick was given.
        key: The hash of the settings, model and data that names a resumable run.
    """

    dataset: str | None = None
    seed: int | None = None
    seeds: tuple[int, ...] | None = None
    budgets: tuple[float, ...] | None = None
    methods: tuple[str, ...] | None = None
    masks: int | None = None
    examples: int | None = None
    rate: float | str | None = None
    rates: dict[str, float] | float | None = None
    tolerance: float | None = None
    finetune_epochs: float | None = None
    quick: bool | None = None
    key: str | None = None

    _DECODE: ClassVar[dict[str, Callable[[Any], Any]]] = {
        "seeds": optional(tuple), "budgets": optional(tuple), "methods": optional(tuple)}
    _WHERE: ClassVar[str] = "config"


@dataclasses.dataclass(frozen=True, kw_only=True)
class Results(Section):
    """A whole results.json, as :func:`load_results` reads it (always in the current schema
    version: an older file is upgraded).

    Attributes:
        schema_version: :data:`SCHEMA_VERSION`.
        subnet_version: The subnet that wrote the file.
        created: When, ISO 8601 (UTC).
        command: The command line.
        config: The analysis settings.
        versions: Versions of Python, TensorFlow, Keras, NumPy, subnet.
        inputs: The model file and data set, with their fingerprints.
        timings: Seconds per stage, and ``total``.
        model: The model's name, size, input shape, classes and sites (a dict).
        blog: The test-time-dropout experiment (a dict).
        robustness: How often each test example is right under the masks (a dict).
        importance: Unit importance per site (a dict).
        answer: The answer, with the smallest equally good subnetworks.
        comparison: The comparison, or None where it was not computed.
        keep: The keep probabilities (None in files written before them).
        plan: What the time budget bought (None without one).
        uncertainty: How good the uncertainty is (a dict; None where not computed).
        reused_stages: Stages a resumed run reused (None where not written).
        extra: Top-level keys this subnet does not name, kept as read.
        source_version: The schema version of the file read (before the upgrade); None for
            results built otherwise. Not part of :meth:`to_dict` or of equality.
    """

    schema_version: int
    subnet_version: str
    created: str
    command: tuple[str, ...]
    config: Config
    versions: dict[str, str | None]
    inputs: dict[str, Any]
    timings: dict[str, float]
    model: dict[str, Any]
    blog: dict[str, Any]
    robustness: dict[str, Any]
    importance: dict[str, Any]
    answer: Answer
    comparison: ComparisonSection | None = None
    keep: Keep | None = None
    plan: Plan | None = None
    uncertainty: dict[str, Any] | None = None
    reused_stages: tuple[str, ...] | None = None
    source_version: int | None = dataclasses.field(default=None, compare=False)

    _DECODE: ClassVar[dict[str, Callable[[Any], Any]]] = {
        "command": strings, "config": Config._build, "answer": Answer._build,
        "comparison": optional(ComparisonSection._build), "keep": optional(Keep._build),
        "plan": optional(Plan._build), "reused_stages": optional(strings)}
    _WHERE: ClassVar[str] = "results"

    @classmethod
    def from_dict(cls, data: Mapping) -> Self:
        """Reads the contents of a results.json (any version this subnet reads).

        Args:
            data: The parsed JSON. An older version is upgraded first (``data`` is not
                changed).

        Returns:
            The results in the current schema version.

        Raises:
            InputTypeError: If ``data`` is not a dict.
            InputError: If it is not a results.json (none of its sections), of a newer
                schema version, or does not fit the schema: one line naming the key path.
        """
        if not isinstance(data, Mapping):
            raise InputTypeError(f"`results` must be a dict (the contents of results.json). "
                                 f"Received: {type(data).__name__}")
        version = schema_version(data, "results")
        required = [key for key in schema()["required"] if key != "schema_version"]  # v1 lacks it
        missing = [key for key in required if key not in data]
        if len(missing) > len(required) // 2:  # not a damaged results file: another file
            named = ", ".join(map(repr, missing[:4])) + (", ..." if len(missing) > 4 else "")
            raise InputError(f"This is not a results.json of python -m subnet.analyze: it lacks "
                             f"{len(missing)} of the {len(required)} keys one has ({named}); "
                             f"{_HOW}.")
        checked = validate_results(data)
        results = cls._build(checked)
        return dataclasses.replace(results, source_version=version)

    def to_frame(self):
        """The comparison's rows as a table, one row per :class:`ComparisonRow`.

        Returns:
            A ``pandas.DataFrame``: the columns :data:`ROW_COLUMNS` first, then the other fields
            the rows have, nested dicts flattened with dots (``measure.file_bytes``,
            ``widths.conv1``); missing values are NaN. Without a comparison, no rows.

        Raises:
            InputError: If pandas is not installed (``pip install pandas``).
        """
        if self.comparison is None:
            return _pandas().DataFrame(columns=list(ROW_COLUMNS))
        return self.comparison.to_frame()


def _pandas():
    try:
        return import_pandas()
    except ImportError as err:
        raise InputError(f"{err} (it is optional, only to_frame() uses it).") from err


def load_results(path: str | os.PathLike) -> Results:
    """Reads a ``results.json`` written by ``python -m subnet.analyze``, of any schema version
    written so far, into a typed :class:`Results`.

    The file is untrusted: at most :data:`MAX_RESULTS_BYTES` are read, it is parsed as JSON and
    nothing in it is executed; it is checked against the schema as the report checks it.

    Args:
        path: The file.

    Returns:
        The results, upgraded to the current schema version (``source_version`` says which
        version the file was); ``to_dict()`` gives back the file's contents (for an older
        version, their upgrade) and ``to_frame()`` the comparison's rows.

    Raises:
        InputError: If the file is missing, not a regular file, too large, not UTF-8 JSON, not
            a results.json, of a newer schema version than this subnet reads, or does not fit
            the schema: one line naming the file, the problem and the fix.
    """
    path = Path(path)
    where = f"Could not read results from {clean(str(path), 500)!r}"
    try:
        if not path.is_file():  # also refuses a FIFO or a device, which could block a read
            problem = "no such file" if not path.exists() else "not a regular file"
            raise InputError(f"{where}: {problem}; {_HOW}.")
        with path.open("rb") as file:
            raw = file.read(MAX_RESULTS_BYTES + 1)
    except OSError as err:
        raise InputError(f"{where}: {clean(err.strerror or err, 200)}; {_HOW}.") from err
    if len(raw) > MAX_RESULTS_BYTES:
        raise InputError(f"{where}: the file is larger than a results.json may be "
                         f"({MAX_RESULTS_BYTES:,} bytes; subnet.results.MAX_RESULTS_BYTES); "
                         f"{_HOW}.")
    try:
        data = json.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as err:
        raise InputError(f"{where}: not UTF-8 text (byte {err.start}); {_HOW}.") from err
    except (ValueError, RecursionError) as err:
        raise InputError(f"{where}: not valid JSON ({clean(err, 200)}); {_HOW}.") from err
    if not isinstance(data, dict):
        raise InputError(f"{where}: the file holds a JSON {type(data).__name__}, not an object "
                         f"of results; {_HOW}.")
    try:
        return Results.from_dict(data)
    except InputError as err:
        message = str(err)
        if "upgrade subnet" not in message and "not a results.json" not in message:
            message = f"{message.rstrip('.')}; {_HOW}, unchanged."  # damaged or edited
        raise InputError(f"{where}: {message}") from err
