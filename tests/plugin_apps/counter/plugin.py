"""A plugin whose install() leaves a trace per call, to count installs across nodes."""

from __future__ import annotations

import os
import time

from mega_cluster import Plugin


class CounterPlugin(Plugin):
    name = "counter"
    version = "1.0.0"

    def install(self) -> None:
        with open(os.environ["MC_INSTALL_LOG"], "a") as fh:
            fh.write(f"{self.app.node_id}\n")
        time.sleep(0.5)  # widen the window in which a second installer could slip in
