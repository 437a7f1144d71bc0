"""Exactly-once effects, opt-in: an idempotent handler runs inside a database
transaction that also records the message's id in the inbox table
(``mega_cluster_inbox``, unique per app, consumer and message id), so a redelivered
or replayed message whose effect already committed is skipped and counted.

``idempotent=True`` on ``event_queue.subscribe`` and
``sync_message_manager.subscribe``, or the :func:`idempotent` decorator (the only
way for a plugin's ``handle_sync_message``); docs/events.md and
docs/delivery-semantics.md.
"""

from __future__ import annotations

from .handlers import IdempotentProcess, IdempotentReceiver, receiver_once
from .inbox import ForeignWrite, Inbox, LostAttempt, consumer_name, get_inbox
from .marks import handler_name, idempotent, is_idempotent, require_sync

__all__ = [
    "ForeignWrite",
    "IdempotentProcess",
    "IdempotentReceiver",
    "Inbox",
    "LostAttempt",
    "consumer_name",
    "get_inbox",
    "handler_name",
    "idempotent",
    "is_idempotent",
    "receiver_once",
    "require_sync",
]
