"""Cache benchmark: our Cache next to the Django cache it sits on, one run.

    ./dev bench cache [--ops 2000] [--rounds 7] [--misses 50]

Hit path (one thread, a warm key holding a small dict): time per call of

* a direct ``get`` on django-redis (``caches["django_redis"].get``), the reference;
* our ``cache.get`` and ``cache.wrap`` on that store (one ``MGET`` of the namespace
  generation and the key), and with the near cache (L1) on;
* a direct ``get`` on Django's own ``RedisCache`` next to our ``get`` on it.

Variants run interleaved in short batches (``--rounds`` x ``--ops`` calls each);
the figure is the median batch, the ratio is ours / the direct get of the same
store.

Stampede: ``--misses`` callers miss the same cold key at the same instant
(a barrier); the value takes 100 ms to compute. Django's ``get_or_set`` next to
our ``wrap`` (Redis locks), first as threads of one process, then spread over 5
processes. Reported: how many times the value was computed and the wall time
from the first caller leaving the barrier to the last caller holding the value
(each process reads CLOCK_MONOTONIC, which is system-wide on Linux).

Needs Redis on ``MC_REDIS_URL`` (default redis://127.0.0.1:6379/0). Every key
carries ``mcbench<pid>`` and is deleted at the end (never FLUSHDB).
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
# Running this file puts bench/ first on sys.path, where bench/queue.py would
# shadow the standard library's queue (imported later by asgiref and
# multiprocessing); the repository root goes there instead.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != ROOT / "bench"]
sys.path.insert(0, str(ROOT))

REDIS_URL = os.environ.get("MC_REDIS_URL", "redis://127.0.0.1:6379/0")
TAG = os.environ.get("MC_BENCH_TAG", f"mcbench{os.getpid()}")
COMPUTE = 0.1  # seconds one computation of the stampede value takes
PROCESSES = 5
BATCHES = 20  # a round's calls of one variant are split into this many batches
VALUE = {"id": 42, "name": "widget", "tags": ["a", "b"], "price": 9.99}


def setup_django() -> None:
    import django
    from django.conf import settings

    settings.configure(
        INSTALLED_APPS=["mega_cluster"],
        DATABASES={
            "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}
        },
        CACHES={
            "default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"},
            "django_redis": {
                "BACKEND": "django_redis.cache.RedisCache",
                "LOCATION": REDIS_URL,
                "KEY_PREFIX": TAG,
            },
            "redis": {
                "BACKEND": "django.core.cache.backends.redis.RedisCache",
                "LOCATION": REDIS_URL,
                "KEY_PREFIX": TAG,
            },
        },
        MEGA_CLUSTER={"APP_NAME": TAG},
        USE_TZ=True,
    )
    django.setup()


def make_cluster_app(store: str) -> Any:
    from mega_cluster.testing import make_app

    return make_app(
        TAG,
        {
            "CACHE": {"DEFAULT_STORE": store},
            "LOCKS": {"BACKEND": "redis", "OPTIONS": {"URL": REDIS_URL}},
            "PUBSUB": {"BACKEND": "redis", "OPTIONS": {"URL": REDIS_URL}},
        },
    )


# hit path ---------------------------------------------------------------------


def per_call(fn: Callable[[], Any], ops: int) -> float:
    start = time.perf_counter()
    for _ in range(ops):
        fn()
    return (time.perf_counter() - start) / ops


def hit_path(ops: int, rounds: int) -> None:
    from django.core.cache import caches

    apps = [make_cluster_app("django_redis"), make_cluster_app("redis")]
    dr_cache = apps[0].cache_manager.create_cache("hits")
    near = apps[0].cache_manager.create_cache("hits-near", near_cache=True)
    dj_cache = apps[1].cache_manager.create_cache("hits")
    direct_dr, direct_dj = caches["django_redis"], caches["redis"]
    direct_dr.set("hit", VALUE, 600)
    direct_dj.set("hit", VALUE, 600)
    for cache in (dr_cache, near, dj_cache):
        cache.set("hit", VALUE, ttl=600)

    def never() -> Any:
        raise AssertionError("a hit must not compute")

    variants: dict[str, Callable[[], Any]] = {
        "django-redis get (direct)": lambda: direct_dr.get("hit"),
        "mega_cluster get": lambda: dr_cache.get("hit"),
        "mega_cluster wrap": lambda: dr_cache.wrap("hit", never),
        "mega_cluster get, near cache on": lambda: near.get("hit"),
        "Django RedisCache get (direct)": lambda: direct_dj.get("hit"),
        "mega_cluster get on RedisCache": lambda: dj_cache.get("hit"),
    }
    for fn in variants.values():
        assert fn() == VALUE
        per_call(fn, 200)  # warm up
    # Short batches in turn, many times: load from other processes on the machine
    # then falls on every variant alike instead of on whichever ran during it.
    samples: dict[str, list[float]] = {name: [] for name in variants}
    batch = max(1, ops // BATCHES)
    for _ in range(rounds * BATCHES):
        for name, fn in variants.items():
            samples[name].append(per_call(fn, batch))
    median = {name: statistics.median(v) for name, v in samples.items()}
    best = {name: min(v) for name, v in samples.items()}
    reference = {
        "django-redis get (direct)": "django-redis get (direct)",
        "mega_cluster get": "django-redis get (direct)",
        "mega_cluster wrap": "django-redis get (direct)",
        "mega_cluster get, near cache on": "django-redis get (direct)",
        "Django RedisCache get (direct)": "Django RedisCache get (direct)",
        "mega_cluster get on RedisCache": "Django RedisCache get (direct)",
    }
    print(
        f"\nHit path: {rounds} rounds x {ops} calls in batches of {batch}; median "
        "and best batch (target <= 1.20x)"
    )
    print(f"{'':34} {'us/call':>9} {'ratio':>7}   {'best us':>9} {'ratio':>7}")
    for name, value in median.items():
        ratio = value / median[reference[name]]
        low = best[name]
        low_ratio = low / best[reference[name]]
        print(
            f"{name:34} {value * 1e6:9.1f} {ratio:6.2f}x   {low * 1e6:9.1f} "
            f"{low_ratio:6.2f}x"
        )
    for app in apps:
        app.stop()


# stampede -----------------------------------------------------------------------


def _stampede_threads(
    kind: str, key: str, n: int, barrier: Any, counter: Any
) -> tuple[float, float]:
    """Run ``n`` callers in threads of this process; return when the first passed
    the barrier and when the last was done (CLOCK_MONOTONIC is system-wide)."""
    from django.core.cache import caches

    app = make_cluster_app("django_redis")
    cache = app.cache_manager.create_cache("stampede")
    direct = caches["django_redis"]
    cache.get("warm-up")
    direct.get("warm-up")
    app.lock_manager.acquire(f"warm-up:{os.getpid()}", wait=5).release()

    def compute() -> dict[str, Any]:
        with counter.get_lock():
            counter.value += 1
        time.sleep(COMPUTE)
        return VALUE

    results: list[Any] = []
    starts: list[float] = []

    def caller() -> None:
        barrier.wait(60)
        starts.append(time.monotonic())
        if kind == "django":
            results.append(direct.get_or_set(key, compute, 600))
        else:
            results.append(cache.wrap(key, compute, ttl=600))

    threads = [threading.Thread(target=caller) for _ in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    finished = time.monotonic()
    app.stop()
    if len(results) != n or any(r != VALUE for r in results):
        raise SystemExit(f"stampede {kind}: wrong results {results!r:.200}")
    return min(starts), finished


def _collect(done: list[tuple[float, float]], *args: Any) -> None:
    done.append(_stampede_threads(*args))


def _child(kind: str, key: str, n: int, barrier: Any, counter: Any, out: Any) -> None:
    setup_django()
    out.put(_stampede_threads(kind, key, n, barrier, counter))


def stampede(misses: int) -> None:
    ctx = mp.get_context("spawn")
    rows = []
    for layout in ("threads", "processes"):
        for kind in ("django", "ours"):
            key = f"stampede:{layout}:{kind}"
            counter = ctx.Value("i", 0)
            if layout == "threads":
                barrier = threading.Barrier(misses + 1)
                done: list[tuple[float, float]] = []
                runner = threading.Thread(
                    target=_collect,
                    args=(done, kind, key, misses, barrier, counter),
                )
                runner.start()
                barrier.wait(60)
                runner.join(120)
                wall = done[0][1] - done[0][0]
            else:
                per = misses // PROCESSES
                barrier = ctx.Barrier(per * PROCESSES + 1)
                out = ctx.Queue()
                children = [
                    ctx.Process(
                        target=_child, args=(kind, key, per, barrier, counter, out)
                    )
                    for _ in range(PROCESSES)
                ]
                for child in children:
                    child.start()
                barrier.wait(120)
                spans = [out.get(timeout=120) for _ in children]
                for child in children:
                    child.join(30)
                wall = max(end for _, end in spans) - min(start for start, _ in spans)
            label = "Django get_or_set" if kind == "django" else "mega_cluster wrap"
            rows.append((layout, label, counter.value, wall))
    print(
        f"\nStampede: {misses} concurrent misses of one cold key, "
        f"{COMPUTE * 1000:.0f} ms per computation"
    )
    print(f"{'layout':24} {'':18} {'computations':>12} {'wall ms':>9}")
    for layout, label, count, wall in rows:
        where = (
            f"{misses} threads, 1 process"
            if layout == "threads"
            else f"{misses // PROCESSES} threads x {PROCESSES} procs"
        )
        print(f"{where:24} {label:18} {count:12d} {wall * 1000:9.0f}")
    by = {(layout, label): (count, wall) for layout, label, count, wall in rows}
    for layout in ("threads", "processes"):
        theirs = by[(layout, "Django get_or_set")]
        ours = by[(layout, "mega_cluster wrap")]
        print(
            f"{layout}: computations {ours[0]} vs {theirs[0]} "
            f"({theirs[0] / max(ours[0], 1):.0f}x fewer), wall {ours[1] / theirs[1]:.2f}x"
        )


def cleanup() -> None:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=f"*{TAG}*", count=1000))
        for i in range(0, len(keys), 500):
            client.delete(*keys[i : i + 500])
    finally:
        client.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--misses", type=int, default=50)
    args = parser.parse_args()
    os.environ["MC_BENCH_TAG"] = TAG  # spawned children use the same names
    setup_django()
    try:
        hit_path(args.ops, args.rounds)
        stampede(args.misses)
    finally:
        cleanup()


if __name__ == "__main__":
    main()
