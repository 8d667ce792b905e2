"""The blog's experiment: element-wise dropout left on at test time (Monte Carlo dropout)."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping

import numpy as np

from subnet.errors import InputError
from subnet.models import check_examples, dropout_layers, outputs_probabilities, with_dropout
from subnet.runtime import keras
from subnet.validation import check_int

__all__ = ["MCDropoutResult", "mc_dropout"]


@dataclasses.dataclass(frozen=True)
class MCDropoutResult:
    """Predictions of ``samples`` passes with test-time dropout on.

    Attributes:
        probabilities: float32 (samples, n_examples, n_classes), each pass's class probabilities.
        labels: int64 (n_examples,), the true classes.
        rates: {dropout layer name: rate} used.
    """

    probabilities: np.ndarray
    labels: np.ndarray
    rates: dict

    @property
    def pass_accuracy(self) -> np.ndarray:
        """Accuracy of each pass (a fraction), shape (samples,)."""
        return np.mean(self.probabilities.argmax(axis=-1) == self.labels, axis=1)

    @property
    def accuracy(self) -> float:
        """Mean accuracy of single passes: the blog's 'test accuracy with dropout on'."""
        return float(np.mean(self.pass_accuracy))

    @property
    def accuracy_std(self) -> float:
        """Standard deviation of the single-pass accuracy over passes (0 for one pass)."""
        return float(np.std(self.pass_accuracy, ddof=1)) if len(self.probabilities) > 1 else 0.0

    @property
    def loss(self) -> float:
        """Mean cross-entropy of single passes (natural log)."""
        true = self.probabilities[:, np.arange(len(self.labels)), self.labels]
        return float(-np.mean(np.log(np.clip(true, 1e-12, 1.0))))

    @property
    def mean_probabilities(self) -> np.ndarray:
        """Class probabilities averaged over passes, (n_examples, n_classes)."""
        return self.probabilities.mean(axis=0)

    @property
    def ensemble_accuracy(self) -> float:
        """Accuracy of the averaged prediction (MC-dropout ensemble)."""
        return float(np.mean(self.mean_probabilities.argmax(axis=-1) == self.labels))

    @property
    def example_accuracy(self) -> np.ndarray:
        """Per example, the fraction of passes that classify it correctly, (n_examples,)."""
        return np.mean(self.probabilities.argmax(axis=-1) == self.labels, axis=0)

    @property
    def probability_spread(self) -> np.ndarray:
        """Per example and class, the standard deviation of the probability over passes."""
        return self.probabilities.std(axis=0)

    def summary(self) -> dict:
        """The headline numbers as a JSON-ready dict."""
        return {"samples": int(len(self.probabilities)), "accuracy": self.accuracy,
                "accuracy_std": self.accuracy_std, "loss": self.loss,
                "ensemble_accuracy": self.ensemble_accuracy,
                "pass_accuracy": [float(a) for a in self.pass_accuracy], "rates": self.rates}


def mc_dropout(model, x, y, samples: int = 10, rates: float | Mapping[str, float] | None = None,
               seed: int = 0, batch_size: int = 1000) -> MCDropoutResult:
    """Runs the model ``samples`` times with dropout on at test time, as the blog did.

    Dropout is element-wise, exactly as Keras ``Dropout(training=True)`` applies it: independent
    per element and per example, survivors scaled by 1 / (1 - rate). Each pass sees every example
    once with fresh dropout. Other layers run in inference mode.

    Args:
        model: A ``keras.Model`` classifier with Dropout layers.
        x: Examples, float32 (n_examples, *input shape).
        y: True classes, int (n_examples,).
        samples: Number of passes, >= 1.
        rates: Dropout rates to use instead of the model's: one float for every Dropout layer, or
            {dropout layer name: rate}.
        seed: Seeds the dropout draws; the same seed gives the same result.
        batch_size: Examples per call.

    Returns:
        An :class:`MCDropoutResult`.

    Raises:
        ValueError: If ``samples`` < 1, the data do not fit the model, the model has no
            Dropout layer, or ``rates`` is invalid.
    """
    check_int("samples", samples, low=1)
    x, y, _ = check_examples(model, x, y)
    infos = dropout_layers(model)
    if not infos:
        raise InputError(f"Model {model.name!r} has no Dropout layer, so there is no dropout to "
                         "switch on at test time; give it Dropout layers or use record_masks "
                         "with rate=R.")
    chosen = {info.name: info.rate for info in infos}
    if rates is not None:
        if isinstance(rates, Mapping):
            unknown = sorted(set(rates) - set(chosen))
            if unknown:
                raise InputError(f"Invalid keys in argument `rates`: {unknown} are not Dropout "
                                 f"layers. The Dropout layers are {sorted(chosen)}.")
            chosen.update(rates)
        else:
            chosen = dict.fromkeys(chosen, rates)
        for name, value in chosen.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)) or \
                    not 0.0 <= float(value) < 1.0:
                raise InputError(f"Invalid rate for Dropout layer {name!r}: expected a float in "
                                 f"[0, 1). Received: {value!r}")
    noisy = with_dropout(model, True, seed=seed, rates=chosen)
    softmax = not outputs_probabilities(model)
    passes = []
    for _ in range(samples):
        outputs = []
        for start in range(0, len(x), batch_size):
            out = noisy(x[start:start + batch_size])
            if softmax:
                out = keras.ops.softmax(out)
            outputs.append(keras.ops.convert_to_numpy(out))
        passes.append(np.concatenate(outputs).astype(np.float32))
    return MCDropoutResult(probabilities=np.stack(passes), labels=y,
                           rates={k: float(v) for k, v in chosen.items()})
