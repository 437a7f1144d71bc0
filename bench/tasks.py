"""django.tasks backends benchmark: ours on the event queue next to the peers, one run.

One command::

    ./dev bench tasks [--tasks 2000] [--samples 50] [--gap 1.0]
        [--concurrency default,8] [--repeat 1] [--no-alone] [--drain 8]
        [--systems ours-database,ours-celery,tasks-db,ox,dj-queue]

Every system runs the same no-op task (``bench/taskbench/jobs.py``) on the same
PostgreSQL server (and, for our celery transport, the same Redis), each run in a
fresh database copied from one migrated template, with its workers started as
real OS processes by the command its documentation gives:

* ``ours-database``, ``ours-celery``: ``mega_cluster.tasks`` (the ``TASKS``
  backend on the cluster app's event queue) on its ``database`` transport
  (PostgreSQL, LISTEN/NOTIFY wake-ups) and on its ``celery`` transport (Redis
  broker, books in PostgreSQL); worker ``manage.py runworker --queues default``,
  default concurrency the backend's ``OPTIONS["CONCURRENCY"]`` (4 tasks at once);
* ``tasks-db``: django-tasks-db, worker ``manage.py db_worker`` (one task at a
  time per process, polls every second when idle; concurrency N is N processes);
* ``ox``: django-ox, worker ``manage.py ox_worker`` (``--concurrency``
  threads, default 1; polls every second when idle);
* ``dj-queue``: dj-queue, ``manage.py dj_queue`` (a supervisor forking a worker of
  3 threads by default, a dispatcher and a scheduler; LISTEN/NOTIFY wake-ups;
  threads set through ``OPTIONS["workers"]``).

Each system runs at its own default concurrency and at ``--concurrency`` values
(8: 8 tasks at once, however the system gets there). Persistent database
connections (``CONN_MAX_AGE = None``) for all.

Measured by one enqueuing process (a web node: ours does not consume there):

* **enqueue/s, no worker running**: ``--tasks`` ``noop.enqueue()`` calls back to
  back (autocommit) in a database of its own with no worker started: what one
  enqueuing process can do (a web node, whose workers run on other machines);
  skipped with ``--no-alone``; then workers are started at ``--drain`` concurrency
  (default 8) on the tasks that run left: **drain tasks/s** and the **CPU per
  task** of the workers' processes and of their PostgreSQL sessions (read from
  ``/proc`` when the server is on this machine), from a tenth of the tasks run to
  nine tenths;
* **enqueue/s while consuming**: the same calls while the workers consume, with
  how many of those tasks had run when the last call returned: a system whose
  workers run tasks as they arrive shares the machine's CPUs with the enqueuing
  process, one whose workers poll every second mostly runs them afterwards;
* **tasks/s** end to end: from the first ``enqueue()`` call to the latest
  ``finished_at`` of those tasks' results (read through ``get_result()`` once
  every task ran; every one must be ``SUCCESSFUL``);
* **latency**: one task at a time, ``--samples`` times, from the ``enqueue()`` call
  to its result's ``finished_at``; before each, a random pause of up to ``--gap``
  seconds, so that a worker that polls (every second by default) is met anywhere
  in its interval. p99 of 50 samples is their largest but one.

The runs go round robin ``--repeat`` times (load from elsewhere hits all alike);
the table gives the medians and, per concurrency, each figure's ratio to the best
peer's. Needs PostgreSQL on ``MC_PG_HOST`` (trust auth; databases
``mc_bencht_<pid>_*``, dropped at the end) and Redis on ``MC_REDIS_URL`` (keys
prefixed ``mcbencht<pid>``, deleted at the end).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

# bench/ holds queue.py, named like the stdlib module: off the path. The workers
# import the benchmark's project as bench.taskbench, from the repository's root.
HERE = Path(__file__).resolve().parent
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != HERE]
ROOT = HERE.parent
PG_HOST = os.environ.get("MC_PG_HOST", "127.0.0.1")
PG_USER = os.environ.get("MC_PG_USER", "postgres")
REDIS_URL = os.environ.get("MC_REDIS_URL", "redis://127.0.0.1:6379/0")
TAG = f"mcbencht{os.getpid()}"
TEMPLATE_DB = f"mc_bencht_{os.getpid()}_tpl"

SYSTEMS = {
    "ours-database": "**mega_cluster.tasks**, database transport (PostgreSQL)",
    "ours-celery": "**mega_cluster.tasks**, celery transport (Redis + PostgreSQL)",
    "tasks-db": "django-tasks-db `db_worker` (peer)",
    "ox": "django-ox `ox_worker` (peer)",
    "dj-queue": "dj-queue `dj_queue` (peer)",
}
PEERS = ("tasks-db", "ox", "dj-queue")
#: The run with no worker started: enqueue/s of the enqueuing process alone.
ALONE = "alone"
#: What each system runs at its default concurrency, for the table.
DEFAULTS = {
    "ours-database": "4 threads",
    "ours-celery": "4 threads",
    "tasks-db": "1 process",
    "ox": "1 thread",
    "dj-queue": "3 threads",
}
PACKAGES = {
    "tasks-db": ("django_tasks_db", "django-tasks-db"),
    "ox": ("django_ox", "django-ox"),
    "dj-queue": ("dj_queue", "dj-queue"),
}


def missing(system: str) -> str | None:
    """Why ``system`` cannot run in this environment, or None."""
    if importlib.util.find_spec("django.tasks") is None:
        return "needs Django 6.0+ (django.tasks)"
    if system in PACKAGES:
        module, package = PACKAGES[system]
        if importlib.util.find_spec(module) is None:
            return (
                f"{package} is not installed (the `bench` dependency group "
                "installs it on Python 3.12+; it needs Python 3.12+)"
            )
        return None
    if importlib.util.find_spec("mega_cluster.tasks") is None:
        return "mega_cluster.tasks is not in this checkout"
    if system == "ours-celery" and importlib.util.find_spec("celery") is None:
        return 'Celery is not installed (pip install "mega-cluster[celery]")'
    return None


def worker_commands(system: str, concurrency: str) -> list[list[str]]:
    """The ``manage.py`` commands of ``system``'s workers, one per process."""
    if system == "tasks-db":
        count = 1 if concurrency == "default" else int(concurrency)
        return [["db_worker", "--queue-name", "default"]] * count
    if system == "ox":
        extra = [] if concurrency == "default" else ["--concurrency", concurrency]
        return [["ox_worker", *extra]]
    if system == "dj-queue":
        return [["dj_queue"]]  # threads: taskbench.settings from the environment
    extra = [] if concurrency == "default" else ["--concurrency", concurrency]
    return [["runworker", "--queues", "default", *extra]]


def environment(system: str, db: str, concurrency: str, sock: str) -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        PYTHONPATH=str(ROOT),
        DJANGO_SETTINGS_MODULE="bench.taskbench.settings",
        MC_BENCH_SYSTEM=system,
        MC_BENCH_DB=db,
        MC_BENCH_TAG=TAG,
        MC_BENCH_CONCURRENCY=concurrency,
        MC_BENCH_SOCK=sock,
        MC_REDIS_URL=REDIS_URL,
        MC_PG_HOST=PG_HOST,
        MC_PG_USER=PG_USER,
    )
    return env


class Processes:
    """OS processes started in sessions of their own, each stopped with its
    children: SIGTERM to its group, SIGKILL after a bounded wait."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, args: list[str], env: dict[str, str], log: Path) -> Any:
        with open(log, "ab") as out:
            proc = subprocess.Popen(
                args,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self.procs.append(proc)
        return proc

    def stop(self, grace: float = 15) -> None:
        for proc in self.procs:
            _signal_group(proc, signal.SIGTERM)
        deadline = time.monotonic() + grace
        for proc in self.procs:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                pass
        for proc in self.procs:
            # the group too: a supervisor's children outlive a killed supervisor
            _signal_group(proc, signal.SIGKILL)
            proc.wait(10)
        self.procs = []


def _signal_group(proc: subprocess.Popen[bytes], sig: int) -> None:
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        pass


def pg(sql: str) -> None:
    import psycopg

    with psycopg.connect(
        host=PG_HOST, user=PG_USER, dbname="postgres", autocommit=True
    ) as conn:
        conn.execute(sql)


def migrate_template() -> None:
    pg(f'CREATE DATABASE "{TEMPLATE_DB}"')
    env = environment("all", TEMPLATE_DB, "default", "")
    done = subprocess.run(
        [sys.executable, "-m", "django", "migrate", "--noinput", "-v", "0"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if done.returncode:
        raise SystemExit(f"migrating the template database failed:\n{done.stderr}")


def run_one(
    system: str, concurrency: str, args: argparse.Namespace, tmp: Path, n: int
) -> dict[str, Any]:
    """One measured run of ``system``: a fresh database, its workers, the
    measuring process; everything stopped and dropped before it returns."""
    db = f"mc_bencht_{os.getpid()}_{n}"
    sock = str(tmp / f"s{n}")
    out = tmp / f"result{n}.json"
    log = tmp / f"{n}-{system}-{concurrency}.log"
    pg(f'CREATE DATABASE "{db}" TEMPLATE "{TEMPLATE_DB}"')
    procs = Processes()
    try:
        alone = concurrency == ALONE
        worker_env = environment(
            system, db, (args.drain or "default") if alone else concurrency, sock
        )
        worker_env["MC_BENCH_ROLE"] = "worker"
        for command in [] if alone else worker_commands(system, concurrency):
            procs.start([sys.executable, "-m", "django", *command], worker_env, log)
        measuring = procs.start(
            [
                sys.executable,
                "-m",
                "bench.taskbench.measure",
                str(args.tasks),
                str(args.samples),
                str(args.gap),
                str(out),
                *(["alone"] if alone else []),
            ],
            environment(system, db, "default" if alone else concurrency, sock),
            log,
        )
        try:
            measuring.wait(args.timeout)
        except subprocess.TimeoutExpired:
            return {"error": f"no result in {args.timeout:.0f} s"}
        if not out.exists():
            return {"error": f"the measuring process exited {measuring.returncode}"}
        result = json.loads(out.read_text())
        if alone and args.drain and "error" not in result:
            result.update(
                drain(system, args, db, sock, procs, worker_env, log, args.tasks + 20)
            )
        if "error" in result:
            tail = log.read_text(errors="replace").strip().splitlines()[-5:]
            print(f"    {result['error']}; log {log}:", file=sys.stderr)
            for line in tail:
                print(f"      {line}", file=sys.stderr)
        return result
    finally:
        procs.stop()
        pg(f'DROP DATABASE IF EXISTS "{db}" WITH (FORCE)')
        if os.path.exists(sock):
            os.unlink(sock)


def drain(
    system: str,
    args: argparse.Namespace,
    db: str,
    sock: str,
    procs: Processes,
    env: dict[str, str],
    log: Path,
    total: int,
) -> dict[str, Any]:
    """The ``total`` tasks the ``alone`` run left in the queue, run by workers
    started now at ``args.drain`` concurrency: tasks/s and CPU per task of the
    workers' processes and of their database sessions, counted from the tenth of
    the tasks (the workers started and connected) to the ninth tenth."""
    if os.path.exists(sock):
        os.unlink(sock)
    rx = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    rx.bind(sock)
    import psycopg

    pgconn = psycopg.connect(
        host=PG_HOST, user=PG_USER, dbname="postgres", autocommit=True
    )
    try:
        started = [
            procs.start([sys.executable, "-m", "django", *command], env, log)
            for command in worker_commands(system, args.drain)
        ]
        low, high = total // 10, total * 9 // 10
        deadline = time.monotonic() + args.timeout
        count = 0
        mark: tuple[float, float, dict[int, float]] = (0.0, 0.0, {})
        sessions: set[int] = set()
        churned = False
        while count < high:
            rx.settimeout(max(0.01, deadline - time.monotonic()))
            try:
                rx.recv(64)
            except TimeoutError:
                return {
                    "drain_error": f"{count} of {total} ran in {args.timeout:.0f} s"
                }
            count += 1
            if count == low:
                mark = (time.monotonic(), _cpu_of(started), _db_cpu(pgconn, db))
                sessions = set(mark[2])
            elif count > low and count % 50 == 0:
                # A session that ends takes its CPU time with it: sampled now and
                # then, so that a system whose workers reconnect shows no figure
                # rather than one too low.
                now = set(_db_cpu(pgconn, db))
                churned = churned or bool(sessions - now)
                sessions = now
        elapsed = time.monotonic() - mark[0]
        workers = _cpu_of(started) - mark[1]
        db_now = _db_cpu(pgconn, db)
        churned = churned or bool(sessions - set(db_now))
        tasks = high - low
        figures: dict[str, Any] = {
            "drain_rate": tasks / elapsed,
            "drain_cpu_ms": workers / tasks * 1000,
        }
        if churned:
            figures["drain_db_note"] = (
                "its workers' database sessions ended and reopened"
            )
        elif db_now:
            spent = sum(cpu - mark[2].get(pid, 0.0) for pid, cpu in db_now.items())
            figures["drain_db_cpu_ms"] = spent / tasks * 1000
        return figures
    finally:
        rx.close()
        pgconn.close()


def _cpu_of(procs: list[subprocess.Popen[bytes]]) -> float:
    """CPU seconds of the processes in these processes' groups (each started in a
    session of its own, so the group holds it and the children it forks)."""
    total = 0.0
    for proc in procs:
        found = subprocess.run(
            ["pgrep", "-g", str(proc.pid)], capture_output=True, text=True
        ).stdout.split()
        total += sum(_proc_cpu(int(pid)) for pid in found)
    return total


def _proc_cpu(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _db_cpu(conn: Any, db: str) -> dict[int, float]:
    """CPU seconds of each PostgreSQL session on ``db`` (read through ``conn``,
    one connection for the whole drain), when the server runs on this machine (its
    process ids are then ours to read in /proc); else empty."""
    if PG_HOST not in ("127.0.0.1", "localhost", "::1") and not PG_HOST.startswith("/"):
        return {}
    pids = [
        row[0]
        for row in conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = %s", [db]
        )
    ]
    figures = {}
    for pid in pids:
        try:
            with open(f"/proc/{pid}/comm") as f:
                if f.read().strip() != "postgres":
                    continue
        except OSError:
            continue
        figures[pid] = _proc_cpu(pid)
    return figures


def describe(result: dict[str, Any]) -> str:
    """One run's figures, for the progress lines."""
    if "error" in result:
        return str(result["error"])
    line = f"{result['enqueue_rate']:,.0f} enqueue/s"
    if "rate" in result:
        return (
            f"{line}, {result['ran_during']} ran meanwhile, "
            f"{result['rate']:,.0f} tasks/s"
        )
    if "drain_rate" in result:
        return (
            f"{line}; then {result['drain_rate']:,.0f} tasks/s, CPU ms per task "
            f"{result['drain_cpu_ms']:.2f} (workers) + "
            + (
                f"{result['drain_db_cpu_ms']:.2f} (database)"
                if "drain_db_cpu_ms" in result
                else f"- (database: {result.get('drain_db_note', 'not on this machine')})"
            )
        )
    return f"{line}; then {result.get('drain_error', 'no workers run')}"


def clean_redis() -> None:
    import redis

    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=f"*{TAG}*", count=1000))
    for i in range(0, len(keys), 500):
        client.delete(*keys[i : i + 500])
    client.close()


def concurrency_label(system: str, concurrency: str) -> str:
    if concurrency == "default":
        return f"default ({DEFAULTS[system]})"
    if system == "tasks-db":
        return f"{concurrency} processes"
    return f"{concurrency} threads"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def report(
    runs: dict[tuple[str, str], list[dict[str, Any]]],
    chosen: list[str],
    concurrencies: list[str],
    skipped: dict[str, str],
    args: argparse.Namespace,
) -> None:
    print(
        f"\ndjango.tasks backends: {args.tasks} no-op tasks end to end, "
        f"{args.samples} latency samples per run, median of {args.repeat} "
        f"run(s); Python {sys.version.split()[0]}; "
        f"load average before {args.load_before}, after "
        f"{', '.join(f'{x:.1f}' for x in os.getloadavg())}\n"
    )
    print(
        "| system | concurrency | enqueue/s while consuming | x best peer "
        "| of them run meanwhile | tasks/s | x best peer | latency p50 ms | p99 ms |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    for concurrency in concurrencies:
        medians: dict[str, dict[str, float]] = {}
        for system in chosen:
            results = [r for r in runs.get((system, concurrency), []) if "rate" in r]
            if results:
                medians[system] = {
                    key: statistics.median(r[key] for r in results)
                    for key in ("enqueue_rate", "rate")
                }
        best = {
            key: max((medians[p][key] for p in PEERS if p in medians), default=0.0)
            for key in ("enqueue_rate", "rate")
        }
        for system in chosen:
            label = SYSTEMS[system]
            where = concurrency_label(system, concurrency)
            results = runs.get((system, concurrency), [])
            failed = [r["error"] for r in results if "error" in r]
            if system not in medians:
                why = failed[0] if failed else "not run"
                print(f"| {label} | {where} | failed: {why} | | | | | | |")
                continue
            row = medians[system]
            ratios = [
                f"{row[key] / best[key]:.2f}" if best[key] else "-"
                for key in ("enqueue_rate", "rate")
            ]
            latencies = [x for r in results if "rate" in r for x in r["latencies"]]
            p50 = f"{statistics.median(latencies):.1f}" if latencies else "-"
            p99 = f"{percentile(latencies, 0.99):.1f}" if latencies else "-"
            note = f" ({len(failed)} run(s) failed: {failed[0]})" if failed else ""
            during = statistics.median(
                r.get("ran_during", 0) for r in results if "rate" in r
            )
            print(
                f"| {label}{note} | {where} | {row['enqueue_rate']:,.0f} | "
                f"{ratios[0]} | {during / args.tasks:.0%} | {row['rate']:,.0f} | "
                f"{ratios[1]} | {p50} | {p99} |"
            )
    for system, why in skipped.items():
        print(f"| {SYSTEMS[system]} | - | not run: {why} | | | | | | |")
    report_alone(runs, chosen, args)


def report_alone(
    runs: dict[tuple[str, str], list[dict[str, Any]]],
    chosen: list[str],
    args: argparse.Namespace,
) -> None:
    """The enqueue/s of the enqueuing process with no worker started."""

    def median(results: list[dict[str, Any]], key: str) -> float | None:
        values = [r[key] for r in results if key in r]
        return statistics.median(values) if values else None

    found = {
        system: results
        for system in chosen
        if (
            results := [r for r in runs.get((system, ALONE), []) if "enqueue_rate" in r]
        )
    }
    if not found:
        return
    rates = {
        system: median(results, "enqueue_rate") or 0.0
        for system, results in found.items()
    }
    best = max((rates[p] for p in PEERS if p in rates), default=0.0)
    print(
        f"\n| system | enqueue/s, no worker running | x fastest peer "
        f"| then run by workers at concurrency {args.drain}: tasks/s "
        f"| CPU ms per task: workers | database sessions | together |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for system in chosen:
        if system not in found:
            failed = [r["error"] for r in runs.get((system, ALONE), []) if "error" in r]
            print(
                f"| {SYSTEMS[system]} | failed: {failed[0] if failed else '-'} | | | | | |"
            )
            continue
        results = found[system]
        ratio = f"{rates[system] / best:.2f}" if best else "-"
        drained = median(results, "drain_rate")
        workers = median(results, "drain_cpu_ms")
        db = median(results, "drain_db_cpu_ms")
        errors = [r["drain_error"] for r in results if "drain_error" in r]
        notes = [r["drain_db_note"] for r in results if "drain_db_note" in r]
        cells = [
            f"{drained:,.0f}"
            if drained is not None
            else (errors[0] if errors else "-"),
            f"{workers:.2f}" if workers is not None else "-",
            f"{db:.2f}" if db is not None else (f"- ({notes[0]})" if notes else "-"),
            f"{workers + db:.2f}" if workers is not None and db is not None else "-",
        ]
        print(
            f"| {SYSTEMS[system]} | {rates[system]:,.0f} | {ratio} | {' | '.join(cells)} |"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", type=int, default=2000)
    parser.add_argument("--samples", type=int, default=50)
    parser.add_argument(
        "--gap",
        type=float,
        default=1.0,
        help="largest random pause before a latency sample, seconds",
    )
    parser.add_argument(
        "--concurrency",
        default="default,8",
        help="comma-separated: default (each system's own) and numbers",
    )
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument(
        "--drain",
        default="8",
        help="concurrency of the workers that run the tasks the no-worker run "
        "left (tasks/s and CPU per task); 'none' skips it",
    )
    parser.add_argument(
        "--no-alone",
        dest="alone",
        action="store_false",
        help="skip the enqueue/s run with no worker started",
    )
    parser.add_argument(
        "--timeout", type=float, default=900, help="bound of one run, seconds"
    )
    parser.add_argument(
        "--systems",
        default=",".join(SYSTEMS),
        help="comma-separated subset of: " + ", ".join(SYSTEMS),
    )
    args = parser.parse_args()
    if args.drain == "none":
        args.drain = None
    elif args.drain != "default" and not (args.drain.isdigit() and int(args.drain) > 0):
        parser.error(
            f"--drain: 'default', 'none' or a positive number, not {args.drain!r}"
        )
    wanted = args.systems.split(",")
    unknown = sorted(set(wanted) - set(SYSTEMS))
    if unknown:
        parser.error(f"unknown systems: {', '.join(unknown)}")
    concurrencies = [c.strip() for c in args.concurrency.split(",") if c.strip()]
    for c in concurrencies:
        if c != "default" and not (c.isdigit() and int(c) > 0):
            parser.error(f"--concurrency: 'default' or a positive number, not {c!r}")
    if args.tasks < 1 or args.samples < 0 or args.repeat < 1 or args.gap < 0:
        parser.error("--tasks and --repeat must be positive, --samples and --gap >= 0")
    skipped = {s: why for s in SYSTEMS if s in wanted and (why := missing(s))}
    chosen = [s for s in SYSTEMS if s in wanted and s not in skipped]
    for system, why in skipped.items():
        print(f"  {SYSTEMS[system]}: not run: {why}", file=sys.stderr)
    if not chosen:
        raise SystemExit("no system to run")
    args.load_before = ", ".join(f"{x:.1f}" for x in os.getloadavg())

    runs: dict[tuple[str, str], list[dict[str, Any]]] = {}
    # The workers' logs: kept when a run failed (the path is printed).
    tmp = Path(tempfile.mkdtemp(prefix="mcbt"))
    if True:
        try:
            migrate_template()
            n = 0
            for rep in range(args.repeat):
                for concurrency in ([ALONE] if args.alone else []) + concurrencies:
                    for system in chosen:
                        n += 1
                        result = run_one(system, concurrency, args, tmp, n)
                        runs.setdefault((system, concurrency), []).append(result)
                        figures = describe(result)
                        print(
                            f"  run {rep + 1}: {system}, concurrency {concurrency}: "
                            f"{figures}",
                            file=sys.stderr,
                            flush=True,
                        )
        finally:
            pg(f'DROP DATABASE IF EXISTS "{TEMPLATE_DB}" WITH (FORCE)')
            if "ours-celery" in chosen:
                clean_redis()
            if any("error" in r for results in runs.values() for r in results):
                print(f"  workers' logs kept in {tmp}", file=sys.stderr)
            else:
                shutil.rmtree(tmp, ignore_errors=True)
    report(runs, chosen, concurrencies, skipped, args)


if __name__ == "__main__":
    main()
