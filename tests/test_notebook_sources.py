"""One source per notebook: each ``notebooks/NN_name.ipynb`` is paired with a reviewable
``NN_name.py`` (jupytext percent format, ``notebooks/jupytext.toml``). JupyterLab's
jupytext contents manager writes both on save; an edit to one file alone (a .py edited in
an editor, a notebook written by a script) leaves them apart, which this test catches."""

from __future__ import annotations

import fnmatch
import runpy
from pathlib import Path
from typing import Any

import jupytext

NOTEBOOKS_DIR = Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOKS_DIR.glob("*.ipynb"))
SOURCES = sorted(NOTEBOOKS_DIR.glob("[0-9][0-9]_*.py"))
SYNC = "run `.venv/bin/jupytext --sync notebooks/*.ipynb` (the newer of the pair wins)"


def cells(path: Path) -> list[tuple[str, str, list[str]]]:
    """What a reviewer reads in a cell: its type, source and tags (ids and outputs live
    only in the .ipynb; jupytext keeps the ids of unchanged cells when it syncs)."""
    notebook: Any = jupytext.read(path)
    return [
        (cell.cell_type, cell.source, list(cell.metadata.get("tags", [])))
        for cell in notebook.cells
    ]


def test_every_notebook_has_its_paired_source_and_no_source_is_orphaned() -> None:
    assert NOTEBOOKS
    assert {p.stem for p in NOTEBOOKS} == {p.stem for p in SOURCES}, SYNC


def test_each_pair_holds_the_same_cells() -> None:
    apart = []
    for notebook in NOTEBOOKS:
        source = notebook.with_suffix(".py")
        if not source.exists():
            continue
        in_notebook, in_source = cells(notebook), cells(source)
        if in_notebook != in_source:
            pairs = zip(in_notebook, in_source, strict=False)  # a cell added: the shorter ends
            first = next(
                (i for i, (a, b) in enumerate(pairs) if a != b),
                min(len(in_notebook), len(in_source)),
            )
            apart.append(f"{notebook.name} and {source.name} differ from cell {first}")
    assert apart == [], f"{apart}: {SYNC}"


def test_the_paired_sources_have_the_parameters_tag() -> None:
    for source in SOURCES:
        assert any("parameters" in tags for _, _, tags in cells(source)), source


def test_pytest_does_not_import_the_paired_sources() -> None:
    """``--doctest-modules`` would import each .py, i.e. run the notebook (90 s to collect
    ``notebooks/`` before notebooks/conftest.py ignored them)."""
    ignored = runpy.run_path(str(NOTEBOOKS_DIR / "conftest.py"))["collect_ignore_glob"]
    assert SOURCES
    for source in SOURCES:
        assert any(fnmatch.fnmatch(source.name, glob) for glob in ignored), source
