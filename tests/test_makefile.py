"""The Makefile hands uv the interpreter itself, not a launcher in front of it: uv took a
pyenv shim's path for another interpreter and deleted and rebuilt ``.venv`` on every
``make`` target (issue 12)."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
def test_make_passes_uv_the_interpreters_own_path() -> None:
    dry_run = subprocess.run(
        ["make", "-n", "-W", ".tools/bin/uv", "venv"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    given = re.search(r"--python (\S+)", dry_run)
    assert given, dry_run
    reported = subprocess.run(
        [given.group(1), "-c", "import sys; print(sys.executable)"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert reported == given.group(1)
