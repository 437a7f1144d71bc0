"""The whole exception hierarchy of mega_cluster.

Every class has a one-sentence docstring written for the person who sees it in a
traceback. Driver errors are translated with ``raise ... from exc`` so the original
error stays available as ``__cause__``.
"""

from __future__ import annotations

from django.core.exceptions import AppRegistryNotReady, ImproperlyConfigured


class MegaClusterError(Exception):
    """Base class of every error raised by mega_cluster."""


class ConfigurationError(MegaClusterError, ImproperlyConfigured):
    """The ``MEGA_CLUSTER`` setting or a plugin declaration is wrong; the message says what to change."""


class PluginError(ConfigurationError):
    """A plugin cannot be loaded: bad declaration, unknown dependency or a dependency cycle."""


# Registry -----------------------------------------------------------------------


class AppNotReady(MegaClusterError, AppRegistryNotReady):
    """The cluster registry is used before Django is set up (call ``django.setup()`` first)."""


class AppNotFound(MegaClusterError, LookupError):
    """No cluster app of that name is configured in ``MEGA_CLUSTER``."""


class AmbiguousApp(MegaClusterError, LookupError):
    """Several cluster apps are configured, so ``get_app()`` needs a name."""


class AppStartFailed(MegaClusterError):
    """The cluster app failed to start in this process; the message gives the reason."""


# Input --------------------------------------------------------------------------


class InvalidName(MegaClusterError, ValueError):
    """A channel name, lock key or cache key is empty, too long or has forbidden characters."""


class InvalidLockKey(InvalidName):
    """A lock key is not a non-empty string of at most 512 bytes."""


class MessageEncodeError(MegaClusterError, ValueError):
    """A payload is not strict JSON, not valid Unicode, too deep or too large; nothing was sent."""


class InvalidArgument(MegaClusterError, ValueError):
    """A duration or count is out of range (negative, NaN, infinite or over its documented maximum)."""


class ArgumentTypeError(MegaClusterError, TypeError):
    """An argument has the wrong type (a bool or a string where seconds or a count are expected)."""


# Backends -----------------------------------------------------------------------


class BackendUnavailable(MegaClusterError, ConnectionError):
    """The server behind a backend cannot be reached; the driver error is the ``__cause__``."""


class CircuitOpen(BackendUnavailable):
    """The backend failed several calls in a row, so calls fail fast (nothing was sent) until a background probe reaches its server again."""


# Locks --------------------------------------------------------------------------


class LockError(MegaClusterError):
    """Base class of lock errors."""


class LockTimeout(LockError, TimeoutError):
    """The lock was not acquired within ``wait`` seconds; the function was not run."""


class LockLost(LockError):
    """The lease expired or was taken while the section ran, so it was not protected."""


# Cache --------------------------------------------------------------------------


class CacheNameTaken(MegaClusterError, ValueError):
    """A cache with this name already exists in this cluster app."""


# Event queue ----------------------------------------------------------------------


class EventQueueError(MegaClusterError):
    """Base class of event-queue errors."""


class EventNotFound(EventQueueError, LookupError):
    """No event (or no dead letter) has that id."""


class AlreadySubscribed(EventQueueError, ValueError):
    """This node already consumes the channel; unsubscribe it first."""
