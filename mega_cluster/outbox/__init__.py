"""``app.outbox``: sync messages and events written in the caller's transaction
and sent after commit; a relay on every node sends what a dead or failing sender
left behind (docs/delivery-semantics.md, docs/sync-messages.md#the-outbox)."""

from .outbox import Outbox

__all__ = ["Outbox"]
