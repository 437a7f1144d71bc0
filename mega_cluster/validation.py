"""The one input layer: every public call checks its arguments here first.

Names, lock keys, durations, counts and JSON payloads are checked before anything
is sent or stored, so a bad value fails at the call with an error saying what was
wrong and what to do, never later on a server or on another node. The bounds are
listed in docs/limits.md.

Refusals are ``ValueError`` / ``TypeError`` subclasses from
:mod:`mega_cluster.exceptions`: ``InvalidName`` / ``InvalidLockKey`` for names,
``InvalidArgument`` / ``ArgumentTypeError`` for numbers, ``MessageEncodeError``
for payloads.
"""

from __future__ import annotations

import datetime
import math
import re
from typing import Any

from django.core.serializers.json import DjangoJSONEncoder

from .exceptions import (
    ArgumentTypeError,
    InvalidArgument,
    InvalidLockKey,
    InvalidName,
    MessageEncodeError,
)

#: Channel, cache, cache key, dedupe key and plugin names, matched in full
#: (``\Z``, not ``$``: a trailing newline does not pass).
NAME_RE = re.compile(r"\A[A-Za-z0-9_.:\-]{1,200}\Z")
NAME_MAX_CHARS = 200
#: Longest lock key accepted, in UTF-8 bytes.
MAX_LOCK_KEY_BYTES = 512
#: Longest duration accepted anywhere (ttl, wait, delay, timeout, debounce), in
#: seconds: about 31.7 years, far below what every backend stores (Redis PX in
#: milliseconds, database datetimes, ``threading`` timeouts).
MAX_SECONDS = 10**9
#: Largest count accepted (max_retries, concurrency, limit): a PostgreSQL integer.
MAX_COUNT = 2**31 - 1
#: Largest cache ``incr`` delta: the Redis stores add through a Lua script, whose
#: numbers are doubles, exact up to 2**53.
MAX_DELTA = 2**53 - 1
#: Deepest nesting of lists and objects in a payload. Python's JSON decoder
#: recurses once per level, so a much deeper payload could be sent and then fail
#: to decode on the receiving node.
MAX_JSON_DEPTH = 100

_encoder = DjangoJSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)
_json_token = re.compile(r'"(?:[^"\\]|\\.)*"|[\[\]{}]', re.DOTALL)


def _show(value: object) -> str:
    """``repr(value)`` cut to 60 characters (a huge int has no repr: its size)."""
    try:
        text = repr(value)
    except ValueError:  # an int over sys.get_int_max_str_digits()
        return f"an int of {value.bit_length()} bits"  # type: ignore[attr-defined]
    return text if len(text) <= 60 else text[:57] + "..."


# names ------------------------------------------------------------------------------


def validate_name(
    value: object, what: str = "channel name", *, error: type[InvalidName] = InvalidName
) -> str:
    """Return ``value`` when it is 1-200 characters of ``A-Z a-z 0-9 _ . : -``.

    Raises ``error`` (an ``InvalidName``, so also a ``ValueError``) saying what was
    wrong otherwise; the whole string must match (a trailing newline fails).
    """
    if type(value) is not str:
        if isinstance(value, str):  # a str subclass: checked as the plain string
            value = str(value)
        else:
            raise error(f"A {what} must be a string, got {type(value).__name__}.")
    if NAME_RE.fullmatch(value) is None:
        raise error(
            f"Invalid {what} {value[:60]!r}: use 1-{NAME_MAX_CHARS} characters of "
            "letters, digits and _ . : - and nothing else, not even a trailing "
            "newline (the app namespace is added for you)."
        )
    return value


def validate_lock_key(key: object) -> str:
    """Return ``key`` when it is a non-empty string of at most 512 UTF-8 bytes
    without NUL (which PostgreSQL text cannot store)."""
    if not isinstance(key, str):
        raise InvalidLockKey(
            f"A lock key must be a string, got {type(key).__name__}: {_show(key)}."
        )
    if not key:
        raise InvalidLockKey("A lock key must not be empty.")
    try:
        size = len(key.encode("utf-8"))
    except UnicodeEncodeError as exc:
        raise InvalidLockKey(
            f"Lock key {key[:40]!r} cannot be encoded as UTF-8 ({exc.reason} at "
            f"position {exc.start}); remove the lone surrogate."
        ) from None
    if "\x00" in key:
        # PostgreSQL text cannot hold NUL: refused on every backend alike
        raise InvalidLockKey(
            f"Lock key {key[:40]!r} contains a NUL character; remove it."
        )
    if size > MAX_LOCK_KEY_BYTES:
        raise InvalidLockKey(
            f"Lock key {key[:40]!r}… is {size} bytes in UTF-8; the limit is "
            f"{MAX_LOCK_KEY_BYTES}. Use a shorter key (hash long parts)."
        )
    return str(key)


# numbers ----------------------------------------------------------------------------


def validate_seconds(
    value: object,
    name: str,
    *,
    allow_zero: bool = True,
    allow_forever: bool = False,
    maximum: float = MAX_SECONDS,
) -> float:
    """``value`` (an int, float or ``timedelta``) as float seconds, or raise.

    Refuses bools and non-numbers (``ArgumentTypeError``), NaN, infinities (unless
    ``allow_forever``: ``math.inf`` is then returned as is), negative values, 0
    unless ``allow_zero``, and values over ``maximum`` (``InvalidArgument``).
    """
    if isinstance(value, datetime.timedelta):
        value = value.total_seconds()
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ArgumentTypeError(
            f"{name} must be a number of seconds, got {type(value).__name__} "
            f"{_show(value)}."
        )
    if isinstance(value, int):
        if value > maximum:  # before float(): 10**400 would raise OverflowError
            raise _too_big(name, value, maximum)
        value = float(value)
    if math.isnan(value):
        raise InvalidArgument(f"{name} must be a finite number of seconds, got nan.")
    if value == math.inf and allow_forever:
        return value
    lowest = ">= 0" if allow_zero else "> 0"
    if value < 0 or (value == 0 and not allow_zero):
        raise InvalidArgument(f"{name} must be {lowest} seconds, got {value!r}.")
    if value > maximum:
        raise _too_big(name, value, maximum)
    return value


def _too_big(name: str, value: object, maximum: float) -> InvalidArgument:
    shown = f"{value:g}" if isinstance(value, float) else _show(value)
    return InvalidArgument(
        f"{name} must be a finite number of seconds of at most {maximum:g} (about "
        f"{maximum / 31_557_600:.3g} years), got {shown}."
    )


def validate_optional_seconds(
    value: object, name: str, *, allow_zero: bool = True
) -> float | None:
    """Like :func:`validate_seconds`, ``None`` passing through."""
    if value is None:
        return None
    return validate_seconds(value, name, allow_zero=allow_zero)


def validate_count(
    value: object, name: str, *, minimum: int = 0, maximum: int = MAX_COUNT
) -> int:
    """``value`` when it is an int (not a bool) in ``[minimum, maximum]``, or raise."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ArgumentTypeError(
            f"{name} must be an int, got {type(value).__name__} {_show(value)}."
        )
    if value < minimum or value > maximum:
        raise InvalidArgument(
            f"{name} must be an int >= {minimum} and <= {maximum}, got {_show(value)}."
        )
    return int(value)


# payloads ---------------------------------------------------------------------------


def encode_json(message: Any, max_bytes: int, *, what: str = "message") -> str:
    """``message`` as strict JSON text (``DjangoJSONEncoder``), or raise.

    Raises ``MessageEncodeError`` (nothing is sent) when ``message`` is not
    JSON-serialisable, holds NaN or an infinity, nests deeper than
    :data:`MAX_JSON_DEPTH`, holds a string that is not valid Unicode (a lone
    surrogate) or is over ``max_bytes`` bytes in UTF-8.
    """
    try:
        text = _encoder.encode(message)
    except RecursionError:
        raise _too_deep(what) from None
    except (TypeError, ValueError) as exc:
        raise MessageEncodeError(
            f"The {what} is not JSON-serialisable as strict JSON ({exc}); send "
            "only dicts, lists, "
            "strings, finite numbers, booleans and None (dates, decimals and UUIDs "
            "are converted by DjangoJSONEncoder; NaN and Infinity are not JSON)."
        ) from exc
    if not text.isascii():
        try:
            size = len(text.encode("utf-8"))
        except UnicodeEncodeError as exc:
            raise MessageEncodeError(
                f"The {what} holds a string that is not valid Unicode ({exc.reason}: "
                "a lone surrogate); decode bytes properly before sending."
            ) from None
    else:
        size = len(text)
    if size > max_bytes:
        raise MessageEncodeError(
            f"The encoded {what} is {size} bytes, over the {max_bytes}-byte limit; "
            "send an id and load the data on the receiving side, or raise "
            "MEGA_CLUSTER['MESSAGE_MAX_BYTES']."
        )
    # cheap bound first: fewer brackets than the limit cannot nest deeper
    if text.count("[") + text.count("{") > MAX_JSON_DEPTH and (
        json_depth(text) > MAX_JSON_DEPTH
    ):
        raise _too_deep(what)
    return text


def check_frame(size: int, payload_json: str, limit: int | None) -> None:
    """Raise ``MessageEncodeError`` when a wire frame of ``size`` bytes carrying
    ``payload_json`` is over the broker's ``limit`` (NATS: the server's
    ``max_payload``)."""
    if limit is not None and size > limit:
        envelope = size - len(payload_json.encode("utf-8"))
        raise MessageEncodeError(
            f"The message is {size} bytes on the wire ({envelope} of them the "
            f"envelope), over the broker's {limit}-byte limit (NATS: the server's "
            "max_payload); nothing was sent. Send an id and load the data on the "
            "receiving side, or raise the server's limit."
        )


def _too_deep(what: str) -> MessageEncodeError:
    return MessageEncodeError(
        f"The {what} nests lists/objects more than {MAX_JSON_DEPTH} levels deep; "
        "flatten it (receivers could not decode it)."
    )


def json_depth(text: str) -> int:
    """The deepest nesting of arrays and objects in JSON ``text``."""
    depth = deepest = 0
    for match in _json_token.finditer(text):
        token = match.group()
        if token in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif token in "]}":
            depth -= 1
    return deepest
