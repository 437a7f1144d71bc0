"""kill -9 of the Sentinel-managed Redis primary under four processes counting in
one lock, with the replica lagging (its link drops the primary's writes for a
moment before the kill, as a slow replica would): work resumes on the promoted
replica by itself, pub/sub listeners reconnect and report the gap; with
OPTIONS["STRICT"] no fence repeats and no increment is lost, without it fences
repeat as docs/deployment.md says."""

from __future__ import annotations

import itertools
import json
import logging
import time
from pathlib import Path

import pytest
from django.conf import settings

from mega_cluster.exceptions import BackendUnavailable
from mega_cluster.testing import make_app
from tests.cluster.test_locks import Lines
from tests.pubsub.helpers import Recorder
from tests.topologies import redis_sentinel

pytestmark = [pytest.mark.cluster, pytest.mark.redis]

logger = logging.getLogger("tests.failover")


def _until(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError(f"{what}: not within {timeout} s")


def _drain(workers: list[Lines]) -> list[list[str]]:
    out = []
    for worker in workers:
        while not worker.lines.empty():
            line = worker.lines.get().split()
            if line:
                out.append(line)
    return out


def _incs(lines: list[list[str]]) -> list[tuple[int, int, float]]:
    bad = [x for x in lines if x[0] == "inc" and len(x) != 4]
    assert not bad, bad[:5]
    return [
        (int(v), int(f), float(t))
        for kind, v, f, t in (x for x in lines if x[0] == "inc")
    ]


@pytest.mark.parametrize("strict", [False, True], ids=["default", "strict"])
def test_kill_9_of_the_primary_under_four_counting_processes(
    strict, procs, unique_name
):
    counter = Path(settings.RUN_DIR) / f"{unique_name}.counter"
    stop = Path(settings.RUN_DIR) / f"{unique_name}.stop"
    counter.write_text("0")
    with redis_sentinel(lag_link=True) as topology:
        assert topology.link is not None
        options: dict = {"URL": topology.url}
        if strict:
            options.update(STRICT=True, REPLICA_TIMEOUT=0.5)
        locks = {"BACKEND": "redis", "OPTIONS": options}
        pubsub = {
            "BACKEND": "redis",
            "OPTIONS": {"URL": topology.url},
            "RECONNECT_MAX_DELAY": 0.5,
        }
        a = make_app(unique_name, {"PUBSUB": pubsub}, node_id=f"{unique_name}-a")
        b = make_app(unique_name, {"PUBSUB": pubsub}, node_id=f"{unique_name}-b")
        workers = [
            Lines(
                procs.spawn(
                    [
                        "tests/cluster/locks_worker.py",
                        "failover",
                        unique_name,
                        json.dumps(locks),
                        str(stop),
                        str(counter),
                    ]
                )
            )
            for _ in range(4)
        ]
        lines: list[list[str]] = []
        try:
            seen, gaps = Recorder("seen"), Recorder("gaps")
            b.pubsub_manager.subscribe("news", seen, on_gap=lambda: gaps("gap"))
            a.pubsub_manager.publish("news", "before")
            assert seen.wait(1, timeout=10) == ["before"]

            def counted() -> int:
                lines.extend(_drain(workers))
                return len(_incs(lines))

            _until(lambda: counted() >= 40, 60, "40 increments before the failover")
            # the replica stops receiving writes (its link still looks up), then the
            # primary dies with them
            topology.link.dropping = True
            time.sleep(0.3)
            killed_at = time.time()
            old = topology.kill_primary()
            topology.wait_promoted(old.port, timeout=60)
            promoted_at = time.time()
            # the operator brings the old primary back: the sentinels make it a
            # replica of the new one (STRICT needs a replica to acknowledge)
            old.start()
            _until(
                lambda: (
                    counted() >= 0
                    and len([i for i in _incs(lines) if i[2] > promoted_at]) >= 40
                ),
                90,
                "40 increments after the promotion",
            )
            assert gaps.wait(1, timeout=30) == ["gap"]

            def published() -> bool:
                try:
                    a.pubsub_manager.publish("news", "after")
                except BackendUnavailable:
                    return False
                return True

            _until(published, 30, "a publish after the promotion")
            assert seen.wait_for_item("after", timeout=10)[-1] == "after"
        finally:
            stop.write_text("stop")
            a.stop()
            b.stop()
        # read every line (through Lines: wait_all would race it for stdout)
        _until(
            lambda: counted() >= 0 and sum(x == ["done"] for x in lines) == 4,
            60,
            "every worker done",
        )
        for code, _out, err in procs.wait_all(60):
            assert code == 0, err[-2000:]

    incs = sorted(_incs(lines))
    before = [i for i in incs if i[2] < killed_at]
    after = [i for i in incs if i[2] > killed_at]
    times = sorted(t for _, _, t in incs)
    pause = max(b - a for a, b in itertools.pairwise(times))
    logger.warning(
        "failover (%s): %d increments before the kill, %d after; work paused %.2f s "
        "(promotion %.2f s after the kill); errors seen: %s",
        "strict" if strict else "default",
        len(before),
        len(after),
        pause,
        promoted_at - killed_at,
        sorted({x[1] for x in lines if x[0] == "error"}),
    )
    fences = [f for _, f, _ in incs]
    repeated = len(fences) - len(set(fences))
    if strict:
        # every increment made it (values 1..N once each, the file holds N) and
        # fences follow the values: none repeats, none goes back
        assert [v for v, _, _ in incs] == list(range(1, len(incs) + 1))
        assert int(counter.read_text()) == len(incs)
        assert repeated == 0
        assert fences == sorted(fences)
    else:
        # documented: the grants the replica missed are lost, their fences are
        # handed out again by the promoted replica
        assert repeated > 0, "the lagging replica was promoted: fences repeat"
        assert max(f for _, f, _ in after) > 0


def test_a_manual_failover_is_a_gap_never_a_silent_switch(unique_name):
    """SENTINEL FAILOVER with the old primary alive: the sentinels demote it and
    close its clients, so the subscriber does not stay on it (where publishes to the
    new primary would never arrive): it reconnects to the new primary, calls the gap
    hook, and the lock backend's next grant is made by the new primary."""
    import redis

    with redis_sentinel() as topology:
        pubsub = {
            "BACKEND": "redis",
            "OPTIONS": {"URL": topology.url},
            "RECONNECT_MAX_DELAY": 0.5,
        }
        locks = {"BACKEND": "redis", "OPTIONS": {"URL": topology.url}}
        settings_ = {"PUBSUB": pubsub, "LOCKS": locks}
        a = make_app(unique_name, settings_, node_id=f"{unique_name}-a")
        b = make_app(unique_name, settings_, node_id=f"{unique_name}-b")
        try:
            seen, gaps = Recorder("seen"), Recorder("gaps")
            b.pubsub_manager.subscribe("news", seen, on_gap=lambda: gaps("gap"))
            a.pubsub_manager.publish("news", "before")
            assert seen.wait(1, timeout=10) == ["before"]
            with a.lock_manager.lock("k"):
                pass
            old = topology.master_port()
            with redis.Redis(port=topology.sentinels[0].port, socket_timeout=5) as s:
                s.execute_command("SENTINEL", "FAILOVER", topology.service)
            new = topology.wait_promoted(old, timeout=60)
            assert gaps.wait(1, timeout=30) == ["gap"]
            wire = b.pubsub_manager.backend.wire_channel("news")

            def subscribed_on(port: int) -> int:
                with redis.Redis(port=port, socket_timeout=5) as client:
                    return dict(client.pubsub_numsub(wire)).get(wire.encode(), 0)

            _until(lambda: subscribed_on(new) == 1, 30, "the subscriber on the new")
            assert subscribed_on(old) == 0

            def published() -> bool:
                try:
                    a.pubsub_manager.publish("news", "after")
                except BackendUnavailable:
                    return False
                return True

            _until(published, 30, "a publish after the failover")
            assert seen.wait_for_item("after", timeout=10)[-1] == "after"

            def granted() -> bool:
                try:
                    with a.lock_manager.lock("k", wait=5):
                        return True
                except BackendUnavailable:
                    return False

            # the old primary (a replica now) would refuse it: READONLY
            _until(granted, 30, "a grant after the failover")
        finally:
            a.stop()
            b.stop()
