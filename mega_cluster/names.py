"""Validation of the names callers write: channels, lock keys, cache names."""

from __future__ import annotations

import re

from .exceptions import InvalidName

NAME_RE = re.compile(r"^[A-Za-z0-9_.:\-]{1,200}$")


def validate_name(
    value: object, what: str = "channel name", *, error: type[InvalidName] = InvalidName
) -> str:
    """Return ``value`` when it is 1-200 characters of ``A-Z a-z 0-9 _ . : -``.

    Raises ``error`` (an ``InvalidName``, so also a ``ValueError``) saying what was
    wrong otherwise.
    """
    if not isinstance(value, str):
        raise error(f"A {what} must be a string, got {type(value).__name__}.")
    if not NAME_RE.match(value):
        raise error(
            f"Invalid {what} {value[:60]!r}: use 1-200 characters of letters, digits "
            "and _ . : - (the app namespace is added for you)."
        )
    return value
