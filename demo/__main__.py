"""``./dev demo`` (or ``python -m demo``): a three-node cluster on this machine.

Starts two web nodes of the example project (``runserver`` on two free ports)
and one ``runworker`` node, on Redis pub/sub and locks (the local Redis when it
answers, else a private ``redis-server`` started for the demo), with a fresh
SQLite database in a temporary folder. Then, through the example pages:

1. a collection created on node A is in node B's memory (sync message);
2. a token policy edited on node A is re-read on node B (cache invalidation);
3. a task started on node A runs on the worker and is cancelled from node B;
4. a lock held by node A blocks node B until A releases it;
5. nodes A and B remove the same field at the same moment: removed once.

Every process it started is stopped at the end, also on Ctrl-C or an error.
``--keep`` leaves the cluster running until Ctrl-C, for a look in the browser.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

from .cluster import ROOT, Cluster, Node, free_port, port_open, wait_until

T0 = time.monotonic()


def say(text: str) -> None:
    print(f"[{time.monotonic() - T0:6.2f}s] {text}", flush=True)


def find_redis(url: str, workdir: Path) -> tuple[str, subprocess.Popen | None]:
    """The Redis URL to use and the private server started for it (or None)."""
    parts = urllib.parse.urlsplit(url)
    if port_open(parts.hostname or "127.0.0.1", parts.port or 6379):
        return url, None
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit(
            f"Redis does not answer at {url} and redis-server is not installed.\n"
            "Start Redis (e.g. `redis-server --daemonize yes`) or point DEMO_REDIS_URL "
            "at one; the demo needs it for pub/sub and locks between processes."
        )
    port = free_port()
    server = subprocess.Popen(
        [
            binary,
            "--bind",
            "127.0.0.1",
            "--port",
            str(port),
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(workdir),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    if not wait_until(lambda: port_open("127.0.0.1", port), 15, "redis-server"):
        server.kill()
    return f"redis://127.0.0.1:{port}/0", server


def forget_keys(url: str, prefix: str) -> None:
    """Delete the Redis keys the demo's locks left (fence counters), by prefix."""
    try:
        import redis
    except ImportError:
        return
    client = redis.Redis.from_url(url)
    try:
        keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        if keys:
            client.delete(*keys)
    except redis.RedisError:
        pass
    finally:
        client.close()


def timed(predicate, timeout: float, what: str) -> float:
    started = time.monotonic()
    wait_until(predicate, timeout, what)
    return (time.monotonic() - started) * 1000


def ok(answer: tuple[int, dict]) -> dict:
    code, body = answer
    if code >= 400:
        raise SystemExit(f"unexpected answer {code}: {body}")
    return body


def scenes(cluster: Cluster, a: Node, b: Node) -> None:
    node_a, node_b = a.get("/locks/")["node"], b.get("/locks/")["node"]
    say(f"node A = {node_a} on {a.base}")
    say(f"node B = {node_b} on {b.base}")

    print("\n== 1. data_source: a schema change on node A reaches node B's memory")
    ok(a.post("/data-source/", action="create_collection", collection="orders"))
    ms = timed(lambda: "orders" in b.get("/data-source/")["schema"], 5, "orders")
    say(f"A created collection 'orders'; B has it in memory after {ms:.0f} ms")
    ok(b.post("/data-source/", action="add_field", collection="orders", field="total"))
    ms = timed(
        lambda: "total" in a.get("/data-source/")["schema"]["orders"]["fields"],
        5,
        "total",
    )
    say(f"B added field 'orders.total'; A has it after {ms:.0f} ms")

    print("\n== 2. auth_policy: an edit on node A invalidates node B's cached policy")
    before = b.get("/auth-policy/")["policy"]["token_expires_in"]
    say(f"B reads token_expires_in = {before} (now cached on B)")
    ok(a.post("/auth-policy/", token_expires_in=1800))
    ms = timed(
        lambda: b.get("/auth-policy/")["policy"]["token_expires_in"] == 1800,
        5,
        "the new policy on B",
    )
    say(f"A saved token_expires_in = 1800; B reads 1800 after {ms:.0f} ms")

    print(
        "\n== 3. async_tasks: started on node A, runs on the worker, cancelled from B"
    )
    task = ok(a.post("/tasks/", action="start", kind="count", steps=100, delay=0.3))
    task_id = task["task"]["id"]
    say(f"A started task {task_id[:8]} (count to 100, 0.3 s a step)")

    def progressed():
        t = b.get("/tasks/", task=task_id)["task"]
        return t["status"] == "running" and t["progress"][0] >= 3 and t

    running = wait_until(progressed, 60, "the task to run")
    say(
        f"it runs on node {running['node_id']} (the worker), "
        f"progress {running['progress'][0]}/100"
    )
    ok(b.post("/tasks/", action="cancel", task=task_id))
    ms = timed(
        lambda: b.get("/tasks/", task=task_id)["task"]["status"] == "cancelled",
        10,
        "the cancellation",
    )
    done = b.get("/tasks/", task=task_id)["task"]
    say(
        f"B cancelled it; the worker stopped at {done['progress'][0]}/100 after "
        f"{ms:.0f} ms: status {done['status']}, {done['message']}"
    )

    print("\n== 4. locks: a lock held by node A blocks node B")
    held = ok(a.post("/locks/", action="hold", key="reports:nightly", seconds=3))
    say(f"A holds 'reports:nightly' for 3 s (fence {held['fence']})")
    code, blocked = b.post("/locks/", action="take", key="reports:nightly", wait=0)
    holder = (blocked.get("lock") or {}).get("holder")
    say(
        f"B tries at once: {'blocked' if code == 409 else 'acquired?!'}, held by {holder}"
    )
    waited = ok(b.post("/locks/", action="take", key="reports:nightly", wait=10))
    say(
        f"B waits: acquired after {waited['waited']:.2f} s, when A released it "
        f"(fence {waited['fence']})"
    )

    print("\n== 5. two nodes remove the same field at the same moment")
    ok(a.post("/data-source/", action="add_field", collection="orders", field="note"))
    timed(
        lambda: "note" in b.get("/data-source/")["schema"]["orders"]["fields"],
        5,
        "note on B",
    )
    answers: dict[str, tuple[int, dict]] = {}
    barrier = threading.Barrier(2, timeout=10)

    def remove(name: str, node: Node) -> None:
        barrier.wait()
        answers[name] = node.post(
            "/data-source/", action="remove_field", collection="orders", field="note"
        )

    threads = [threading.Thread(target=remove, args=p) for p in (("A", a), ("B", b))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    for name, (code, body) in sorted(answers.items()):
        say(f"{name}: HTTP {code}, removed={body.get('removed')}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="./dev demo", description=__doc__.split("\n")[0]
    )
    parser.add_argument(
        "--redis",
        default=os.environ.get("DEMO_REDIS_URL", "redis://127.0.0.1:6379/0"),
        help="Redis URL (default: $DEMO_REDIS_URL or redis://127.0.0.1:6379/0)",
    )
    parser.add_argument(
        "--keep", action="store_true", help="keep the cluster running until Ctrl-C"
    )
    args = parser.parse_args(argv)
    workdir = Path(tempfile.mkdtemp(prefix="mc-demo-"))
    server = None
    cluster = None
    redis_url = ""
    own_prefix = ""
    try:
        redis_url, server = find_redis(args.redis, workdir)
        say(f"Redis: {redis_url}{' (private server for the demo)' if server else ''}")
        # A name of its own: several demos (or test runs) can share one Redis.
        name = os.environ.get("DEMO_APP_NAME") or f"demo-{os.getpid()}"
        if not os.environ.get("DEMO_KEY_PREFIX"):
            own_prefix = f"mc{name}"
        env = {
            "DJANGO_SETTINGS_MODULE": "demo.settings",
            "DEMO_DB": str(workdir / "demo.sqlite3"),
            "DEMO_REDIS_URL": redis_url,
            "DEMO_APP_NAME": name,
            "DEMO_KEY_PREFIX": os.environ.get("DEMO_KEY_PREFIX") or own_prefix,
        }
        cluster = Cluster(env, workdir)
        migrate = subprocess.run(
            [sys.executable, "manage.py", "migrate", "-v", "0"],
            cwd=ROOT,
            env=cluster.env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        if migrate.returncode:
            raise SystemExit(f"migrate failed:\n{migrate.stderr[-3000:]}")
        say(f"migrated a fresh SQLite database in {workdir}")
        a, b = cluster.web("node-a"), cluster.web("node-b")
        cluster.worker()
        cluster.wait_ready([a, b])
        say("started node A (runserver), node B (runserver) and a runworker")
        scenes(cluster, a, b)
        if args.keep:
            print(
                f"\nThe cluster keeps running: {a.base}/ and {b.base}/. Ctrl-C stops it."
            )
            while True:
                cluster.check_alive()
                time.sleep(1)
        return 0
    except KeyboardInterrupt:
        return 130
    except AssertionError as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        if cluster is not None:
            for name, _ in cluster.procs:
                print(
                    f"--- {name} log (tail)\n{cluster.log(name)[-1500:]}",
                    file=sys.stderr,
                )
        return 1
    finally:
        pids = []
        if cluster is not None:
            pids = [proc.pid for _, proc in cluster.procs]
            cluster.stop()
        if server is not None:
            server.terminate()
            server.wait(timeout=10)
            pids.append(server.pid)
        if own_prefix and redis_url:
            forget_keys(redis_url, own_prefix)
        shutil.rmtree(workdir, ignore_errors=True)
        print(
            f"\nstopped the {len(pids)} process(es) the demo started "
            f"(pids {' '.join(map(str, pids))})",
            flush=True,
        )


if __name__ == "__main__":
    sys.exit(main())
