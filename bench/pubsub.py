"""Pub/sub benchmark: our redis/nats backends next to the raw clients, one run.

    ./dev bench pubsub [--messages 20000] [--latency 2000] [--pace-ms 1.0]
    ./dev bench pubsub --outbox [--messages 2000]

Two processes per implementation (this one publishes, a spawned one receives):

* throughput: the publisher sends ``--messages`` small JSON messages as fast as it
  can; rate = messages / (first publish -> last message handled by the receiver);
* latency: ``--latency`` messages, one every ``--pace-ms`` (a sleep of that long
  after each publish), each carrying its publish time; latency = handled -
  published (CLOCK_MONOTONIC is system-wide on Linux), reported as p50 and p99.
  The pace is 1 ms because asyncio cannot sleep less than that (its selector
  rounds timeouts up to whole milliseconds): at 0.5 ms the sync publishers sent
  twice as many messages per second as the async ones they were compared with.

Peers on the same servers: raw redis-py PubSub (sync publish, ``listen()``
thread), raw nats-py (async publish, subscription callback) and channels_redis
``group_send`` / ``receive``. Ratios are ours / the raw client of the same
broker. Needs Redis on ``MC_REDIS_URL`` (default redis://127.0.0.1:6379/0) and
NATS on ``MC_NATS_URL`` (default nats://127.0.0.1:4222); channel and key names
carry ``mcbench<pid>`` (channels_redis keys are deleted at the end).

``--outbox``: the cost of sync messages through the outbox. One process, a sender
and a receiver node on Redis; ``--messages`` sync messages, each in its own
``atomic()`` block (commit per message), on SQLite (a file) and PostgreSQL
(``MC_PG_DSN``, default ``dbname=test host=127.0.0.1 user=postgres``; a database
``mcbench<pid>`` is created and dropped): ``transaction=False`` (the plain path,
at most once, no row) next to the default (a numbered row in the transaction,
sent after commit, marked sent in batches), alone and with a one-row write of
the caller's own in each block (the change a message announces: both paths then
commit a write); and 100 messages per block. Rate = messages / (first publish ->
last message handled by the receiver).
"""

from __future__ import annotations

import sys
from pathlib import Path

# bench/ holds modules named like the stdlib (queue.py): never import from it
sys.path[:] = [
    p for p in sys.path if Path(p or ".").resolve() != Path(__file__).resolve().parent
]

import argparse  # noqa: E402
import asyncio  # noqa: E402
import json  # noqa: E402
import multiprocessing as mp  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

REDIS_URL = os.environ.get("MC_REDIS_URL", "redis://127.0.0.1:6379/0")
NATS_URL = os.environ.get("MC_NATS_URL", "nats://127.0.0.1:4222")
TAG = os.environ.get("MC_BENCH_TAG", f"mcbench{os.getpid()}")
CHANNEL = "bench"
PACE = 0.001  # seconds between latency messages (--pace-ms)
IDLE_TIMEOUT = 15.0

IMPLEMENTATIONS = [
    "redis-py PubSub (raw)",
    "mega_cluster redis",
    "nats-py (raw)",
    "mega_cluster nats",
    "mega_cluster nats (apublish)",
    "channels_redis group_send",
    "mega_cluster channels",
]
RAW = {
    "mega_cluster redis": "redis-py PubSub (raw)",
    "mega_cluster nats": "nats-py (raw)",
    "mega_cluster nats (apublish)": "nats-py (raw)",
    "mega_cluster channels": "channels_redis group_send",
}


def setup_django() -> None:
    import django
    from django.conf import settings

    if settings.configured:
        return
    settings.configure(
        INSTALLED_APPS=["mega_cluster"],
        DATABASES={},
        USE_TZ=True,
        MEGA_CLUSTER={"APP_NAME": TAG},
        CHANNEL_LAYERS={
            "default": {
                "BACKEND": "channels_redis.core.RedisChannelLayer",
                "CONFIG": {
                    # above channels_redis's 5 s BZPOPMIN (redis-py 8 defaults to 5 s)
                    "hosts": [{"address": REDIS_URL, "socket_timeout": 10}],
                    "prefix": TAG,
                    "capacity": 1_000_000,
                },
            }
        },
        LOGGING_CONFIG=None,
    )
    django.setup()


def make_app(name: str) -> Any:
    from mega_cluster.testing import make_app as build

    backend = {"mega_cluster redis": "redis", "mega_cluster channels": "channels"}.get(
        name, "nats"
    )
    url = {"redis": REDIS_URL, "nats": NATS_URL, "channels": None}[backend]
    options = {"URL": url} if url else {}
    return build(
        TAG,
        {"PUBSUB": {"BACKEND": backend, "OPTIONS": options, "BUFFER_SIZE": 1_000_000}},
    )


# receiving side (spawned process) ---------------------------------------------------


class Sink:
    """Counts throughput messages, records latency of the others."""

    def __init__(self, expected_tp: int, expected_lat: int) -> None:
        self.expected_tp = expected_tp
        self.expected_lat = expected_lat
        self.tp = 0
        self.tp_last = 0.0
        self.latencies: list[float] = []
        self.tp_done = threading.Event()
        self.lat_done = threading.Event()
        self.last_seen = time.monotonic()

    def __call__(self, message: dict[str, Any]) -> None:
        now = time.monotonic()
        self.last_seen = now
        if message["k"] == "tp":
            self.tp += 1
            self.tp_last = now
            if self.tp >= self.expected_tp:
                self.tp_done.set()
        else:
            self.latencies.append(now - message["t"])
            if len(self.latencies) >= self.expected_lat:
                self.lat_done.set()

    def wait(self, event: threading.Event) -> None:
        while not event.wait(0.2):
            if time.monotonic() - self.last_seen > IDLE_TIMEOUT:
                return


def receiver(name: str, n_tp: int, n_lat: int, ready: Any, results: Any) -> None:
    setup_django()
    sink = Sink(n_tp, n_lat)
    stop = _start_receiver(name, sink)
    ready.set()
    sink.last_seen = time.monotonic() + 30  # publisher start-up
    sink.wait(sink.tp_done)
    results.put(("tp", sink.tp, sink.tp_last))
    sink.wait(sink.lat_done)
    results.put(("lat", sink.latencies))
    stop()


def _start_receiver(name: str, sink: Sink) -> Any:
    if name.startswith("mega_cluster"):
        app = make_app(name)
        app.pubsub_manager.subscribe(CHANNEL, sink)
        return app.stop
    if name == "redis-py PubSub (raw)":
        import redis

        client = redis.Redis.from_url(REDIS_URL)
        pubsub = client.pubsub(ignore_subscribe_messages=True)
        wire = f"{TAG}:{CHANNEL}"
        pubsub.subscribe(wire)
        running = True

        def listen() -> None:
            while running:
                message = pubsub.get_message(timeout=0.2)
                if message is not None:
                    sink(json.loads(message["data"]))

        thread = threading.Thread(target=listen, daemon=True)
        thread.start()

        def stop() -> None:
            nonlocal running
            running = False
            thread.join(2)
            pubsub.close()
            client.close()

        return stop
    return _start_async_receiver(name, sink)


def _start_async_receiver(name: str, sink: Sink) -> Any:
    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()

    async def start() -> Any:
        if name == "nats-py (raw)":
            import nats

            nc = await nats.connect(NATS_URL)

            async def deliver(msg: Any) -> None:
                sink(json.loads(msg.data))

            await nc.subscribe(f"{TAG}.{CHANNEL}", cb=deliver)
            await nc.flush()
            return nc.close
        from channels.layers import get_channel_layer

        layer = get_channel_layer()
        name_ = await layer.new_channel()
        await layer.group_add(f"{TAG}.{CHANNEL}", name_)

        async def pump() -> None:
            while True:
                sink(await layer.receive(name_))

        task = asyncio.get_running_loop().create_task(pump())

        async def close() -> None:
            task.cancel()
            await layer.group_discard(f"{TAG}.{CHANNEL}", name_)

        return close

    close = asyncio.run_coroutine_threadsafe(start(), loop).result(30)
    return lambda: asyncio.run_coroutine_threadsafe(close(), loop).result(10)


# publishing side (this process) -------------------------------------------------------


def publisher(name: str) -> tuple[Any, Any]:
    """(publish(message) for sync callers or None, async apublish or None), close."""
    if name in ("mega_cluster redis", "mega_cluster nats", "mega_cluster channels"):
        app = make_app(name)
        app.pubsub_manager.start()
        return (lambda m: app.pubsub_manager.publish(CHANNEL, m)), None, app.stop
    if name == "mega_cluster nats (apublish)":
        app = make_app(name)

        async def apublish(m: Any) -> None:
            await app.pubsub_manager.apublish(CHANNEL, m)

        async def close() -> None:
            await app.pubsub_manager.astop()

        return None, apublish, close
    if name == "redis-py PubSub (raw)":
        import redis

        client = redis.Redis.from_url(REDIS_URL)
        wire = f"{TAG}:{CHANNEL}"
        return (lambda m: client.publish(wire, json.dumps(m))), None, client.close
    if name == "nats-py (raw)":
        import nats

        state: dict[str, Any] = {}

        async def apublish(m: Any) -> None:
            if "nc" not in state:
                state["nc"] = await nats.connect(NATS_URL)
            await state["nc"].publish(f"{TAG}.{CHANNEL}", json.dumps(m).encode())

        async def close() -> None:
            await state["nc"].flush()
            await state["nc"].close()

        return None, apublish, close
    from channels.layers import get_channel_layer

    async def group_send(m: Any) -> None:
        await get_channel_layer().group_send(f"{TAG}.{CHANNEL}", {"type": "x", **m})

    async def noop() -> None:
        return None

    return None, group_send, noop


def run_one(name: str, n_tp: int, n_lat: int) -> tuple[float, list[float], int]:
    ctx = mp.get_context("spawn")
    ready, results = ctx.Event(), ctx.Queue()
    proc = ctx.Process(target=receiver, args=(name, n_tp, n_lat, ready, results))
    proc.start()
    try:
        if not ready.wait(60):
            raise RuntimeError(f"{name}: receiver not ready")
        publish, apublish, close = publisher(name)
        if apublish is not None:
            asyncio.run(_run_async(apublish, close, n_tp, n_lat, results))
        else:
            t0 = time.monotonic()
            for i in range(n_tp):
                publish({"k": "tp", "i": i})
            _, count, t_last = results.get(timeout=120)
            for i in range(n_lat):
                publish({"k": "lat", "i": i, "t": time.monotonic()})
                time.sleep(PACE)
            _, latencies = results.get(timeout=120)
            close()
            return count / max(t_last - t0, 1e-9), latencies, count
        return _ASYNC_RESULT.pop()
    finally:
        proc.join(30)
        if proc.is_alive():
            proc.kill()


_ASYNC_RESULT: list[tuple[float, list[float], int]] = []


async def _run_async(apublish: Any, close: Any, n_tp: int, n_lat: int, results: Any):
    t0 = time.monotonic()
    for i in range(n_tp):
        await apublish({"k": "tp", "i": i})
    _, count, t_last = await asyncio.to_thread(results.get, True, 120)
    for i in range(n_lat):
        await apublish({"k": "lat", "i": i, "t": time.monotonic()})
        await asyncio.sleep(PACE)
    _, latencies = await asyncio.to_thread(results.get, True, 120)
    await close()
    _ASYNC_RESULT.append((count / max(t_last - t0, 1e-9), latencies, count))


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def clean_redis() -> None:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    try:
        keys = list(client.scan_iter(match=f"*{TAG}*", count=1000))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


# --outbox ------------------------------------------------------------------------

#: name -> (transaction argument: False plain / None outbox, messages per block,
#: whether each message comes with a one-row write of the caller's own)
OUTBOX_MODES = {
    "plain: transaction=False, 1 per atomic()": (False, 1, False),
    "outbox: publish(), 1 per atomic()": (None, 1, False),
    "plain + the caller's row write, 1 per atomic()": (False, 1, True),
    "outbox + the caller's row write, 1 per atomic()": (None, 1, True),
    "outbox: publish(), 100 per atomic()": (None, 100, False),
}
PG_DSN = os.environ.get("MC_PG_DSN", "dbname=test host=127.0.0.1 user=postgres")


def _pg(sql: str) -> None:
    import psycopg

    with psycopg.connect(PG_DSN, autocommit=True) as conn:
        conn.execute(sql)


def setup_outbox_django(sqlite_path: str, pg_name: str) -> None:
    import django
    from django.conf import settings

    params = dict(item.split("=", 1) for item in PG_DSN.split())
    settings.configure(
        INSTALLED_APPS=["mega_cluster"],
        DATABASES={
            "default": {"ENGINE": "django.db.backends.sqlite3", "NAME": sqlite_path},
            "postgres": {
                "ENGINE": "django.db.backends.postgresql",
                "NAME": pg_name,
                "HOST": params.get("host", "127.0.0.1"),
                "USER": params.get("user", "postgres"),
            },
        },
        USE_TZ=True,
        MEGA_CLUSTER={"APP_NAME": TAG},
        LOGGING_CONFIG=None,
    )
    django.setup()
    from django.core.management import call_command

    for alias in ("default", "postgres"):
        call_command("migrate", database=alias, verbosity=0)


def run_outbox(
    alias: str, transaction_arg: Any, per_block: int, write: bool, n: int
) -> float:
    from django.db import transaction

    from mega_cluster.models import SyncCursor
    from mega_cluster.testing import make_app as build

    # the caller's own write: a row in a table at hand (the change the message
    # announces), so both paths commit the same kind of transaction
    rows = SyncCursor.objects.using(alias)
    rows.filter(app_name=TAG).delete()

    settings = {"PUBSUB": {"BACKEND": "redis", "OPTIONS": {"URL": REDIS_URL}}}
    sender = build(TAG, settings, node_id=f"{TAG}-sender")
    receiver = build(TAG, settings, node_id=f"{TAG}-receiver")
    got = [0]
    done = threading.Event()

    def handle(message: Any) -> None:
        got[0] += 1
        if got[0] >= n:
            done.set()

    receiver.sync_message_manager.subscribe("bench", handle)
    sender.start()
    receiver.start()
    publish = sender.sync_message_manager.publish
    target = alias if transaction_arg is None else False
    try:
        start = time.perf_counter()
        for first in range(0, n, per_block):
            with transaction.atomic(using=alias):
                for i in range(first, min(n, first + per_block)):
                    if write:
                        rows.create(app_name=TAG, receiver="bench", channel=str(i))
                    publish("bench", {"i": i}, transaction=target)
        if not done.wait(120):
            raise RuntimeError(f"only {got[0]} of {n} messages arrived")
        return n / (time.perf_counter() - start)
    finally:
        sender.stop()
        receiver.stop()


def main_outbox(args: Any) -> None:
    import tempfile

    pg_name = TAG
    _pg(f"CREATE DATABASE {pg_name}")
    with tempfile.TemporaryDirectory() as tmp:
        try:
            setup_outbox_django(f"{tmp}/bench.sqlite3", pg_name)
            results: dict[tuple[str, str], list[float]] = {}
            for _rep in range(args.repeat):
                for alias in ("default", "postgres"):
                    for name, (arg, per_block, write) in OUTBOX_MODES.items():
                        rate = run_outbox(alias, arg, per_block, write, args.messages)
                        results.setdefault((alias, name), []).append(rate)
        finally:
            from django.db import connections

            connections.close_all()
            _pg(f"DROP DATABASE IF EXISTS {pg_name}")
    print(
        f"\nSync messages, {args.messages} per run (median of {args.repeat}), "
        f"sender and receiver nodes in one process on Redis, Python "
        f"{sys.version.split()[0]}\n"
    )
    print("| database | path | msgs/s | µs per message | vs its plain path |")
    print("|---|---|---:|---:|---:|")
    names = list(OUTBOX_MODES)
    for alias in ("default", "postgres"):
        for name in names:
            plain = names[2] if OUTBOX_MODES[name][2] else names[0]
            rate = statistics.median(results[(alias, name)])
            base = statistics.median(results[(alias, plain)])
            db = "SQLite" if alias == "default" else "PostgreSQL"
            print(
                f"| {db} | {name} | {rate:,.0f} | {1e6 / rate:,.0f} | "
                f"{rate / base:.2f} |"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--outbox", action="store_true")
    parser.add_argument("--messages", type=int, default=20_000)
    parser.add_argument("--latency", type=int, default=2_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--only", help="comma-separated implementation names")
    parser.add_argument("--pace-ms", type=float, default=1.0)
    args = parser.parse_args()
    if args.outbox:
        main_outbox(args)
        return
    global PACE
    PACE = args.pace_ms / 1000
    os.environ["MC_BENCH_TAG"] = TAG  # the spawned receivers use the same names
    setup_django()
    names = args.only.split(",") if args.only else IMPLEMENTATIONS
    runs: dict[str, list[tuple[float, list[float], int]]] = {n: [] for n in names}
    try:
        # round robin, so load from other processes on the machine hits every
        # implementation alike
        for rep in range(args.repeat):
            for name in names:
                runs[name].append(run_one(name, args.messages, args.latency))
                print(f"  run {rep + 1}: {name}", file=sys.stderr, flush=True)
    finally:
        clean_redis()
    rows = {
        name: (
            statistics.median(rate for rate, _, _ in results),
            [x for _, latencies, _ in results for x in latencies],
            min(count for _, _, count in results),
        )
        for name, results in runs.items()
    }

    print(
        f"\nPub/sub, {args.messages} messages for throughput (median of "
        f"{args.repeat} runs), {args.latency} messages per run paced "
        f"{args.pace_ms:g} ms apart for latency "
        f"(pooled), 2 processes, Python {sys.version.split()[0]}\n"
    )
    print(
        "| implementation | msgs/s | min delivered | p50 ms | p99 ms | msgs/s vs raw "
        "| p99 vs raw |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for name, (rate, latencies, count) in rows.items():
        raw = rows.get(RAW.get(name, ""))
        ratio = f"{rate / raw[0]:.2f}" if raw else "—"
        p99 = percentile(latencies, 0.99)
        p99_ratio = f"{p99 / percentile(raw[1], 0.99):.2f}" if raw else "—"
        print(
            f"| {name} | {rate:,.0f} | {count} | {percentile(latencies, 0.5):.2f} | "
            f"{p99:.2f} | {ratio} | {p99_ratio} |"
        )


if __name__ == "__main__":
    main()
