"""Sync messages sent after commit: ``app.sync_message_manager``."""
