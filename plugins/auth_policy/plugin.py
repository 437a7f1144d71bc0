"""Token policy read through the plugin cache, invalidated on every node on commit.

The NocoBase cluster guide's auth example: every request needs the token policy,
so it is cached (``self.cache.wrap``: one database read per key across the
cluster while the others wait); an edit deletes the cached entry after the
transaction commits, here and — through a sync message — on every other node,
whose cache store may be process-local.
"""

from __future__ import annotations

import datetime
from typing import Any

from django.db import router, transaction
from django.utils import timezone

from mega_cluster import Plugin

from .models import POLICY_FIELDS, TokenPolicy


class PolicyNotFound(LookupError):
    """No token policy has that name."""


def cache_key(name: str) -> str:
    return f"policy:{name}"


class AuthPolicyPlugin(Plugin):
    name = "auth_policy"
    version = "1.0.0"
    #: Seconds a policy stays cached when nothing invalidates it.
    cache_ttl = 300.0

    def install(self) -> None:
        TokenPolicy.objects.get_or_create(name="default")

    # reading ---------------------------------------------------------------------

    def policy(self, name: str = "default") -> dict[str, Any]:
        """The policy as a dict, from the cache (computed once across the cluster).

        Raises ``PolicyNotFound`` when no policy has that name (nothing cached).
        """
        return self.cache.wrap(
            cache_key(name), lambda: self._read(name), ttl=self.cache_ttl
        )

    @staticmethod
    def _read(name: str) -> dict[str, Any]:
        try:
            return TokenPolicy.objects.get(name=name).as_dict()
        except TokenPolicy.DoesNotExist:
            raise PolicyNotFound(f"No token policy named {name!r}.") from None

    def token_expires_at(
        self, issued_at: datetime.datetime, name: str = "default"
    ) -> datetime.datetime:
        """When a token issued at ``issued_at`` expires under the current policy."""
        seconds = self.policy(name)["token_expires_in"]
        return issued_at + datetime.timedelta(seconds=seconds)

    def can_renew(
        self,
        issued_at: datetime.datetime,
        signed_in_at: datetime.datetime,
        now: datetime.datetime | None = None,
        name: str = "default",
    ) -> bool:
        """Whether an (expired) token may be exchanged for a new one now."""
        policy = self.policy(name)
        now = now or timezone.now()
        expired_at = issued_at + datetime.timedelta(seconds=policy["token_expires_in"])
        window_end = expired_at + datetime.timedelta(seconds=policy["renew_window"])
        session_end = signed_in_at + datetime.timedelta(
            seconds=policy["session_expires_in"]
        )
        return now <= window_end and now <= session_end

    # writing ---------------------------------------------------------------------

    def update_policy(self, name: str = "default", **values: Any) -> dict[str, Any]:
        """Change a policy (created when missing) and invalidate it on every node.

        ``values`` are among ``token_expires_in``, ``session_expires_in`` and
        ``renew_window`` (seconds); anything else is a ``TypeError``, an invalid
        value a ``django.core.exceptions.ValidationError`` (nothing saved).
        """
        unknown = sorted(set(values) - set(POLICY_FIELDS))
        if unknown:
            raise TypeError(
                f"Unknown token policy field(s) {', '.join(unknown)}; expected "
                f"{', '.join(POLICY_FIELDS)}."
            )
        alias = router.db_for_write(TokenPolicy)
        with transaction.atomic(using=alias):
            # Write first (row lock; on SQLite the write lock before any read).
            TokenPolicy.objects.filter(name=name).update(updated_at=timezone.now())
            policy, _ = TokenPolicy.objects.get_or_create(name=name)
            for field, value in values.items():
                setattr(policy, field, value)
            policy.full_clean()
            policy.save()
            self.policy_changed(name)
        return policy.as_dict()

    def policy_changed(self, name: str) -> None:
        """Drop the cached policy here and on every node once the transaction
        commits (nothing happens on rollback). Call it after any write that does
        not go through :meth:`update_policy` (the admin does)."""
        alias = router.db_for_write(TokenPolicy)
        transaction.on_commit(lambda: self.cache.delete(cache_key(name)), using=alias)
        self.send_sync_message({"policy": name}, transaction=alias)

    # other nodes -----------------------------------------------------------------

    def handle_sync_message(self, message: Any) -> None:
        self.cache.delete(cache_key(message["policy"]))

    def handle_sync_gap(self) -> None:
        # Which policies changed is unknown: start the namespace afresh (O(1)).
        self.cache.reset()
