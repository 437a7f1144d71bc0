""".ci/import_cycles.py, the CI gate against import cycles inside the package."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / ".ci" / "import_cycles.py"


def _package(tmp_path: Path, files: dict[str, str]) -> Path:
    package = tmp_path / "pkg"
    for name, text in {"__init__.py": "", **files}.items():
        path = package / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return package


def _run(package: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SCRIPT), str(package)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_planted_cycle_fails_and_names_its_imports(tmp_path):
    """Two modules importing each other at module level: exit 1, and the output
    names both imports with their lines."""
    package = _package(
        tmp_path,
        {
            "a.py": "import os\nfrom . import b\n",
            "b.py": "from .a import thing\n",
            "c.py": "from . import a\n",  # depends on the cycle, is not part of it
        },
    )
    result = _run(package)
    assert result.returncode == 1, result.stdout
    assert "pkg.a (line 2) imports pkg.b" in result.stdout
    assert "pkg.b (line 1) imports pkg.a" in result.stdout
    assert "pkg.c" not in result.stdout
    assert "1 import cycle(s)" in result.stdout


def test_an_import_inside_a_function_counts(tmp_path):
    """A deferred import still ties the two modules together at run time."""
    package = _package(
        tmp_path,
        {
            "sub/__init__.py": "",
            "sub/x.py": "def f():\n    from ..y import g\n    return g\n",
            "y.py": "from .sub.x import f\n\ndef g():\n    return f\n",
        },
    )
    result = _run(package)
    assert result.returncode == 1, result.stdout
    assert "pkg.sub.x (line 2) imports pkg.y" in result.stdout


def test_imports_for_annotations_only_do_not_count(tmp_path):
    """Imports under ``if TYPE_CHECKING:`` never run: no cycle (its else branch
    does run, and counts)."""
    package = _package(
        tmp_path,
        {
            "a.py": "from typing import TYPE_CHECKING\nfrom . import b\n"
            "if TYPE_CHECKING:\n    from .b import B\n",
            "b.py": "import typing\nif typing.TYPE_CHECKING:\n    from .a import A\n"
            "else:\n    import json\n",
        },
    )
    result = _run(package)
    assert result.returncode == 0, result.stdout
    assert result.stdout == ""


def test_mega_cluster_has_no_import_cycle():
    """The package itself passes the gate .ci/run applies."""
    result = _run(ROOT / "mega_cluster")
    assert result.returncode == 0, result.stdout
