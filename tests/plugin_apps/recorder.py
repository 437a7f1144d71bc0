"""Plugins that record every hook call, for lifecycle tests."""

from __future__ import annotations

from typing import ClassVar

from mega_cluster import Plugin

CALLS: list[tuple[str, str, str]] = []  # (app name, plugin name, hook)


class RecordingPlugin(Plugin):
    abstract = True
    hooks: ClassVar[tuple[str, ...]] = (
        "before_load",
        "load",
        "install",
        "after_enable",
        "after_disable",
        "before_stop",
    )

    def _record(self, hook: str) -> None:
        CALLS.append((self.app.name, self.name, hook))

    def before_load(self) -> None:
        self._record("before_load")

    def load(self) -> None:
        self._record("load")

    def install(self) -> None:
        self._record("install")

    def after_enable(self) -> None:
        self._record("after_enable")

    def after_disable(self) -> None:
        self._record("after_disable")

    def before_stop(self) -> None:
        self._record("before_stop")


class AsyncRecordingPlugin(RecordingPlugin):
    """The same hooks written as ``async def``."""

    abstract = True

    async def before_load(self) -> None:  # type: ignore[override]
        self._record("before_load")

    async def load(self) -> None:  # type: ignore[override]
        self._record("load")

    async def install(self) -> None:  # type: ignore[override]
        self._record("install")
