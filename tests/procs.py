"""Spawning real OS processes from tests: bounded waits, always cleaned up."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def child_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment for a child: same run id, test databases, tests.settings."""
    env = dict(os.environ)
    env.update(extra or {})
    env["MC_TEST_CHILD"] = "1"
    env["DJANGO_SETTINGS_MODULE"] = env.get("MC_CHILD_SETTINGS", "tests.settings")
    env["PYTHONPATH"] = str(ROOT) + os.pathsep + env.get("PYTHONPATH", "")
    return env


class ProcessGroup:
    """Start children with :meth:`spawn`; :meth:`cleanup` kills whatever is left."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[str]] = []

    def spawn(
        self,
        args: list[str],
        env: Mapping[str, str] | None = None,
        *,
        python: bool = True,
    ) -> subprocess.Popen[str]:
        argv = [sys.executable, *args] if python else list(args)
        proc = subprocess.Popen(
            argv,
            cwd=ROOT,
            env=child_env(env),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            start_new_session=True,
        )
        self.procs.append(proc)
        return proc

    def wait_all(self, timeout: float) -> list[tuple[int, str, str]]:
        """Wait for every child (bounded); returns (returncode, stdout, stderr)."""
        deadline = time.monotonic() + timeout
        results = []
        for proc in self.procs:
            remaining = max(0.1, deadline - time.monotonic())
            try:
                out, err = proc.communicate(timeout=remaining)
            except subprocess.TimeoutExpired:
                self.cleanup()
                raise AssertionError(
                    f"child {proc.args} did not finish within {timeout}s"
                ) from None
            results.append((proc.returncode, out, err))
        return results

    def cleanup(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            try:
                proc.communicate(timeout=10)
            except (subprocess.TimeoutExpired, ValueError):
                pass
