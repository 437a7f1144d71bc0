"""Event-queue benchmark: our backends next to a plain Celery task, one run.

One command::

    ./dev bench queue [--events 2000] [--concurrency 8] [--samples 200]
                                    [--systems plain,celery,database,memory]

Each system runs in its own fresh process (publisher and an embedded consumer in
that process, the same for every system) and is measured the same way:

* end-to-end throughput: publish ``--events`` events with a no-op handler, time from
  the first publish to the last handler call;
* single-event latency: publish one event, wait for its handler, ``--samples`` times;
  p50 and p99 from the publish call to the handler starting.

Systems: a plain Celery task (``acks_late``, ``reject_on_worker_lost``, prefetch 1,
thread pool of ``--concurrency``) on Redis; our ``celery`` backend on the same
broker with the same worker settings (embedded worker built the same way; events
kept in PostgreSQL); our ``database``
backend on PostgreSQL (LISTEN/NOTIFY wake-ups); our ``memory`` backend as the
floor of our own overhead. Ratios are against plain Celery+Redis.

Needs Redis on ``MC_REDIS_URL`` (default redis://127.0.0.1:6379/0, every key
prefixed ``mcbenchq<pid>`` and deleted at the end) and PostgreSQL on
``MC_PG_HOST`` (a throw-away database ``mc_benchq_<pid>``, dropped at the end).
"""

from __future__ import annotations

import sys
from pathlib import Path

# This file is named like the stdlib ``queue`` module: take its folder off the
# path before anything imports ``queue``.
HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
ROOT = HERE.parent
sys.path.insert(0, str(ROOT))

import argparse  # noqa: E402
import multiprocessing as mp  # noqa: E402
import os  # noqa: E402
import statistics  # noqa: E402
import threading  # noqa: E402
import time  # noqa: E402
from typing import Any  # noqa: E402

REDIS_URL = os.environ.get("MC_REDIS_URL", "redis://127.0.0.1:6379/0")
PG_HOST = os.environ.get("MC_PG_HOST", "127.0.0.1")
PG_USER = os.environ.get("MC_PG_USER", "postgres")
# Spawned children inherit the parent's tag through the environment.
TAG = os.environ.setdefault("MC_BENCH_TAG", f"mcbenchq{os.getpid()}")
PG_DB = f"mc_benchq_{TAG.removeprefix('mcbenchq')}"
TRANSPORT = {"global_keyprefix": f"{TAG}:"}


def setup_django(tag: str, db: str) -> None:
    import django
    from django.conf import settings

    settings.configure(
        INSTALLED_APPS=["mega_cluster"],
        DATABASES={
            "default": {
                "ENGINE": "django.db.backends.postgresql",
                "NAME": db,
                "HOST": PG_HOST,
                "USER": PG_USER,
                "CONN_MAX_AGE": None,  # as in production: keep connections
            }
        },
        USE_TZ=True,
        DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
        MEGA_CLUSTER={"APP_NAME": tag},
        LOGGING_CONFIG=None,
    )
    django.setup()


class Counter:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.count = 0
        self.target = 0
        self.done = threading.Event()
        self.started_at = 0.0

    def hit(self) -> None:
        self.started_at = time.perf_counter()
        with self.lock:
            self.count += 1
            if self.count >= self.target:
                self.done.set()

    def expect(self, n: int) -> None:
        with self.lock:
            self.count = 0
            self.target = n
            self.done.clear()


COUNTER = Counter()


def measure(publish: Any, events: int, samples: int) -> dict[str, Any]:
    COUNTER.expect(20)  # warm-up: connections, queues, threads
    for i in range(20):
        publish(i)
    assert COUNTER.done.wait(60), "warm-up did not finish"
    COUNTER.expect(events)
    start = time.perf_counter()
    for i in range(events):
        publish(i)
    published = time.perf_counter()
    assert COUNTER.done.wait(300), f"only {COUNTER.count} of {events} processed"
    elapsed = COUNTER.started_at - start
    latencies = []
    for i in range(samples):
        COUNTER.expect(1)
        t0 = time.perf_counter()
        publish(i)
        assert COUNTER.done.wait(30), "latency sample lost"
        latencies.append((COUNTER.started_at - t0) * 1000)
    latencies.sort()
    return {
        "rate": events / elapsed,
        "publish_rate": events / (published - start),
        "p50": statistics.median(latencies),
        "p99": latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))],
    }


def embedded_celery_worker(celery_app: Any, queues: list[str], concurrency: int) -> Any:
    ready = threading.Event()

    class Controller(celery_app.WorkController):
        def on_consumer_ready(self, consumer: Any) -> None:
            ready.set()

    worker = Controller(
        app=celery_app,
        hostname=f"bench-{os.getpid()}@bench",
        pool="threads",
        concurrency=concurrency,
        queues=queues,
        loglevel="WARNING",
        ready_callback=None,
        without_heartbeat=True,
        without_mingle=True,
        without_gossip=True,
        prefetch_multiplier=1,
    )
    threading.Thread(target=worker.start, daemon=True).start()
    assert ready.wait(30), "celery worker did not start"
    return worker


def plain_celery(concurrency: int) -> Any:
    from celery import Celery
    from kombu import Exchange, Queue

    celery_app = Celery("bench", broker=REDIS_URL, set_as_current=False)
    celery_app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_ignore_result=True,
        worker_prefetch_multiplier=1,
        worker_hijack_root_logger=False,
        broker_connection_retry_on_startup=True,
        broker_transport_options=TRANSPORT,
    )

    @celery_app.task(name="bench.noop", acks_late=True, reject_on_worker_lost=True)
    def noop(payload: Any) -> None:
        COUNTER.hit()

    name = f"{TAG}.plain"
    queue = Queue(name, Exchange(name, type="direct"), routing_key=name)
    celery_app.amqp.queues.select_add(queue)
    embedded_celery_worker(celery_app, [name], concurrency)
    return lambda i: noop.apply_async(args=[i], queue=queue)


def ours(backend: str, concurrency: int) -> Any:
    from mega_cluster.testing import make_app

    section: dict[str, Any] = {"BACKEND": backend}
    if backend == "celery":
        section["OPTIONS"] = {"BROKER_URL": REDIS_URL, "TRANSPORT_OPTIONS": TRANSPORT}
    app = make_app(TAG, {"EVENT_QUEUE": section})
    app.event_queue.subscribe(
        "bench", process=lambda payload, ctx: COUNTER.hit(), concurrency=concurrency
    )
    app.start()
    return lambda i: app.event_queue.publish("bench", i)


def child(name: str, args: argparse.Namespace, out: Any) -> None:
    try:
        setup_django(TAG, PG_DB)
        if name == "plain":
            publish = plain_celery(args.concurrency)
        else:
            publish = ours(name, args.concurrency)
        out.put((name, measure(publish, args.events, args.samples)))
    except BaseException as exc:
        out.put((name, {"error": repr(exc)}))
    finally:
        out.close()
        out.join_thread()  # put() is flushed by a thread that _exit would kill
        os._exit(0)  # embedded workers are daemon threads; all tasks are acked


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


SYSTEMS = {
    "plain": "plain Celery task, Redis broker",
    "celery": "mega_cluster celery (Redis broker, PostgreSQL store)",
    "database": "mega_cluster database (PostgreSQL)",
    "memory": "mega_cluster memory (one process)",
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument(
        "--systems",
        default=",".join(SYSTEMS),
        help="comma-separated subset of: " + ", ".join(SYSTEMS),
    )
    args = parser.parse_args()
    chosen = [name for name in SYSTEMS if name in args.systems.split(",")]
    if "plain" not in chosen:
        parser.error("--systems must include plain (the ratios' base)")

    create_database()
    results: dict[str, dict[str, Any]] = {}
    try:
        migrate = mp.get_context("spawn").Process(target=_migrate)
        migrate.start()
        migrate.join(120)
        ctx = mp.get_context("spawn")
        for name in chosen:
            out = ctx.Queue()
            proc = ctx.Process(target=child, args=(name, args, out))
            proc.start()
            results[name] = out.get(timeout=600)[1]
            proc.join(30)
            print(f"  measured {SYSTEMS[name]}", file=sys.stderr, flush=True)
    finally:
        drop_database()
        clean_redis()

    base = results["plain"]
    print(
        f"\nEvent queue, {args.events} events end to end (no-op handler, "
        f"concurrency {args.concurrency}), {args.samples} latency samples, "
        f"Python {sys.version.split()[0]}\n"
    )
    print(
        "| system | events/s | x plain Celery | publish/s | latency p50 ms | p99 ms |"
    )
    print("|---|---:|---:|---:|---:|---:|")
    for name in chosen:
        label, r = SYSTEMS[name], results[name]
        if "error" in r:
            print(f"| {label} | failed: {r['error']} | | | | |")
            continue
        ratio = r["rate"] / base["rate"] if "rate" in base else float("nan")
        print(
            f"| {label} | {r['rate']:,.0f} | {ratio:.2f} | {r['publish_rate']:,.0f} | "
            f"{r['p50']:.2f} | {r['p99']:.2f} |"
        )


def _migrate() -> None:
    setup_django(TAG, PG_DB)
    from django.core.management import call_command

    call_command("migrate", "mega_cluster", verbosity=0)


if __name__ == "__main__":
    main()
