"""The suite's factories are the ones users import (``mega_cluster.testing.factories``)."""

from mega_cluster.testing.factories import *  # noqa: F403
from mega_cluster.testing.factories import __all__  # noqa: F401
