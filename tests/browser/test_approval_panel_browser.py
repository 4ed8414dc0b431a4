"""The approval panel in a real browser: Voilà serves a notebook showing the panel,
headless Chromium (Debian's package, driven by Selenium) clicks Approve, and the
platform records the approval. A screenshot is saved under ``artifacts/``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from iiotsim.admin import AdminClient

from ..server.test_standalone import free_port
from .chromium import chromium, needs_chromium, screenshot, wait_for_port

HERE = Path(__file__).resolve().parent

pytestmark = needs_chromium


@contextmanager
def voila(notebook: str, state: Path) -> Iterator[int]:
    """Voilà serving ``notebook`` (which writes what the test needs to ``state``)."""
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "voila", str(HERE / notebook), "--no-browser",
         f"--port={port}", "--Voila.ip=127.0.0.1"],
        env={**os.environ, "IIOT_BROWSER_STATE": str(state), "JUPYTER_PREFER_ENV_PATH": "1"},
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    try:
        # wait for the port only: every page load starts a kernel that runs the notebook
        wait_for_port(port, timeout=60)
        yield port
    finally:
        server.terminate()
        try:
            server.wait(20)
        except subprocess.TimeoutExpired:
            server.kill()


def test_a_technician_approves_in_a_real_browser(tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    state = tmp_path / "state.json"
    with (
        voila("approval_panel.ipynb", state) as port,
        chromium(on_failure="approval-panel-failed.png") as browser,
    ):
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
        with AdminClient(saved["http_url"], saved["admin_key"]) as admin:  # platform still up
            op = admin.get_operation(saved["operation"]["provisioningOperationId"])
    assert op.state == "approved"
    assert done.stat().st_size > 10_000


def test_a_trainer_picks_a_workspace_and_approves_only_there(tmp_path: Path) -> None:
    """Issue 16's trainer: one platform, a workspace per trainee, each with a device called
    ``lab-device`` waiting. In the browser the trainer picks trainee-02 and clicks Approve:
    trainee-02's operation is approved, trainee-01's still waits."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import Select, WebDriverWait

    state = tmp_path / "state.json"
    with (
        voila("workspace_picker.ipynb", state) as port,
        chromium(on_failure="workspace-picker-failed.png") as browser,
    ):
        browser.get(f"http://127.0.0.1:{port}/")
        picker = WebDriverWait(browser, 90).until(
            ec.presence_of_element_located((By.TAG_NAME, "select"))
        )
        saved = json.loads(state.read_text())
        ops = saved["operations"]
        row_approve = "//button[normalize-space()='Approve']"  # a row's, not "Approve all"
        assert browser.find_elements(By.XPATH, row_approve) == []  # default has none waiting
        assert "No operation is waiting" in browser.find_element(By.TAG_NAME, "body").text
        Select(picker).select_by_visible_text("trainee-02")
        WebDriverWait(browser, 30).until(
            ec.text_to_be_present_in_element(
                (By.TAG_NAME, "body"), ops["trainee-02"]["verificationCode"]
            )
        )
        assert ops["trainee-01"]["verificationCode"] not in browser.page_source
        approve = WebDriverWait(browser, 30).until(
            ec.element_to_be_clickable((By.XPATH, row_approve))
        )
        approve.click()
        WebDriverWait(browser, 30).until(
            ec.text_to_be_present_in_element((By.TAG_NAME, "body"), "approved")
        )
        screenshot(browser, "workspace-picker.png")
        states = {}
        with AdminClient(saved["http_url"], saved["admin_key"]) as admin:  # platform still up
            for ws, op in ops.items():
                with admin.in_workspace(ws) as client:
                    states[ws] = client.get_operation(op["provisioningOperationId"]).state
    assert states == {"trainee-01": "pending", "trainee-02": "approved"}
