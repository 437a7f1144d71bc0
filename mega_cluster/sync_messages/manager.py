"""``app.sync_message_manager``: messages to the other nodes, sent after commit."""

from __future__ import annotations

import json
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
from .receiver import Receiver

if TYPE_CHECKING:
    from ..outbox.store import Row
    from ..pubsub import PubSubManager
    from ..registry import ClusterApp

logger = logging.getLogger("mega_cluster.sync_messages")

#: Sync messages travel on pub/sub channels users cannot name.
WIRE_PREFIX = f"{INTERNAL_PREFIX}sm:"

Transaction = bool | str | None

#: Test builds set this to a callable run between a commit and its send (a
#: multi-process test kills the sender there); never set in production.
AFTER_COMMIT_HOOK: Callable[[], Any] | None = None


def wire_payload(payload_json: str, seq: int | None, alias: str, origin: str) -> str:
    """The pub/sub payload of a sync message: the message under ``m`` and, for a
    message from the outbox, its number ``q``, database ``db`` and origin ``n``."""
    if seq is None:
        return f'{{"m":{payload_json}}}'
    return (
        f'{{"q":{seq},"db":{json.dumps(alias)},"n":{json.dumps(origin)},'
        f'"m":{payload_json}}}'
    )


@dataclass(eq=False)
class _Receiver:
    handler: Callable[[Any], Any]
    on_gap: Callable[[], Any] | None
    #: an idempotent handler: run through the app's inbox with the message id
    once: IdempotentReceiver | None = None


class SyncMessageManager:
    """Tell the other nodes of the app that something changed, after commit.

    Rides on ``app.pubsub_manager`` and adds what state synchronisation needs:
    a message is written to the outbox table in the caller's transaction with a
    number per channel from the database, sent after commit (or by the relay of
    any node when its sender died or its broker refused), the sender's own node is
    skipped, and a receiver that misses numbers replays them from the table; only
    a range older than the retention calls ``on_gap`` (a plugin's
    ``handle_sync_gap()``). ``transaction=False`` sends at most once, no row.
    """

    def __init__(self, app: ClusterApp) -> None:
        self.app = app
        self.max_bytes: int = app.settings["MESSAGE_MAX_BYTES"]
        #: gaps noticed on this node (missed sequence numbers, reconnects, overflow).
        self.gaps = 0
        self._receivers: dict[str, tuple[_Receiver, ...]] = {}
        self._wire_unsubscribe: dict[str, Callable[[], bool]] = {}
        self._lock = threading.RLock()
        self.receiver = Receiver(app, self._deliver, self._gap)
        #: channels that carried at-most-once messages (``transaction=False``): a
        #: reconnect or overflow may have lost some, so it calls their gap hooks
        self._unnumbered: set[str] = set()

    @property
    def pubsub(self) -> PubSubManager:
        return self.app.pubsub_manager

    def start(self) -> None:
        """Start the pub/sub manager it rides on, and the outbox thread (which
        relays, and polls the high-water marks) when this node receives."""
        self.pubsub.start()
        if self._receivers:
            self.app.outbox.add_ticker(self._poll)

    def stop(self) -> None:
        """Save a named receiver's positions and forget every receiver (the pub/sub
        manager closes the connection)."""
        try:
            self.receiver.save()
        except Exception as exc:
            logger.warning("saving the sync receiver's positions failed: %s", exc)
        with self._lock:
            self._receivers = {}
            self._wire_unsubscribe = {}
            self.receiver.last.clear()

    def _poll(self) -> None:
        self.receiver.poll(list(self._receivers))

    # sending -----------------------------------------------------------------------

    def publish(
        self, channel: str, message: Any, *, transaction: Transaction = None
    ) -> None:
        """Send ``message`` (JSON) to ``channel``'s receivers on the other nodes.

        ``transaction=None`` (the ``default`` database) or an alias: the message is
        written to the outbox table in the open ``atomic()`` block of that
        database (or in a block of its own when none is open) with the channel's
        next number, and sent when the outermost block commits; a rollback, or
        the rollback of the savepoint it was published in, sends nothing and
        leaves nothing. A send that fails after commit (broker down, process
        killed) is done by the outbox relay of any node; receivers that miss a
        number replay it from the table (at least once, in order).
        ``transaction=False`` sends now, at most once, with no row and no number.

        Raises ``InvalidName``, or ``MessageEncodeError`` at the call (nothing will
        be sent); with ``transaction=False`` a broker failure raises
        ``BackendUnavailable``.
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
        if transaction is False:
            self._send(channel, wire_payload(payload, None, "", ""), envelope.TO_OTHERS)
            return
        using = self._alias(transaction)
        outbox = self.app.outbox
        if connections[using].in_atomic_block:
            row_id, seq = outbox.write_sync(using, channel, payload)

            # A function, not a partial: Django 5.2 logs a failed robust on_commit
            # callback with func.__qualname__, which a partial lacks.
            def send() -> None:
                self._send_committed(using, channel, row_id, seq, payload)

            db_transaction.on_commit(send, using=using, robust=True)
            return
        with db_transaction.atomic(using=using):
            row_id, seq = outbox.write_sync(using, channel, payload)
        self._send_committed(using, channel, row_id, seq, payload)

    def _send_committed(
        self, alias: str, channel: str, row_id: int, seq: int, payload_json: str
    ) -> None:
        self.receiver.own(channel, alias, seq)
        if AFTER_COMMIT_HOOK is not None:
            AFTER_COMMIT_HOOK()
        data = wire_payload(payload_json, seq, alias, self.app.node_id)
        try:
            self._send(channel, data, envelope.TO_OTHERS)
        except Exception as exc:
            # committed: the relay sends it once RELAY_AFTER has passed
            logger.warning(
                "sync message %s #%d could not be sent after commit (%s); the "
                "outbox relay will send it",
                channel,
                seq,
                exc,
            )
            return
        self.app.outbox.sent(alias, row_id)

    def relay(self, alias: str, row: Row) -> None:
        """Send an outbox row its sender left unsent (the relay; to every node:
        receivers skip their own by the origin in the message)."""
        assert row.seq is not None
        data = wire_payload(row.payload, row.seq, alias, row.node)
        self._send(row.channel, data, envelope.TO_ALL)

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
                payload_json=wire_payload(
                    payload_json, 2**53, "x" * 64, self.app.node_id
                ),
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

    def _send(self, channel: str, payload_json: str, to: str) -> None:
        self.pubsub.send_internal(WIRE_PREFIX + channel, payload_json, to)

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
                self.receiver.baseline(channel)
                sub = Subscription(
                    WIRE_PREFIX + channel,
                    partial(self._receive, channel),
                    on_gap=partial(self._lost, channel, "reconnect or overflow"),
                    raw=True,
                )
                try:
                    self._wire_unsubscribe[channel] = self.pubsub.subscribe_internal(
                        sub
                    )
                except BaseException:
                    self._receivers[channel] = current
                    raise
        if self.receiver.name is not None or self.app.started:
            self.app.outbox.add_ticker(self._poll)
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
            self.receiver.forget(channel)
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
        wire = env.payload
        seq = wire.get("q") if type(wire) is dict else None
        if type(wire) is not dict or "m" not in wire:
            self._deliver(channel, wire, env.id)  # not from this version
        elif type(seq) is not int or seq < 1:
            self._unnumbered.add(channel)
            self._deliver(channel, wire["m"], env.id)
        else:
            self.receiver.receive(
                channel,
                str(wire.get("db", DEFAULT_DB_ALIAS)),
                seq,
                str(wire.get("n", env.node)),
                wire["m"],
            )

    def _deliver(self, channel: str, message: Any, message_id: str) -> None:
        # message_id: stable across resends and replays for numbered messages
        # (the inbox of idempotent handlers keys on it)
        for receiver in self._receivers.get(channel, ()):
            try:
                if receiver.once is None:
                    call_sync(receiver.handler, message)
                else:
                    receiver.once(message_id, message)
            except Exception:
                logger.exception(
                    "sync message handler %r failed on channel %s (node %s)",
                    receiver.handler,
                    channel,
                    self.app.node_id,
                )

    def _lost(self, channel: str, reason: str) -> None:
        """The pub/sub connection was lost and restored, or the buffer overflowed:
        replay what the table holds; the gap hook runs only for a channel that
        carried at-most-once messages (``transaction=False``) or when the replay
        fails."""
        aliases = {DEFAULT_DB_ALIAS} | {
            a for c, a in list(self.receiver.last) if c == channel
        }
        try:
            for alias in sorted(aliases):
                self.receiver.catch_up(channel, alias)
        except Exception as exc:
            self._gap(channel, f"{reason}; replay failed: {exc}")
            return
        if channel in self._unnumbered:
            self._gap(channel, f"{reason}; at-most-once messages may be lost")

    def _gap(self, channel: str, reason: str) -> None:
        self.gaps += 1
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
