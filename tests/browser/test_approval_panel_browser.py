"""The approval panel in a real browser: Voilà serves a notebook showing the panel,
headless Chromium (Debian's package, driven by Selenium) clicks Approve, and the
platform records the approval. A screenshot is saved under ``artifacts/``."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from iiotsim.admin import AdminClient

from ..server.test_standalone import free_port

HERE = Path(__file__).resolve().parent
ARTIFACTS = HERE.parents[1] / "artifacts"
CHROMIUM, DRIVER = shutil.which("chromium"), shutil.which("chromedriver")

pytestmark = pytest.mark.skipif(
    not (CHROMIUM and DRIVER),
    reason="needs Debian's chromium and chromium-driver (.ci/run installs them)",
)


def test_a_technician_approves_in_a_real_browser(tmp_path: Path) -> None:
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    port = free_port()
    state = tmp_path / "state.json"
    voila = subprocess.Popen(
        [sys.executable, "-m", "voila", str(HERE / "approval_panel.ipynb"), "--no-browser",
         f"--port={port}", "--Voila.ip=127.0.0.1"],
        env={**os.environ, "IIOT_BROWSER_STATE": str(state), "JUPYTER_PREFER_ENV_PATH": "1"},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    options = Options()
    options.binary_location = str(CHROMIUM)
    for arg in (
        "--headless=new",
        "--no-sandbox",
        "--disable-dev-shm-usage",
        "--window-size=1400,900",
    ):
        options.add_argument(arg)
    browser = None
    try:
        url = f"http://127.0.0.1:{port}/"
        # wait for the port only: every page load starts a kernel that runs the notebook
        for _ in range(600):
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.1)
        browser = webdriver.Chrome(service=Service(str(DRIVER)), options=options)
        browser.get(url)
        approve = WebDriverWait(browser, 90).until(
            ec.element_to_be_clickable((By.XPATH, "//button[normalize-space()='Approve']"))
        )
        saved = json.loads(state.read_text())
        code = saved["operation"]["verificationCode"]
        assert code in browser.page_source
        ARTIFACTS.mkdir(exist_ok=True)
        browser.save_screenshot(str(ARTIFACTS / "approval-panel-pending.png"))
        approve.click()
        WebDriverWait(browser, 30).until(
            ec.text_to_be_present_in_element((By.TAG_NAME, "body"), "approved")
        )
        browser.save_screenshot(str(ARTIFACTS / "approval-panel.png"))
        admin = AdminClient(saved["http_url"], saved["admin_key"])
        op = admin.get_operation(saved["operation"]["provisioningOperationId"])
        admin.close()
        assert op.state == "approved"
        assert (ARTIFACTS / "approval-panel.png").stat().st_size > 10_000
    finally:
        if browser is not None:
            browser.quit()
        voila.terminate()
        try:
            voila.wait(20)
        except subprocess.TimeoutExpired:
            voila.kill()
