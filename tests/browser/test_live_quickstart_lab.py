"""The trainer's path in a real browser: JupyterLab (not only Voilà) in headless
Chromium, notebook 01 with ``LIVE = True``, Run All, then a click on Approve in the
panel while the notebook waits for the device. The notebook must run to its end with
no error and with the device's messages shown; what JupyterLab saved is then read back
from disk. Screenshots are kept under ``artifacts/``."""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from ..server.test_standalone import free_port
from .chromium import chromium, needs_chromium, screenshot, wait_for_port

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "01_quickstart.ipynb"

pytestmark = needs_chromium


def live_copy(directory: Path) -> Path:
    """Notebook 01 with its parameter ``LIVE`` set to True, as a trainer sets it."""
    nb = json.loads(NOTEBOOK.read_text())
    (parameters,) = [
        c for c in nb["cells"] if "parameters" in c.get("metadata", {}).get("tags", [])
    ]
    source = "".join(parameters["source"])
    assert source.count("LIVE = False") == 1, "notebook 01's parameters cell changed"
    parameters["source"] = source.replace("LIVE = False", "LIVE = True")
    path = directory / NOTEBOOK.name
    path.write_text(json.dumps(nb))
    return path


def jupyterlab(root: Path, port: int, token: str) -> subprocess.Popen[bytes]:
    """JupyterLab on ``root`` with private config, settings and workspace directories."""
    home = root.parent / "jupyter"
    env = {
        **os.environ,
        "JUPYTER_PREFER_ENV_PATH": "1",  # this environment's kernel
        "JUPYTER_CONFIG_DIR": str(home / "config"),
        "JUPYTER_RUNTIME_DIR": str(home / "runtime"),
        "JUPYTERLAB_SETTINGS_DIR": str(home / "settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(home / "workspaces"),
    }
    command = [
        sys.executable, "-m", "jupyterlab", "--no-browser", f"--port={port}",
        "--ServerApp.ip=127.0.0.1", f"--ServerApp.root_dir={root}",
        f"--IdentityProvider.token={token}", "--LabApp.news_url=",
        "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
    ]  # fmt: skip
    if hasattr(os, "geteuid") and os.geteuid() == 0:
        command.append("--allow-root")
    log = (root.parent / "jupyterlab.log").open("wb")
    return subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)


def run_menu(browser: Any, menu: str, item: str) -> None:
    """Click a JupyterLab menu item by the labels a person reads."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(browser, 30)
    wait.until(
        ec.element_to_be_clickable(
            (By.XPATH, f"//li[contains(@class,'lm-MenuBar-item')][normalize-space()='{menu}']")
        )
    ).click()
    wait.until(
        ec.element_to_be_clickable(
            (
                By.XPATH,
                "//li[contains(@class,'lm-Menu-item')]"
                f"[.//div[contains(@class,'lm-Menu-itemLabel')][normalize-space()='{item}']]",
            )
        )
    ).click()


def finished(browser: Any) -> bool:
    """Run All is over: the kernel is idle and no cell shows ``[*]`` (running or queued)."""
    from selenium.webdriver.common.by import By

    status = browser.find_element(By.CSS_SELECTOR, ".jp-StatusBar-Widget")
    prompts = browser.find_elements(By.CSS_SELECTOR, ".jp-InputPrompt")
    return "| Idle" in status.get_attribute("textContent") and not any(
        "*" in p.get_attribute("textContent") for p in prompts
    )


@pytest.mark.timeout(600)  # JupyterLab's start and a whole notebook in a browser
def test_a_trainer_runs_all_and_approves_in_jupyterlab(tmp_path: Path) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    root = tmp_path / "notebooks"
    root.mkdir()
    path = live_copy(root)
    port, token = free_port(), secrets.token_urlsafe(16)
    lab = jupyterlab(root, port, token)
    try:
        wait_for_port(port, timeout=120)
        with chromium(on_failure="lab-quickstart-failed.png") as browser:
            browser.get(f"http://127.0.0.1:{port}/lab/tree/{path.name}?token={token}&reset")
            WebDriverWait(browser, 120).until(
                ec.presence_of_element_located((By.CSS_SELECTOR, ".jp-Notebook .jp-Cell"))
            )
            # the kernel must be ready before Run All, or the first cells queue on nothing
            WebDriverWait(browser, 120).until(
                lambda b: (
                    "Idle"
                    in b.find_element(By.CSS_SELECTOR, ".jp-StatusBar-Widget").get_attribute(
                        "textContent"
                    )
                    or b.find_elements(
                        By.XPATH,
                        "//*[contains(@title,'Kernel status: Idle') or "
                        "contains(@aria-label,'Idle')]",
                    )
                )
            )
            run_menu(browser, "Run", "Run All Cells")
            approve = WebDriverWait(browser, 180).until(
                ec.element_to_be_clickable((By.XPATH, "//button[normalize-space()='Approve']"))
            )
            screenshot(browser, "lab-quickstart-pending.png")
            approve.click()
            WebDriverWait(browser, 240, poll_frequency=1).until(finished)
            browser.execute_script(  # the device's telemetry plot, for the screenshot
                "const images = document.querySelectorAll('.jp-RenderedImage');"
                "if (images.length) images[images.length - 1].scrollIntoView();"
            )
            screenshot(browser, "lab-quickstart-done.png")
            before = path.stat().st_mtime_ns
            run_menu(browser, "File", "Save Notebook")
            WebDriverWait(browser, 30).until(lambda _b: path.stat().st_mtime_ns != before)
    finally:
        lab.terminate()
        try:
            lab.wait(20)
        except subprocess.TimeoutExpired:
            lab.kill()
    saved = json.loads(path.read_text())
    code = [c for c in saved["cells"] if c["cell_type"] == "code"]
    errors = [o for c in code for o in c["outputs"] if o["output_type"] == "error"]
    assert errors == [], errors
    assert all(c["execution_count"] for c in code)
    # the approval happened by the click: the cell that waits says who it waited for
    text = "".join(
        "".join(o.get("text", ""))
        for c in code
        for o in c["outputs"]
        if o["output_type"] == "stream"
    )
    assert "Click Approve" in text
    images = [o for c in code for o in c["outputs"] if "image/png" in o.get("data", {})]
    assert images, "the telemetry plot is missing"
