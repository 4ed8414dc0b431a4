"""Notebooks are kept without outputs in git; what they show is checked by their own
``assert`` cells when nbval runs them. A person keeps outputs in the lab: the git filter
``make`` configures (nbstripout, ``.gitattributes``) strips them when the notebook is
staged, so the check reads what git holds, not the working file."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))


def git(*args: str, cwd: Path = ROOT) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, check=False)


def in_git_checkout() -> bool:
    return shutil.which("git") is not None and git("rev-parse", "--git-dir").returncode == 0


def held_by_git(path: Path) -> dict[str, Any] | None:
    """The notebook as staged (the index), else as committed (HEAD); None when untracked."""
    relative = path.relative_to(ROOT).as_posix()
    for spec in (f":{relative}", f"HEAD:{relative}"):
        shown = git("show", spec)
        if shown.returncode == 0:
            notebook: dict[str, Any] = json.loads(shown.stdout)
            return notebook
    return None


def unstripped_cells(notebook: dict[str, Any], name: str) -> list[str]:
    return [
        f"{name} cell {i}"
        for i, cell in enumerate(notebook["cells"])
        if cell["cell_type"] == "code" and (cell.get("outputs") or cell.get("execution_count"))
    ]


def test_there_are_notebooks() -> None:
    assert NOTEBOOKS


@pytest.mark.skipif(not in_git_checkout(), reason="not a git checkout: nothing held by git")
def test_outputs_are_stripped_in_git() -> None:
    offenders = []
    for path in NOTEBOOKS:
        notebook = held_by_git(path)
        if notebook is not None:
            offenders += unstripped_cells(notebook, path.name)
    assert offenders == [], "outputs staged or committed: run `make git-filter`, then git add"


def test_each_notebook_has_a_parameters_cell_and_asserts() -> None:
    for path in NOTEBOOKS:
        cells = json.loads(path.read_text())["cells"]
        assert any("parameters" in c.get("metadata", {}).get("tags", []) for c in cells), path
        assert any("assert " in "".join(c["source"]) for c in cells if c["cell_type"] == "code")


@pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")
@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
@pytest.mark.skipif(
    not (ROOT / ".venv" / "bin" / "nbstripout").exists(), reason="no .venv with nbstripout"
)
def test_the_git_filter_make_configures_strips_what_is_staged(tmp_path: Path) -> None:
    """A fresh repository set up as ``make`` sets up this one: a notebook with outputs is
    staged without them, keeping its cell ids, tags and kernel."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    subprocess.run(["git", "init", "-q"], cwd=tmp_path, check=True, env=env)
    shutil.copy(ROOT / ".gitattributes", tmp_path / ".gitattributes")
    (tmp_path / ".venv").symlink_to(ROOT / ".venv")
    subprocess.run(
        ["make", "--no-print-directory", "-f", str(ROOT / "Makefile"), "git-filter"],
        cwd=tmp_path,
        check=True,
        env=env,
    )
    kernel = {"display_name": "Python 3 (ipykernel)", "language": "python", "name": "python3"}
    executed = {
        "nbformat": 4,
        "nbformat_minor": 5,
        "metadata": {
            "kernelspec": kernel,
            "language_info": {"name": "python", "version": "3.11.9", "mimetype": "text/x-python"},
        },
        "cells": [
            {
                "cell_type": "code",
                "id": "lab-000",
                "metadata": {"tags": ["parameters"], "scrolled": True},
                "execution_count": 3,
                "source": ["FLEET = 200\n", "FLEET"],
                "outputs": [
                    {
                        "output_type": "execute_result",
                        "execution_count": 3,
                        "data": {"text/plain": ["200"]},
                        "metadata": {},
                    }
                ],
            }
        ],
    }
    (tmp_path / "lab.ipynb").write_text(json.dumps(executed, indent=1))
    added = subprocess.run(
        ["git", "add", "lab.ipynb"], cwd=tmp_path, capture_output=True, text=True, env=env
    )
    assert added.returncode == 0 and "filter" not in added.stderr, added.stderr
    staged = json.loads(
        subprocess.run(
            ["git", "show", ":lab.ipynb"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            check=True,
            env=env,
        ).stdout
    )
    assert unstripped_cells(staged, "lab.ipynb") == []
    (cell,) = staged["cells"]
    assert cell["id"] == "lab-000"
    assert cell["metadata"] == {"tags": ["parameters"]}
    assert "".join(cell["source"]) == "FLEET = 200\nFLEET"
    assert staged["metadata"] == {"kernelspec": kernel, "language_info": {"name": "python"}}
    # the working file keeps what the person saw
    assert json.loads((tmp_path / "lab.ipynb").read_text())["cells"][0]["outputs"]
