from __future__ import annotations

from django.db import models


class PluginState(models.Model):
    """Per cluster app and plugin: enabled, installed and the installed version."""

    app_name = models.CharField(max_length=50)
    name = models.CharField(max_length=200)
    enabled = models.BooleanField(default=True)
    installed = models.BooleanField(default=False)
    version = models.CharField(max_length=50, blank=True, default="")
    installed_at = models.DateTimeField(null=True, blank=True)
    # The database install guard: a node claims the install with a conditional
    # UPDATE, so exactly one of several nodes booting together runs install().
    install_claimed_by = models.CharField(max_length=120, blank=True, default="")
    install_claimed_at = models.DateTimeField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        app_label = "mega_cluster"
        verbose_name = "plugin"
        verbose_name_plural = "plugins"
        ordering = ["app_name", "name"]
        constraints = [
            models.UniqueConstraint(
                fields=["app_name", "name"], name="mega_cluster_plugin_unique"
            )
        ]

    def __str__(self) -> str:
        return f"{self.app_name}:{self.name}"
