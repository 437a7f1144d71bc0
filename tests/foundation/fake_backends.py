"""Backend classes with chosen check attributes (real classes, used by check tests)."""

from mega_cluster.backends import Backend


class NeedsMissingModule(Backend):
    requires = (("mc_module_that_is_not_installed", "redis"),)


class NeedsUrl(Backend):
    required_options = ("URL",)


class ProcessLocal(Backend):
    cluster_safe = False
