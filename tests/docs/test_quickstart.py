"""docs/quickstart.md, followed from its own code blocks as real processes.

The project is built in a temporary folder by ``django-admin startproject`` and the
page's blocks (``tests/docs/quickstart.py`` says how each kind is run); two
``runserver`` web nodes and a ``runworker`` start from the page's own command
lines, every ``curl`` line's output must be what the page shows, and the admin
pages must show what the page says they show.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
from django.conf import settings

from .quickstart import NODE_ID, PAGE, Admin, Run, new_run, steps

pytestmark = [pytest.mark.cluster, pytest.mark.redis]


def row(html: str, marker: str) -> str:
    """The ``<tr>`` of ``html`` holding ``marker``."""
    found = re.search(rf"<tr\b(?:(?!</tr>).)*?{re.escape(marker)}.*?</tr>", html, re.S)
    assert found, f"no row with {marker!r} in\n{html[:4000]}"
    return found.group()


def check_admin(run: Run, text: str, page_ids: list[str]) -> None:
    """Section 8: the Nodes, Queues, Plugins and Locks pages, as the page says."""
    password = re.search(r"DJANGO_SUPERUSER_PASSWORD=(\S+)", text).group(1)
    username = re.search(r"createsuperuser.*--username (\S+)", text).group(1)
    admin = Admin(run.ports["8001"], username, password)
    node_a, node_b, worker = (run.ids[i] for i in page_ids)

    nodes = admin.get("/admin/mega_cluster/node/")
    assert nodes.count('class="mc-node') == 3, nodes
    for node_id, role in ((node_a, "web"), (node_b, "web"), (worker, "worker")):
        tr = row(nodes, f'data-node="{node_id}"')
        assert 'data-status="alive"' in tr, tr
        assert f'<td class="field-role">{role}</td>' in tr, tr

    queues = admin.get("/admin/mega_cluster/clusterqueue/")
    counts = re.findall(
        r'<td class="mc-num[^"]*">(\d+)</td>', row(queues, "flags.changed")
    )
    pending, running, succeeded, failed, dead = map(int, counts[:5])
    assert (pending, running, succeeded, failed, dead) == (0, 0, 1, 0, 0), counts

    plugins = admin.get("/admin/mega_cluster/pluginstate/")
    tr = row(plugins, ">flags<")
    for column in ("enabled", "installed"):
        assert re.search(rf'class="field-{column}"><img [^>]*alt="True"', tr), tr

    locks = admin.get("/admin/mega_cluster/clusterlock/")
    assert "No lock is held." in locks, locks


def follow_the_page(
    bin_dir: Path, workdir: Path, app_name: str
) -> list[tuple[str, float]]:
    """Build and run the quickstart project with ``bin_dir``'s Python; check every
    claim of the page. Returns the seconds the outputs that follow another process
    took to show."""
    text = PAGE.read_text()
    page_ids = list(dict.fromkeys(NODE_ID.findall(text)))
    assert len(page_ids) == 3, page_ids  # node A, node B, the worker
    run = new_run(bin_dir, workdir, app_name=app_name, redis_url=settings.REDIS_URL)
    try:
        waited = steps(run, text)
        assert run.skipped == [
            "python -m venv .venv",
            "source .venv/bin/activate",
            'pip install "/path/to/mega_cluster[redis]"   # the folder of your clone',
        ], run.skipped
        assert set(run.ids) == set(page_ids), run.ids
        # the three processes of section 6, in the page's order: A, B, the worker;
        # each says once that its cluster app started, with its node id
        assert ["runserver", "runserver", "runworker"] == [
            line.split()[2] for line, _ in run.procs
        ]
        for index, page_id in enumerate(page_ids):
            log = run.log(index)
            started = re.findall(r"cluster app '[^']+' started on node (\S+)", log)
            assert started == [run.ids[page_id]], log
        # -v 2: the worker's terminal shows the event's outcome
        worker_log = run.log(2)
        assert re.search(
            r"^runworker: event \w+ on channel flags\.changed succeeded$",
            worker_log,
            re.M,
        ), worker_log
        check_admin(run, text, page_ids)
        run.check_alive()
        return waited
    finally:
        run.stop()


def test_the_quickstart_page_runs_as_written(tmp_path, unique_name):
    waited = follow_the_page(Path(sys.executable).parent, tmp_path, unique_name)
    print("waited for outputs:", waited)
