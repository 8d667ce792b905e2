"""Unit importance: from mask statistics, by exact enumeration, and by classical criteria.

Every estimator has the same call, ``estimate(source, method=..., **options)``, and returns an
:class:`Importance`; they differ only in their options. See :data:`ESTIMATORS` for the names.
"""

from subnet.importance import criteria as _criteria  # noqa: F401  (registers estimators)
from subnet.importance import from_record as _from_record  # noqa: F401
from subnet.importance.core import ESTIMATORS, Estimator, Importance, estimate, register
from subnet.importance.exact import ablation, exact_banzhaf
from subnet.importance.from_record import class_importance, interactions

__all__ = ["ESTIMATORS", "Estimator", "Importance", "ablation", "class_importance", "estimate",
           "exact_banzhaf", "interactions", "register"]
