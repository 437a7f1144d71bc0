"""The wrappers that run an idempotent handler through the inbox: an event-queue
``process`` (:class:`IdempotentProcess`) and a sync-message handler
(:class:`IdempotentReceiver`)."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ..validation import validate_name
from .inbox import LostAttempt, consumer_name, get_inbox
from .marks import handler_name, is_idempotent, require_sync

if TYPE_CHECKING:
    from .inbox import Inbox

logger = logging.getLogger("mega_cluster.inbox")


def check_flag(value: Any, what: str) -> None:
    if not isinstance(value, bool):
        raise TypeError(f"{what} must be True or False, got {value!r}.")


class IdempotentProcess:
    """An event-queue ``process`` run through the inbox, consumer
    ``event:<channel>`` (one handler per channel and node)."""

    def __init__(
        self,
        inbox: Inbox,
        channel: str,
        process: Callable[..., Any],
        on_spent: Callable[[Any, str], Any] | None = None,
    ) -> None:
        require_sync(process, "idempotent=True")
        self.inbox = inbox
        self.process = process
        self.on_spent = on_spent
        self.consumer = consumer_name(f"event:{channel}")
        self._lost: dict[str, str] = {}

    def __call__(self, payload: Any, ctx: Any) -> None:
        lost = self._lost.pop(ctx.id, None)
        try:
            self.inbox.run(self.consumer, ctx.id, self.process, payload, ctx, lost=lost)
        except LostAttempt as exc:
            # dead-lettered without running, as the subscription's on_spent expects
            if self.on_spent is not None:
                try:
                    self.on_spent(ctx, str(exc))
                except Exception:
                    logger.exception("on_spent of %s failed", self.consumer)
            raise

    def last_chance(self, event_id: str, error: str) -> None:
        """Lost attempts spent the event's budget: its next run skips (its effect
        committed) or fails with ``error`` without calling the handler."""
        self._lost[event_id] = error

    def __repr__(self) -> str:
        return f"idempotent({self.process!r})"


class IdempotentReceiver:
    """A sync-message handler run through the inbox, consumer
    ``sync:<channel>:<name>`` (``name``: the handler's dotted name, or the one
    given)."""

    __slots__ = ("consumer", "handler", "inbox")

    def __init__(
        self,
        inbox: Inbox,
        channel: str,
        handler: Callable[..., Any],
        name: str | None = None,
    ) -> None:
        self.inbox = inbox
        self.handler = handler
        self.consumer = consumer_name(f"sync:{channel}:{name or handler_name(handler)}")

    def __call__(self, message_id: str, payload: Any) -> None:
        self.inbox.run(self.consumer, message_id, self.handler, payload)


def receiver_once(
    app: Any, channel: str, handler: Callable[..., Any], idempotent: bool | str
) -> IdempotentReceiver | None:
    """What a sync-message subscription with ``idempotent`` runs: None for a plain
    handler; ``TypeError`` / ``ValueError`` for a bad flag or an async handler."""
    if not isinstance(idempotent, bool | str):
        raise TypeError(
            f"idempotent must be True, False or a consumer name, got {idempotent!r}."
        )
    if isinstance(idempotent, str):
        validate_name(idempotent, "idempotent consumer name")
    elif not idempotent and not is_idempotent(handler):
        return None
    require_sync(handler, "idempotent=True")
    return IdempotentReceiver(
        get_inbox(app),
        channel,
        handler,
        idempotent if isinstance(idempotent, str) else None,
    )
