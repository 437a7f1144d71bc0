"""Validation of the names callers write (kept for imports; see :mod:`.validation`)."""

from __future__ import annotations

from .validation import NAME_RE, validate_name

__all__ = ["NAME_RE", "validate_name"]
