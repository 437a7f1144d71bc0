"""``runworker`` says what it runs without any LOGGING set up: its apps, node id,
the channels it consumes with their concurrency, and with ``-v 2`` each event's
start and outcome."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import time

import pytest

from .startproject import make_project, run, user_env

pytestmark = pytest.mark.cluster

PLUGIN = """
from mega_cluster import Plugin


class FlagsPlugin(Plugin):
    name = "flags"

    def before_load(self):
        self.event_queue.subscribe("flags.changed", process=self.on_changed, concurrency=3)

    def load(self):
        self.flags = {}

    def on_changed(self, payload, ctx):
        if payload.get("fail"):
            raise ValueError("bad flag")
"""

PUBLISH = (
    "from mega_cluster import get_app\n"
    "q = get_app().event_queue\n"
    "print('ID', q.publish('flags.changed', {'n': 1}))\n"
    "print('ID', q.publish('flags.changed', {'fail': True}))\n"
)


def test_runworker_v2_prints_what_it_consumes_and_every_event(tmp_path, unique_name):
    root = make_project(
        tmp_path / "site",
        {"APP_NAME": unique_name, "EVENT_QUEUE": {"POLL_INTERVAL": 0.1}},
        migrate=False,
    )
    (root / "flagsapp" / "plugin.py").write_text(PLUGIN.lstrip())
    done = run(["manage.py", "migrate", "--noinput"], cwd=root, timeout=120)
    assert done.returncode == 0, done.stderr
    log = root / "worker.log"
    with log.open("wb") as out:
        worker = subprocess.Popen(
            [sys.executable, "manage.py", "runworker", "-v", "2"],
            cwd=root,
            env=user_env(),
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 60
        while "consumes" not in log.read_text():
            assert worker.poll() is None, log.read_text()
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        published = run(["manage.py", "shell", "-c", PUBLISH], cwd=root)
        assert published.returncode == 0, published.stderr
        ok, bad = re.findall(r"^ID (\S+)$", published.stdout, re.M)
        while (
            "dead-lettered" not in log.read_text() or "succeeded" not in log.read_text()
        ):
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.1)
        worker.send_signal(signal.SIGTERM)
        worker.wait(timeout=30)
    finally:
        if worker.poll() is None:
            worker.kill()
            worker.wait(timeout=10)
    output = log.read_text()
    node = re.search(
        rf"^runworker: cluster app {unique_name!r} started on node (\S+) \(worker, "
        r"pid \d+\), plugins: flags$",
        output,
        re.M,
    )
    assert node, output
    assert (
        f"runworker: cluster app {unique_name!r} consumes flags.changed (concurrency 3)"
        in output
    )
    for line in (
        f"runworker: event {ok} on channel flags.changed: attempt 1 started",
        f"runworker: event {ok} on channel flags.changed succeeded",
        f"runworker: event {bad} on channel flags.changed: attempt 1 started",
        f"runworker: event {bad} on channel flags.changed: attempt 1 failed "
        "(ValueError: bad flag)",
        f"runworker: event {bad} on channel flags.changed dead-lettered after 1 "
        "attempt(s): ValueError: bad flag",
        "runworker: stopped",
    ):
        assert line in output, output
    assert "ValueError: bad flag" in output.split("attempt 1 failed")[1]  # traceback
    assert worker.returncode == 0, output
