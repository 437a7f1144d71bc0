"""Per-channel sequence numbers of one publishing node."""

from __future__ import annotations

import threading


class Sequences:
    """The next number of each channel, used up only by a message handed over.

    A sender takes a number with :meth:`take` and gives it back with
    :meth:`give_back` when the message was refused or could not be handed to the
    broker, so receivers, which count the numbers to notice lost sync messages,
    see no gap for a message that was never sent.
    """

    def __init__(self) -> None:
        self._last: dict[str, int] = {}
        self._lock = threading.Lock()

    def take(self, channel: str) -> int:
        with self._lock:
            seq = self._last[channel] = self._last.get(channel, 0) + 1
        return seq

    def give_back(self, channel: str, seq: int) -> None:
        with self._lock:
            # only the newest number can be given back; if a later message took
            # one meanwhile, receivers see a gap, which is then the honest outcome
            if self._last.get(channel) == seq:
                self._last[channel] = seq - 1
