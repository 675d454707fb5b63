"""File names of any encoding, kept as printable UTF-8 text and given back exactly.

A POSIX file name is bytes. Python decodes the ones that are not UTF-8 with
lone surrogates (PEP 383), which no UTF-8 file, JSON reader, Parquet column
or terminal accepts. Wherever the package writes or prints a file name
(``files.tsv``, manifests, exported tables, messages) it writes `escape`'s
form: the name itself when it is plain text, else the name with ``\\xNN``
for each byte that is not UTF-8 and ``\\\\``, ``\\t``, ``\\n``, ``\\r`` for the
characters that would break a listing of lines and tabs. `unescape` gives
back the name that opens the file.

Examples:
    >>> escape(b"caf\\xe9.png".decode("utf-8", "surrogateescape"))
    'caf\\\\xe9.png'
    >>> unescape(escape("a\\tb.png")) == "a\\tb.png"
    True
"""

from __future__ import annotations

import codecs
import os
import re
import sys

_ESCAPES = {"\\": "\\\\", "\t": "\\t", "\n": "\\n", "\r": "\\r"}
_UNESCAPES = {"\\\\": "\\", "\\t": "\t", "\\n": "\n", "\\r": "\r"}
_ESCAPED = re.compile(r"\\(?:x[0-9a-f]{2}|[\\tnr])")


def escape(name: str | os.PathLike) -> str:
    """`name` as printable UTF-8 text (itself when it already is; see the module)."""
    text = os.fspath(name)
    if "\\" not in text and text.isprintable():  # the common case, no copy
        return text
    return "".join(_escape_character(c) for c in text)


def unescape(text: str) -> str:
    """The file name that `escape` turned into `text`."""
    if "\\" not in text:
        return text
    return _ESCAPED.sub(_unescape_match, text)


def print_escaped() -> None:
    """Makes ``sys.stdout`` and ``sys.stderr`` write such names as `escape` does, not fail.

    The command line calls it first: a path given on it, or found in a
    folder, that is not UTF-8 then prints as ``ph\\xf6tos`` rather than
    stopping the command with a UnicodeEncodeError.
    """
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            stream.reconfigure(errors=_ERRORS)


def _escape_errors(error: UnicodeError) -> tuple[str, int]:
    if not isinstance(error, UnicodeEncodeError):
        raise error
    text = error.object[error.start : error.end]
    return "".join(_escape_character(c) for c in text), error.end


_ERRORS = "keras_deepcluster.escape"
codecs.register_error(_ERRORS, _escape_errors)


def _escape_character(character: str) -> str:
    if character in _ESCAPES:
        return _ESCAPES[character]
    if "\udc80" <= character <= "\udcff":  # a byte that was not UTF-8 (surrogateescape)
        return f"\\x{ord(character) - 0xDC00:02x}"
    return character


def _unescape_match(match: re.Match) -> str:
    escaped = match.group()
    if escaped in _UNESCAPES:
        return _UNESCAPES[escaped]
    return chr(0xDC00 + int(escaped[2:], 16))
