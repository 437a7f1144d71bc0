"""Autostart outside web servers: the project's own Celery workers and a server
that forks from C (uWSGI style) start their apps; maintenance commands start
nothing and open no connection."""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.conf import settings

from ..servers import redis_server
from .startproject import make_project, run, user_env

pytestmark = [pytest.mark.cluster, pytest.mark.redis]

CELERY = [sys.executable, "-m", "celery", "-A", "proj", "worker", "-c", "2"]
CELERY += ["--without-mingle", "--without-gossip", "-l", "WARNING"]
CELERY_APP = """
import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "proj.settings")
app = Celery("proj")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()
"""

TASKS = """
import json
import os
import time
from pathlib import Path

from celery import shared_task

from mega_cluster.registry import registry  # not get_app(): it would start it


@shared_task
def whoami(out):
    time.sleep(0.3)
    app = registry.get()
    Path(out, f"{os.getpid()}-{time.monotonic_ns()}.json").write_text(
        json.dumps({"node": app.node_id, "pid": os.getpid(), "started": app.started,
                    "loaded": app.plugins["flags"].loaded})
    )
"""


@pytest.fixture
def celery_project(tmp_path: Path, unique_name: str) -> Iterator[tuple[Path, str]]:
    with redis_server() as broker:
        root = make_project(
            tmp_path / "site",
            {
                "APP_NAME": unique_name,
                "PUBSUB": {"BACKEND": "redis", "OPTIONS": {"URL": settings.REDIS_URL}},
            },
        )
        (root / "proj" / "celery.py").write_text(CELERY_APP.lstrip())
        (root / "proj" / "__init__.py").write_text(
            "from .celery import app as celery_app\n"
        )
        (root / "flagsapp" / "tasks.py").write_text(TASKS.lstrip())
        with (root / "proj" / "settings.py").open("a") as fh:
            fh.write(f'CELERY_BROKER_URL = "redis://127.0.0.1:{broker.port}/0"\n')
        yield root, unique_name


@pytest.mark.celery
@pytest.mark.parametrize("pool", ["prefork", "threads"])
def test_celery_worker_tasks_get_a_started_app(celery_project, pool):
    """``celery -A proj worker``: every process that runs tasks (each prefork child;
    the worker itself with a threads pool) has a started app, its plugins loaded
    and its own node id, without any set-up in the project's celery.py."""
    root, name = celery_project
    out = root / "out"
    out.mkdir()
    log = root / "worker.log"
    with log.open("wb") as fh:
        worker = subprocess.Popen(
            [*CELERY, "-P", pool],
            cwd=root,
            env=user_env(),
            stdout=fh,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        sent = run(
            [
                "-c",
                "import proj, flagsapp.tasks as t\n"
                f"for _ in range(6): t.whoami.delay({str(out)!r})",
            ],
            cwd=root,
        )
        assert sent.returncode == 0, sent.stderr
        deadline = time.monotonic() + 60
        while len(list(out.iterdir())) < 6:
            assert worker.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(timeout=10)
    reports = [json.loads(p.read_text()) for p in out.iterdir()]
    assert all(r["started"] and r["loaded"] for r in reports), reports
    nodes = {r["pid"]: r["node"] for r in reports}
    assert len(set(nodes.values())) == len(nodes)  # one node id per process
    if pool == "prefork":
        assert len(nodes) == 2, reports  # both children ran tasks
    output = log.read_text()
    for node in nodes.values():
        assert f"cluster app {name!r} started on node {node}" in output, output


FORKSERVE = """
import ctypes
import io
import json
import os
import sys

from proj.wsgi import application  # the master imports the app, as uWSGI does

from mega_cluster import node

parent = node.get_node_id()
libc = ctypes.CDLL(None, use_errno=True)
children = []
for _ in range(2):
    pid = libc.fork()  # from C: Python's at-fork handlers do not run
    if pid == 0:
        status = []
        body = b"".join(application(
            {"REQUEST_METHOD": "GET", "PATH_INFO": "/flags/", "SERVER_NAME": "localhost",
             "SERVER_PORT": "80", "wsgi.input": io.BytesIO(), "wsgi.url_scheme": "http"},
            lambda s, h, *a: status.append(s),
        ))
        # One file each: two children printing to one pipe can interleave.
        with open(f"report-{os.getpid()}.json", "w") as out:
            json.dump({"parent": parent, "status": status[0], **json.loads(body)}, out)
        os._exit(0)
    children.append(pid)
for pid in children:
    os.waitpid(pid, 0)
"""


def test_a_server_forking_from_c_starts_each_worker_with_its_own_node(
    tmp_path, unique_name
):
    """uWSGI-style: the master imports the stock wsgi.py and forks without running
    Python's fork handlers; each worker notices on its first request (pid check)
    and starts its app with a node id of its own."""
    root = make_project(
        tmp_path / "site",
        {
            "APP_NAME": unique_name,
            "PUBSUB": {"BACKEND": "redis", "OPTIONS": {"URL": settings.REDIS_URL}},
        },
    )
    (root / "forkserve.py").write_text(FORKSERVE.lstrip())
    done = run(["forkserve.py"], cwd=root, timeout=90)
    assert done.returncode == 0, done.stderr
    reports = [json.loads(p.read_text()) for p in sorted(root.glob("report-*.json"))]
    assert len(reports) == 2, done.stdout + done.stderr
    for report in reports:
        assert report["status"].startswith("200"), report
        assert report["started"] and report["loaded"], report
        assert report["node"] != report["parent"]
        assert str(report["pid"]) in report["node"]
    assert reports[0]["node"] != reports[1]["node"]


APP_TESTS = """
from django.test import TestCase

from flagsapp.plugin import FlagsPlugin
from mega_cluster.registry import registry


class NothingStarted(TestCase):
    def test_the_app_is_not_started(self):
        self.assertFalse(registry.get().started)
        self.assertFalse(registry.get().plugins["flags"].loaded)
"""

SCRIPT = """
import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "proj.settings")
django.setup()

from mega_cluster.registry import registry

plugin = registry.get().plugins["flags"]
print("before", registry.get().started)
print("flags", plugin.flags)  # set by load(): this first use starts the app
print("after", registry.get().started, registry.get().node_id)
"""


def test_a_script_that_uses_a_plugin_gets_a_started_app(tmp_path, unique_name):
    """A plain script: the first read of an attribute load() sets starts the app
    (as the first get_app() would), and it says so on stderr."""
    root = make_project(
        tmp_path / "site",
        {
            "APP_NAME": unique_name,
            "PUBSUB": {"BACKEND": "redis", "OPTIONS": {"URL": settings.REDIS_URL}},
        },
    )
    (root / "script.py").write_text(SCRIPT.lstrip())
    done = run(["script.py"], cwd=root)
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[:2] == ["before False", "flags {}"], done.stdout
    node = lines[2].split()[2]
    assert lines[2] == f"after True {node}"
    assert (
        f"mega_cluster: cluster app {unique_name!r} started on node {node} (shell or "
        "script, not consuming events" in done.stderr
    ), done.stderr


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    """A port that accepts TCP connections and never answers: any connection
    attempt to it shows as a pending accept."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    try:
        yield sock
    finally:
        sock.close()


def _connected(sock: socket.socket) -> bool:
    return bool(select.select([sock], [], [], 0.2)[0])


def test_maintenance_commands_start_nothing_and_open_no_connection(
    tmp_path, unique_name, listener
):
    """check, makemigrations, migrate, collectstatic and ``manage.py test`` set-up
    run with every backend URL on a port that would see any connection: none is
    opened and no app starts. A shell that uses get_app() does connect (the
    control: the port is watched for real)."""
    url = f"redis://127.0.0.1:{listener.getsockname()[1]}/0"
    root = make_project(
        tmp_path / "site",
        {
            "APP_NAME": unique_name,
            "PUBSUB": {
                "BACKEND": "redis",
                "OPTIONS": {"URL": url, "SOCKET_TIMEOUT": 1},
            },
            "LOCKS": {"BACKEND": "redis", "OPTIONS": {"URL": url, "SOCKET_TIMEOUT": 1}},
            "EVENT_QUEUE": {"BACKEND": "celery", "OPTIONS": {"BROKER_URL": url}},
        },
        migrate=False,
    )
    with (root / "proj" / "settings.py").open("a") as fh:
        fh.write(f"STATIC_ROOT = {str(root / 'static')!r}\n")
    (root / "flagsapp" / "tests.py").write_text(APP_TESTS.lstrip())
    commands = [
        ["check"],
        ["makemigrations", "--check", "--dry-run"],
        ["migrate", "--noinput"],
        ["collectstatic", "--noinput"],
        ["test", "flagsapp"],
    ]
    for command in commands:
        done = run(["manage.py", *command], cwd=root, timeout=120)
        output = done.stdout + done.stderr
        assert done.returncode == 0, (command, output)
        if command[0] == "test":  # the test database was set up, the test ran
            assert "Ran 1 test" in output and "OK" in output, output
        assert "started on node" not in output, (command, output)
        assert not _connected(listener), f"{command} opened a connection:\n{output}"
    done = run(
        ["manage.py", "shell", "-c", "from mega_cluster import get_app; get_app()"],
        cwd=root,
        timeout=60,
    )
    assert _connected(listener), done.stdout + done.stderr
