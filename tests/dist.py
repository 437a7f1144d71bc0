"""The package as users get it: sdist and wheel built once per run from HEAD.

``dist`` (session scope) clones the committed tree (so nothing uncommitted or
ignored leaks in) and runs ``python -m build`` on it; every test that installs
the package in a fresh virtualenv takes the wheel from there (the fixture is
registered in tests/conftest.py).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def run(
    *argv: str | Path,
    cwd: Path | None = None,
    timeout: float = 300,
    env: dict[str, str] | None = None,
) -> str:
    """Run a command; its stdout, or ``AssertionError`` with its output tail."""
    result = subprocess.run(
        [str(a) for a in argv],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
    )
    assert result.returncode == 0, (
        f"{argv} exited with {result.returncode}:\n{result.stdout[-3000:]}\n"
        f"{result.stderr[-3000:]}"
    )
    return result.stdout


@pytest.fixture(scope="session")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder holding the sdist and the wheel built from a clean clone of HEAD."""
    base = tmp_path_factory.mktemp("packaging")
    clone = base / "clone"
    run("git", "clone", "-q", "--no-hardlinks", ROOT, clone)
    run(sys.executable, "-m", "build", "--outdir", base / "dist", clone)
    return base / "dist"


def fresh_venv(path: Path, *requirements: str) -> Path:
    """A new virtualenv at ``path`` with only ``requirements``; its ``bin``."""
    run(sys.executable, "-m", "venv", path)
    run(
        path / "bin" / "python",
        "-m",
        "pip",
        "install",
        "-qq",
        "--disable-pip-version-check",
        *requirements,
        timeout=600,
    )
    return path / "bin"
