"""Headless Chromium (Debian's package) driven by Selenium; installed when missing."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def ensure_chromium() -> str | None:
    """Install chromium + chromium-driver with apt when missing; None when ready,
    else the reason they cannot be had."""
    if Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists():
        return None
    if shutil.which("apt-get") is None:
        return "chromium is not installed and there is no apt-get to install it"
    if os.geteuid() != 0:
        return "chromium is not installed and installing it needs root (apt-get)"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (
        ["apt-get", "update", "-q"],
        ["apt-get", "install", "-y", "-q", "chromium", "chromium-driver"],
    ):
        try:
            result = subprocess.run(
                argv, env=env, capture_output=True, text=True, timeout=900, check=False
            )
        except subprocess.TimeoutExpired:
            return f"{' '.join(argv)} did not finish within 900 s"
        if result.returncode != 0:
            return f"{' '.join(argv)} failed: {result.stderr[-500:]}"
    if not (Path(CHROMIUM).exists() and Path(CHROMEDRIVER).exists()):
        return "apt-get installed chromium but /usr/bin/chromium(driver) is missing"
    return None


@pytest.fixture(scope="session")
def chromium() -> str:
    reason = ensure_chromium()
    if reason is not None:
        pytest.skip(f"browser test skipped: {reason}")
    return CHROMIUM


@pytest.fixture
def browser(chromium: str, tmp_path: Path) -> Iterator[object]:
    """A headless Chromium WebDriver with a fresh profile, quit at teardown."""
    webdriver = pytest.importorskip(
        "selenium.webdriver", reason="selenium is not installed (dev group)"
    )
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for arg in (
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--disable-dev-shm-usage",
        "--window-size=1280,900",
        f"--user-data-dir={tmp_path / 'chrome-profile'}",
    ):
        options.add_argument(arg)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(30)
    try:
        yield driver
    finally:
        driver.quit()
