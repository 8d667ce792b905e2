"""Exceptions that subnet raises for bad input.

Every error a user can cause is an :class:`InputError` (a :class:`ValueError`) or an
:class:`InputTypeError` (a :class:`TypeError` too), whose message names the argument or file, what
was expected and what was received, and how to fix it. The command-line tools turn exactly these
into one line on stderr and exit status 2. Anything else that escapes (a plain ``ValueError`` from
a library, a ``KeyError``) is an internal error: exit 1, with the traceback saved.
"""

from __future__ import annotations

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


def clean(text: object, limit: int = 2000) -> str:
    """``text`` made safe for one terminal line: control characters (escape sequences, carriage
    returns, newlines) are shown as ``\\x1b``-style escapes, and a very long text is cut.

    Everything that comes from a file (layer names, paths, messages quoting them) passes through
    here before it is printed.
    """
    text = str(text)
    out = []
    for char in text:
        code = ord(char)
        if code < 0x20 or 0x7F <= code < 0xA0 or char in "\u2028\u2029\u200e\u200f\u202a\u202b" \
                "\u202c\u202d\u202e\u2066\u2067\u2068\u2069":
            out.append(char.encode("unicode_escape").decode("ascii"))
        else:
            out.append(char)
    text = "".join(out)
    return text if len(text) <= limit else text[:limit] + f"... ({len(text) - limit} more chars)"
