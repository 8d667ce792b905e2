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

The package, one concern a module: :mod:`~subnet.analyze.settings` (:class:`Settings`, their
limits and the checks that need no model), :mod:`~subnet.analyze.inputs` (model, data and a
given record checked against each other, the data sets loaded),
:mod:`~subnet.analyze.runner` (:func:`analyze`: the stages in order, their state and timings,
results.json and the reports), :mod:`~subnet.analyze.stages` (the stages),
:mod:`~subnet.analyze.answer` (the answer in sentences) and ``__main__`` (the command line).

Exit codes: 0 success; 2 bad input (one line, no traceback); 1 internal error (the traceback is
saved to ``DIR/analyze-error.log``); 130 interrupted.
"""

from __future__ import annotations

# The names the module had before it became a package, importable from here as before.
from subnet.analyze.answer import SHAPELESS, _answer, _chance_sentence  # noqa: F401
from subnet.analyze.inputs import _check_fits, _dataset  # noqa: F401
from subnet.analyze.runner import analyze
from subnet.analyze.settings import (  # noqa: F401
    DATASETS,
    FORMATS,
    LIMITS,
    METHODS,
    OOD_AUTO,
    OUTPUTS,
    QUICK_SECONDS,
    SIZED,
    STAGES,
    TEST_EXAMPLES,
    THOROUGH_METHODS,
    Settings,
)
from subnet.analyze.stages import _keep_section, _uncertainty  # noqa: F401

__all__ = ["Settings", "analyze", "main"]

# The command line lives in __main__.py, which ``python -m subnet.analyze`` runs as __main__;
# importing it here too would load it twice (and runpy warns of that). Its names load on first use.
_COMMAND_LINE = ("main", "_parse_args", "_settings")


def __getattr__(name: str):
    if name in _COMMAND_LINE:
        from subnet.analyze import __main__ as command_line

        return getattr(command_line, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
