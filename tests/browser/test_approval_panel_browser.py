"""The approval panel in a real browser: Voilà serves a notebook showing the panel,
headless Chromium (Debian's package, driven by Selenium) clicks Approve, and the
platform records the approval. A screenshot is saved under ``artifacts/``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from iiotsim.admin import AdminClient

from ..server.test_standalone import free_port
from .chromium import chromium, needs_chromium, screenshot, wait_for_port

HERE = Path(__file__).resolve().parent

pytestmark = needs_chromium


def test_a_technician_approves_in_a_real_browser(tmp_path: Path) -> None:
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
    try:
        # wait for the port only: every page load starts a kernel that runs the notebook
        wait_for_port(port, timeout=60)
        with chromium(on_failure="approval-panel-failed.png") as browser:
            browser.get(f"http://127.0.0.1:{port}/")
            approve = WebDriverWait(browser, 90).until(
                ec.element_to_be_clickable((By.XPATH, "//button[normalize-space()='Approve']"))
            )
            saved = json.loads(state.read_text())
            code = saved["operation"]["verificationCode"]
            assert code in browser.page_source
            screenshot(browser, "approval-panel-pending.png")
            approve.click()
            WebDriverWait(browser, 30).until(
                ec.text_to_be_present_in_element((By.TAG_NAME, "body"), "approved")
            )
            done = screenshot(browser, "approval-panel.png")
        admin = AdminClient(saved["http_url"], saved["admin_key"])
        op = admin.get_operation(saved["operation"]["provisioningOperationId"])
        admin.close()
        assert op.state == "approved"
        assert done.stat().st_size > 10_000
    finally:
        voila.terminate()
        try:
            voila.wait(20)
        except subprocess.TimeoutExpired:
            voila.kill()
