"""Calling a plugin's hooks: each may be a plain method or an ``async def``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from ..calls import call_sync

if TYPE_CHECKING:
    from .base import Plugin


def call_hook(plugin: Plugin, hook: str, *args: Any) -> Any:
    """Call ``plugin.<hook>(*args)``, sync or async, and return its result."""
    return call_sync(getattr(plugin, hook), *args)
