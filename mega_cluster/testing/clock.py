"""A clock a test moves by hand: frozen until :meth:`Clock.advance`."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Callable

#: ``callback(old_time, new_time)``, called after each advance.
AdvanceListener = Callable[[float, float], None]


class Clock:
    """Wall and monotonic time of a testing-kit cluster, moved only by the test.

    ``time()`` starts at the real time when the clock is made (a Unix timestamp,
    so ``datetime.fromtimestamp`` works) and ``monotonic()`` at 0; both stand
    still until :meth:`advance`, which moves them together. What the kit
    schedules on the clock (event retries, delayed events) becomes due by
    advancing it, never by sleeping. Listeners registered with
    :meth:`on_advance` learn of every jump, old and new time, so a scheduler
    can run what fell due in between (the kit's nodes look at their periodic
    jobs' schedule on every move: :mod:`.schedules`).
    """

    def __init__(self, start: float | None = None) -> None:
        self._now = time.time() if start is None else _seconds("start", start)
        self._monotonic = 0.0
        self._lock = threading.Lock()
        self._listeners: list[AdvanceListener] = []

    def __repr__(self) -> str:
        return f"<Clock time={self._now:.3f} monotonic={self._monotonic:.3f}>"

    def time(self) -> float:
        """The clock's wall time (Unix timestamp)."""
        return self._now

    def monotonic(self) -> float:
        """Seconds advanced since the clock was made."""
        return self._monotonic

    def advance(self, seconds: float) -> float:
        """Move the clock ``seconds`` forward, tell the listeners; the new time.

        ``seconds`` is a finite number >= 0 (``ValueError`` otherwise: a clock
        never goes back).
        """
        step = _seconds("seconds", seconds)
        with self._lock:
            old = self._now
            self._now += step
            self._monotonic += step
            new = self._now
            listeners = list(self._listeners)
        for listener in listeners:
            listener(old, new)
        return new

    def advance_to(self, when: float) -> float:
        """Move the clock to the wall time ``when`` (no move if it is past)."""
        return self.advance(max(0.0, _seconds("when", when) - self._now))

    def on_advance(self, listener: AdvanceListener) -> Callable[[], None]:
        """Call ``listener(old, new)`` after each advance; returns a remover."""
        if not callable(listener):
            raise TypeError(f"listener must be callable, got {listener!r}.")
        with self._lock:
            self._listeners.append(listener)

        def remove() -> None:
            with self._lock:
                if listener in self._listeners:
                    self._listeners.remove(listener)

        return remove


def _seconds(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"{name} must be a number of seconds, got {value!r}.")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}.")
    return float(value)
