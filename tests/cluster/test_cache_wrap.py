"""wrap is single-flight across real processes: one computation per cold key."""

from __future__ import annotations

import json
import time

import pytest
import redis
from django.conf import settings

pytestmark = [pytest.mark.cluster, pytest.mark.redis]

NODES = 8


@pytest.mark.parametrize("store", ["django_redis", "redis"])
def test_eight_processes_wrapping_one_cold_key_compute_once(procs, unique_name, store):
    """8 nodes call wrap on the same cold key at the same instant (Redis locks):
    fn runs exactly once and every node returns that one value."""
    tag = f"{settings.KEY_PREFIX}:cache-stampede:{unique_name}"
    client = redis.Redis.from_url(settings.REDIS_URL)
    env = {"MC_APP_NAME": unique_name, "MC_CACHE_STORE": store, "MC_TAG": tag}
    try:
        for _ in range(NODES):
            procs.spawn(["tests/cluster/cache_wrap_child.py"], env)
        deadline = time.monotonic() + 90
        while int(client.get(f"{tag}:ready") or 0) < NODES:
            dead = [p for p in procs.procs if p.poll() is not None]
            assert not dead, dead[0].communicate()[1][-2000:]
            assert time.monotonic() < deadline, "children did not get ready in 90 s"
            time.sleep(0.05)
        client.set(f"{tag}:go", 1)
        results = procs.wait_all(timeout=60)
        for code, _, err in results:
            assert code == 0, err[-2000:]
        values = [json.loads(out.strip().splitlines()[-1]) for _, out, _ in results]
        assert int(client.get(f"{tag}:calls") or 0) == 1
        assert len({json.dumps(v, sort_keys=True) for v in values}) == 1
    finally:
        client.delete(f"{tag}:ready", f"{tag}:go", f"{tag}:calls")
        client.close()
