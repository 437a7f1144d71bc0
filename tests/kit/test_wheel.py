"""The testing kit as a plugin author gets it: a project outside the repository,
mega_cluster installed from the wheel (with its ``testing`` extra: pytest,
pytest-django, factory-boy) in a fresh virtualenv, tested with only what
docs/testing.md shows.

The project is the page's own files (the ``flags`` plugin and its tests), a
settings module and a ``pytest.ini``; pytest finds the kit through its
``pytest11`` entry point. Marked ``packaging``: it builds and installs.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from tests.dist import fresh_venv, run

pytestmark = [pytest.mark.packaging, pytest.mark.timeout(900)]

ROOT = Path(__file__).resolve().parent.parent.parent
FILE_BLOCK = re.compile(r"^```python file=(\S+)[^\n]*\n(.*?)^```[ \t]*$", re.S | re.M)

SETTINGS = """
from pathlib import Path

BASE = Path(__file__).resolve().parent
SECRET_KEY = "kit-wheel-test"
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
INSTALLED_APPS = [
    "mega_cluster",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "flags",
]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.sqlite3",
        "NAME": str(BASE / "db.sqlite3"),
        "TEST": {"NAME": str(BASE / "test.sqlite3")},
    }
}
MEGA_CLUSTER = {"APP_NAME": "site"}
"""


def page_files() -> dict[str, str]:
    text = (ROOT / "docs" / "testing.md").read_text()
    return {path: code for path, code in FILE_BLOCK.findall(text)}


def test_a_project_outside_the_repository_passes_with_the_documented_kit(
    dist: Path,
    tmp_path: Path,
):
    (wheel,) = dist.glob("mega_cluster-*.whl")
    bin_ = fresh_venv(tmp_path / "venv", f"{wheel}[testing]")
    project = tmp_path / "project"
    files = page_files()
    assert {"flags/plugin.py", "flags/tests/test_consistency.py"} <= set(files)
    for name, code in files.items():
        target = project / name
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(code)
    for folder in (project / "flags", project / "flags" / "tests"):
        (folder / "__init__.py").touch()
    (project / "mysite").mkdir()
    (project / "mysite" / "__init__.py").touch()
    (project / "mysite" / "settings.py").write_text(SETTINGS)
    (project / "pytest.ini").write_text(
        "[pytest]\nDJANGO_SETTINGS_MODULE = mysite.settings\n"
    )
    env = {
        key: value
        for key, value in os.environ.items()
        if key not in ("PYTHONPATH", "DJANGO_SETTINGS_MODULE", "VIRTUAL_ENV")
    }
    env["PYTHONPATH"] = str(project)
    python = bin_ / "python"
    where = run(
        python,
        "-c",
        "import mega_cluster; print(mega_cluster.__file__)",
        cwd=project,
        env=env,
    )
    assert where.startswith(str(tmp_path / "venv")), where
    run(
        python,
        "-m",
        "django",
        "makemigrations",
        "flags",
        "--settings=mysite.settings",
        cwd=project,
        env=env,
    )
    tests = sorted(p for p in files if p.startswith("flags/tests/test_"))
    out = run(
        python,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        *tests,
        cwd=project,
        env=env,
        timeout=300,
    )
    expected = sum(
        code.count("\ndef test_") + code.startswith("def test_")
        for name, code in files.items()
        if name in tests
    )
    assert f"{expected} passed" in out, out[-3000:]
    # inert without pytest-django: no fixture, and nothing breaks
    fixtures = run(
        python,
        "-m",
        "pytest",
        "--fixtures",
        "-p",
        "no:django",
        "-p",
        "no:cacheprovider",
        cwd=project,
        env=env,
    )
    assert "cluster" not in re.findall(r"^(\w+)", fixtures, re.M)
    with_django = run(
        python,
        "-m",
        "pytest",
        "--fixtures",
        "-p",
        "no:cacheprovider",
        cwd=project,
        env=env,
    )
    assert re.search(r"^cluster\b.*\n.*An in-process cluster", with_django, re.M), (
        with_django[-3000:]
    )
