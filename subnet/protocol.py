"""The frontier protocol's settings and its validation split.

A comparison of pruning methods answers "how far does this network trim?" only if the protocol
does not set the answer (Blalock et al. 2020; Liu et al. 2019): every subnetwork is trained to
saturation, choices are made on a validation split that neither the parent nor the subnetworks
were trained on, and the test set is measured once, at the end. :class:`Protocol` holds those
settings, with two named presets:

- ``"quick"``: the default of ``python -m subnet.analyze``, sized for about ten minutes on two
  CPU cores (a short fine-tune, so its numbers say more about the protocol than the network);
- ``"thorough"``: fine-tuning to saturation with early stopping on the validation split,
  distillation from the parent's test-time-dropout ensemble, a global cost-aware allocation, and
  the budgets 1/2 ... 1/32 of the FLOPs.

:func:`validation_split` holds out the validation examples from the training split,
reproducibly, and says which examples it took (by a fingerprint of their indices).
"""

from __future__ import annotations

import dataclasses
import hashlib

import numpy as np

from subnet.errors import InputError, InputTypeError

__all__ = ["PROTOCOLS", "VALIDATION_SEED", "Protocol", "validation_split"]

#: The seed every validation split of the frontier protocol is drawn with (the analyses' own
#: parents and data use it too, so that a parent never trained on the examples its subnetworks
#: are judged on).
VALIDATION_SEED = 12345


@dataclasses.dataclass(frozen=True)
class Protocol:
    """How subnetworks are found, trained and judged.

    Attributes:
        name: The preset's name (``"quick"``, ``"thorough"``) or ``"custom"``.
        budgets: FLOP fractions of the parent, each in (0, 1].
        validation: Training examples held out for every choice (an int >= 1, or a fraction in
            (0, 1) of the training split); 0 holds none out (the quick preset: choices are made
            on training examples).
        finetune_epochs: Most epochs of fine-tuning of every subnetwork (> 0, fractions allowed).
        patience: Epochs without a better validation accuracy before fine-tuning stops (None:
            the whole budget).
        learning_rate: Adam's initial learning rate of fine-tuning (cosine decay to 0).
        teacher_passes: Distillation teacher: None trains on labels alone; 0 the deterministic
            parent; k >= 1 the mean of k test-time-dropout passes of the parent.
        temperature: Distillation temperature (> 0).
        distill_weight: Weight of the distillation term, in [0, 1].
        allocation: ``"uniform"`` (the same fraction of every site), ``"global"`` (units ranked
            across sites by score), ``"cost"`` (ranked by score per FLOP) or ``"joint"`` (by
            score per share of FLOPs plus share of parameters).
        step: Fraction of the current FLOPs removed per round of gradual pruning, in (0, 1);
            1 prunes in one shot.
        retrain_epochs: Epochs of retraining between rounds of gradual pruning (>= 0).
        seeds: Seeds of each method (the spread over seeds).
        validation_seed: Seed of the validation split (:func:`validation_split`).
        scratch_seed_offset: The Scratch-E control of seed s is initialised with seed
            s + ``scratch_seed_offset`` (its own draw, not the parent's initialisation).
    """

    name: str = "custom"
    budgets: tuple = (1 / 2, 1 / 8, 1 / 32)
    validation: int | float = 0
    finetune_epochs: float = 0.25
    patience: int | None = None
    learning_rate: float = 1e-3
    teacher_passes: int | None = None
    temperature: float = 4.0
    distill_weight: float = 0.9
    allocation: str = "uniform"
    step: float = 1.0
    retrain_epochs: float = 0.0
    seeds: tuple = (0,)
    validation_seed: int = VALIDATION_SEED
    scratch_seed_offset: int = 1000

    def __post_init__(self):
        for name in ("budgets", "seeds"):
            if isinstance(getattr(self, name), list):
                object.__setattr__(self, name, tuple(getattr(self, name)))

        def fail(name, expected):
            raise InputError(f"Invalid value for protocol setting `{name}`: expected {expected}. "
                             f"Received: {name}={getattr(self, name)!r}")

        def number(value):
            return isinstance(value, (int, float, np.number)) and not isinstance(value, bool) \
                and bool(np.isfinite(value))

        if not isinstance(self.name, str) or not self.name:
            fail("name", "a non-empty str")
        if not isinstance(self.budgets, tuple) or not self.budgets or not all(
                number(b) and 0 < b <= 1 for b in self.budgets):
            fail("budgets", "FLOP fractions in (0, 1], e.g. (0.5, 0.25)")
        if not number(self.validation) or self.validation < 0 or (
                isinstance(self.validation, float) and self.validation >= 1):
            fail("validation", "an int >= 0 or a fraction in (0, 1)")
        if not number(self.finetune_epochs) or not 0 < self.finetune_epochs <= 1000:
            fail("finetune_epochs", "epochs in (0, 1000]")
        if self.patience is not None and (not isinstance(self.patience, int) or
                                          isinstance(self.patience, bool) or self.patience < 1):
            fail("patience", "an int >= 1 or None")
        if self.patience is not None and not self.validation:
            fail("patience", "None when no validation split is held out (early stopping "
                             "decides on it)")
        if not number(self.learning_rate) or not 0 < self.learning_rate < 1:
            fail("learning_rate", "a number in (0, 1)")
        if self.teacher_passes is not None and (
                not isinstance(self.teacher_passes, int) or isinstance(self.teacher_passes, bool)
                or not 0 <= self.teacher_passes <= 10_000):
            fail("teacher_passes", "None, 0 (the deterministic parent) or k >= 1 dropout passes")
        if not number(self.temperature) or self.temperature <= 0:
            fail("temperature", "a number > 0")
        if not number(self.distill_weight) or not 0 <= self.distill_weight <= 1:
            fail("distill_weight", "a fraction in [0, 1]")
        from subnet.extraction import ALLOCATIONS

        if self.allocation not in ALLOCATIONS:
            fail("allocation", " or ".join(map(repr, ALLOCATIONS)))
        if not number(self.step) or not 0 < self.step <= 1:
            fail("step", "a fraction in (0, 1]")
        if not number(self.retrain_epochs) or not 0 <= self.retrain_epochs <= 1000:
            fail("retrain_epochs", "epochs in [0, 1000]")
        if not isinstance(self.seeds, tuple) or not self.seeds or not all(
                isinstance(s, int) and not isinstance(s, bool) and 0 <= s < 2**32
                for s in self.seeds):
            fail("seeds", "a non-empty tuple of ints in [0, 2**32)")
        for name in ("validation_seed", "scratch_seed_offset"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**31:
                fail(name, "an int in [0, 2**31)")

    @classmethod
    def preset(cls, name: str, **changes) -> Protocol:
        """A named protocol (:data:`PROTOCOLS`), with any setting changed.

        Raises:
            InputError: If ``name`` is not a preset (the message lists them) or a change is
                invalid.
        """
        if name not in PROTOCOLS:
            raise InputError(f"Unknown protocol {name!r}. Known protocols: "
                             f"{', '.join(sorted(PROTOCOLS))}.")
        base = dataclasses.asdict(PROTOCOLS[name])
        return cls(**{**base, **changes, "name": name if not changes else f"{name}+custom"})

    def to_dict(self) -> dict:
        """The settings as a JSON-ready dict (tuples as lists)."""
        out = dataclasses.asdict(self)
        return {**out, "budgets": list(self.budgets), "seeds": list(self.seeds)}

    @classmethod
    def from_dict(cls, data: dict) -> Protocol:
        """The inverse of :meth:`to_dict`.

        Raises:
            InputError: If a key is unknown or a value invalid.
        """
        if not isinstance(data, dict):
            raise InputTypeError(f"A protocol must be a dict. Received: {type(data).__name__}")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InputError(f"Unknown protocol settings {unknown}; known: {sorted(known)}.")
        return cls(**data)


PROTOCOLS = {
    "quick": Protocol(name="quick"),
    "thorough": Protocol(name="thorough", budgets=(1 / 2, 1 / 4, 1 / 8, 1 / 10, 1 / 16, 1 / 32),
                         validation=5000, finetune_epochs=12, patience=3, learning_rate=1e-3,
                         teacher_passes=16, temperature=4.0, distill_weight=0.9,
                         allocation="cost", step=0.2, retrain_epochs=1.0, seeds=(0, 1, 2)),
}
"""The named protocols: ``quick`` (``make demo``'s default) and ``thorough`` (the frontier)."""


def validation_split(dataset, size: int | float, *, seed: int = 0):
    """Holds out ``size`` training examples as a validation split, reproducibly.

    The held-out examples are a seeded random choice over the training split (the same for the
    same ``size``, ``seed`` and data); the rest stays the training split, in its order.

    Args:
        dataset: A :class:`~subnet.data.Dataset` with a training split, or
            ``((x_train, y_train), (x_test, y_test))`` as ``keras.datasets``' ``load_data()``
            returns it, or ``(train, test)`` as ``tf.data.Dataset`` objects of (examples, labels)
            (:func:`~subnet.data.as_dataset`).
        size: Examples to hold out: an int in [1, n_train - 1], or a fraction in (0, 1) of them.
        seed: Seed of the choice.

    Returns:
        ``(train, (x_val, y_val), info)``: a :class:`~subnet.data.Dataset` without the held-out
        examples (same test split), the held-out arrays, and ``{"size", "seed",
        "indices_sha256"}`` to put beside results.

    Raises:
        InputError: If the dataset has no training split, or ``size`` leaves no training or no
            validation example.
    """
    from subnet.data import Dataset, as_dataset

    dataset = as_dataset(dataset)
    if dataset.x_train is None:
        raise InputError(f"Dataset {dataset.name!r} has no training split to hold a validation "
                         "split out of.")
    n = len(dataset.x_train)
    if isinstance(size, bool) or not isinstance(size, (int, float, np.number)):
        raise InputTypeError(f"`size` must be an int or a fraction. Received: {size!r}")
    count = int(round(size * n)) if isinstance(size, (float, np.floating)) else int(size)
    if (isinstance(size, (float, np.floating)) and not 0 < size < 1) or not 1 <= count < n:
        raise InputError(f"Invalid validation size {size!r}: the training split has {n} "
                         f"examples, so give an int in [1, {n - 1}] or a fraction in (0, 1).")
    rng = np.random.default_rng(seed)
    held = np.sort(rng.choice(n, size=count, replace=False))
    rest = np.setdiff1d(np.arange(n), held, assume_unique=True)
    train = Dataset(name=dataset.name, x_test=dataset.x_test, y_test=dataset.y_test,
                    num_classes=dataset.num_classes, x_train=dataset.x_train[rest],
                    y_train=dataset.y_train[rest],
                    source=f"{dataset.source} (less {count} validation examples, seed {seed})")
    info = {"size": count, "seed": int(seed),
            "indices_sha256": hashlib.sha256(held.astype("<i8").tobytes()).hexdigest()}
    return train, (dataset.x_train[held], dataset.y_train[held]), info
