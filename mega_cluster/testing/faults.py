"""Faults a test injects into kit nodes: lost locks, unreachable backends."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Sequence
from typing import TYPE_CHECKING, Any

from ..exceptions import BackendUnavailable

if TYPE_CHECKING:
    from ..locks.handle import Lock
    from ..registry import ClusterApp
    from .wire import Wire

#: What ``unavailable()`` cuts per primitive: the backend methods that raise.
BACKEND_METHODS: dict[str, tuple[str, ...]] = {
    "locks": ("acquire", "release", "extend", "force_release", "list_locks", "ping"),
    "event_queue": (
        "enqueue",
        "claim",
        "next_due",
        "complete",
        "retry",
        "bury",
        "release",
        "stats",
        "dead_letters",
        "events",
        "retry_dead",
        "discard_dead",
        "ping",
    ),
}
BACKEND_METHODS["cache"] = (
    "get_many",
    "fetch",
    "set",
    "set_many",
    "add",
    "delete_many",
    "incr",
    "ttl",
)
PRIMITIVES = ("pubsub", *BACKEND_METHODS)
_ABSENT = object()


def _backends(node: ClusterApp, primitive: str) -> list[Any]:
    if primitive == "locks":
        return [node.lock_manager.backend]
    if primitive == "event_queue":
        return [node.event_queue.backend]
    # the node's adapters of its CACHES stores (one per alias, shared by its caches)
    manager = node.cache_manager
    caches = [manager.default, *(manager.get_cache(name) for name in manager.names())]
    return list({id(cache.store): cache.store for cache in caches}.values())


@contextlib.contextmanager
def unavailable(
    nodes: Sequence[ClusterApp], primitive: str, wire: Wire
) -> Iterator[None]:
    """Inside the block the ``primitive`` backend of ``nodes`` raises
    ``BackendUnavailable`` (a ``ConnectionError``) as when its server is down.

    ``pubsub``: the nodes cannot publish, miss what others send, and report a
    gap when the block ends (as after a reconnect); ``locks``,
    ``event_queue`` and ``cache`` (the node's adapters of its ``CACHES`` stores;
    its near caches stay in memory): every backend call raises.
    """
    if primitive not in PRIMITIVES:
        raise ValueError(
            f"unavailable() takes one of {', '.join(PRIMITIVES)}, got {primitive!r}."
        )
    if primitive == "pubsub":
        for node in nodes:
            wire.set_down(node, True)
        try:
            yield
        finally:
            for node in nodes:
                wire.set_down(node, False)
        return
    patched: list[tuple[Any, str, Any]] = []
    try:
        for node in nodes:
            for backend in _backends(node, primitive):
                for name in BACKEND_METHODS[primitive]:
                    if not hasattr(backend, name) or any(
                        b is backend and n == name for b, n, _ in patched
                    ):
                        continue
                    # The instance may already shadow the method (its circuit's
                    # wrapper, mega_cluster.circuit.guard): put it back afterwards.
                    previous = vars(backend).get(name, _ABSENT)
                    setattr(backend, name, _raiser(node, primitive, name))
                    patched.append((backend, name, previous))
        yield
    finally:
        for backend, name, previous in reversed(patched):
            if previous is _ABSENT:
                delattr(backend, name)
            else:
                setattr(backend, name, previous)


def _raiser(node: ClusterApp, primitive: str, method: str) -> Callable[..., Any]:
    def raise_unavailable(*args: Any, **kwargs: Any) -> Any:
        cause = ConnectionError(
            f"{primitive} of node {node.node_id} is unavailable "
            "(cluster.unavailable() in the test)"
        )
        raise BackendUnavailable(
            f"The {primitive} backend of node {node.node_id} cannot be reached "
            f"({method}); the testing kit made it unavailable."
        ) from cause

    return raise_unavailable


def held(nodes: Sequence[ClusterApp], key: str) -> list[Lock]:
    """The handles of ``key`` the nodes hold (not released)."""
    return [
        lock
        for node in nodes
        for lock in node.lock_manager.held_locks()
        if lock.key == key
    ]


def lose(nodes: Sequence[ClusterApp], key: str) -> list[Lock]:
    """End the lease of ``key`` under its holder: the lock is free for others and
    the holder's handle is ``lost`` (its section raises ``LockLost`` at the end)."""
    handles = [lock for lock in held(nodes, key) if not lock.lost]
    if not handles:
        holders = sorted(
            {
                f"{lock.key!r} on {node.node_id}"
                for node in nodes
                for lock in node.lock_manager.held_locks()
            }
        )
        raise AssertionError(
            f"lose_lock({key!r}): no node of the cluster holds that lock; held "
            f"now: {', '.join(holders) or 'none'}."
        )
    for lock in handles:
        lock.manager.backend.release(lock.key, lock.token)
        lock.extend()  # finds the lease gone: marks the handle lost, logs it
    return handles


@contextlib.contextmanager
def losing(nodes: Sequence[ClusterApp], key: str) -> Iterator[list[Lock]]:
    """Every lock of ``key`` acquired inside the block is lost as soon as it is
    granted (the section runs unprotected and ends with ``LockLost``)."""
    lost: list[Lock] = []
    managers: list[Any] = [node.lock_manager for node in nodes]

    def wrap(manager: Any) -> Callable[..., Any]:
        acquire = manager.acquire

        def acquire_and_lose(*args: Any, **kwargs: Any) -> Any:
            lock = acquire(*args, **kwargs)
            if lock.key == key:
                manager.backend.release(lock.key, lock.token)
                lock.extend()
                lost.append(lock)
            return lock

        return acquire_and_lose

    for manager in managers:
        manager.acquire = wrap(manager)
    try:
        yield lost
    finally:
        for manager in managers:
            del manager.acquire
