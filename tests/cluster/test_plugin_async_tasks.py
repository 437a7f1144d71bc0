"""async_tasks across real processes: a task published on node 1 runs on the
runworker node and is cancelled from node 2 (pub/sub broadcast)."""

from __future__ import annotations

import time

import pytest

from demo.cluster import wait_until
from tests.plugins.cluster import example_cluster  # noqa: F401 - fixture

pytestmark = [pytest.mark.cluster, pytest.mark.redis]


def test_task_from_node_1_runs_on_the_worker_and_is_cancelled_from_node_2(
    example_cluster,  # noqa: F811
):
    cluster, (one, two) = example_cluster(worker=True)
    # 10 s per step: a cancellation within 5 s can only come from the broadcast,
    # not from the task's first progress write (which would also notice it).
    code, body = one.post("/tasks/", action="start", kind="count", steps=10, delay=10)
    assert code == 200, body
    task_id = body["task"]["id"]

    def task():
        cluster.check_alive()
        return two.get("/tasks/", task=task_id)["task"]

    running = wait_until(
        lambda: (t := task())["status"] == "running" and t,
        60,
        "the task to run on the worker",
    )
    web_nodes = {one.get("/tasks/")["node"], two.get("/tasks/")["node"]}
    assert running["node_id"] and running["node_id"] not in web_nodes
    code, body = two.post("/tasks/", action="cancel", task=task_id)
    assert code == 200 and body["status"] == "running", body
    started = time.monotonic()
    done = wait_until(
        lambda: (t := task())["status"] == "cancelled" and t, 5.0, "the cancellation"
    )
    assert time.monotonic() - started < 5.0
    assert done["message"] == "cancelled (broadcast)"
    assert done["progress"][0] == 0
