"""Child process of ``test_code_samples``: run one page's python samples in order.

argv: the JSON file of blocks and the JSON list of app labels the page's file
blocks define (migrated first). The settings module is written by the test.
"""

from __future__ import annotations

import json
import sys

import django

django.setup()

from django.core.management import call_command  # noqa: E402

from mega_cluster import conf  # noqa: E402
from mega_cluster.registry import registry  # noqa: E402


def check_cluster_setting(value: object, where: str) -> None:
    """A ``MEGA_CLUSTER`` a sample assigns must parse without errors."""
    if not isinstance(value, dict):
        raise AssertionError(f"{where}: MEGA_CLUSTER is not a dict")
    apps = value.get("APPS") or {value.get("APP_NAME", "main"): value}
    for name, app_value in apps.items():
        problems: list = []
        shape = {k: v for k, v in app_value.items() if k != "APPS"}
        conf.parse_app(name, shape, problems=problems)
        errors = [p for p in problems if p.level == "error"]
        if errors:
            raise AssertionError(f"{where}: {'; '.join(p.msg for p in errors)}")


def main() -> None:
    blocks = json.load(open(sys.argv[1]))
    labels = json.loads(sys.argv[2])
    if labels:
        call_command("makemigrations", *labels, verbosity=0)
    call_command("migrate", verbosity=0)
    namespace: dict = {"__name__": "__docs__"}
    try:
        for block in blocks:
            where = f"{block['page']} line {block['line']}"
            before = namespace.get("MEGA_CLUSTER")
            exec(compile(block["code"], where, "exec"), namespace)
            if namespace.get("MEGA_CLUSTER") is not before:
                check_cluster_setting(namespace["MEGA_CLUSTER"], where)
            print(f"ran {where}", flush=True)
    finally:
        registry.stop_all()


if __name__ == "__main__":
    main()
