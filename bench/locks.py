"""Lock benchmark: our backends next to redis-py Lock, python-redis-lock and pottery.

One command, one run, same Redis server for every Redis lock::

    ./dev bench locks [--pairs 2000] [--seconds 3]

Measures, per lock implementation:

* uncontended acquire+release pairs per second (one client, one key);
* contended hand-off latency: two processes take turns on one key. The holder
  keeps it 2 ms while the other process is blocked in ``acquire()``; latency =
  from the start of ``release()`` to the other process's ``acquire()`` returning
  (CLOCK_MONOTONIC is system-wide on Linux). After releasing, a process waits
  until the other one holds the lock before queueing again, so every turn is a
  hand-off and no lock can win by re-grabbing it (barging).

Three more rows run on a private Sentinel set-up (a primary, one replica, three
sentinels on free ports, :func:`tests.topologies.redis_sentinel`): the redis
backend given the primary's ``redis://`` URL, the same through ``sentinel://``,
and with ``OPTIONS["STRICT"]`` (every grant and extension waits for the replica's
acknowledgement).

Needs Redis on ``MC_REDIS_URL`` (default redis://127.0.0.1:6379/0) and PostgreSQL
on ``MC_PG_HOST`` (default 127.0.0.1, user postgres, trust): a throw-away database
``mc_bench_<pid>`` is created and dropped, Redis keys carry ``mcbench<pid>`` and
are deleted at the end.
"""

# ruff: noqa: E402 (sys.path is fixed before the other imports)
from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, bench/ is sys.path[0]: its modules (e.g. bench/queue.py) must
# not shadow the standard library.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != Path(__file__).parent]

import argparse
import itertools
import multiprocessing as mp
import os
import statistics
import time
from collections.abc import Callable
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

REDIS_URL = os.environ.get("MC_REDIS_URL", "redis://127.0.0.1:6379/0")
PG_HOST = os.environ.get("MC_PG_HOST", "127.0.0.1")
PG_USER = os.environ.get("MC_PG_USER", "postgres")
TAG = f"mcbench{os.getpid()}"
PG_DB = f"mc_bench_{os.getpid()}"
HOLD = 0.002
#: Where the Sentinel rows run (set in main(); children are forked).
TOPOLOGY: dict[str, str] = {}


def setup_django() -> None:
    import django
    from django.conf import settings

    settings.configure(
        INSTALLED_APPS=["mega_cluster"],
        DATABASES={
            "default": {
                "ENGINE": "django.db.backends.postgresql",
                "NAME": PG_DB,
                "HOST": PG_HOST,
                "USER": PG_USER,
            }
        },
        USE_TZ=True,
        DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
        MEGA_CLUSTER={"APP_NAME": TAG},
        LOGGING_CONFIG=None,
    )
    django.setup()


# one factory per implementation: returns (acquire, release) over one key ----------

LockPair = tuple[Callable[[], Any], Callable[[Any], None]]


def ours(backend: str) -> Callable[[str], LockPair]:
    def factory(key: str) -> LockPair:
        from mega_cluster.testing import make_app

        if backend == "redis":
            locks = {"BACKEND": "redis", "OPTIONS": {"URL": REDIS_URL}}
        elif backend == "primary":
            locks = {"BACKEND": "redis", "OPTIONS": {"URL": TOPOLOGY["primary"]}}
        elif backend == "sentinel":
            locks = {"BACKEND": "redis", "OPTIONS": {"URL": TOPOLOGY["sentinel"]}}
        elif backend == "strict":
            options = {"URL": TOPOLOGY["sentinel"], "STRICT": True}
            locks = {"BACKEND": "redis", "OPTIONS": options}
        else:
            locks = {"BACKEND": "database", "OPTIONS": {"POLL_INTERVAL": 0.05}}
        manager = make_app(TAG, {"LOCKS": locks}).lock_manager
        return (lambda: manager.acquire(key, ttl=10, wait=30)), (
            lambda lock: lock.release()
        )

    return factory


def redis_py(key: str) -> LockPair:
    import redis

    client = redis.Redis.from_url(REDIS_URL)

    def acquire() -> Any:
        lock = client.lock(f"{TAG}:redispy:{key}", timeout=10, blocking_timeout=30)
        assert lock.acquire()
        return lock

    return acquire, lambda lock: lock.release()


def python_redis_lock(key: str) -> LockPair:
    import redis
    import redis_lock

    client = redis.Redis.from_url(REDIS_URL)

    def acquire() -> Any:
        lock = redis_lock.Lock(client, f"{TAG}:prl:{key}", expire=10)
        assert lock.acquire()  # its timeout may not exceed expire
        return lock

    return acquire, lambda lock: lock.release()


def pottery_redlock(key: str) -> LockPair:
    import redis
    from pottery import Redlock

    client = redis.Redis.from_url(REDIS_URL)

    def acquire() -> Any:
        lock = Redlock(
            key=f"{TAG}:pottery:{key}", masters={client}, auto_release_time=10
        )
        assert lock.acquire(timeout=30)
        return lock

    return acquire, lambda lock: lock.release()


IMPLEMENTATIONS: dict[str, Callable[[str], LockPair]] = {
    "mega_cluster redis": ours("redis"),
    "redis-py Lock": redis_py,
    "python-redis-lock": python_redis_lock,
    "pottery Redlock": pottery_redlock,
    "mega_cluster database (PostgreSQL)": ours("database"),
    "mega_cluster redis, Sentinel's primary by redis://": ours("primary"),
    "mega_cluster redis, sentinel://": ours("sentinel"),
    "mega_cluster redis STRICT, sentinel:// (1 replica)": ours("strict"),
}


def uncontended(pairs: int, rounds: int = 7) -> dict[str, float]:
    """Median pairs/s per implementation over interleaved rounds (load drifts)."""
    clients = {
        name: factory("uncontended") for name, factory in IMPLEMENTATIONS.items()
    }
    for acquire, release in clients.values():  # warm up: connections, scripts
        for _ in range(50):
            release(acquire())
    rates: dict[str, list[float]] = {name: [] for name in clients}
    per_round = max(1, pairs // rounds)
    for _ in range(rounds):
        for name, (acquire, release) in clients.items():
            started = time.perf_counter()
            for _ in range(per_round):
                release(acquire())
            rates[name].append(per_round / (time.perf_counter() - started))
    return {name: statistics.median(values) for name, values in rates.items()}


def _contender(
    name: str, seconds: float, start_at: float, turns: Any, out: Any
) -> None:
    from django.db import connections

    connections.close_all()  # the forked child opens its own
    acquire, release = IMPLEMENTATIONS[name]("contended")
    events = []
    while time.monotonic() < start_at:
        time.sleep(0.001)
    end = start_at + seconds
    while time.monotonic() < end:
        lock = acquire()
        acquired = time.monotonic()
        with turns.get_lock():
            turns.value += 1
            mine = turns.value
        time.sleep(HOLD)
        released = time.monotonic()
        release(lock)
        events.append((acquired, released))
        # Queue again only once the other process holds it (or gave up).
        give_up = time.monotonic() + 2.0
        while turns.value == mine and time.monotonic() < min(give_up, end):
            time.sleep(0.0001)
    out.put((os.getpid(), events))


def contended(name: str, seconds: float) -> list[float]:
    ctx = mp.get_context("fork")
    out = ctx.Queue()
    turns = ctx.Value("l", 0)
    start_at = time.monotonic() + 1.0
    procs = [
        ctx.Process(target=_contender, args=(name, seconds, start_at, turns, out))
        for _ in range(2)
    ]
    for proc in procs:
        proc.start()
    results = [out.get(timeout=seconds + 60) for _ in procs]
    for proc in procs:
        proc.join(timeout=30)
    timeline = sorted(
        (acquired, released, pid)
        for pid, events in results
        for acquired, released in events
    )
    return [
        (nxt[0] - cur[1]) * 1000
        for cur, nxt in itertools.pairwise(timeline)
        if nxt[2] != cur[2]
    ]


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def create_database() -> None:
    import psycopg

    with psycopg.connect(
        host=PG_HOST, user=PG_USER, dbname="postgres", autocommit=True
    ) as conn:
        conn.execute(f'CREATE DATABASE "{PG_DB}"')


def drop_database() -> None:
    import psycopg

    with psycopg.connect(
        host=PG_HOST, user=PG_USER, dbname="postgres", autocommit=True
    ) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{PG_DB}" WITH (FORCE)')


def clean_redis() -> None:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=f"*{TAG}*", count=1000))
    for i in range(0, len(keys), 500):
        client.delete(*keys[i : i + 500])
    client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--pairs", type=int, default=2000)
    parser.add_argument("--seconds", type=float, default=3.0)
    args = parser.parse_args()

    from tests.topologies import redis_sentinel

    with redis_sentinel() as sentinel:
        TOPOLOGY["sentinel"] = sentinel.url
        TOPOLOGY["primary"] = f"redis://127.0.0.1:{sentinel.master_port()}/0"
        create_database()
        rows = measure(args)
    report(args, rows)


def measure(args: argparse.Namespace) -> list[tuple[str, float, list[float]]]:
    try:
        setup_django()
        from django.core.management import call_command
        from django.db import connections

        call_command("migrate", "mega_cluster", verbosity=0)
        connections.close_all()
        rates = uncontended(args.pairs)
        connections.close_all()
        rows = []
        for name in IMPLEMENTATIONS:
            latencies = contended(name, args.seconds)
            rows.append((name, rates[name], latencies))
            print(f"  measured {name}", file=sys.stderr, flush=True)
    finally:
        from django.db import connections

        connections.close_all()
        drop_database()
        clean_redis()
    return rows


def report(
    args: argparse.Namespace, rows: list[tuple[str, float, list[float]]]
) -> None:
    base = next(rate for name, rate, _ in rows if name == "redis-py Lock")
    base_p50 = statistics.median(
        next(lat for name, _, lat in rows if name == "redis-py Lock") or [float("nan")]
    )
    print(
        f"\nLocks, {args.pairs} uncontended pairs (median of 7 interleaved rounds), "
        f"{args.seconds:g} s of 2-process "
        f"contention (hold {HOLD * 1000:g} ms), Python {sys.version.split()[0]}\n"
    )
    header = (
        "| lock | pairs/s | x redis-py | hand-off p50 ms | p99 ms | "
        "p50 x redis-py | hand-offs |"
    )
    print(header)
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, rate, latencies in rows:
        p50 = percentile(latencies, 0.5)
        print(
            f"| {name} | {rate:,.0f} | {rate / base:.2f} | {p50:.2f} | "
            f"{percentile(latencies, 0.99):.2f} | {p50 / base_p50:.3f} | "
            f"{len(latencies)} |"
        )


if __name__ == "__main__":
    main()
