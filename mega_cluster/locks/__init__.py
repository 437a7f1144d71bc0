"""Distributed locks: ``app.lock_manager`` (SPEC section 6, LockManager).

Backends: ``local`` (one process), ``redis`` and ``database``; see docs/locks.md.
"""

from .backends.base import LockInfo
from .handle import Lock
from .manager import LockContext, LockManager

__all__ = ["Lock", "LockContext", "LockInfo", "LockManager"]
