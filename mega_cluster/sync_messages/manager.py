"""``app.sync_message_manager``: messages to the other nodes, sent after commit."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

from asgiref.sync import sync_to_async
from django.db import DEFAULT_DB_ALIAS, connections
from django.db import transaction as db_transaction
from django.utils.connection import ConnectionDoesNotExist

from ..calls import call_sync
from ..inbox import IdempotentReceiver, receiver_once
from ..pubsub import envelope
from ..pubsub.manager import INTERNAL_PREFIX, Subscription
from ..validation import check_frame, validate_name

if TYPE_CHECKING:
    from ..pubsub import PubSubManager
    from ..registry import ClusterApp

logger = logging.getLogger("mega_cluster.sync_messages")

#: Sync messages travel on pub/sub channels users cannot name.
WIRE_PREFIX = f"{INTERNAL_PREFIX}sm:"

Transaction = bool | str | None


@dataclass(eq=False)
class _Receiver:
    handler: Callable[[Any], Any]
    on_gap: Callable[[], Any] | None
    #: an idempotent handler: run through the app's inbox with the message id
    once: IdempotentReceiver | None = None


class SyncMessageManager:
    """Tell the other nodes of the app that something changed, after commit.

    Rides on ``app.pubsub_manager`` (same backend, same at-most-once delivery) and
    adds what state synchronisation needs: sending is tied to the database
    transaction, the sender's own node is skipped, and receivers track each
    sender's sequence number per channel so a lost message is noticed and the
    receiver's ``on_gap`` (a plugin's ``handle_sync_gap()``) can reload state.
    """

    def __init__(self, app: ClusterApp) -> None:
        self.app = app
        self.max_bytes: int = app.settings["MESSAGE_MAX_BYTES"]
        #: gaps noticed on this node (missed sequence numbers, reconnects, overflow).
        self.gaps = 0
        self._receivers: dict[str, tuple[_Receiver, ...]] = {}
        self._wire_unsubscribe: dict[str, Callable[[], bool]] = {}
        self._last_seq: dict[tuple[str, str], int] = {}
        self._lock = threading.RLock()

    @property
    def pubsub(self) -> PubSubManager:
        return self.app.pubsub_manager

    def start(self) -> None:
        """Nothing to start: the pub/sub manager carries the messages."""

    def stop(self) -> None:
        """Forget every receiver (the pub/sub manager closes the connection)."""
        with self._lock:
            self._receivers = {}
            self._wire_unsubscribe = {}
            self._last_seq = {}

    # sending -----------------------------------------------------------------------

    def publish(
        self, channel: str, message: Any, *, transaction: Transaction = None
    ) -> None:
        """Send ``message`` (JSON) to ``channel``'s receivers on the other nodes.

        Inside ``transaction.atomic()`` on the chosen database the message is sent
        when the outermost block commits (a rolled-back savepoint drops only the
        messages published inside it; a rollback sends nothing and leaves nothing
        pending); outside one it is sent now. ``transaction=None`` watches the
        ``default`` database, ``transaction="alias"`` another one and
        ``transaction=False`` sends now even inside a block.

        Raises ``InvalidName``, or ``MessageEncodeError`` at the call (nothing will
        be sent). A broker failure at send time raises ``BackendUnavailable`` when
        sending now; after commit it is logged (the commit already happened) and
        receivers notice the gap.
        """
        validate_name(channel)
        self.publish_internal(channel, message, transaction)

    async def apublish(
        self, channel: str, message: Any, *, transaction: Transaction = None
    ) -> None:
        """Async twin of :meth:`publish` (the transaction state is that of Django's
        sync thread, where ``atomic()`` blocks of async views run)."""
        await sync_to_async(self.publish)(channel, message, transaction=transaction)

    def publish_internal(
        self, channel: str, message: Any, transaction: Transaction = None
    ) -> None:
        """:meth:`publish` without the channel name check, for mega_cluster's own
        channels (names users cannot write, such as ``~plugins``); not user API."""
        payload = envelope.encode_payload(message, self.max_bytes)
        self._check_frame(channel, payload)

        # A function, not a partial: Django 5.2 logs a failed robust on_commit
        # callback with func.__qualname__, which a partial lacks (AttributeError).
        def send() -> None:
            self._send(channel, payload)

        if transaction is False:
            send()
            return
        using = self._alias(transaction)
        if connections[using].in_atomic_block:
            # on_commit is savepoint-aware; robust: a failed send must not turn a
            # committed transaction into an exception in the caller
            db_transaction.on_commit(send, using=using, robust=True)
        else:
            send()

    def _check_frame(self, channel: str, payload_json: str) -> None:
        # the broker's frame limit (NATS max_payload) checked now: after commit
        # a refusal could only be logged
        limit = self.pubsub.backend.max_frame_bytes()
        if limit is not None:
            data = envelope.build(
                app=self.app.name,
                node=self.app.node_id,
                channel=WIRE_PREFIX + channel,
                seq=2**53,
                to=envelope.TO_OTHERS,
                payload_json=payload_json,
            )
            check_frame(len(data), payload_json, limit)

    @staticmethod
    def _alias(transaction: Transaction) -> str:
        if transaction is None or transaction is True:
            return DEFAULT_DB_ALIAS
        if not isinstance(transaction, str):
            raise TypeError(
                "transaction must be None (default database), False (send now) or a "
                f"DATABASES alias, got {transaction!r}."
            )
        try:
            connections[transaction]
        except ConnectionDoesNotExist:
            raise ValueError(
                f"transaction={transaction!r} is not a DATABASES alias; use one of "
                f"{', '.join(connections)} or False."
            ) from None
        return transaction

    def _send(self, channel: str, payload_json: str) -> None:
        self.pubsub.send_internal(
            WIRE_PREFIX + channel, payload_json, envelope.TO_OTHERS
        )

    # receiving -----------------------------------------------------------------------

    def subscribe(
        self,
        channel: str,
        handler: Callable[[Any], Any],
        *,
        on_gap: Callable[[], Any] | None = None,
        idempotent: bool | str = False,
    ) -> Callable[[], bool]:
        """Run ``handler(message)`` for sync messages other nodes send on ``channel``.

        ``on_gap()`` runs when this node may have missed some: a sender's sequence
        number jumped, the connection to the broker was lost and restored, or the
        local buffer overflowed. ``idempotent=True`` (or a handler marked
        ``@idempotent``): a sync ``handler`` runs inside a transaction on
        ``INBOX["DATABASE"]`` that records the message id, and a message delivered
        again after its effect committed is skipped; a string names the inbox
        consumer instead of the handler's dotted name. Returns a callable that
        unsubscribes.
        """
        validate_name(channel)
        return self.subscribe_internal(channel, handler, on_gap, idempotent)

    async def asubscribe(
        self,
        channel: str,
        handler: Callable[[Any], Any],
        *,
        on_gap: Callable[[], Any] | None = None,
        idempotent: bool | str = False,
    ) -> Callable[[], bool]:
        """Async twin of :meth:`subscribe`."""
        return await sync_to_async(self.subscribe)(
            channel, handler, on_gap=on_gap, idempotent=idempotent
        )

    def subscribe_internal(
        self,
        channel: str,
        handler: Callable[[Any], Any],
        on_gap: Callable[[], Any] | None = None,
        idempotent: bool | str = False,
    ) -> Callable[[], bool]:
        """:meth:`subscribe` without the channel name check, for mega_cluster's own
        channels (see :meth:`publish_internal`); not user API."""
        if not callable(handler):
            raise TypeError(f"handler must be callable, got {handler!r}")
        if on_gap is not None and not callable(on_gap):
            raise TypeError(f"on_gap must be callable, got {on_gap!r}")
        once = receiver_once(self.app, channel, handler, idempotent)
        with self._lock:
            current = self._receivers.get(channel, ())
            for receiver in current:
                if receiver.handler == handler:
                    return partial(self._remove, channel, receiver)
            receiver = _Receiver(handler, on_gap, once)
            self._receivers[channel] = (*current, receiver)
            if channel not in self._wire_unsubscribe:
                sub = Subscription(
                    WIRE_PREFIX + channel,
                    partial(self._receive, channel),
                    on_gap=partial(self._gap, channel, "reconnect or overflow"),
                    raw=True,
                )
                try:
                    self._wire_unsubscribe[channel] = self.pubsub.subscribe_internal(
                        sub
                    )
                except BaseException:
                    self._receivers[channel] = current
                    raise
        return partial(self._remove, channel, receiver)

    def _remove(self, channel: str, receiver: _Receiver) -> bool:
        with self._lock:
            current = self._receivers.get(channel, ())
            if receiver not in current:
                return False
            rest = tuple(r for r in current if r is not receiver)
            if rest:
                self._receivers[channel] = rest
                return True
            del self._receivers[channel]
            stop = self._wire_unsubscribe.pop(channel, None)
        if stop is not None:
            stop()
        return True

    def unsubscribe(self, channel: str, handler: Callable[[Any], Any]) -> bool:
        """Remove ``handler``; False when it was not subscribed to ``channel``."""
        validate_name(channel)
        for receiver in self._receivers.get(channel, ()):
            if receiver.handler == handler:
                return self._remove(channel, receiver)
        return False

    async def aunsubscribe(self, channel: str, handler: Callable[[Any], Any]) -> bool:
        """Async twin of :meth:`unsubscribe`."""
        return await sync_to_async(self.unsubscribe)(channel, handler)

    def _receive(self, channel: str, env: envelope.Envelope) -> None:
        # runs on the pub/sub dispatcher thread: one message at a time, in order
        key = (channel, env.node)
        last = self._last_seq.get(key)
        if last is None or env.seq > last:
            self._last_seq[key] = env.seq
        if last is not None and env.seq > last + 1:
            self._gap(
                channel,
                f"{env.seq - last - 1} message(s) from node {env.node} missing",
                reset=False,
            )
        for receiver in self._receivers.get(channel, ()):
            try:
                if receiver.once is None:
                    call_sync(receiver.handler, env.payload)
                else:
                    receiver.once(env.id, env.payload)
            except Exception:
                logger.exception(
                    "sync message handler %r failed on channel %s (node %s, message "
                    "%s from node %s)",
                    receiver.handler,
                    channel,
                    self.app.node_id,
                    env.id,
                    env.node,
                )

    def _gap(self, channel: str, reason: str, *, reset: bool = True) -> None:
        self.gaps += 1
        if reset:
            # after a reconnect the next number from each sender is the new baseline
            for key in [k for k in self._last_seq if k[0] == channel]:
                del self._last_seq[key]
        logger.warning(
            "node %s may have missed sync messages on channel %s (%s)",
            self.app.node_id,
            channel,
            reason,
        )
        for receiver in self._receivers.get(channel, ()):
            if receiver.on_gap is None:
                continue
            try:
                call_sync(receiver.on_gap)
            except Exception:
                logger.exception(
                    "on_gap %r of sync channel %s failed (node %s)",
                    receiver.on_gap,
                    channel,
                    self.app.node_id,
                )
