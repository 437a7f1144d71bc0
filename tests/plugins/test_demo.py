"""``./dev demo`` (``python -m demo``) runs its five scenes on Redis and stops
every process it started."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest
from django.conf import settings

from demo.cluster import ROOT

pytestmark = [pytest.mark.cluster, pytest.mark.redis]


def test_demo_shows_each_scene_and_stops_its_processes(unique_name):
    env = {
        **os.environ,
        "DEMO_REDIS_URL": settings.REDIS_URL,
        "DEMO_APP_NAME": unique_name,
        "DEMO_KEY_PREFIX": settings.KEY_PREFIX,
    }
    env.pop("DJANGO_SETTINGS_MODULE", None)
    result = subprocess.run(
        [sys.executable, "-m", "demo"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    out = result.stdout
    assert result.returncode == 0, out + result.stderr[-3000:]
    node_a = re.search(r"node A = (\S+)", out).group(1)
    node_b = re.search(r"node B = (\S+)", out).group(1)
    worker = re.search(r"it runs on node (\S+) \(the worker\)", out).group(1)
    assert len({node_a, node_b, worker}) == 3
    assert "B has it in memory after" in out
    assert "B reads 1800 after" in out
    assert "status cancelled, cancelled (broadcast)" in out
    assert f"B tries at once: blocked, held by {node_a}" in out
    assert re.search(r"B waits: acquired after [0-9.]+ s, when A released it", out)
    removals = re.findall(r"[AB]: HTTP (\d+), removed=(\w+)", out)
    assert sorted(removals) == [("200", "False"), ("200", "True")]
    pids = re.search(
        r"stopped the 3 process\(es\) the demo started \(pids ([\d ]+)\)", out
    )
    for pid in map(int, pids.group(1).split()):
        with pytest.raises(ProcessLookupError):
            os.kill(pid, 0)
