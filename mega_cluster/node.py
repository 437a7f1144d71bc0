"""Node identity: one id per OS process, renewed in a forked child."""

from __future__ import annotations

import os
import secrets
import socket
import threading
import time
from collections.abc import Callable

_lock = threading.Lock()
_node_id: str | None = None
_started_at: float = time.time()
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


def on_fork(callback: Callable[[], None]) -> None:
    """Run ``callback`` in every forked child, after the node id was renewed."""
    _fork_callbacks.append(callback)


def _after_fork_in_child() -> None:
    global _node_id, _started_at, _lock
    _lock = threading.Lock()
    _node_id = None
    _started_at = time.time()
    for callback in list(_fork_callbacks):
        callback()


os.register_at_fork(after_in_child=_after_fork_in_child)
