"""The node registry: which processes of the cluster are alive (``app.node_registry``)."""

from .registry import ROLES, NodeInfo, NodeRegistry

__all__ = ["ROLES", "NodeInfo", "NodeRegistry"]
