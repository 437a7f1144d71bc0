"""What the queue hands down to its consumers: a handler's context, a subscription,
and the consumer's configuration (read once from the settings when consuming starts).

Nothing here imports the queue or a consumer, so both import it.
"""

from __future__ import annotations

import inspect
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..inbox import IdempotentProcess


@dataclass(frozen=True, kw_only=True)
class EventContext:
    """What a handler learns about the event it runs.

    ``id`` is the id ``publish()`` returned, ``channel`` the name as published,
    ``attempt`` counts from 1 (a retry or a redelivery after a lost worker is the
    next attempt) and ``cancelled`` is a ``threading.Event`` set when the attempt
    timed out or the node starts shutting down (a drain): long handlers should
    check it and stop.
    """

    id: str
    channel: str
    attempt: int
    cancelled: threading.Event = field(default_factory=threading.Event)


@dataclass(kw_only=True)
class Subscription:
    """A handler consuming one channel on this node."""

    channel: str
    process: Callable[..., Any]
    concurrency: int
    idle: Callable[[], Any] | None
    timeout: float | None
    max_retries: int | None
    #: ``on_spent(ctx, error)``: the event is dead-lettered without running, its
    #: lost attempts having spent the budget (called in an I/O thread).
    on_spent: Callable[[EventContext, str], Any] | None = None
    #: ``idempotent=True``: ``process`` is this wrapper, which runs the handler
    #: through the app's inbox (mega_cluster.inbox).
    inbox: IdempotentProcess | None = None

    @property
    def is_async(self) -> bool:
        fn = self.process
        return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
            getattr(fn, "__call__", None)  # noqa: B004 - async callable objects
        )


@dataclass(frozen=True, kw_only=True)
class ConsumerConfig:
    """How a consumer runs, built by the queue when consuming starts (the
    ``EVENT_QUEUE`` settings and ``runworker``'s options); consumers read nothing
    else of the queue."""

    app_name: str
    #: Seconds an event is leased to its worker; renewed every ``lease / 3``.
    lease: float
    #: Longest sleep of a pull consumer whose backend may miss a wake-up.
    poll_interval: float
    retry_base: float
    retry_cap: float
    #: Seconds succeeded events are kept (``None``: forever).
    retention: float | None
    #: ``runworker --channels``: only these are consumed (``None``: every one).
    only_channels: frozenset[str] | None = None
    #: ``runworker --concurrency``: replaces each subscription's concurrency.
    concurrency_override: int | None = None
    #: ``MESSAGE_MAX_BYTES``: a larger incoming payload is rejected.
    max_bytes: int = 1 << 20

    def takes(self, channel: str) -> bool:
        """Whether this consumer consumes ``channel`` when it is subscribed."""
        return self.only_channels is None or channel in self.only_channels

    def concurrency(self, sub: Subscription) -> int:
        """Events of ``sub``'s channel run at once here (0: unlimited)."""
        override = self.concurrency_override
        return sub.concurrency if override is None else override
