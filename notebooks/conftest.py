"""The ``NN_name.py`` files here are jupytext's paired sources of the notebooks, not
modules: ``--doctest-modules`` would import them, i.e. run each notebook (90 s for
``pytest --collect-only notebooks/``). nbval runs the ``.ipynb`` instead.

Each notebook also gets one more item after its last cell, ``executed HTML``: it puts
together the outputs nbval just collected from the cells (nothing runs twice), writes the
executed notebook as HTML to ``test-artifacts/notebooks/NN_name.html`` (what a person
opens without a kernel) and checks it: no error output, at least the notebook's number of
PNG plots, and no raw reprs such as ``np.float64(8.03…)`` in what a person reads. The
kernel's widget state is saved in the export, so a browser with internet access draws the
panels (their HTML manager loads from a CDN); offline they are blank, hence the count of
static plots: a notebook's key visual must be an image, not only a widget."""

from __future__ import annotations

import ast
import json
import re
from pathlib import Path
from typing import Any

import nbformat
import pytest
from nbconvert import HTMLExporter
from nbval.kernel import RunningKernel

collect_ignore_glob = ["[0-9][0-9]_*.py"]

ARTIFACTS = Path(__file__).resolve().parents[1] / "test-artifacts" / "notebooks"

# The plots each notebook must show in its static HTML export, by notebook stem. A
# notebook not listed here fails: a new notebook names its key visuals when it is added.
MIN_IMAGES = {
    "01_quickstart": 1,  # the device's telemetry
    "02_token_lifetime_policies": 2,  # policy heat maps, lifetime trade-off
    "03_twin_and_fleet_configurations": 1,
    "04_outages_and_reconnect_storms": 2,  # the reconnect storm, the fleet's recovery
    "05_security_incidents": 1,
    "06_digital_twin": 2,  # online devices over time, message latency
    "07_policy_from_fleet_data": 2,  # QQ plot of the fit, the policy trade-off
    "08_spotflow_sdk": 1,  # the telemetry the Spotflow SDK sent
}

SLOW_CELLS = {"06_digital_twin": 600}
"""Seconds a cell may take where pytest's 120 s is too short: notebook 06's hybrid run (60
real devices over 2 processes, a simulated day) took ~130 s with the machine at load 7."""

# What a person should never read in a notebook's output: a numpy scalar's repr (numpy 2
# prints ``np.float64(8.03)`` where a number was meant) or an object's default repr.
RAW_REPRS = re.compile(
    r"\bnp\.(?:float|int|uint|bool|str)\w*\(|<[\w.]+ (?:object )?at 0x[0-9a-f]+>"
)


def _execute_as_jupyterlab_does(self: Any, cell_input: str, allow_stdin: bool | None = None) -> Any:
    """nbval 0.11 runs cells with ``store_history=False``; IPython then looks for a cell's
    trailing ``;`` in the history (the previous cell), so ``ax.legend();`` printed
    ``<matplotlib.legend.Legend at 0x…>`` and ``qq(fit);`` drew its figure twice, in the
    test only. With history, a cell's output is what a person sees in JupyterLab."""
    return self.kc.execute(
        cell_input, store_history=True, allow_stdin=allow_stdin, stop_on_error=False
    )


RunningKernel.execute_cell_input = _execute_as_jupyterlab_does


class ExecutedNotebookHtml(pytest.Item):
    """The notebook as nbval executed it, exported to HTML and checked (see module)."""

    def __init__(self, *, cells: list[Any], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.cells = cells

    def runtest(self) -> None:
        notebook: Any = nbformat.read(str(self.path), as_version=4)  # type: ignore[no-untyped-call]
        code = [cell for cell in notebook.cells if cell.cell_type == "code"]
        ran = [cell for cell in self.cells if cell.test_outputs is not None]
        if len(ran) != len(code):  # cells deselected (-k) or skipped
            pytest.skip(f"{len(ran)} of {len(code)} cells ran: no whole notebook to export")
        errors: list[str] = []
        raw: list[str] = []
        for number, (cell, item) in enumerate(zip(code, self.cells, strict=True)):
            cell.outputs = [_as_output(output) for output in item.test_outputs]
            for output in cell.outputs:
                if output.output_type == "error":
                    errors.append(f"Cell {number}: {output.ename}: {output.evalue}")
                for text in _texts(output):
                    raw += [f"Cell {number}: {m.group(0)}…" for m in RAW_REPRS.finditer(text)]
        state = self.widget_state() if not errors else {"state": {}}
        if state["state"]:
            notebook.metadata["widgets"] = {"application/vnd.jupyter.widget-state+json": state}
        nbformat.validate(notebook)
        html, _ = HTMLExporter().from_notebook_node(notebook)  # type: ignore[no-untyped-call]
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        target = ARTIFACTS / f"{self.path.stem}.html"
        target.write_text(html, encoding="utf-8")
        images = html.count('src="data:image/png;base64,')
        wanted = MIN_IMAGES.get(self.path.stem)
        assert errors == [], f"error outputs in {target}"
        assert wanted is not None, f"name {self.path.stem}'s key plots in MIN_IMAGES"
        assert images >= wanted, f"{target} shows {images} PNG plot(s), expected >= {wanted}"
        assert raw == [], f"raw reprs in {target}: {raw}"

    def widget_state(self) -> dict[str, Any]:
        """The kernel's live widgets (the notebook's panels as Run All left them), saved in
        the export as JupyterLab's "Save Widget State" does: a browser then draws them from
        the HTML with the widgets' HTML manager instead of printing their text fallback.
        Read through a user expression, so nothing runs in the notebook's namespace."""
        parent: Any = self.parent  # nbval's IPyNbFile, untyped
        kernel = parent.kernel
        expression = "__import__('json').dumps(__import__('ipywidgets').Widget.get_manager_state())"
        msg_id = kernel.kc.execute("", silent=True, user_expressions={"state": expression})
        reply = kernel.get_message(stream="shell", timeout=60)
        while reply["parent_header"].get("msg_id") != msg_id:
            reply = kernel.get_message(stream="shell", timeout=60)
        value = reply["content"]["user_expressions"]["state"]
        assert value["status"] == "ok", f"the kernel's widget state: {value}"
        return json.loads(ast.literal_eval(value["data"]["text/plain"]))  # type: ignore[no-any-return]

    def reportinfo(self) -> tuple[Path, int, str]:
        return self.path, 0, f"{self.path.name}::executed HTML"


def _as_output(output: Any) -> Any:
    """nbval's outputs are message contents; nbformat wants an output's own fields."""
    fields = {key: value for key, value in output.items() if key != "output_type"}
    if output.output_type == "execute_result":
        fields.setdefault("execution_count", None)
    return nbformat.v4.new_output(output.output_type, **fields)  # type: ignore[no-untyped-call]


def _texts(output: Any) -> list[str]:
    if output.output_type == "stream":
        return [output.text]
    if output.output_type == "error":
        return []
    data = output.get("data", {})
    return [str(data[mime]) for mime in ("text/plain", "text/html") if mime in data]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """After each notebook's last cell, its ``executed HTML`` item (same parent: the
    notebook's kernel and the cells' outputs are still there when it runs)."""
    by_notebook: dict[Any, list[pytest.Item]] = {}
    for item in items:
        if type(item).__name__ == "IPyNbCell":
            by_notebook.setdefault(item.parent, []).append(item)
    for notebook, cells in by_notebook.items():
        if Path(str(notebook.path)).stem in SLOW_CELLS:
            for cell in cells:
                cell.add_marker(pytest.mark.timeout(SLOW_CELLS[Path(str(notebook.path)).stem]))
        last = items.index(cells[-1])
        check = ExecutedNotebookHtml.from_parent(notebook, name="executed HTML", cells=cells)
        items.insert(last + 1, check)
