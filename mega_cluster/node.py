"""Node identity: one id per OS process, renewed in a forked child."""

from __future__ import annotations

import contextlib
import os
import secrets
import socket
import threading
import time
from collections.abc import Callable, Iterator

_lock = threading.Lock()
_node_id: str | None = None
_started_at: float = time.time()
_pid = os.getpid()
_fork_callbacks: list[Callable[[], None]] = []


def _new_id() -> str:
    host = socket.gethostname().split(".")[0][:40] or "host"
    # pid alone repeats across machines and containers; the random part never does.
    return f"{host}-{os.getpid()}-{secrets.token_hex(4)}"


def get_node_id() -> str:
    """This process's node id (``host-pid-random``), unique across the cluster."""
    global _node_id
    if _node_id is None:
        with _lock:
            if _node_id is None:
                _node_id = _new_id()
    return _node_id


def started_at() -> float:
    """When this process (or forked child) became a node, as a Unix timestamp."""
    return _started_at


#: Longest wait of a fork for background database work in flight (seconds).
FORK_WAIT = 5.0


class _ForkGate:
    """Keeps a fork from landing in the middle of a background thread's database
    call.

    A forked child has only the forking thread; a lock another thread held at the
    fork stays held in the child forever. SQLite keeps process-wide mutexes (its
    file-lock table), so a child forked while one of our background threads was
    inside SQLite hangs at its first ``sqlite3.connect`` (seen with gunicorn
    ``--preload`` style forks of a started master). Background threads hold
    :func:`fork_guard` around database work; ``fork()`` waits (up to
    ``FORK_WAIT``) until none is inside and keeps new ones out until it returns.
    """

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._busy = 0
        self._forking = False

    @contextlib.contextmanager
    def busy(self) -> Iterator[None]:
        with self._cond:
            while self._forking:
                self._cond.wait()
            self._busy += 1
        try:
            yield
        finally:
            with self._cond:
                self._busy -= 1
                if not self._busy:
                    self._cond.notify_all()

    def before_fork(self) -> None:
        with self._cond:
            self._forking = True
            self._cond.wait_for(lambda: not self._busy, FORK_WAIT)

    def after_fork_in_parent(self) -> None:
        with self._cond:
            self._forking = False
            self._cond.notify_all()


_gate = _ForkGate()


def fork_guard() -> contextlib.AbstractContextManager[None]:
    """Hold around database work in a background thread: a fork of this process
    waits for it to end (bounded), so the child inherits no lock held mid-call."""
    return _gate.busy()


def on_fork(callback: Callable[[], None]) -> None:
    """Run ``callback`` in every forked child, after the node id was renewed."""
    _fork_callbacks.append(callback)


def _before_fork() -> None:
    _gate.before_fork()


def _after_fork_in_parent() -> None:
    _gate.after_fork_in_parent()


def check_fork() -> None:
    """Run the fork handlers now if this process was forked without them.

    ``os.fork()`` runs them itself; a server that forks from C without telling
    Python (``PyOS_AfterFork_Child``) leaves the child with its parent's node id
    until this is called (``Registry.ensure_started`` does, on every request).
    """
    if _pid != os.getpid():
        _after_fork_in_child()


def _after_fork_in_child() -> None:
    global _node_id, _started_at, _lock, _gate, _pid
    _pid = os.getpid()
    _gate = _ForkGate()
    _lock = threading.Lock()
    _node_id = None
    _started_at = time.time()
    for callback in list(_fork_callbacks):
        callback()


os.register_at_fork(
    before=_before_fork,
    after_in_parent=_after_fork_in_parent,
    after_in_child=_after_fork_in_child,
)
