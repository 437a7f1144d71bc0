"""What the Celery consumer checks of a message before it takes its event
(:func:`checked`, see :mod:`~mega_cluster.events.attempts.incoming`), and a
delivery's slot of its channel (:class:`Slot`)."""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from ...attempts import Write, incoming, log_dead
from ..base import ClaimedEvent
from .protocol import carried_problem, storable, unattributable

if TYPE_CHECKING:
    from .store import CeleryStore


def checked(
    store: CeleryStore,
    write: Write,
    app_name: str,
    event_id: Any,
    channel: Any,
    first: Any,
) -> tuple[bool, Any]:
    """``(drop, first)``: drop a malformed message (counted, logged, and
    dead-lettered when it names an event). A damaged carried event of an event
    that has a row is counted and left out (``first`` None): the row runs."""
    why = unattributable(event_id, channel)
    if why is not None:
        incoming.count(app_name, "message", "a Celery message", why)
        return True, None
    why = carried_problem(first)
    if why is None:
        return False, first
    incoming.count(app_name, "event", f"the message of event {event_id}", why)
    if write(event_id, channel, store.has_row, event_id):
        return False, None
    error = f"{incoming.REJECTED}{why}"
    event = ClaimedEvent(
        id=event_id,
        channel=channel,
        payload=storable(first),
        attempt=1,
        max_retries=0,
        timeout=None,
    )
    write(event_id, channel, store.lean_row, event, "dead", error=error)
    log_dead(event, error)
    return True, None


class Slot:
    """A delivery's slot of its channel, released once (timeout or the end)."""

    def __init__(self, slot: threading.BoundedSemaphore | None) -> None:
        self._slot = slot
        self._lock = threading.Lock()
        if slot is not None:
            slot.acquire()

    def release(self) -> None:
        with self._lock:
            slot, self._slot = self._slot, None
        if slot is not None:
            slot.release()
