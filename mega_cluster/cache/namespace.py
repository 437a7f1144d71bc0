"""One cache's part of its store: wire keys, generations, reads and writes, and the
coherence of the per-process near cache.

Shared by :class:`~mega_cluster.cache.Cache` (the user API) and
:mod:`~mega_cluster.cache.wrap` (single flight); internal, not user API.

Keys are ``{<app>:<prefix>}@<generation>:<key>`` on the wire. The generation (a
random int) is stored under ``{<app>:<prefix>}@gen`` and read in the same round trip
as the entries (the braces are a Redis Cluster hash tag: every key of a namespace
is in one slot, so that read is one ``MGET`` on one node there too), so a reset on any node (a new generation) is seen by every node at
its next read. With a near cache, every write is announced on the pub/sub channel
``cache:<store>:<prefix>`` and the other nodes drop the keys it names.

Writers without a near layer announce too, when near caches exist anywhere: a
namespace with a near cache keeps the marker ``{<app>:<prefix>}@near`` in the store
while it is used (``NEAR_MARKER_TTL``, written before its first near read), and
every writer reads the marker in the round trip that reads the generation before a
write (``reset`` reads it on its own).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from ..exceptions import BackendUnavailable
from .common import check_ttl, new_token, wire_name
from .flight import SingleFlight
from .near import MISSING, NearCache

if TYPE_CHECKING:
    from ..registry import ClusterApp
    from .stores import Store

logger = logging.getLogger("mega_cluster.cache")

#: Lifetime in the store of a namespace's near-cache marker (seconds); a near
#: cache re-writes it every half of that while it is used.
NEAR_MARKER_TTL = 600.0


class Namespace:
    """The keys of one cache in one store, and its near cache's coherence."""

    def __init__(
        self,
        app: ClusterApp,
        *,
        name: str,
        prefix: str,
        store: Store,
        ttl: float | None,
        near: NearCache | None,
    ) -> None:
        self.app = app
        self.name = name
        self.store = store
        self.default_ttl = ttl
        self.near = near
        #: computations of ``wrap`` under way in this process, per key.
        self.flights = SingleFlight()
        # braces: a Redis Cluster hash tag (names cannot hold braces, NAME_RE)
        self.key_prefix = f"{{{app.name}:{prefix}}}"
        # "@" cannot appear in a name, so no data key can collide with it.
        self.gen_key = f"{self.key_prefix}@gen"
        self.near_key = f"{self.key_prefix}@near"
        #: Whether the marker said, at this process's last write, that near caches
        #: exist (on any node).
        self.near_elsewhere = False
        self._marker_due = 0.0
        #: the last generation this process read or wrote (None: not read yet).
        self.gen: int | None = None
        self.channel = wire_name("cache", store.alias, prefix)
        self._unsubscribe: Callable[[], Any] | None = None

    # keys and generations ------------------------------------------------------

    def wire(self, gen: int, key: str) -> str:
        """The store key of ``key`` under generation ``gen``."""
        return f"{self.key_prefix}@{gen}:{key}"

    def timeout(self, ttl: float | None) -> float | None:
        """The store timeout of a call's ``ttl`` (checked; None: the cache's)."""
        ttl = check_ttl(ttl)
        if ttl is None:
            ttl = self.default_ttl
            if ttl is None:
                return self.store.default_timeout
        return None if ttl == math.inf else ttl

    def _new_generation(self) -> int:
        token = new_token()
        if self.store.add(self.gen_key, token, None):
            return token
        # Another node created it first: theirs wins.
        theirs = self.store.fetch(self.gen_key, [])[0]
        return token if theirs is None else theirs

    def generation(self) -> int:
        """The current generation, read from the store (one round trip, which
        also reads the near-cache marker: writers call this before writing)."""
        gen, (marker,) = self.store.fetch(self.gen_key, [self.near_key])
        self.near_elsewhere = marker is not MISSING
        if gen is None:
            gen = self._new_generation()
        self.gen = gen
        return gen

    def reset(self) -> None:
        """Start a new generation: every key of the namespace is forgotten."""
        token = new_token()
        if self.near is None:  # no generation read before: read the marker
            self.near_elsewhere = self.store.fetch(self.near_key, [])[0] is not None
        self.store.set(self.gen_key, token, None)
        self.gen = token
        self.changed(None)

    def fetch(self, keys: list[str]) -> tuple[int, list[Any]]:
        """The generation and the values of ``keys`` (``MISSING`` for a miss).

        One round trip for the generation key plus the keys under the last known
        generation; only when that generation is stale (a reset elsewhere) is the
        read repeated under the new one.
        """
        gen = self.gen
        for _ in range(5):
            wires = [] if gen is None else [self.wire(gen, k) for k in keys]
            current, values = self.store.fetch(self.gen_key, wires)
            if current is None:
                current = self._new_generation()
            if current == gen:
                return current, values
            self.gen = gen = current
        # Resets faster than reads: report a miss under the newest generation.
        return current, [MISSING] * len(keys)

    def fetch_one(self, key: str) -> tuple[int, Any]:
        """:meth:`fetch` of one key, with the hit path kept short."""
        gen = self.gen
        if gen is not None:
            current, values = self.store.fetch(
                self.gen_key, [f"{self.key_prefix}@{gen}:{key}"]
            )
            if current == gen:
                return gen, values[0]
        gen, values = self.fetch([key])
        return gen, values[0]

    def store_computed(self, key: str, value: Any, ttl: Any, read_gen: int) -> None:
        """Cache a value computed after a miss read under generation ``read_gen``."""
        # Under the generation read before fn ran: a reset meanwhile wins.
        gen = read_gen if self.gen is None else self.gen
        timeout = self.timeout(ttl)
        self.store.set(self.wire(gen, key), value, timeout)
        self.changed([key])
        if self.gen == gen:
            self.keep(key, value, timeout)

    # near cache and invalidation -----------------------------------------------

    @property
    def subscription(self) -> Callable[[], Any] | None:
        """The unsubscribe callable of the invalidation channel (None: not yet)."""
        return self._unsubscribe

    def _ensure_subscribed(self) -> None:
        if self.near is not None and time.monotonic() >= self._marker_due:
            self._mark_near()
        if self._unsubscribe is None:
            near = self.near
            self._unsubscribe = self.app.pubsub_manager.subscribe(
                self.channel,
                self._on_invalidation,
                # Messages may have been lost (outage, overflow): trust nothing.
                on_gap=near.clear if near is not None else None,
            )

    def _mark_near(self) -> None:
        """Tell every writer of the namespace that near caches exist (before this
        node's first near read, so no later write misses it)."""
        try:
            self.store.set(self.near_key, 1, NEAR_MARKER_TTL)
        except BackendUnavailable as exc:
            # Near hits go on; the marker is written once the store answers again.
            logger.warning("cache %s: cannot write its near marker: %s", self.name, exc)
            self._marker_due = time.monotonic() + 1.0
            return
        self._marker_due = time.monotonic() + NEAR_MARKER_TTL / 2

    def _on_invalidation(self, message: Any) -> None:
        if self.near is None:
            return
        if not isinstance(message, Mapping):
            logger.warning("cache %s: ignored invalid message %r", self.name, message)
            return
        if message.get("reset"):
            self.near.clear()
        else:
            self.near.invalidate(str(k) for k in message.get("keys", ()))

    def changed(self, keys: list[str] | None) -> None:
        """Tell the other nodes' near caches (``None`` = the whole namespace)."""
        if self.near is None:
            # A writer without a near layer: only when near caches exist elsewhere.
            if self.near_elsewhere:
                note = {"reset": True} if keys is None else {"keys": keys}
                self.app.pubsub_manager.publish(self.channel, note, skip_self=True)
            return
        if keys is None:
            self.near.clear()
            message: dict[str, Any] = {"reset": True}
        else:
            self.near.invalidate(keys)
            message = {"keys": keys}
        self._ensure_subscribed()
        self.app.pubsub_manager.publish(self.channel, message, skip_self=True)

    def near_get(self, key: str) -> tuple[Any, int]:
        """The near cache's value (``MISSING``) and the epoch to :meth:`near_put` at."""
        near = self.near
        if near is None:
            return MISSING, 0
        self._ensure_subscribed()
        return near.get(key), near.epoch

    def near_epoch(self) -> int:
        """The epoch to :meth:`near_put` values read from the store from now on."""
        near = self.near
        if near is None:
            return 0
        self._ensure_subscribed()
        return near.epoch

    def keep(self, key: str, value: Any, timeout: float | None) -> None:
        """Put a value this node just wrote into its own near cache."""
        if self.near is not None:
            self.near.put(key, value, timeout, self.near.epoch)

    def near_put(self, key: str, value: Any, ttl: float | None, epoch: int) -> None:
        """Keep a value read from the store unless invalidated since ``epoch``."""
        if self.near is not None:
            self.near.put(key, value, self.timeout(ttl), epoch)

    # lifecycle -------------------------------------------------------------------

    def close(self) -> None:
        """Drop the invalidation subscription and the near cache's entries."""
        unsubscribe, self._unsubscribe = self._unsubscribe, None
        if unsubscribe is not None:
            try:
                unsubscribe()
            except Exception:
                logger.exception("cache %s: unsubscribing failed", self.name)
        if self.near is not None:
            self.near.clear()

    def after_fork(self) -> None:
        """In a forked child: the parent's subscription and computations are not
        ours."""
        self._unsubscribe = None
        self._marker_due = 0.0
        self.flights = SingleFlight()
        if self.near is not None:
            self.near.after_fork()
