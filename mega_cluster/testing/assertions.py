"""The assertions of :class:`~mega_cluster.testing.cluster.Cluster`: each failure
names the node, the channel and what did arrive."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..registry import ClusterApp

if TYPE_CHECKING:
    from .clock import Clock
    from .events import EventRunner
    from .wire import Message, Wire

#: A node: its id, the node (a ``ClusterApp``) or a plugin instance on it.
NodeRef = Any


def node_id(node: NodeRef) -> str:
    """A node id from an id, a node or a plugin instance of a node."""
    if isinstance(node, str):
        return node
    if isinstance(node, ClusterApp):
        return node.node_id
    app = getattr(node, "app", None)
    if isinstance(app, ClusterApp):
        return app.node_id
    raise TypeError(
        f"Name a node by its id, the node or one of its plugins, got {node!r}."
    )


class ClusterAssertions:
    """Mixed into ``Cluster``, which provides what is declared here."""

    nodes: list[ClusterApp]
    wire: Wire
    events: EventRunner
    clock: Clock

    def published(
        self,
        node: NodeRef | None = None,
        channel: str | None = None,
        *,
        kind: str | None = None,
    ) -> list[Message]:
        raise NotImplementedError

    def delivered(
        self, node: NodeRef, channel: str | None = None, *, kind: str | None = None
    ) -> list[Message]:
        raise NotImplementedError

    def assert_same(self, read: Callable[[ClusterApp], Any]) -> Any:
        """``read(node)`` is equal on every node; returns it.

        The failure lists each node's value, e.g.
        ``cluster.assert_same(lambda node: node.plugins["data_source"].schema)``.
        """
        values = [(node.node_id, read(node)) for node in self.nodes]
        if not values:
            raise AssertionError("assert_same(): the cluster has no node.")
        first = values[0][1]
        if any(value != first for _, value in values[1:]):
            pending = self.wire.pending()
            lines = "\n".join(f"  {name}: {value!r}" for name, value in values)
            raise AssertionError(
                f"the nodes disagree:\n{lines}"
                + (
                    f"\n{len(pending)} message(s) not delivered yet: call "
                    "cluster.deliver()."
                    if pending
                    else ""
                )
            )
        return first

    def assert_published(
        self,
        node: NodeRef,
        channel: str,
        payload: Any = ...,
        *,
        kind: str | None = None,
    ) -> Message:
        """``node`` sent a message on ``channel`` (with ``payload`` if given)."""
        sent = self.published(node, channel, kind=kind)
        matching = [m for m in sent if payload is ... or m.payload == payload]
        if matching:
            return matching[-1]
        everything = self.published(node)
        raise AssertionError(
            f"{node_id(node)} sent no message on {channel!r}"
            + ("" if payload is ... else f" with payload {payload!r}")
            + f"; it sent {len(everything)}:\n"
            + ("\n".join(f"  {m}" for m in everything) or "  nothing")
        )

    def assert_delivered(
        self,
        node: NodeRef,
        channel: str,
        payload: Any = ...,
        *,
        kind: str | None = None,
    ) -> Message:
        """``node``'s handlers received a message on ``channel`` (with ``payload``)."""
        got = self.delivered(node, channel, kind=kind)
        matching = [m for m in got if payload is ... or m.payload == payload]
        if matching:
            return matching[-1]
        name = node_id(node)
        lines = [f"  {m}" for m in self.delivered(node)] or ["  nothing"]
        waiting = self.wire.pending(name)
        dropped = self.wire.dropped.get(name, [])
        extra = ""
        if waiting:
            extra += f"\nnot delivered yet ({len(waiting)}; call cluster.deliver()):"
            extra += "".join(f"\n  {m}" for m in waiting)
        if dropped:
            extra += f"\ndropped on the way ({len(dropped)}):"
            extra += "".join(f"\n  {m}" for m in dropped)
        raise AssertionError(
            f"{name} received no message on {channel!r}"
            + ("" if payload is ... else f" with payload {payload!r}")
            + "; it received:\n"
            + "\n".join(lines)
            + extra
        )

    def assert_idle(self) -> None:
        """No message waits for ``deliver()`` and no event is due."""
        waiting = self.wire.pending()
        due = [row for row in self.events.pending() if row[2] <= self.clock.time()]
        if waiting or due:
            lines = [f"  message {m}" for m in waiting]
            lines += [f"  event {eid} on {channel!r}" for eid, channel, _ in due]
            raise AssertionError("the cluster is not idle:\n" + "\n".join(lines))
