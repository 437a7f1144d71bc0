"""Plugins: discovery, ordering, lifecycle and the state stored in the database."""

from .base import Plugin

__all__ = ["Plugin"]
