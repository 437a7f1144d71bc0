"""Events as they arrive at a consumer (a row of the ``database`` queue, a Celery
message), checked the way ``publish()`` checks them before any handler sees one.

Whatever ``publish()`` would have refused (a payload that is not strict JSON,
NaN or Infinity, nesting deeper than the limit, over ``MESSAGE_MAX_BYTES``; a
``timeout`` or ``max_retries`` out of range) can only come from elsewhere: a row
written by hand or by another program, a message forged or damaged on the broker.
Such an event is **rejected**: counted (``mega_cluster_events_rejected_total
{app,source}``, ``app.event_queue.rejected``), logged, and dead-lettered without
running, its error starting with ``"rejected: "``. A Celery message that cannot
even be attributed to an event of this app (wrong arguments, another app's
name, an id or channel that is not one) is counted, logged and dropped. Either
way the consumer goes on with the next event.
"""

from __future__ import annotations

import json
import logging
import math
import threading
from collections import Counter
from typing import Any

from ... import metrics
from ...validation import MAX_JSON_DEPTH, json_depth
from ..backends.base import ClaimedEvent

logger = logging.getLogger("mega_cluster.events")

#: Prefix of the dead letter's error of a rejected event.
REJECTED = "rejected: "
#: The largest ``max_retries`` and ``timeout`` publish() accepts.
MAX_RETRIES = 2**31 - 1
MAX_SECONDS = 1e9
#: Log the first rejections of a process, then one in this many.
LOG_EVERY = 1000

_counts: Counter[str] = Counter()
_lock = threading.Lock()


class Malformed(ValueError):
    """An incoming event that publish() would have refused; the message says why."""


def rejected(app_name: str) -> int:
    """Events and messages of ``app_name`` rejected in this process."""
    return _counts[app_name]


def count(app_name: str, source: str, what: str, why: str) -> None:
    """Count and log one rejection: ``what`` names it, ``why`` says what is wrong."""
    with _lock:
        _counts[app_name] += 1
        n = _counts[app_name]
    metrics.inc("events_rejected", app=app_name, source=source)
    if n <= 10 or n % LOG_EVERY == 0:
        logger.warning(
            "event queue of app %s rejected %s: %s (%d rejected so far)",
            app_name,
            what,
            why,
            n,
        )


def _constant(name: str) -> Any:
    raise Malformed(f"the payload holds {name}, which is not JSON")


def decode_payload(text: Any, max_bytes: int) -> Any:
    """The payload of an incoming event, decoded as publish() encodes it; raises
    :class:`Malformed` saying what is wrong."""
    if not isinstance(text, str):
        raise Malformed(f"the payload is a {type(text).__name__}, not JSON text")
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise Malformed("the payload is not valid Unicode (a lone surrogate)") from None
    if size > max_bytes:
        raise Malformed(f"the payload is {size} bytes, over MESSAGE_MAX_BYTES")
    if text.count("[") + text.count("{") > MAX_JSON_DEPTH and (
        json_depth(text) > MAX_JSON_DEPTH
    ):
        raise Malformed(f"the payload nests deeper than {MAX_JSON_DEPTH} levels")
    try:
        return json.loads(text, parse_constant=_constant)
    except (ValueError, RecursionError) as exc:
        if isinstance(exc, Malformed):
            raise
        raise Malformed(f"the payload is not JSON ({exc})") from None


def check_numbers(max_retries: Any, timeout: Any) -> None:
    """Raise :class:`Malformed` unless ``max_retries`` and ``timeout`` are what
    publish() accepts."""
    if (
        isinstance(max_retries, bool)
        or not isinstance(max_retries, int)
        or not 0 <= max_retries <= MAX_RETRIES
    ):
        raise Malformed(f"max_retries is {max_retries!r}, not an int 0..2**31-1")
    if timeout is not None and (
        isinstance(timeout, bool)
        or not isinstance(timeout, int | float)
        or not math.isfinite(timeout)
        or not 0 < timeout <= MAX_SECONDS
    ):
        raise Malformed(f"timeout is {timeout!r}, not None or 0 < seconds <= 1e9")


def check(event: ClaimedEvent, max_bytes: int) -> Any:
    """The decoded payload of ``event``; :class:`Malformed` when it, its
    ``timeout`` or its ``max_retries`` is not what publish() would have sent."""
    check_numbers(event.max_retries, event.timeout)
    return decode_payload(event.payload, max_bytes)
