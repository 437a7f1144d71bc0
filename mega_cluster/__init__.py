"""mega_cluster: cluster-safe plugins for Django.

``from mega_cluster import get_app, Plugin`` is the whole entry point; everything
else hangs off the :class:`~mega_cluster.registry.ClusterApp` that ``get_app()``
returns.
"""

from .exceptions import (
    AmbiguousApp,
    AppNotFound,
    AppNotReady,
    BackendUnavailable,
    CacheNameTaken,
    CircuitOpen,
    ConfigurationError,
    InvalidName,
    LockLost,
    LockTimeout,
    MegaClusterError,
    MessageEncodeError,
)
from .inbox.marks import idempotent
from .plugins.base import Plugin
from .registry import ClusterApp, get_app

__version__ = "0.1.0"

__all__ = [
    "AmbiguousApp",
    "AppNotFound",
    "AppNotReady",
    "BackendUnavailable",
    "CacheNameTaken",
    "CircuitOpen",
    "ClusterApp",
    "ConfigurationError",
    "InvalidName",
    "LockLost",
    "LockTimeout",
    "MegaClusterError",
    "MessageEncodeError",
    "Plugin",
    "get_app",
    "idempotent",
]
