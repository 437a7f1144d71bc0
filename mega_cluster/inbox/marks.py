"""Marking a handler idempotent (:func:`idempotent`), read without touching the
inbox (plugins check the mark while the app registry loads)."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

#: The attribute :func:`idempotent` sets on a function.
MARK = "mega_cluster_idempotent"


def handler_name(handler: Callable[..., Any]) -> str:
    """The dotted name of a function or method (a callable object: its class)."""
    target = getattr(handler, "__func__", handler)
    qualname = getattr(target, "__qualname__", None) or type(target).__qualname__
    module = getattr(target, "__module__", None) or type(target).__module__
    return f"{module}.{qualname}"


def require_sync(fn: Callable[..., Any], what: str) -> None:
    """``TypeError`` when ``fn`` is ``async def`` (or an object whose ``__call__``
    is): the effect and the inbox row share one transaction, which Django runs on
    one thread."""
    if inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004 - async callable objects
    ):
        raise TypeError(
            f"{what} needs a sync handler, got async {handler_name(fn)}: its effect "
            "and the inbox record commit in one database transaction, which Django "
            "runs on one thread. Make it a plain def (wrap async calls inside with "
            "asgiref's async_to_sync)."
        )


def idempotent(fn: F) -> F:
    """Mark ``fn`` idempotent: an event-queue ``process`` callable, a sync-message
    handler or a plugin's ``handle_sync_message``. Each message then runs inside
    ``transaction.atomic(using=INBOX["DATABASE"])`` with its inbox row, and a
    redelivery whose effect already committed is skipped. Same as
    ``idempotent=True`` at ``subscribe()``. ``TypeError`` for an ``async def``."""
    if not callable(fn):
        raise TypeError(f"@idempotent decorates a function, got {fn!r}.")
    require_sync(fn, "@idempotent")
    target = getattr(fn, "__func__", fn)
    try:
        setattr(target, MARK, True)
    except AttributeError:
        raise TypeError(
            f"@idempotent cannot mark {fn!r}; pass idempotent=True to subscribe()."
        ) from None
    return fn


def is_idempotent(fn: Callable[..., Any]) -> bool:
    """Whether :func:`idempotent` marked ``fn`` (a bound method: its function)."""
    return getattr(fn, MARK, False) is True
