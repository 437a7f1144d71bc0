"""Namespaced caches: ``app.cache_manager`` and ``app.cache`` (SPEC section 6, Cache).

Guide: docs/cache.md.
"""

from .cache import Cache
from .common import FOREVER
from .manager import CacheManager

__all__ = ["FOREVER", "Cache", "CacheManager"]
