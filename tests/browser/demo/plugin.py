"""A plugin whose event handler fails while a flag file exists (browser test)."""

from __future__ import annotations

import os
from typing import Any

from mega_cluster import Plugin


class OpsDemoPlugin(Plugin):
    name = "ops_demo"
    version = "1.0.0"

    def load(self) -> None:
        self.event_queue.subscribe("emails", process=self.send, concurrency=2)

    def send(self, payload: Any, ctx: Any) -> None:
        if os.path.exists(os.environ.get("MC_BROWSER_FLAG", "/nonexistent")):
            raise RuntimeError(f"SMTP server refused the connection for {payload!r}")
