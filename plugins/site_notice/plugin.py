"""A small real plugin: installs a welcome notice once per cluster, keeps it in memory."""

from __future__ import annotations

from mega_cluster import Plugin

from .models import Notice

WELCOME = "Welcome! This banner was created once by the site_notice plugin's install()."


class SiteNoticePlugin(Plugin):
    name = "site_notice"
    version = "1.0.0"

    def load(self) -> None:
        self.reload()

    def install(self) -> None:
        Notice.objects.create(text=WELCOME)
        self.reload()

    def handle_sync_gap(self) -> None:
        self.reload()

    def reload(self) -> None:
        """Read the newest active notice into this node's memory."""
        notice = Notice.objects.filter(active=True).first()
        self._text = notice.text if notice else ""

    def current(self) -> str:
        if not hasattr(self, "_text"):
            self.reload()
        return self._text
