"""How the report writes numbers and method names: one function per kind of number (and for
config values and dates), used by every section and so by both formats.

Accuracies, shares and budgets are fractions, written as percentages; tolerances are fractions,
written as percentage points; times are seconds.
"""

from __future__ import annotations

import json
import math
from datetime import datetime

from subnet.methods import display_names

#: {method key: display name} (:mod:`subnet.methods`).
METHOD_NAMES = display_names()


def percent(value: float | None) -> str:
    """An accuracy or share as a percentage with 2 decimals: ``0.98634`` -> ``"98.63 %"``."""
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{100 * value:.2f} %"


def _pm(mean: float | None, std: float | None) -> str:
    if mean is None or not math.isfinite(mean):
        return "n/a"
    if std is None or not math.isfinite(std):
        return percent(mean)
    return f"{100 * mean:.2f} ± {100 * std:.2f} %"


def _count(value: int) -> str:
    return f"{int(value):,}"


def _score(value: float | None) -> str:
    if value is None or not math.isfinite(value):
        return "n/a"
    return f"{value:.3g}"


def _budget(value: float) -> str:
    return f"{100 * value:g} %"


def _points(tolerance: float) -> str:
    return f"{100 * tolerance:.2f} percentage points"


def _factor(value: float) -> str:
    return f"{value:.2f}×"


def _seconds(value: float) -> str:
    if value < 120:
        return f"{value:.1f} s"
    minutes, seconds = divmod(round(value), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes:02d} min" if hours else f"{minutes} min {seconds:02d} s"


def _bytes(value: int | None) -> str:
    if value is None:
        return "—"
    for factor, unit in ((1 << 20, "MiB"), (1 << 10, "KiB")):
        if value >= factor:
            return f"{value / factor:.1f} {unit}"
    return f"{value} B"


def _value(value) -> str:
    """A config or version value as text: strings as they are, the rest as JSON."""
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True)


def _date(created: str) -> str:
    text = created[:-1] + "+00:00" if created.endswith("Z") else created
    moment = datetime.fromisoformat(text)
    zone = moment.strftime(" %Z") if moment.tzinfo is not None else ""
    return moment.strftime("%Y-%m-%d %H:%M") + zone
