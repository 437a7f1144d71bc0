"""Pub/sub: ``app.pubsub_manager`` (SPEC section 6, PubSubManager)."""

from .manager import PubSubManager

__all__ = ["PubSubManager"]
