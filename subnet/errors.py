"""Exceptions that subnet raises for bad input.

Every error a user can cause is an :class:`InputError` (a :class:`ValueError`) or an
:class:`InputTypeError` (a :class:`TypeError` too), whose message names the argument or file, what
was expected and what was received, and how to fix it. The command-line tools turn exactly these
into one line on stderr and exit status 2. Anything else that escapes (a plain ``ValueError`` from
a library, a ``KeyError``) is an internal error: exit 1, with the traceback saved.
"""

from __future__ import annotations

import re

__all__ = ["DataError", "InputError", "InputTypeError", "ModelFileError", "RecordError",
           "UntrustedModelError", "clean"]


class InputError(ValueError):
    """Bad input, found by subnet's own validation: a value, a file or a combination of them."""


class InputTypeError(InputError, TypeError):
    """Bad input of the wrong type (also a :class:`TypeError`)."""


class DataError(InputError):
    """A data set could not be found, read or validated."""


class ModelFileError(InputError):
    """A model file is missing, corrupt, of an unsupported format or unsupported content."""


class UntrustedModelError(ModelFileError):
    """Loading the model would run code stored in the file, and the user has not trusted it."""


class RecordError(InputError):
    """A mask record folder is missing, corrupt, or does not match what it is used with."""


# What clean() shows as escapes: C0 and C1 controls, DEL, the line and paragraph separators, the
# bidirectional controls, and lone surrogates.
_UNSAFE = re.compile("[\x00-\x1f\x7f-\x9f\u2028\u2029\u200e\u200f\u202a-\u202e\u2066-\u2069"
                     "\ud800-\udfff]")


def clean(text: object, limit: int | None = 2000) -> str:
    """``text`` made safe for one terminal line: control characters (escape sequences, carriage
    returns, newlines), bidirectional controls and lone surrogates (which UTF-8 cannot encode)
    are shown as ``\\x1b``-style escapes, and a text longer than ``limit`` characters is cut
    (``limit=None``: never; the reports show names this way).

    Everything that comes from a file (layer names, paths, messages quoting them) passes through
    here before it is printed.
    """
    text = _UNSAFE.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), str(text))
    if limit is None or len(text) <= limit:
        return text
    return text[:limit] + f"... ({len(text) - limit} more chars)"
