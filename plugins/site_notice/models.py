from django.db import models


class Notice(models.Model):
    """A banner shown on the example project's pages; the newest active one wins."""

    text = models.CharField(max_length=300)
    active = models.BooleanField(default=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return self.text
