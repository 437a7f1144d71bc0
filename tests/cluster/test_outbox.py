"""The outbox between real processes on a private Redis: a sender killed between
commit and send, the broker down at commit time, a receiver stopped while 500
messages are sent. Every committed message reaches every receiver once, in
order; rolled-back ones never do; no gap hook runs."""

from __future__ import annotations

import random
import time

import pytest

from mega_cluster.models import SyncSequence
from tests.servers import redis_server

pytestmark = [
    pytest.mark.cluster,
    pytest.mark.redis,
    pytest.mark.django_db(transaction=True),
]

CHILD = "tests/cluster/outbox_child.py"


def _wait(predicate, timeout, what):
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} within {timeout}s")
        time.sleep(0.05)


def _lines(path):
    return [int(x) for x in path.read_text().split()] if path.exists() else []


class Nodes:
    def __init__(self, procs, url, app, workdir):
        self.procs, self.url, self.app, self.dir = procs, url, app, workdir

    def receiver(self, name, env=None):
        proc = self.procs.spawn(
            [CHILD, "receive", self.url, self.app, str(self.dir), name], env
        )
        _wait(
            lambda: (self.dir / f"ready-{name}").exists() or proc.poll() is not None,
            60,
            f"receiver {name} ready",
        )
        assert proc.poll() is None, proc.communicate()[1][-3000:]
        return proc

    def stop(self, name, proc):
        (self.dir / f"stop-{name}").touch()
        _out, err = proc.communicate(timeout=60)
        assert proc.returncode == 0, err[-3000:]
        (self.dir / f"stop-{name}").unlink()
        (self.dir / f"ready-{name}").unlink()

    def send(self, first, last, env=None):
        return self.procs.spawn(
            [CHILD, "send", self.url, self.app, str(self.dir), str(first), str(last)],
            env,
        )

    def received(self, name):
        return _lines(self.dir / f"recv-{name}.log")

    def gaps(self, name):
        path = self.dir / f"gaps-{name}.log"
        return path.read_text().split() if path.exists() else []


@pytest.fixture
def nodes(procs, unique_name, tmp_path):
    with redis_server() as server:
        yield (
            Nodes(procs, f"redis://127.0.0.1:{server.port}/0", unique_name, tmp_path),
            server,
        )


def _committed(app):
    row = SyncSequence.objects.filter(app_name=app, channel="c").first()
    return 0 if row is None else row.last


def test_a_sender_killed_after_commit_loses_nothing(nodes):
    """200 messages from a sender kill -9ed between commit and send at 3 random
    points (and restarted after each): both receivers get 1..200 once each, in
    order, none of the rolled-back ones, and no gap hook runs."""
    n, _server = nodes
    total = 200
    kills = sorted(random.Random().sample(range(2, total), 3))
    receivers = {name: n.receiver(name) for name in ("r1", "r2")}
    first, deaths = 1, 0
    while first <= total:
        sender = n.send(first, total, {"MC_KILL_AT": ",".join(map(str, kills))})
        _out, err = sender.communicate(timeout=120)
        if sender.returncode == 0:
            break
        assert sender.returncode == -9, err[-3000:]
        deaths += 1
        first = _committed(n.app) + 1
        kills = [k for k in kills if k >= first]
    assert deaths == 3
    for name, proc in receivers.items():
        _wait(lambda name=name: len(n.received(name)) >= total, 60, f"{name} got all")
        n.stop(name, proc)
        assert n.received(name) == list(range(1, total + 1))
        assert n.gaps(name) == []


def test_messages_committed_while_the_broker_is_down_arrive_when_it_is_back(nodes):
    """20 messages committed while Redis is down (every send fails): both
    receivers get each once, in order, with the broker back; no gap hook."""
    n, server = nodes
    receivers = {name: n.receiver(name) for name in ("r1", "r2")}
    sender = n.send(1, 20, {"MC_WAIT_GO": "1"})
    _wait(lambda: (n.dir / "ready-sender").exists(), 60, "sender ready")
    server.stop()
    (n.dir / "go").touch()
    _out, err = sender.communicate(timeout=120)
    assert sender.returncode == 0, err[-3000:]
    assert _committed(n.app) == 20
    # (receivers may already have them: their high-water poll reads the database)
    server.start()
    for name, proc in receivers.items():
        _wait(lambda name=name: len(n.received(name)) >= 20, 60, f"{name} got all")
        time.sleep(1.5)  # a relay round after the restart: duplicates stay out
        n.stop(name, proc)
        assert n.received(name) == list(range(1, 21))
        assert n.gaps(name) == []


def test_a_receiver_stopped_while_500_are_sent_replays_exactly_those(nodes):
    """A named receiver (OUTBOX RECEIVER) stops; 500 messages are sent; restarted
    under the same name it replays exactly the missed ones, in order, no gap."""
    n, _server = nodes
    env = {"MC_RECEIVER": "r1"}
    proc = n.receiver("r1", env)
    sender = n.send(1, 10)
    _out, err = sender.communicate(timeout=120)
    assert sender.returncode == 0, err[-3000:]
    _wait(lambda: len(n.received("r1")) >= 10, 30, "first 10")
    n.stop("r1", proc)
    stopped = time.monotonic()
    sender = n.send(11, 510)
    _out, err = sender.communicate(timeout=180)
    assert sender.returncode == 0, err[-3000:]
    time.sleep(max(0.0, 5 - (time.monotonic() - stopped)))  # down for >= 5 s
    proc = n.receiver("r1", env)
    _wait(lambda: len(n.received("r1")) >= 510, 60, "the replay")
    time.sleep(1)  # anything extra would arrive by now
    n.stop("r1", proc)
    assert n.received("r1") == list(range(1, 511))
    assert n.gaps("r1") == []
