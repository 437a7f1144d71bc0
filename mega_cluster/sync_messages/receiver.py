"""Where a node stands in each sync channel, and the replay of what it missed.

Numbers come from the database (per app and channel, gapless, in commit order),
so a receiver knows the next one it must see whoever sends it. A number that
jumps, a reconnect, a buffer overflow or a high-water mark above its position
makes it read the missing range from the outbox table and hand each message to
the handlers, in order; a number it already handled is a duplicate and skipped.
Only a range the retention already pruned calls the gap hook.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from django.db import DEFAULT_DB_ALIAS, connections

from ..outbox import store

if TYPE_CHECKING:
    from ..registry import ClusterApp

logger = logging.getLogger("mega_cluster.sync_messages")

Key = tuple[str, str]  # (channel, database alias)


class Receiver:
    """The positions of one node (``last[(channel, alias)]``: the highest number
    handled with every lower one handled or skipped) and the replays.

    ``deliver(channel, message, message_id)`` runs the channel's handlers (the
    id of a numbered message is ``alias#seq``, the same for every copy); ``gap(channel,
    reason)`` its gap hooks. Every entry point holds one lock, so replays from the
    outbox thread and messages from the dispatcher never run handlers at once.
    """

    def __init__(
        self,
        app: ClusterApp,
        deliver: Callable[[str, Any, str], None],
        gap: Callable[[str, str], None],
    ) -> None:
        self.app = app
        self.deliver = deliver
        self.gap = gap
        self.name: str | None = app.settings.outbox["RECEIVER"]
        self.last: dict[Key, int] = {}
        self._seen_mark: dict[Key, int] = {}
        self._saved: dict[str, int] = {}
        self._cursors: dict[str, int] | None = None
        self._resume: set[Key] = set()
        self.lock = threading.RLock()

    # positions ---------------------------------------------------------------------

    def baseline(self, channel: str) -> None:
        """Start ``channel`` where the database stands now (before the plugins
        load their state); a named receiver (``OUTBOX["RECEIVER"]``) starts where
        it stopped instead and catches up at the next poll."""
        key = (channel, DEFAULT_DB_ALIAS)
        try:
            if self.name is not None and self._cursors is None:
                self._cursors = store.load_cursors(
                    DEFAULT_DB_ALIAS, self.app.name, self.name
                )
            top = store.high_water(DEFAULT_DB_ALIAS, self.app.name, [channel])
        except Exception as exc:  # no table or no database access: the first one
            logger.debug("no sync baseline for %s: %s", channel, exc)
            return
        with self.lock:
            if key in self.last:
                return
            saved = (self._cursors or {}).get(channel)
            if saved is not None:
                self.last[key] = saved
                self._saved[channel] = saved
                self._resume.add(key)
            else:
                self.last[key] = top.get(channel, 0)

    def forget(self, channel: str) -> None:
        with self.lock:
            for key in [k for k in self.last if k[0] == channel]:
                del self.last[key]
                self._seen_mark.pop(key, None)

    def own(self, channel: str, alias: str, seq: int) -> None:
        """This node committed ``seq``: it is not a message to wait for."""
        key = (channel, alias)
        with self.lock:
            last = self.last.get(key)
            if last is None or seq == last + 1:
                self.last[key] = seq

    # receiving ---------------------------------------------------------------------

    def receive(
        self, channel: str, alias: str, seq: int, origin: str, message: Any
    ) -> None:
        if alias not in connections.settings:
            logger.warning(
                "sync message %s #%d names database %r, unknown here: handled "
                "without replay",
                channel,
                seq,
                alias,
            )
            self.deliver(channel, message, f"{alias}#{seq}"[:64])
            return
        key = (channel, alias)
        with self.lock:
            last = self.last.get(key)
            if origin == self.app.node_id:  # relayed for this node: not for it
                if last is None or seq == last + 1:
                    self.last[key] = seq
                return
            if last is None:
                last = seq - 1
            if seq <= last:
                self.app.outbox.count_duplicate()
                return
            if seq > last + 1:
                self._replay(channel, alias, last, seq - 1)
            self.last[key] = seq
            self.deliver(channel, message, f"{alias}#{seq}"[:64])

    def catch_up(self, channel: str, alias: str, upto: int | None = None) -> None:
        """Replay what this node lacks of ``channel`` up to ``upto`` (default: the
        database's high-water mark now)."""
        key = (channel, alias)
        with self.lock:
            if upto is None:
                upto = store.high_water(alias, self.app.name, [channel]).get(channel, 0)
            last = self.last.get(key)
            if last is None:
                self.last[key] = upto
            elif upto > last:
                self._replay(channel, alias, last, upto)

    def _replay(self, channel: str, alias: str, after: int, upto: int) -> None:
        """Hand ``after < seq <= upto`` to the handlers from the table (lock held)."""
        key = (channel, alias)
        self.app.outbox.aliases.add(alias)
        try:
            rows = store.sync_range(alias, self.app.name, channel, after, upto)
        except Exception as exc:
            logger.exception("replay of sync channel %s failed", channel)
            self.last[key] = upto
            self.gap(channel, f"messages {after + 1}-{upto} could not be read: {exc}")
            return
        if len(rows) != upto - after:
            self.gap(
                channel,
                f"{upto - after - len(rows)} of messages {after + 1}-{upto} are "
                "older than the outbox retention",
            )
        replayed = 0
        for row in rows:
            self.last[key] = row.seq or upto
            if row.node == self.app.node_id:
                continue
            replayed += 1
            self.deliver(channel, json.loads(row.payload), f"{alias}#{row.seq}"[:64])
        self.last[key] = upto
        if replayed:
            self.app.outbox.count_replay(channel, replayed)
            logger.info(
                "node %s replayed %d sync message(s) of channel %s from the outbox",
                self.app.node_id,
                replayed,
                channel,
            )

    # the outbox thread ----------------------------------------------------------------

    def poll(self, channels: list[str]) -> None:
        """Compare each channel's high-water mark with this node's position: a
        number seen at the previous poll and still not handled was lost (a
        sender's last message) and is replayed. Then save a named receiver's
        positions."""
        aliases = {DEFAULT_DB_ALIAS} | {alias for _, alias in list(self.last)}
        for alias in sorted(aliases):
            marks = store.high_water(alias, self.app.name, channels)
            for channel, top in marks.items():
                key = (channel, alias)
                with self.lock:
                    previous = top if key in self._resume else self._seen_mark.get(key)
                    self._resume.discard(key)
                    self._seen_mark[key] = top
                    if previous is not None:
                        self.catch_up(channel, alias, previous)
        self.save()

    def save(self) -> None:
        """Store a named receiver's positions (default database) when they moved."""
        if self.name is None:
            return
        with self.lock:
            lasts = {
                channel: last
                for (channel, alias), last in self.last.items()
                if alias == DEFAULT_DB_ALIAS and self._saved.get(channel) != last
            }
        if lasts:
            store.save_cursors(DEFAULT_DB_ALIAS, self.app.name, self.name, lasts)
            self._saved.update(lasts)
