"""Child settings for the node-registry cluster tests: Redis nodes, fast timeouts."""

import os

from tests.settings import *  # noqa: F403
from tests.settings import KEY_PREFIX, REDIS_URL

#: Shared with the parent test (tests/cluster/test_nodes.py), which reads the
#: same registry.
NODES_FAST = {"NODE_HEARTBEAT": 0.2, "NODE_TIMEOUT": 1.5}


def cluster_value(name: str) -> dict:
    return {
        "APP_NAME": name,
        **NODES_FAST,
        "LOCKS": {
            "BACKEND": "redis",
            "OPTIONS": {"URL": REDIS_URL, "KEY_PREFIX": KEY_PREFIX},
        },
        "PUBSUB": {"BACKEND": "redis", "OPTIONS": {"URL": REDIS_URL}},
        "EVENT_QUEUE": {"BACKEND": "database", "POLL_INTERVAL": 0.1},
    }


MEGA_CLUSTER = cluster_value(os.environ.get("MC_APP_NAME", "unused"))
