"""Periodic jobs in the testing kit: one memory schedule store per cluster, on
the cluster's clock, and the stepping that runs every tick without sleeping."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

from ..schedules.memory import MemoryScheduleStore
from ..schedules.scheduler import get_schedules
from ..schedules.store import Run
from .clock import Clock

if TYPE_CHECKING:
    from ..registry import ClusterApp


class ScheduleDriver:
    """Makes the kit's nodes act as ``runworker`` nodes for their periodic jobs:
    each node consumes its jobs' channels, and after every clock move each node
    runs a scheduler pass (the ticks now due are queued once, by one node)."""

    def __init__(self, clock: Clock, nodes: Callable[[], Sequence[ClusterApp]]) -> None:
        self.clock = clock
        self.store = MemoryScheduleStore(clock.time)
        self._nodes = nodes
        self.remove = clock.on_advance(self._moved)

    def attach(self, node: ClusterApp) -> None:
        schedules = get_schedules(node)
        schedules.use(self.store)
        if schedules.jobs():
            schedules.subscribe()
            schedules.tick()  # its jobs' state starts at this time

    def _moved(self, old: float, new: float) -> None:
        self.tick()

    def tick(self) -> list[Run]:
        """Every node's scheduler pass at the clock's time; the runs queued."""
        queued: list[Run] = []
        for node in self._nodes():
            queued += get_schedules(node).tick()
        return queued

    def next_due(self) -> float | None:
        """When the next tick falls due (clock time), or None without jobs."""
        found = [
            due.timestamp()
            for node in self._nodes()
            if (due := get_schedules(node).next_due) is not None
        ]
        return min(found) if found else None
