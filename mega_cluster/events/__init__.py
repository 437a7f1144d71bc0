"""The event queue: ``app.event_queue`` (SPEC section 6, EventQueue).

See ``docs/events.md`` for the guide and ``docs/runworker.md`` for the worker.
"""

from .backends.base import DeadLetter
from .queue import EventContext, EventQueue

__all__ = ["DeadLetter", "EventContext", "EventQueue"]
