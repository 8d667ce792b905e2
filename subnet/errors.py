"""Exceptions that subnet raises for bad input.

Every error a user can cause is a :class:`ValueError` or :class:`TypeError` whose message names
the argument or file, what was expected and what was received, and how to fix it. The command-line
tools turn them into one line on stderr and exit status 2.
"""

from __future__ import annotations

__all__ = ["DataError", "ModelFileError", "RecordError", "UntrustedModelError"]


class DataError(ValueError):
    """A data set could not be found, read or validated."""


class ModelFileError(ValueError):
    """A model file is missing, corrupt, of an unsupported format or unsupported content."""


class UntrustedModelError(ModelFileError):
    """Loading the model would run code stored in the file, and the user has not trusted it."""


class RecordError(ValueError):
    """A mask record folder is missing, corrupt, or does not match what it is used with."""
