"""Circuit breakers: while a backend's server is down, calls fail fast.

Every backend instance (a lock, pub/sub or event-queue backend, a cache store, the
node registry's store) owns one :class:`Circuit`, and the methods that talk to its
server run through it (:func:`guard`, applied once where the object is built: the
``guarded`` names of :class:`~mega_cluster.backends.Backend` subclasses, every
server call of a cache store, the node store's methods):

* **closed** (normal): calls go through. A call that raises
  :class:`~mega_cluster.exceptions.BackendUnavailable` (the server could not be
  reached: every backend translates its driver's connection errors to it) counts a
  failure; any call that returns resets the count.
* **open**: after ``CIRCUIT_FAILURES`` failures in a row. Calls raise
  :class:`~mega_cluster.exceptions.CircuitOpen` (a ``BackendUnavailable``) at once,
  without touching the server, instead of each waiting for a socket timeout. A
  background thread pings the backend (``ping(timeout)``) every
  ``CIRCUIT_PROBE_EVERY`` seconds; the first answer closes the circuit.
* A backend without a ``ping`` is **half-open** after ``CIRCUIT_PROBE_EVERY``
  seconds: one call goes through as the probe, the others still fail fast.

Errors that are not connection failures (a bad argument, a lock held by someone
else) neither count nor reset. ``CIRCUIT_FAILURES = 0`` turns circuits off. The
health view, the metrics and ``cluster_status`` list the circuits that are open
(:func:`circuits`). After ``os.fork()`` a child starts with every circuit closed.
"""

from __future__ import annotations

import functools
import inspect
import logging
import os
import threading
import time
import weakref
from collections.abc import Callable, Iterable
from typing import Any

from .exceptions import BackendUnavailable, CircuitOpen

logger = logging.getLogger("mega_cluster.circuit")

#: Defaults of the app settings ``CIRCUIT_FAILURES`` and ``CIRCUIT_PROBE_EVERY``.
FAILURES = 3
PROBE_EVERY = 1.0
#: Socket timeout of a background probe (seconds).
PROBE_TIMEOUT = 2.0

#: Set on an exception once a circuit counted it (nested guards count it once).
COUNTED = "mega_cluster_circuit_counted"

_all: weakref.WeakSet[Circuit] = weakref.WeakSet()
_all_lock = threading.Lock()


class Circuit:
    """The failure count and state of one backend instance (thread-safe)."""

    def __init__(
        self,
        app: str,
        name: str,
        *,
        failures: int = FAILURES,
        probe_every: float = PROBE_EVERY,
        probe: Callable[[float], None] | None = None,
    ) -> None:
        self.app = app
        self.name = name
        self.threshold = failures
        self.probe_every = probe_every
        #: ``probe(timeout)`` raises ``BackendUnavailable`` while the server is down.
        self.probe = probe
        self.failures = 0
        self.opened_at: float | None = None
        self.last_error = ""
        #: Times this circuit opened in this process.
        self.opened_count = 0
        self._trial = False
        self._last_cause: BaseException | None = None
        self._last_message = ""
        self._lock = threading.Lock()
        self._stop = threading.Event()
        with _all_lock:
            _all.add(self)

    def __repr__(self) -> str:
        return f"<Circuit {self.app}:{self.name} {self.state}>"

    @property
    def is_open(self) -> bool:
        return self.opened_at is not None

    @property
    def state(self) -> str:
        return "open" if self.is_open else "closed"

    def as_dict(self) -> dict[str, Any]:
        opened = self.opened_at
        return {
            "app": self.app,
            "name": self.name,
            "state": "open" if opened is not None else "closed",
            "failures": self.failures,
            "open_for": None if opened is None else round(time.monotonic() - opened, 3),
            "opened_count": self.opened_count,
            "last_error": self.last_error,
        }

    # the call path -------------------------------------------------------------

    def before(self) -> bool:
        """Raise ``CircuitOpen`` while open; True when this call is a half-open trial."""
        if self.opened_at is None:
            return False
        if self.probe is None:
            with self._lock:
                opened = self.opened_at
                due = opened is not None and (
                    time.monotonic() - opened >= self.probe_every
                )
                if due and not self._trial:
                    self._trial = True
                    return True
        # The last failure's driver error, as BackendUnavailable promises.
        raise CircuitOpen(
            f"{self.name} of app {self.app!r} is unavailable: {self.threshold} calls "
            f"in a row failed, the last with: {self._last_message}; calls fail fast "
            f"until a probe reaches the server again (every {self.probe_every:g}s)."
        ) from self._last_cause

    def success(self) -> None:
        if self.failures or self.opened_at is not None:
            with self._lock:
                was_open = self.opened_at is not None
                self.failures = 0
                self.opened_at = None
                self._trial = False
                self._last_cause = None
            if was_open:
                logger.warning(
                    "circuit %s of app %s closed: the server answers again",
                    self.name,
                    self.app,
                )

    def failure(self, exc: BaseException) -> None:
        if isinstance(exc, CircuitOpen) or getattr(exc, COUNTED, False):
            return
        try:
            setattr(exc, COUNTED, True)  # an outer guard of the same call skips it
        except AttributeError:  # pragma: no cover - exceptions take attributes
            pass
        if self.threshold <= 0:
            return
        opened = False
        with self._lock:
            self.failures += 1
            self._last_cause = exc.__cause__ or exc
            self._last_message = str(exc)
            self.last_error = type(self._last_cause).__name__
            self._trial = False
            if self.opened_at is not None:
                self.opened_at = time.monotonic()  # a failed trial: wait again
            elif self.failures >= self.threshold:
                self.opened_at = time.monotonic()
                self.opened_count += 1
                opened = True
        if opened:
            logger.warning(
                "circuit %s of app %s opened after %d failures in a row (%s): calls "
                "fail fast until the server answers a probe",
                self.name,
                self.app,
                self.failures,
                exc,
            )
            if self.probe is not None:
                self._stop.clear()
                threading.Thread(
                    target=self._probe_loop,
                    name=f"mega_cluster-circuit-{self.app}-{self.name}",
                    daemon=True,
                ).start()

    def call(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run ``fn`` through the circuit."""
        self.before()
        try:
            result = fn(*args, **kwargs)
        except BackendUnavailable as exc:
            self.failure(exc)
            raise
        except BaseException:
            self._trial = False
            raise
        self.success()
        return result

    def check(self, timeout: float) -> None:
        """Ping now, bypassing the open state, and record the outcome (the health
        view's probe); raises ``BackendUnavailable`` when the server is down."""
        if self.probe is None:
            return
        try:
            self.probe(timeout)
        except BackendUnavailable as exc:
            self.failure(exc)
            raise
        self.success()

    # background probing ----------------------------------------------------------

    def _probe_loop(self) -> None:
        try:
            self._probe_until_closed()
        finally:
            from django.db import connections

            connections.close_all()  # this thread's own, opened by a database ping

    def _probe_until_closed(self) -> None:
        while not self._stop.wait(self.probe_every):
            if self.opened_at is None:
                return
            try:
                assert self.probe is not None
                self.probe(min(PROBE_TIMEOUT, max(self.probe_every, 0.5)))
            except BackendUnavailable as exc:
                self.last_error = type(exc.__cause__ or exc).__name__
                continue
            except Exception as exc:  # a bug in a ping must not end the probing
                logger.warning("circuit %s probe raised %r", self.name, exc)
                continue
            self.success()
            return

    def stop(self) -> None:
        """End the background probe (the backend stopped); the state is kept."""
        self._stop.set()

    def reset(self) -> None:
        """Close the circuit and forget the failures (tests, a backend restarted)."""
        self._stop.set()
        with self._lock:
            self.failures = 0
            self.opened_at = None
            self._trial = False

    def after_fork(self) -> None:
        """In a forked child: closed, no probe (the parent's thread is not here)."""
        # The parent's probe thread does not exist here; start over closed.
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.failures = 0
        self.opened_at = None
        self._trial = False


def _after_fork_in_child() -> None:
    # A hook, not a pid check per call: os.getpid() is a system call.
    global _all_lock
    _all_lock = threading.Lock()
    for circuit in list(_all):
        circuit.after_fork()


os.register_at_fork(after_in_child=_after_fork_in_child)


def guard(obj: Any, names: Iterable[str], circuit: Circuit) -> None:
    """Route the methods ``names`` of ``obj`` through ``circuit`` (instance
    attributes shadowing the class's methods; coroutine functions stay async)."""
    for name in names:
        method = getattr(obj, name, None)
        if method is None:
            continue
        setattr(obj, name, _wrap(method, circuit))


def _wrap(method: Callable[..., Any], circuit: Circuit) -> Callable[..., Any]:
    if inspect.iscoroutinefunction(method):

        @functools.wraps(method)
        async def guarded_async(*args: Any, **kwargs: Any) -> Any:
            circuit.before()
            try:
                result = await method(*args, **kwargs)
            except BackendUnavailable as exc:
                circuit.failure(exc)
                raise
            circuit.success()
            return result

        return guarded_async

    @functools.wraps(method)
    def guarded(*args: Any, **kwargs: Any) -> Any:
        return circuit.call(method, *args, **kwargs)

    return guarded


def settings_of(app: Any) -> dict[str, Any]:
    """``failures`` and ``probe_every`` from the app's settings (defaults without)."""
    values = getattr(getattr(app, "settings", None), "values", None) or {}
    return {
        "failures": int(values.get("CIRCUIT_FAILURES", FAILURES)),
        "probe_every": float(values.get("CIRCUIT_PROBE_EVERY", PROBE_EVERY)),
    }


def circuits(app: str | None = None) -> list[Circuit]:
    """The live circuits of this process (of ``app`` when given), sorted by name."""
    with _all_lock:
        found = [c for c in _all if app is None or c.app == app]
    return sorted(found, key=lambda c: (c.app, c.name))


def open_circuits(app: str | None = None) -> list[Circuit]:
    return [c for c in circuits(app) if c.is_open]
