"""The benchmark's task: a no-op that tells the measuring process it ran.

It sends one datagram (the monotonic time it ran) to the measuring process's
socket, ``MC_BENCH_SOCK``: the same few microseconds for every system, and the
measuring process waits on its socket instead of polling a database.
"""

from __future__ import annotations

import os
import socket
import struct
import threading
import time

from django.tasks import task

_local = threading.local()


def report() -> None:
    sock = getattr(_local, "sock", None)
    if sock is None or _local.pid != os.getpid():
        sock = _local.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        _local.pid = os.getpid()
    sock.sendto(struct.pack("d", time.monotonic()), os.environ["MC_BENCH_SOCK"])


@task
def noop() -> None:
    report()
