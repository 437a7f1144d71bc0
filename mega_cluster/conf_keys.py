"""The keys of the ``MEGA_CLUSTER`` setting besides ``BACKEND`` and ``OPTIONS``: their
parsers and defaults, per primitive section and per app (read by :mod:`.conf`)."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

from .schedules.jobs import JobError, parse_jobs
from .validation import MAX_SECONDS


class OptionError(ValueError):
    """An option has the wrong type or value (message says which and what is expected)."""


def _number(kind: str, *, minimum: float | None = None, allow_none: bool = False):
    def parse(value: Any) -> float | int | None:
        if value is None and allow_none:
            return None
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise OptionError(f"expected a number ({kind}), got {value!r}")
        if isinstance(value, float) and not math.isfinite(value):
            raise OptionError(f"expected a finite number ({kind}), got {value!r}")
        if kind == "int" and value != int(value):
            raise OptionError(f"expected a whole number, got {value!r}")
        if minimum is not None and value < minimum:
            raise OptionError(f"expected a number >= {minimum}, got {value!r}")
        if kind == "float" and value > MAX_SECONDS:  # every float option is seconds
            raise OptionError(
                f"expected at most {MAX_SECONDS:g} seconds, got {value!r}"
            )
        return int(value) if kind == "int" else float(value)

    return parse


def _string(value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise OptionError(f"expected a non-empty string, got {value!r}")
    return value


def _positive_seconds_or_none(value: Any) -> float | None:
    if value is None:
        return None
    seconds = _number("float", minimum=0)(value)
    if not seconds:
        raise OptionError(f"expected a number of seconds > 0 or None, got {value!r}")
    return seconds


def _jobs(value: Any) -> Any:
    try:
        return parse_jobs(value)
    except JobError as exc:
        raise OptionError(str(exc)) from None


def _optional_string(value: Any) -> str | None:
    return None if value is None else _string(value)


def _optional_name(value: Any) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str) or not value or len(value) > 120:
        raise OptionError(f"expected None or a name of 1-120 characters, got {value!r}")
    return value


def _bool(value: Any) -> bool:
    if not isinstance(value, bool):
        raise OptionError(f"expected True or False, got {value!r}")
    return value


#: Keys accepted in each section besides ``BACKEND`` and ``OPTIONS``, with their
#: parser and default. Units are seconds and bytes.
SECTION_KEYS: dict[str, dict[str, tuple[Callable[[Any], Any], Any]]] = {
    "PUBSUB": {
        "BUFFER_SIZE": (_number("int", minimum=1), 10_000),
        "RECONNECT_MAX_DELAY": (_number("float", minimum=0.1), 30.0),
    },
    "LOCKS": {
        "TTL": (_number("float", minimum=0.01), 30.0),
        "WAIT": (_number("float", minimum=0), 10.0),
    },
    "EVENT_QUEUE": {
        "LEASE": (_number("float", minimum=0.1), 30.0),
        "RETRY_BASE": (_number("float", minimum=0), 1.0),
        "RETRY_CAP": (_number("float", minimum=0), 300.0),
        "POLL_INTERVAL": (_number("float", minimum=0.01), 1.0),
        "DRAIN_TIMEOUT": (_number("float", minimum=0), 30.0),
        "CONSUME": (_bool, True),
        "RETENTION": (_number("float", minimum=0, allow_none=True), 86400.0),
    },
    "OUTBOX": {
        # sent rows are kept this long for receivers that missed some (replay)
        "RETENTION": (_number("float", minimum=1), 86400.0),
        # an unsent row older than this is the relay's (its sender died or failed)
        "RELAY_AFTER": (_number("float", minimum=0.1), 5.0),
        "RELAY_INTERVAL": (_number("float", minimum=0.05), 1.0),
        "RELAY_MAX_DELAY": (_number("float", minimum=0.1), 30.0),
        "RELAY_BATCH": (_number("int", minimum=1), 500),
        # how often receivers compare their position with each channel's last number
        "HIGH_WATER_EVERY": (_number("float", minimum=0.1, allow_none=True), 5.0),
        # a stable name of this node: its read position survives restarts
        "RECEIVER": (_optional_name, None),
    },
    "CACHE": {
        "DEFAULT_STORE": (_string, "default"),
        "TTL": (_number("float", minimum=0, allow_none=True), None),
        "WRAP_TIMEOUT": (_number("float", minimum=0), 10.0),
    },
    # the inbox of idempotent handlers (mega_cluster.inbox, docs/events.md)
    "INBOX": {
        "DATABASE": (_string, "default"),
        "RETENTION": (_positive_seconds_or_none, 7 * 86400.0),
    },
    "SCHEDULES": {
        "JOBS": (_jobs, {}),
        # None: the event queue's database (``default`` for other transports)
        "DATABASE": (_optional_string, None),
        "RETENTION": (_number("float", minimum=0), 7 * 86400.0),
        "INTERVAL": (_number("float", minimum=0.05), 5.0),
    },
}

#: Keys accepted at app level (top level of the setting, or one ``APPS`` entry).
APP_KEYS: dict[str, tuple[Callable[[Any], Any], Any]] = {
    "MESSAGE_MAX_BYTES": (_number("int", minimum=1), 1024 * 1024),
    "NODE_HEARTBEAT": (_number("float", minimum=0.1), 5.0),
    "NODE_TIMEOUT": (_number("float", minimum=0.5), 30.0),
    "CIRCUIT_FAILURES": (_number("int", minimum=0), 3),
    "CIRCUIT_PROBE_EVERY": (_number("float", minimum=0.05), 1.0),
    "HEALTH_TIMEOUT": (_number("float", minimum=0.1), 2.0),
}
SECTIONS = tuple(SECTION_KEYS)
