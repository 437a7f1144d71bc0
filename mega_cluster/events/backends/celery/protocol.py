"""What the Celery backend's processes agree on: the task, the message, the
settings a Celery app needs, and the timings of the books.

A message is the task :data:`TASK_NAME` with arguments ``[app name, event id,
channel]``, plus, on an event's first message, the event itself: ``[payload,
max_retries, timeout]`` with :data:`LEAN` appended when the event has no row
(``BOOKKEEPING = "failures"``).
"""

from __future__ import annotations

import json
from typing import Any

from ....validation import validate_name
from ...attempts.incoming import Malformed, check_numbers

TASK_NAME = "mega_cluster.events.deliver"
#: What the backend relies on, set on the Celery app it builds from ``BROKER_URL``
#: (docs/deployment.md: set them on yours when you pass ``APP``): acks after the
#: handler, a killed worker's message redelivered, no more reserved than run.
CELERY_SETTINGS: dict[str, Any] = {
    "task_acks_late": True,
    "task_reject_on_worker_lost": True,
    "task_ignore_result": True,
    "worker_prefetch_multiplier": 1,
    "worker_hijack_root_logger": False,
    "broker_connection_retry_on_startup": True,
}
#: How early a message may take an event that is not due yet (seconds): clocks and
#: countdowns of different machines differ a little.
EARLY = 0.05
#: Default ``OPTIONS["RESEND_AFTER"]`` (seconds).
RESEND_AFTER = 3600.0
#: Lost events sent again per channel and round.
RESEND_BATCH = 500
#: ``OPTIONS["BOOKKEEPING"]``: a row per event, or rows only where needed.
BOOKKEEPING = ("all", "failures")
#: Fourth item of a first message's event: run it without a row (``"failures"``).
LEAN = 1
#: How often a consumer adds the successes it counted to the tallies (seconds).
TALLY_EVERY = 1.0


def first_message(
    payload: str, max_retries: int, timeout: float | None, *, lean: bool
) -> list[Any]:
    """The event as its first message carries it."""
    carried: list[Any] = [payload, max_retries, timeout]
    if lean:
        carried.append(LEAN)
    return carried


def is_lean(carried: Any) -> bool:
    """Whether a first message's event has no row (it runs without a claim)."""
    return carried is not None and len(carried) > 3 and carried[3] == LEAN


# incoming messages ---------------------------------------------------------------


def unattributable(event_id: Any, channel: Any) -> str | None:
    """Why a message cannot be an event of this app's queue (an id or a channel
    that is not one), or None."""
    if (
        not isinstance(event_id, str)
        or not 0 < len(event_id) <= 32
        or not (event_id.isascii() and event_id.isprintable())
    ):
        return f"the event id {event_id!r:.80} is not 1-32 printable ASCII characters"
    try:
        validate_name(channel, "event channel name")
    except ValueError as exc:
        return str(exc)
    return None


def carried_problem(first: Any) -> str | None:
    """Why a message's carried event (see :func:`first_message`) is malformed,
    or None (also when it carries none)."""
    if first is None:
        return None
    if not isinstance(first, list | tuple) or len(first) not in (3, 4):
        return f"the carried event {first!r:.80} is not [payload, max_retries, timeout]"
    if len(first) == 4 and first[3] != LEAN:
        return f"the carried event's fourth item is {first[3]!r:.40}, not {LEAN}"
    payload = first[0]
    if not isinstance(payload, str):
        return f"the carried payload is a {type(payload).__name__}, not JSON text"
    if "\x00" in payload:
        return "the carried payload holds a NUL character"
    try:
        payload.encode("utf-8")
    except UnicodeEncodeError:
        return "the carried payload is not valid Unicode (a lone surrogate)"
    try:
        check_numbers(first[1], first[2])
    except Malformed as exc:
        return str(exc)
    return None


def storable(first: Any) -> str:
    """The payload of a malformed message as the dead letter keeps it: as sent
    when a text column holds it, else its ``repr`` as a JSON string."""
    payload = first[0] if isinstance(first, list | tuple) and first else first
    if (
        isinstance(payload, str)
        and "\x00" not in payload
        and carried_problem([payload, 0, None]) is None
    ):
        return payload
    return json.dumps(repr(payload)[:10_000])
