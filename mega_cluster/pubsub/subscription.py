"""A handler on a channel, as the pub/sub manager and its dispatcher keep it."""

from __future__ import annotations

import inspect
import itertools
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field
from typing import Any

from ..exceptions import InvalidArgument
from ..validation import validate_name, validate_seconds

_ids = itertools.count(1)
#: Default ``max_wait`` of a debounced subscription, as a multiple of ``debounce``.
MAX_WAIT_FACTOR = 10

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
    #: Longest a debounced call waits after the first message of its burst.
    max_wait: float = 0.0

    @property
    def is_async(self) -> bool:
        return inspect.iscoroutinefunction(self.handler)


def new_subscription(
    channel: str,
    handler: Handler,
    debounce: float,
    debounce_key: Callable[[Any], Hashable] | None,
    on_gap: Callable[[], Any] | None,
    max_wait: float | None = None,
) -> Subscription:
    """A user's subscription, its arguments checked (``subscribe``'s errors).

    ``max_wait`` defaults to ``MAX_WAIT_FACTOR * debounce``."""
    validate_name(channel)
    if not callable(handler):
        raise TypeError(f"handler must be callable, got {handler!r}")
    debounce = validate_seconds(debounce, "debounce")
    if debounce_key is not None and not callable(debounce_key):
        raise TypeError(f"debounce_key must be callable, got {debounce_key!r}")
    if on_gap is not None and not callable(on_gap):
        raise TypeError(f"on_gap must be callable, got {on_gap!r}")
    if max_wait is None:
        max_wait = MAX_WAIT_FACTOR * debounce
    else:
        max_wait = validate_seconds(max_wait, "max_wait")
        if max_wait < debounce:
            raise InvalidArgument(
                f"max_wait must be >= debounce ({debounce:g} s), got {max_wait:g}."
            )
    return Subscription(
        channel, handler, debounce, debounce_key, on_gap, max_wait=max_wait
    )
