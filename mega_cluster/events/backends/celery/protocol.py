"""What the Celery backend's processes agree on: the task, the message, the
settings a Celery app needs, and the timings of the books.

A message is the task :data:`TASK_NAME` with arguments ``[app name, event id,
channel]``, plus, on an event's first message, the event itself: ``[payload,
max_retries, timeout]`` with :data:`LEAN` appended when the event has no row
(``BOOKKEEPING = "failures"``).
"""

from __future__ import annotations

from typing import Any

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
