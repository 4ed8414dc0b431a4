"""Notebooks are kept without outputs in git; what they show is checked by their own
``assert`` cells when nbval runs them."""

from __future__ import annotations

import json
from pathlib import Path

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))


def test_there_are_notebooks() -> None:
    assert NOTEBOOKS


def test_outputs_are_stripped() -> None:
    offenders = []
    for path in NOTEBOOKS:
        for i, cell in enumerate(json.loads(path.read_text())["cells"]):
            if cell["cell_type"] != "code":
                continue
            if cell.get("outputs") or cell.get("execution_count"):
                offenders.append(f"{path.name} cell {i}")
    assert offenders == []


def test_each_notebook_has_a_parameters_cell_and_asserts() -> None:
    for path in NOTEBOOKS:
        cells = json.loads(path.read_text())["cells"]
        assert any("parameters" in c.get("metadata", {}).get("tags", []) for c in cells), path
        assert any("assert " in "".join(c["source"]) for c in cells if c["cell_type"] == "code")
