"""The :class:`Sender` a :class:`~mega_cluster.pubsub.PubSubManager` owns: numbers,
frames and hands over the messages this node publishes."""

from __future__ import annotations

import asyncio
import threading
from typing import TYPE_CHECKING

from ..exceptions import MessageEncodeError
from ..validation import check_frame
from . import envelope, runtime
from .sequence import Sequences
from .tally import PublishedTally

if TYPE_CHECKING:
    from .backends.base import PubSubBackend

#: Seconds to wait for the broker when connecting, subscribing or publishing.
OPERATION_TIMEOUT = 15.0


def target(skip_self: bool, only_self: bool) -> str:
    """The envelope's ``to`` of ``publish(skip_self=..., only_self=...)``."""
    if only_self:
        return envelope.TO_SELF
    return envelope.TO_OTHERS if skip_self else envelope.TO_ALL


class Sender:
    """Sequence numbers per channel, the frame check and the hand-over to the
    backend, in an order receivers can count on: the wire order is the seq order."""

    def __init__(self, app_name: str, node_id: str, backend: PubSubBackend) -> None:
        self.app_name = app_name
        #: renewed by the manager at start (a forked child is a new node).
        self.node_id = node_id
        self.backend = backend
        #: published-message counts on their way to the metric.
        self.tally = PublishedTally(app_name)
        self._seq = Sequences()
        self._send_lock = threading.Lock()
        self._async_send_lock: asyncio.Lock | None = None

    def _build(self, channel: str, payload_json: str, to: str) -> tuple[int, bytes]:
        """The next sequence number of ``channel`` and the wire bytes carrying it;
        ``MessageEncodeError`` (the number given back) when the frame is over the
        broker's limit. A caller whose hand-over fails gives the number back."""
        seq = self._seq.take(channel)
        data = envelope.build(
            app=self.app_name,
            node=self.node_id,
            channel=channel,
            seq=seq,
            to=to,
            payload_json=payload_json,
        )
        try:
            check_frame(len(data), payload_json, self.backend.max_frame_bytes())
        except MessageEncodeError:
            self._seq.give_back(channel, seq)
            raise
        return seq, data

    def send(
        self,
        loop: asyncio.AbstractEventLoop,
        wire: str,
        channel: str,
        payload_json: str,
        to: str,
    ) -> None:
        """Hand one message over from a thread (``loop`` runs the backend)."""
        backend = self.backend
        # seq numbering and hand-over under one lock: the wire order is the seq order
        with self._send_lock:
            seq, data = self._build(channel, payload_json, to)
            try:
                if backend.has_sync_publish:
                    backend.publish_sync(wire, data)
                else:
                    coro = backend.publish(wire, data)
                    runtime.run_sync(loop, coro, OPERATION_TIMEOUT)
            except BaseException:
                self._seq.give_back(channel, seq)
                raise
        self.tally.count(channel, loop)

    async def _hand_over(
        self, channel: str, wire: str, payload_json: str, to: str
    ) -> None:
        seq, data = self._build(channel, payload_json, to)
        try:
            await self.backend.publish(wire, data)
        except BaseException:
            self._seq.give_back(channel, seq)
            raise

    async def asend(self, wire: str, channel: str, payload_json: str, to: str) -> None:
        """Hand one message over on the backend's loop (the running one)."""
        if self.backend.publish_in_order:
            # numbered and queued in one step: the wire order is the seq order
            await self._hand_over(channel, wire, payload_json, to)
        else:
            if self._async_send_lock is None:
                self._async_send_lock = asyncio.Lock()
            async with self._async_send_lock:
                await self._hand_over(channel, wire, payload_json, to)
        self.tally.count(channel, asyncio.get_running_loop())
