"""A handler on a channel, as the pub/sub manager and its dispatcher keep it."""

from __future__ import annotations

import inspect
import itertools
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

from ..validation import validate_name, validate_seconds

_ids = itertools.count(1)

Handler = Callable[[Any], Any]


@dataclass(eq=False)
class Subscription:
    """One handler on one channel (internal; ``raw`` handlers get the Envelope)."""

    channel: str
    handler: Handler
    debounce: float = 0.0
    debounce_key: Callable[[Any], Hashable] | None = None
    on_gap: Callable[[], Any] | None = None
    raw: bool = False
    active: bool = True
    id: int = field(default_factory=lambda: next(_ids))

    @property
    def is_async(self) -> bool:
        return inspect.iscoroutinefunction(self.handler)


def new_subscription(
    channel: str,
    handler: Handler,
    debounce: float,
    debounce_key: Callable[[Any], Hashable] | None,
    on_gap: Callable[[], Any] | None,
) -> Subscription:
    """A user's subscription, its arguments checked (``subscribe``'s errors)."""
    validate_name(channel)
    if not callable(handler):
        raise TypeError(f"handler must be callable, got {handler!r}")
    debounce = validate_seconds(debounce, "debounce")
    if debounce_key is not None and not callable(debounce_key):
        raise TypeError(f"debounce_key must be callable, got {debounce_key!r}")
    if on_gap is not None and not callable(on_gap):
        raise TypeError(f"on_gap must be callable, got {on_gap!r}")
    return Subscription(channel, handler, debounce, debounce_key, on_gap)
