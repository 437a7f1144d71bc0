"""Sync messages sent after commit: ``app.sync_message_manager``."""

from .manager import SyncMessageManager

__all__ = ["SyncMessageManager"]
