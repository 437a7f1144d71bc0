"""Namespaced caches: ``app.cache_manager`` and ``app.cache``."""
