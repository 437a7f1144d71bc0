"""Child settings for the install-once test: default database = the run's PostgreSQL."""

import os

from tests.settings import *  # noqa: F403
from tests.settings import DATABASES, INSTALLED_APPS, PG_TEST_NAME

INSTALLED_APPS = [*INSTALLED_APPS, "tests.plugin_apps.counter"]
DATABASES = {"default": {**DATABASES["postgres"], "NAME": PG_TEST_NAME}}
MEGA_CLUSTER = {"APP_NAME": os.environ["MC_APP_NAME"]}
