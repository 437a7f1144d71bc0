"""Distributed locks: ``app.lock_manager`` (SPEC section 6, LockManager)."""
