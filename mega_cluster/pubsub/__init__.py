"""Pub/sub: ``app.pubsub_manager`` (SPEC section 6, PubSubManager)."""
