"""The results.json schema the reports read: a re-export of :mod:`subnet.results_schema`.

The checks moved beside the typed results (:mod:`subnet.results`); importing
:func:`validate_results` and :func:`upgrade_results` from here still works, and the report
validates what it reads as before. The schema itself is ``subnet/results.schema.json``.
"""

from __future__ import annotations

from subnet.results_schema import upgrade_results, validate_results

__all__ = ["upgrade_results", "validate_results"]
