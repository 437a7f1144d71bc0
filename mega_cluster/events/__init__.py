"""The event queue: ``app.event_queue`` (SPEC section 6, EventQueue)."""
