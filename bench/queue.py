"""Event-queue benchmark: our backends next to a plain Celery task, one run.

One command::

    ./dev bench queue [--events 2000] [--concurrency 8] [--samples 200]
        [--repeat 3] [--systems plain,celery,celery-failures,database,memory,...]
        [--topology split,same]

Each system is measured the same way, in fresh processes, in two topologies:

* ``split``: a publishing process and a consuming process (an embedded consumer),
  as in production, where web processes publish and ``runworker`` consumes;
* ``same``: one process publishes and consumes (they share one GIL).

Measured:

* end-to-end throughput: publish ``--events`` events with a no-op handler, time from
  the first publish to the last handler call (CLOCK_MONOTONIC, system-wide);
* single-event latency: publish one event, wait for its handler, ``--samples`` times;
  p50 and p99 from the publish call to the handler starting.

The systems run round robin ``--repeat`` times (load from elsewhere hits all
alike); the table gives the median events/s, its ratio to plain Celery's median,
each round's ratio, and latency percentiles of all rounds' samples.

Systems: a plain Celery task (``acks_late``, ``reject_on_worker_lost``, prefetch 1,
thread pool of ``--concurrency``) on Redis; our ``celery`` backend on the same
broker with the same worker settings (embedded worker built the same way; events
kept in PostgreSQL: a row per event); the same with ``BOOKKEEPING = "failures"``
(rows only for events that fail, wait or run long; successes counted); our
``database`` backend on PostgreSQL (LISTEN/NOTIFY wake-ups); our ``memory`` backend as the
floor of our own overhead. Ratios are against plain Celery+Redis. ``database-idempotent``
and ``memory-idempotent`` run the same handler with ``idempotent=True`` (each event
recorded in the inbox on PostgreSQL); a line after each table gives the inbox's cost
per event against the plain handler of the same backend. ``celery-atomic`` and
``database-atomic`` publish each event in its own ``atomic()`` block: through the
outbox for ``celery`` (a row in the transaction, sent after commit), the event's
own row in the transaction for ``database``.

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
import math  # noqa: E402
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
    """Handler calls of the consuming process: how many, when the last one started,
    and (for latency samples) how long after its publish each one started."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.count = 0
        self.target = 0
        self.done = threading.Event()
        self.last_at = 0.0
        self.latency = 0.0

    def hit(self, payload: Any) -> None:
        now = time.monotonic()  # CLOCK_MONOTONIC: the same clock in every process
        with self.lock:
            self.last_at = now
            if isinstance(payload, dict):
                self.latency = now - payload["t"]
            self.count += 1
            if self.count >= self.target:
                self.done.set()

    def expect(self, n: int) -> None:
        with self.lock:
            self.count = 0
            self.target = n
            self.done.clear()


COUNTER = Counter()
#: Stops the cluster apps of this process (their last outcomes are written).
STOPS: list[Any] = []


def measure(publish: Any, consumed: Any, events: int, samples: int) -> dict[str, Any]:
    """``consumed(n)`` waits until the consumer handled ``n`` more events and
    returns (monotonic time of the last handler start, latency of the last)."""
    consumed.expect(20)  # warm-up: connections, queues, threads
    for i in range(20):
        publish(i)
    consumed.wait("warm-up", 60)
    consumed.expect(events)
    start = time.monotonic()
    for i in range(events):
        publish(i)
    published = time.monotonic()
    last, _ = consumed.wait(f"{events} events", 300)
    latencies = []
    for _ in range(samples):
        consumed.expect(1)
        publish({"t": time.monotonic()})
        latencies.append(consumed.wait("latency sample", 30)[1] * 1000)
    return {
        "rate": events / (last - start),
        "publish_rate": events / (published - start),
        "latencies": latencies,
    }


class Local:
    """The consumer runs in this process (the publisher's)."""

    def expect(self, n: int) -> None:
        COUNTER.expect(n)

    def wait(self, what: str, timeout: float) -> tuple[float, float]:
        assert COUNTER.done.wait(timeout), f"{what}: {COUNTER.count} handled"
        return COUNTER.last_at, COUNTER.latency


class Remote:
    """The consumer runs in another process; it is told what to expect by pipe."""

    def __init__(self, conn: Any) -> None:
        self.conn = conn

    def expect(self, n: int) -> None:
        self.conn.send(n)
        assert self.conn.recv() == "ok"

    def wait(self, what: str, timeout: float) -> tuple[float, float]:
        self.conn.send("wait")
        if not self.conn.poll(timeout + 5):
            raise AssertionError(f"{what}: the consumer did not answer")
        answer = self.conn.recv()
        if isinstance(answer, str):
            raise AssertionError(f"{what}: {answer}")
        return answer


def embedded_celery_worker(celery_app: Any, queues: list[str], concurrency: int) -> Any:
    """The plain peer's worker, built as our backend builds its own."""
    from mega_cluster.events.backends.celery.task import build_worker

    worker, ready = build_worker(
        celery_app,
        hostname=f"bench-{os.getpid()}@bench",
        queues=queues,
        concurrency=concurrency,
    )
    threading.Thread(target=worker.start, daemon=True).start()
    assert ready.wait(30), "celery worker did not start"
    return worker


def plain_celery(concurrency: int, consume: bool) -> Any:
    from celery import Celery
    from kombu import Exchange, Queue

    celery_app = Celery("bench", broker=REDIS_URL, set_as_current=False)
    # the settings our backend sets on the Celery app it builds
    from mega_cluster.events.backends.celery import CELERY_SETTINGS

    celery_app.conf.update(**CELERY_SETTINGS, broker_transport_options=TRANSPORT)

    @celery_app.task(name="bench.noop", acks_late=True, reject_on_worker_lost=True)
    def noop(payload: Any) -> None:
        COUNTER.hit(payload)

    name = f"{TAG}.plain"
    queue = Queue(name, Exchange(name, type="direct"), routing_key=name)
    celery_app.amqp.queues.select_add(queue)
    if consume:
        embedded_celery_worker(celery_app, [name], concurrency)
    return lambda i: noop.apply_async(args=[i], queue=queue)


def ours(backend: str, concurrency: int, consume: bool) -> Any:
    from mega_cluster.testing import make_app

    # "<backend>-idempotent": the handler runs through the inbox (same database)
    idempotent = backend.endswith("-idempotent")
    backend = backend.removesuffix("-idempotent")
    # "<backend>-atomic": each publish inside its own atomic() block (database:
    # the row in that transaction; celery: an outbox row, sent after commit)
    atomic = backend.endswith("-atomic")
    backend = backend.removesuffix("-atomic")
    section: dict[str, Any] = {"BACKEND": backend}
    if backend.startswith("celery"):
        section["BACKEND"] = "celery"
        section["OPTIONS"] = {"BROKER_URL": REDIS_URL, "TRANSPORT_OPTIONS": TRANSPORT}
        if backend == "celery-failures":
            section["OPTIONS"]["BOOKKEEPING"] = "failures"
    app = make_app(TAG, {"EVENT_QUEUE": section})
    if consume:
        app.event_queue.subscribe(
            "bench",
            process=lambda payload, ctx: COUNTER.hit(payload),
            concurrency=concurrency,
            idempotent=idempotent,
        )
    app.start()
    STOPS.append(app.stop)
    if not atomic:
        return lambda i: app.event_queue.publish("bench", i)
    from django.db import transaction

    alias = app.event_queue.backend.transaction_alias()

    def publish_in_atomic(i: Any) -> None:
        with transaction.atomic(using=alias):
            app.event_queue.publish("bench", i)

    return publish_in_atomic


def build(name: str, args: argparse.Namespace, consume: bool) -> Any:
    setup_django(TAG, PG_DB)
    if name == "plain":
        return plain_celery(args.concurrency, consume)
    return ours(name, args.concurrency, consume)


def child(name: str, args: argparse.Namespace, out: Any) -> None:
    """Publisher and consumer in one process."""
    try:
        out.put(measure(build(name, args, True), Local(), args.events, args.samples))
        for stop in STOPS:
            stop()
    except BaseException as exc:
        out.put({"error": repr(exc)})
    finally:
        out.close()
        out.join_thread()  # put() is flushed by a thread that _exit would kill
        os._exit(0)  # embedded workers are daemon threads; all tasks are acked


def consumer(name: str, args: argparse.Namespace, conn: Any) -> None:
    """The consuming process of a split run: answers the publisher's pipe."""
    try:
        build(name, args, True)
        conn.send("ready")
        while True:
            request = conn.recv()
            if request == "stop":
                for stop in STOPS:
                    stop()
                break
            if request == "wait":
                ok = COUNTER.done.wait(300)
                conn.send(
                    (COUNTER.last_at, COUNTER.latency)
                    if ok
                    else f"{COUNTER.count} of {COUNTER.target} handled"
                )
            else:
                COUNTER.expect(request)
                conn.send("ok")
    except BaseException as exc:
        conn.send(repr(exc))
    finally:
        conn.close()
        os._exit(0)


def publisher(name: str, args: argparse.Namespace, out: Any) -> None:
    """The publishing process of a split run (starts its consumer first)."""
    ctx = mp.get_context("spawn")
    here, there = ctx.Pipe()
    proc = ctx.Process(target=consumer, args=(name, args, there))
    proc.start()
    try:
        if not here.poll(60) or (answer := here.recv()) != "ready":
            raise RuntimeError(f"consumer did not start: {answer if here else ''}")
        publish = build(name, args, False)
        out.put(measure(publish, Remote(here), args.events, args.samples))
        here.send("stop")
    except BaseException as exc:
        out.put({"error": repr(exc)})
    finally:
        proc.join(30)
        if proc.is_alive():
            proc.kill()
        out.close()
        out.join_thread()
        os._exit(0)


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
    "celery-failures": "mega_cluster celery, BOOKKEEPING=failures",
    "celery-atomic": "mega_cluster celery, each publish in atomic() (outbox)",
    "database": "mega_cluster database (PostgreSQL)",
    "database-idempotent": "mega_cluster database, idempotent=True handler",
    "database-atomic": "mega_cluster database, each publish in atomic()",
    "memory": "mega_cluster memory (one process)",
    "memory-idempotent": "mega_cluster memory, idempotent=True handler (inbox "
    "on PostgreSQL)",
}


TOPOLOGIES = {
    "split": "publisher and consumer in two processes",
    "same": "publisher and consumer in one process",
}


def run(name: str, topology: str, args: argparse.Namespace) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    out = ctx.Queue()
    target = publisher if topology == "split" else child
    proc = ctx.Process(target=target, args=(name, args, out))
    proc.start()
    try:
        return out.get(timeout=600)
    finally:
        proc.join(30)
        if proc.is_alive():
            proc.kill()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--events", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument(
        "--systems",
        default=",".join(SYSTEMS),
        help="comma-separated subset of: " + ", ".join(SYSTEMS),
    )
    parser.add_argument(
        "--topology",
        default="split,same",
        help="comma-separated subset of: " + ", ".join(TOPOLOGIES),
    )
    args = parser.parse_args()
    chosen = [name for name in SYSTEMS if name in args.systems.split(",")]
    if "plain" not in chosen:
        parser.error("--systems must include plain (the ratios' base)")
    topologies = [t for t in TOPOLOGIES if t in args.topology.split(",")]
    if not topologies:
        parser.error("--topology: split, same or both")

    create_database()
    runs: dict[tuple[str, str], list[dict[str, Any]]] = {}
    try:
        migrate = mp.get_context("spawn").Process(target=_migrate)
        migrate.start()
        migrate.join(120)
        # Round robin: load from elsewhere on the machine hits every system alike.
        for rep in range(args.repeat):
            for topology in topologies:
                for name in chosen:
                    if topology == "split" and name.startswith("memory"):
                        continue  # in-process only
                    runs.setdefault((topology, name), []).append(
                        run(name, topology, args)
                    )
                    print(
                        f"  run {rep + 1}: {SYSTEMS[name]}, {topology}",
                        file=sys.stderr,
                        flush=True,
                    )
    finally:
        drop_database()
        clean_redis()

    print(
        f"\nEvent queue, {args.events} events end to end (no-op handler, "
        f"concurrency {args.concurrency}), median of {args.repeat} runs; "
        f"{args.samples} latency samples per run (pooled); "
        f"Python {sys.version.split()[0]}"
    )
    for topology in topologies:
        print(f"\n{TOPOLOGIES[topology]}:\n")
        print(
            "| system | events/s | x plain Celery | per-run ratios | publish/s "
            "| latency p50 ms | p99 ms |"
        )
        print("|---|---:|---:|---|---:|---:|---:|")
        base = runs[(topology, "plain")]
        for name in chosen:
            results = runs.get((topology, name))
            if results is None:
                continue
            label = SYSTEMS[name]
            failed = [r["error"] for r in results if "error" in r]
            if failed:
                print(f"| {label} | failed: {failed[0]} | | | | | |")
                continue
            rate = statistics.median(r["rate"] for r in results)
            ratios = [
                r["rate"] / b["rate"]
                for r, b in zip(results, base, strict=True)
                if "rate" in b
            ]
            base_rates = [b["rate"] for b in base if "rate" in b]
            ratio = rate / statistics.median(base_rates) if base_rates else math.nan
            latencies = sorted(x for r in results for x in r["latencies"])
            p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]
            print(
                f"| {label} | {rate:,.0f} | {ratio:.2f} | "
                f"{' '.join(f'{x:.2f}' for x in ratios)} | "
                f"{statistics.median(r['publish_rate'] for r in results):,.0f} | "
                f"{statistics.median(latencies):.2f} | {p99:.2f} |"
            )
        _inbox_costs(runs, topology, chosen)


def _inbox_costs(
    runs: dict[tuple[str, str], list[dict[str, Any]]], topology: str, chosen: list[str]
) -> None:
    """The inbox's cost per event: an idempotent handler's system against the same
    system with a plain handler (median time per event, end to end)."""
    for name in chosen:
        base = name.removesuffix("-idempotent")
        if name == base or base not in chosen:
            continue
        pair = [runs.get((topology, n)) or [] for n in (base, name)]
        rates = [[r["rate"] for r in results if "rate" in r] for results in pair]
        if not all(rates):
            continue
        plain, idem = (statistics.median(r) for r in rates)
        print(
            f"\n{SYSTEMS[name]}: {1000 / idem:.3f} ms per event against "
            f"{1000 / plain:.3f} ms with a plain handler: the inbox costs "
            f"{1000 / idem - 1000 / plain:+.3f} ms per event ({idem / plain:.2f}x "
            "the throughput)"
        )


def _migrate() -> None:
    setup_django(TAG, PG_DB)
    from django.core.management import call_command

    call_command("migrate", "mega_cluster", verbosity=0)


if __name__ == "__main__":
    main()
