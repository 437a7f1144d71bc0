"""``app.event_queue``: publish events, subscribe handlers, inspect the queue."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

from asgiref.sync import sync_to_async
from django.db import connections, transaction

from ..backends import load_backend
from ..exceptions import AlreadySubscribed
from ..inbox import IdempotentProcess, get_inbox, is_idempotent
from ..inbox.handlers import check_flag
from ..validation import (
    encode_json,
    validate_count,
    validate_name,
    validate_optional_seconds,
)
from .backends.base import (
    EVENT_STATES,
    STAT_KEYS,
    DeadLetter,
    EventBackend,
    EventConsumer,
    EventInfo,
    NewEvent,
)
from .consumer import Consumer
from .context import ConsumerConfig, EventContext, Subscription

if TYPE_CHECKING:
    from ..registry import ClusterApp

__all__ = ["EventContext", "EventQueue", "Subscription"]

logger = logging.getLogger("mega_cluster.events")

#: ``hook(queue)`` callables run by :meth:`EventQueue.start` before consuming
#: begins: built-in subscribers (``mega_cluster.tasks`` subscribes its task queues'
#: channels) add their subscriptions there, on every node, as plugins do in
#: ``before_load()``.
start_hooks: list[Callable[[EventQueue], None]] = []


def _seconds(name: str, value: Any, *, allow_zero: bool) -> float | None:
    return validate_optional_seconds(value, name, allow_zero=allow_zero)


def _count(name: str, value: Any) -> int:
    return validate_count(value, name)


class EventQueue:
    """The event queue of one cluster app (SPEC section 6).

    Events are JSON payloads published on a channel; every node that subscribed
    the channel and is started (``app.start()``, ``runworker``) consumes it, each
    event by one handler at a time. Durable backends deliver at least once, so make
    handlers idempotent. Sync-native; every method has an ``a``-prefixed twin.
    """

    def __init__(self, app: ClusterApp) -> None:
        self.app = app
        section = app.settings.event_queue
        self.settings = section
        self.backend = load_backend(app, "EVENT_QUEUE", EventBackend)
        self._lock = threading.RLock()
        self._subscriptions: dict[str, Subscription] = {}
        self._consumer: EventConsumer | None = None
        self._started = False
        self.consume: bool = section["CONSUME"]
        self.only_channels: frozenset[str] | None = None
        self.concurrency_override: int | None = None

    def __repr__(self) -> str:
        return (
            f"<EventQueue app={self.app.name!r} backend={type(self.backend).__name__}>"
        )

    # subscribing ------------------------------------------------------------------

    def subscribe(
        self,
        channel: str,
        *,
        process: Callable[..., Any],
        concurrency: int = 1,
        idle: Callable[[], Any] | None = None,
        timeout: float | None = None,
        max_retries: int | None = None,
        on_spent: Callable[[EventContext, str], Any] | None = None,
        idempotent: bool = False,
    ) -> None:
        """Consume ``channel`` on this node with ``process(payload, ctx)``.

        ``process`` may be sync (run in a worker thread) or ``async def`` (run on the
        consumer's event loop). ``concurrency`` is the number of events of this
        channel run at once in this process (0: unlimited). ``idle()`` (sync or
        async, cheap) is asked before each pull; while it returns False no new event
        is taken. ``timeout`` applies to events published without one;
        ``max_retries`` raises the retry budget of events published with fewer.
        ``on_spent(ctx, error)`` is called when an event is dead-lettered
        without running because lost attempts (dead workers) spent its budget.
        Consuming begins when the app is started, or at once if it already is.
        ``idempotent=True`` (or ``process`` marked ``@idempotent``): a sync
        ``process`` runs inside a transaction on ``INBOX["DATABASE"]`` that also
        records the event id, and a redelivery whose effect committed is skipped.
        Raises ``AlreadySubscribed`` if this node already consumes ``channel``.
        """
        validate_name(channel, "event channel name")
        if not callable(process):
            raise TypeError(f"process must be callable, got {process!r}.")
        if idle is not None and not callable(idle):
            raise TypeError(f"idle must be callable or None, got {idle!r}.")
        check_flag(idempotent, "idempotent")
        inbox = None
        if idempotent or is_idempotent(process):
            inbox = IdempotentProcess(
                get_inbox(self.app), channel, process, on_spent=on_spent
            )
        sub = Subscription(
            channel=channel,
            process=process if inbox is None else inbox,
            inbox=inbox,
            concurrency=_count("concurrency", concurrency),
            idle=idle,
            timeout=_seconds("timeout", timeout, allow_zero=False),
            max_retries=None
            if max_retries is None
            else _count("max_retries", max_retries),
            on_spent=on_spent,
        )
        with self._lock:
            if channel in self._subscriptions:
                raise AlreadySubscribed(
                    f"Channel {channel!r} is already consumed on this node; call "
                    "unsubscribe() first to replace its handler."
                )
            self._subscriptions[channel] = sub
            if self._consumer is not None:
                self._consumer.add(sub)
            elif not self._started and self.app.started:
                # Built after app.start() (which starts only built managers).
                self.start()

    def unsubscribe(self, channel: str) -> None:
        """Stop taking events of ``channel`` here; events already running finish."""
        validate_name(channel, "event channel name")
        with self._lock:
            if self._subscriptions.pop(channel, None) and self._consumer is not None:
                self._consumer.remove(channel)

    @property
    def rejected(self) -> int:
        """Malformed incoming events and messages this process rejected (see
        docs/limits.md, Incoming messages)."""
        from .attempts import incoming

        return incoming.rejected(self.app.name)

    def subscriptions(self) -> dict[str, Subscription]:
        with self._lock:
            return dict(self._subscriptions)

    # publishing -------------------------------------------------------------------

    def encode(self, channel: str, payload: Any) -> str:
        """``payload`` as JSON; ``MessageEncodeError`` when it cannot be sent."""
        return encode_json(
            payload,
            self.app.settings["MESSAGE_MAX_BYTES"],
            what=f"payload published on event channel {channel!r}",
        )

    def publish(
        self,
        channel: str,
        payload: Any,
        *,
        timeout: float | None = None,
        max_retries: int = 0,
        delay: float | None = None,
        dedupe_key: str | None = None,
    ) -> str:
        """Queue ``payload`` for one of the nodes consuming ``channel``; return its id.

        The publishing node need not subscribe. Inside ``transaction.atomic()`` (on
        the backend's database, ``default`` for non-database backends) the event
        exists only if the transaction commits: the ``database`` backend writes
        its row in that transaction; the ``celery`` backend writes it to the
        outbox table in that transaction and sends it after commit (the outbox
        relay sends it if this process dies or the broker refuses); ``memory``
        queues it at commit. The id is known at once. ``delay`` defers the first
        attempt by that many seconds; with ``dedupe_key``, while an event with
        that key and channel waits for its first attempt, no new event is queued
        and that event's id is returned (with the ``celery`` backend inside an
        atomic block the check happens at commit). Raises ``MessageEncodeError``
        (nothing queued) for a payload that is not JSON or too large, and a
        ``ValueError`` for a bad channel name or argument.
        """
        validate_name(channel, "event channel name")
        if dedupe_key is not None:
            validate_name(dedupe_key, "dedupe key")
        event = NewEvent(
            id=uuid.uuid4().hex,
            channel=channel,
            payload=self.encode(channel, payload),
            max_retries=_count("max_retries", max_retries),
            timeout=_seconds("timeout", timeout, allow_zero=False),
            available_at=time.time() + (_seconds("delay", delay, allow_zero=True) or 0),
            dedupe_key=dedupe_key,
        )
        alias = self.backend.transaction_alias()
        if not connections[alias].in_atomic_block:
            return self.backend.enqueue(event)
        if self.backend.writes_in_transaction:
            # the event's row is written in the caller's transaction
            return self.backend.enqueue(event)
        if self.backend.outbox:
            row_id = self.app.outbox.write_event(alias, event)
            transaction.on_commit(
                lambda: self._enqueue_on_commit(event, alias, row_id), using=alias
            )
            return event.id
        transaction.on_commit(lambda: self._enqueue_on_commit(event), using=alias)
        return event.id

    def _enqueue_on_commit(
        self, event: NewEvent, alias: str | None = None, row_id: int | None = None
    ) -> None:
        try:
            self.backend.enqueue(event)
        except Exception as exc:
            if row_id is not None:
                # committed in the outbox: the relay queues it once the broker is back
                logger.warning(
                    "event %s on channel %s could not be queued after commit (%s); "
                    "the outbox relay will queue it",
                    event.id,
                    event.channel,
                    exc,
                )
                return
            # on_commit callbacks cannot report to the caller any more; the
            # transaction is committed, so the loss must at least be loud.
            logger.exception(
                "event %s on channel %s could not be queued after commit",
                event.id,
                event.channel,
            )
            return
        if alias is not None and row_id is not None:
            self.app.outbox.sent(alias, row_id)

    # operations -------------------------------------------------------------------

    def stats(self, channel: str | None = None) -> dict[str, dict[str, int]]:
        """``{channel: {"pending", "running", "succeeded", "failed", "dead"}}``.

        ``failed`` counts failed attempts (each retry and each dead letter).
        Subscribed channels with no events yet are listed with zeros.
        """
        if channel is not None:
            validate_name(channel, "event channel name")
        result = self.backend.stats(channel)
        for name in self.subscriptions():
            if channel is None or name == channel:
                result.setdefault(name, dict.fromkeys(STAT_KEYS, 0))
        return dict(sorted(result.items()))

    def dead_letters(
        self, channel: str | None = None, limit: int = 100
    ) -> list[DeadLetter]:
        """Events that failed every attempt, newest first: id, channel, payload,
        attempts, error (the last one) and failed_at."""
        if channel is not None:
            validate_name(channel, "event channel name")
        return self.backend.dead_letters(channel, _count("limit", limit))

    def events(
        self, channel: str | None = None, status: str | None = None, limit: int = 100
    ) -> list[EventInfo]:
        """Stored events, newest first, of one ``channel`` and/or ``status``
        (``pending``, ``running``, ``succeeded``, ``dead``): id, channel, status,
        payload, attempts, error (with traceback) and times.

        Raises ``NotImplementedError`` when the backend cannot list events
        (``backend.supports_listing`` is False); ``dead_letters()`` always works.
        """
        if channel is not None:
            validate_name(channel, "event channel name")
        if status is not None and status not in EVENT_STATES:
            raise ValueError(
                f"status must be one of {', '.join(EVENT_STATES)}, got {status!r}."
            )
        if not self.backend.supports_listing:
            raise NotImplementedError(
                f"{type(self.backend).__name__} cannot list events; use dead_letters()."
            )
        return self.backend.events(channel, status, _count("limit", limit))

    def retry_dead(self, event_id: str) -> None:
        """Queue a dead letter again, same id, with a fresh attempt budget.

        Raises ``EventNotFound`` when no dead letter has that id.
        """
        self.backend.retry_dead(event_id)

    def discard_dead(self, event_id: str) -> None:
        """Delete a dead letter; raises ``EventNotFound`` when there is none."""
        self.backend.discard_dead(event_id)

    # async twins ------------------------------------------------------------------

    async def asubscribe(self, channel: str, **kwargs: Any) -> None:
        # subscribe() may wait for the consumer (its loop, an embedded Celery
        # worker starting): never on the caller's loop.
        await sync_to_async(self.subscribe, thread_sensitive=False)(channel, **kwargs)

    async def aunsubscribe(self, channel: str) -> None:
        await sync_to_async(self.unsubscribe, thread_sensitive=False)(channel)

    async def apublish(self, channel: str, payload: Any, **kwargs: Any) -> str:
        return await sync_to_async(self.publish)(channel, payload, **kwargs)

    async def astats(self, channel: str | None = None) -> dict[str, dict[str, int]]:
        return await sync_to_async(self.stats)(channel)

    async def adead_letters(
        self, channel: str | None = None, limit: int = 100
    ) -> list[DeadLetter]:
        return await sync_to_async(self.dead_letters)(channel, limit)

    async def aretry_dead(self, event_id: str) -> None:
        await sync_to_async(self.retry_dead)(event_id)

    async def adiscard_dead(self, event_id: str) -> None:
        await sync_to_async(self.discard_dead)(event_id)

    # lifecycle --------------------------------------------------------------------

    def configure_worker(
        self, *, channels: Iterable[str] | None = None, concurrency: int | None = None
    ) -> None:
        """Used by ``runworker``: consume here, only ``channels`` if given, and run
        ``concurrency`` events at once per channel instead of each subscription's."""
        with self._lock:
            self.consume = True
            if channels is not None:
                self.only_channels = frozenset(
                    validate_name(c, "event channel name") for c in channels
                )
            if concurrency is not None:
                self.concurrency_override = _count("concurrency", concurrency)

    @property
    def consuming(self) -> bool:
        return self._consumer is not None

    def consumer_config(self) -> ConsumerConfig:
        """How this node's consumer runs: the settings and ``runworker``'s options."""
        section = self.settings
        with self._lock:
            return ConsumerConfig(
                app_name=self.app.name,
                lease=section["LEASE"],
                poll_interval=section["POLL_INTERVAL"],
                retry_base=section["RETRY_BASE"],
                retry_cap=section["RETRY_CAP"],
                retention=section["RETENTION"],
                only_channels=self.only_channels,
                concurrency_override=self.concurrency_override,
                max_bytes=self.app.settings["MESSAGE_MAX_BYTES"],
            )

    def start(self) -> None:
        """Start the backend and, when ``CONSUME`` is on, consume the subscriptions."""
        with self._lock:
            if self._started:
                return
            self.backend.start()
            self._started = True
            for hook in list(start_hooks):
                hook(self)
            if self.backend.outbox:
                self.app.outbox.start()  # the relay of events left unsent
            if self.consume:
                config = self.consumer_config()
                consumer = self.backend.make_consumer(config) or Consumer(
                    self.backend, config
                )
                self._consumer = consumer
                consumer.start()
                for sub in self._subscriptions.values():
                    consumer.add(sub)

    def stop(self, timeout: float | None = None) -> None:
        """Stop consuming: wait up to ``timeout`` (default ``DRAIN_TIMEOUT``) for
        running events, then cancel the rest and hand them back; stop the backend."""
        with self._lock:
            consumer, self._consumer = self._consumer, None
            self._started = False
        if consumer is not None:
            consumer.stop(
                self.settings["DRAIN_TIMEOUT"] if timeout is None else timeout
            )
        self.backend.stop()

    def wait_failed(self, timeout: float | None = None) -> BaseException | None:
        """The consumer's fatal error once it has one (``runworker`` exits on it)."""
        consumer = self._consumer
        return consumer.wait_failed(timeout) if consumer is not None else None
