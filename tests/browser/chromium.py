"""Headless Chromium (Debian's package) driven by Selenium, for the browser tests."""

from __future__ import annotations

import shutil
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")
ARTIFACTS = Path(__file__).resolve().parents[2] / "artifacts"

needs_chromium = pytest.mark.skipif(
    not (CHROMIUM and DRIVER),
    reason="needs Debian's chromium and chromium-driver (.ci/run installs them)",
)


def wait_for_port(port: int, *, timeout: float) -> None:
    """Wait until something listens on the loopback port (a server process starting)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"nothing listened on port {port} within {timeout:g} s"
                ) from None
            time.sleep(0.1)  # polling a server's start-up, not waiting for clock time


@contextmanager
def chromium(
    *, width: int = 1400, height: int = 900, on_failure: str | None = None
) -> Iterator[Any]:
    """A headless Chromium session, quit on exit; a failing block leaves a screenshot
    named ``on_failure`` under ``artifacts/``."""
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = str(CHROMIUM)
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage"):
        options.add_argument(arg)
    options.add_argument(f"--window-size={width},{height}")
    browser = webdriver.Chrome(service=Service(str(DRIVER)), options=options)
    try:
        yield browser
    except BaseException:
        if on_failure:
            screenshot(browser, on_failure)
        raise
    finally:
        browser.quit()


def screenshot(browser: Any, name: str) -> Path:
    """Save a screenshot under ``artifacts/`` (kept by CI as a test artifact)."""
    ARTIFACTS.mkdir(exist_ok=True)
    path = ARTIFACTS / name
    browser.save_screenshot(str(path))
    return path
