from __future__ import annotations

from typing import Any

from django.core.exceptions import ValidationError
from django.core.validators import MinValueValidator
from django.db import models

#: The policy fields a caller may change, with their defaults (seconds).
POLICY_FIELDS = {
    "token_expires_in": 24 * 3600,
    "session_expires_in": 7 * 24 * 3600,
    "renew_window": 15 * 60,
}


class TokenPolicy(models.Model):
    """How long API tokens live (the NocoBase auth example's token policy).

    Read through ``AuthPolicyPlugin.policy()`` (cached on every node); change it
    through ``AuthPolicyPlugin.update_policy()`` or the admin, which invalidate the
    cache on every node after the transaction commits.
    """

    name = models.SlugField(max_length=50, unique=True, default="default")
    token_expires_in = models.PositiveIntegerField(
        default=POLICY_FIELDS["token_expires_in"],
        validators=[MinValueValidator(1)],
        help_text="Seconds a token is valid after it is issued.",
    )
    session_expires_in = models.PositiveIntegerField(
        default=POLICY_FIELDS["session_expires_in"],
        validators=[MinValueValidator(1)],
        help_text="Seconds after sign-in when renewing stops working.",
    )
    renew_window = models.PositiveIntegerField(
        default=POLICY_FIELDS["renew_window"],
        help_text="Seconds after expiry during which an expired token may be renewed.",
    )
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "token policies"
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        if (
            self.token_expires_in
            and self.session_expires_in
            and self.session_expires_in < self.token_expires_in
        ):
            raise ValidationError(
                {"session_expires_in": "must not be shorter than token_expires_in."}
            )

    def as_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {"name": self.name}
        data.update({f: getattr(self, f) for f in POLICY_FIELDS})
        data["updated_at"] = self.updated_at.isoformat() if self.updated_at else None
        return data
