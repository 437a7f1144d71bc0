"""A schedule store in memory, shared by the nodes of one process (the testing
kit's cluster), with time from a callable (the kit's clock)."""

from __future__ import annotations

import dataclasses
import datetime as dt
import threading
from collections.abc import Callable, Sequence
from typing import Any

from .store import Enqueue, Run, ScheduleStore, State

UTC = dt.UTC


class MemoryScheduleStore(ScheduleStore):
    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.lock = threading.RLock()
        self._states: dict[str, State] = {}
        self._runs: dict[tuple[str, dt.datetime, bool], Run] = {}

    def now(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.clock(), UTC)

    def state(self, job: str, initial: dt.datetime) -> State:
        with self.lock:
            return self._states.setdefault(job, State(paused=False, last_tick=initial))

    def states(self) -> dict[str, State]:
        with self.lock:
            return dict(self._states)

    def _insert(self, runs: Sequence[Run]) -> None:
        keys = [(run.job, run.tick, run.manual) for run in runs]
        if any(key in self._runs for key in keys):
            raise ValueError(f"a run of {keys} is already recorded")
        self._runs.update(zip(keys, runs, strict=True))

    def advance(
        self,
        job: str,
        old: dt.datetime,
        new: dt.datetime,
        runs: Sequence[Run],
        enqueue: Enqueue,
        *,
        inside: bool,
    ) -> bool:
        with self.lock:
            state = self._states.get(job)
            if state is None or state.last_tick != old:
                return False
            self._insert(runs)
            self._states[job] = dataclasses.replace(state, last_tick=new)
        if runs:
            enqueue(runs)
        return True

    def add(self, run: Run, enqueue: Enqueue, *, inside: bool) -> None:
        with self.lock:
            self._insert([run])
        enqueue([run])

    def update(self, job: str, tick: dt.datetime, manual: bool, **fields: Any) -> None:
        for key in ("started_at", "finished_at"):
            if fields.get(key) is True:
                fields[key] = self.now()
        with self.lock:
            run = self._runs.get((job, tick, manual))
            if run is not None:
                self._runs[job, tick, manual] = dataclasses.replace(run, **fields)

    def update_event(self, event_id: str, **fields: Any) -> None:
        with self.lock:
            found = [k for k, r in self._runs.items() if r.event_id == event_id]
        for job, tick, manual in found:
            self.update(job, tick, manual, **fields)

    def set_paused(self, job: str, paused: bool) -> bool:
        with self.lock:
            state = self._states.get(job)
            if state is None:
                return False
            self._states[job] = dataclasses.replace(state, paused=paused)
            return True

    def runs(self, job: str | None = None, limit: int = 50) -> list[Run]:
        with self.lock:
            found = [r for r in self._runs.values() if job is None or r.job == job]
        found.sort(key=lambda r: (r.tick, r.manual), reverse=True)
        return found[:limit]

    def prune(self, before: dt.datetime) -> int:
        with self.lock:
            old = [key for key, run in self._runs.items() if run.tick < before]
            for key in old:
                del self._runs[key]
        return len(old)
