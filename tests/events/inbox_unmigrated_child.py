"""Child of test_idempotent_config: an inbox on an alias whose database has no
tables (an empty SQLite file at ``$MC_UNMIGRATED``); prints the error."""

import os

import django

django.setup()

from django.conf import settings  # noqa: E402
from django.db import connections  # noqa: E402

from mega_cluster.exceptions import ConfigurationError  # noqa: E402
from mega_cluster.inbox import get_inbox  # noqa: E402
from mega_cluster.testing import make_app  # noqa: E402

config = dict(connections.settings["default"])
config["NAME"] = os.environ["MC_UNMIGRATED"]
settings.DATABASES["unmigrated"] = config
app = make_app("unmigrated", {"INBOX": {"DATABASE": "unmigrated"}})
calls: list[int] = []
try:
    get_inbox(app).run("event:c", "m", calls.append, 1)
except ConfigurationError as exc:
    print(exc)
print("calls", calls)
