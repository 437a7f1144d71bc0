"""Publish ``$MC_EVENTS_COUNT`` events on channel ``jobs`` (payloads 0..N-1)."""

import os

import django

django.setup()

from mega_cluster import get_app  # noqa: E402

queue = get_app().event_queue
count = int(os.environ["MC_EVENTS_COUNT"])
ids = [queue.publish("jobs", i) for i in range(count)]
print(f"published {len(set(ids))}")
