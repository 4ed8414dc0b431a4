"""Notebook widgets (ipywidgets): the technician's approval panel.

Every action is also a method (``panel.approve("WDJB-MJHT")``), so a notebook runs the
same cells headless in CI that a trainer clicks through live.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import html
import io
import math
import re
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator, Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any

import ipywidgets as w
from iiot_server.domain.tokens import DeviceIdOverrideMode, LifetimeOverrideMode

from .errors import PanelError, PlatformError

if TYPE_CHECKING:  # the simulator (pandas, simpy) loads when a PolicyExplorer is built,
    # the HTTP models and client with the platform (a PolicyExplorer needs neither)
    import pandas as pd
    from iiot_server.api.alerts import AlertOut
    from iiot_server.api.models import AuditEventOut, BatchOut, OperationOut, TwinOut

    from .admin import AdminClient
    from .sim import Distribution, Scenario, SimulationResult

__all__ = [
    "ARCHITECT_LIFETIMES_HOURS",
    "REFRESH_FRACTIONS",
    "ApprovalPanel",
    "DeviceView",
    "PanelError",
    "PolicyExplorer",
    "wait_for",
]

_DEVICE_ID = re.compile(r"^[0-9A-Za-z_.-]{4,90}$")


def _age(created: datetime, now: datetime) -> str:
    seconds = max(0, int((now - created).total_seconds()))
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


async def wait_for(
    done: Callable[[], bool], *, give_up_after: float, waiting_for: str, poll_every: float = 0.05
) -> None:
    """Wait until ``done()`` is true, as a notebook cell that awaits it (``await
    wait_for(...)``), so a person can click Approve in a panel shown above while the
    notebook waits, also under Run All (the cells after it run when it ends).

    A kernel runs one cell at a time: a cell that sleeps or joins a thread keeps a
    button's click queued behind it until the cell ends. While a cell *awaits*,
    ipykernel (7.4+) dispatches widget messages at once, so the click's handler runs.
    (jupyter-ui-poll, made for this with blocking cells, cannot pump messages on
    ipykernel 7.4: the kernel method it drives is gone, and clicks stay queued.)

    Raises :class:`TimeoutError` naming what was awaited after ``give_up_after`` seconds.

    >>> import asyncio, threading
    >>> ready = threading.Event()
    >>> threading.Timer(0.01, ready.set).start()
    >>> asyncio.run(wait_for(ready.is_set, give_up_after=10, waiting_for="the timer"))
    >>> asyncio.run(wait_for(lambda: False, give_up_after=0.01, waiting_for="nothing"))
    Traceback (most recent call last):
    ...
    TimeoutError: gave up after 0.01 s waiting for nothing
    """
    if not (give_up_after > 0 and math.isfinite(give_up_after)):
        raise ValueError(
            f"give_up_after: must be a positive number of seconds, not {give_up_after!r}"
        )
    deadline = time.monotonic() + give_up_after
    while not done():
        if time.monotonic() >= deadline:
            raise TimeoutError(f"gave up after {give_up_after:g} s waiting for {waiting_for}")
        await asyncio.sleep(poll_every)


class _Row:
    """One pending operation with its controls."""

    def __init__(self, panel: ApprovalPanel, op: OperationOut) -> None:
        self.op = op
        mode = DeviceIdOverrideMode(op.device_id_override)
        lifetime_mode = LifetimeOverrideMode(op.registration_token_lifetime_override)
        self.device_id = w.Text(
            value=op.device_id or "",
            placeholder="Device ID",
            description="Device ID",
            layout=w.Layout(width="260px"),
        )
        self.device_id.layout.display = None if mode.technician_may_choose else "none"
        self.lifetime = w.FloatText(
            value=op.max_registration_token_lifetime or 0.0,
            description="lifetime s",
            layout=w.Layout(width="200px"),
        )
        self.lifetime.layout.display = (
            None if lifetime_mode is not LifetimeOverrideMode.DISABLED else "none"
        )
        self.approve_button = w.Button(description="Approve", button_style="success")
        self.cancel_button = w.Button(description="Cancel", button_style="warning")
        self.approve_button.on_click(lambda _b: panel._click(panel.approve_row, self))
        self.cancel_button.on_click(lambda _b: panel._click(panel.cancel, op.id))
        self.info = w.HTML()
        self.box = w.HBox(
            [self.info, self.device_id, self.lifetime, self.approve_button, self.cancel_button]
        )
        self.update(panel.now())

    def update(self, now: datetime) -> None:
        op = self.op
        left = max(0, int((op.expires_at - now).total_seconds()))
        attrs = ", ".join(f"{k}={v}" for k, v in sorted(op.attributes.items())) or "-"
        self.info.value = (
            f"<code style='font-size:1.2em'>{op.verification_code}</code> "
            f"&nbsp;device <b>{op.device_id or '(technician names it)'}</b> "
            f"&nbsp;{attrs} &nbsp;age {_age(op.created_at, now)} "
            f"&nbsp;expires in {left // 60}:{left % 60:02d}"
        )

    def overrides(self) -> dict[str, Any]:
        """The override fields the token's modes allow, validated."""
        op = self.op
        out: dict[str, Any] = {}
        mode = DeviceIdOverrideMode(op.device_id_override)
        if mode.technician_may_choose:
            value = self.device_id.value.strip()
            if value and value != (op.device_id or ""):
                if not _DEVICE_ID.match(value):
                    raise PanelError("Device ID: 4-90 characters of 0-9 a-z A-Z - _ .")
                out["device_id"] = value
            elif not value and mode.technician_must_choose:
                raise PanelError("Device ID: this token needs the technician to name the device")
        if LifetimeOverrideMode(op.registration_token_lifetime_override) is not (
            LifetimeOverrideMode.DISABLED
        ):
            lifetime = float(self.lifetime.value)
            maximum = op.max_registration_token_lifetime
            if lifetime <= 0:
                raise PanelError("lifetime: must be a positive number of seconds")
            if maximum is not None and lifetime > maximum:
                raise PanelError(f"lifetime: at most {maximum:g} s for this token")
            out["registration_token_lifetime"] = lifetime
        return out


class ApprovalPanel:
    """Live list of pending Provisioning Operations with approve/cancel per row.

    ``refresh_every`` seconds (real time) the list reloads itself while the panel is
    shown; ``auto_refresh=False`` leaves refreshing to :meth:`refresh` (headless use).
    Platform errors appear in the panel's status line, not as tracebacks.

    ``workspaces``: a workspace picker (a trainer's view of a class): the given workspace
    ids, or ``True`` for every workspace (``admin`` must then hold a platform-wide key).
    The panel acts in the picked one (:meth:`select_workspace`); without a picker, in the
    admin client's own workspace.

    Select all matching (a factory line): type a Device ID prefix (``line3-``) or glob
    (``line3-*-a?``) in ``match_text``, click *Preview* (:meth:`preview`, a dry run: how
    many, and the first rows), then *Approve all N* (:meth:`approve_all`), which approves
    exactly the previewed operations by id, so nothing that appeared since slips in.
    """

    PREVIEW_ROWS = 10
    """Rows of a preview shown (the count is of all)."""

    def __init__(
        self,
        admin: AdminClient,
        *,
        refresh_every: float = 2.0,
        auto_refresh: bool = True,
        now: Callable[[], datetime] | None = None,
        workspaces: Sequence[str] | bool = False,
    ) -> None:
        from .clock import wall_clock_now

        self.admin = admin
        self.now = now or wall_clock_now
        self.rows: dict[str, _Row] = {}
        self._clients: dict[str, AdminClient] = {}
        own = admin.workspace or "default"
        self.workspace = own
        self.title = w.HTML("<b>Pending provisioning operations</b>")
        self.status = w.HTML()
        self.list = w.VBox()
        self.refresh_button = w.Button(description="Refresh", icon="refresh")
        self.refresh_button.on_click(lambda _b: self._click(self.refresh))
        header: list[w.Widget] = [self.title, self.refresh_button]
        self.picker: w.Dropdown | None = None
        if workspaces:
            names = (
                [ws.id for ws in admin.list_workspaces()]
                if workspaces is True
                else list(workspaces)
            )
            self.picker = w.Dropdown(
                options=names, value=own if own in names else names[0], description="Workspace"
            )
            self.workspace = self.picker.value
            self.picker.observe(
                lambda change: self._click(self.select_workspace, change["new"]), names="value"
            )
            header.insert(1, self.picker)
        self.match_text = w.Text(
            placeholder="line3- or line3-*-a?", description="Matching", continuous_update=True
        )
        self.preview_button = w.Button(description="Preview", icon="search")
        self.approve_all_button = w.Button(
            description="Approve all", button_style="success", disabled=True
        )
        self.preview_box = w.HTML()
        self.previewed_ids: list[str] = []
        self.preview_button.on_click(lambda _b: self._click(self.preview))
        self.approve_all_button.on_click(lambda _b: self._click(self.approve_all))
        self.match_text.observe(lambda _change: self._forget_preview(), names="value")
        matching = w.VBox(
            [
                w.HBox([self.match_text, self.preview_button, self.approve_all_button]),
                self.preview_box,
            ]
        )
        self.widget = w.VBox([w.HBox(header), matching, self.list, self.status])
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.refresh()
        if auto_refresh:
            self._thread = threading.Thread(
                target=self._auto, args=(refresh_every,), name="approval-panel", daemon=True
            )
            self._thread.start()

    # display -------------------------------------------------------------------------

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5)
        self.widget.close()
        for client in self._clients.values():
            client.close()

    @property
    def client(self) -> AdminClient:
        """The admin client acting in the panel's workspace."""
        if self.workspace == (self.admin.workspace or "default"):
            return self.admin
        client = self._clients.get(self.workspace)
        if client is None:
            client = self._clients[self.workspace] = self.admin.in_workspace(self.workspace)
        return client

    def select_workspace(self, workspace: str) -> list[OperationOut]:
        """Act in ``workspace`` from now on (what the picker does); returns its pending
        operations."""
        if self.picker is not None and self.picker.value != workspace:
            self.picker.value = workspace  # observed: comes back here once
            return list(op.op for op in self.rows.values())
        self.workspace = workspace
        self.rows = {}
        self._forget_preview()
        return self.refresh()

    def _auto(self, every: float) -> None:
        while not self._stop.wait(every):
            try:
                self.refresh()
            except Exception as exc:  # the panel shows it; the thread keeps going
                self._show_error(exc)

    # actions -------------------------------------------------------------------------

    def refresh(self) -> list[OperationOut]:
        """Reload pending operations; returns them (newest first)."""
        pending = self.client.list_operations(state="pending")
        now = self.now()
        rows = {}
        for op in pending:
            row = self.rows.get(op.id)
            if row is None:
                row = _Row(self, op)
            else:
                row.op = op
                row.update(now)
            rows[op.id] = row
        self.rows = rows
        self.list.children = [r.box for r in rows.values()] or [
            w.HTML("<i>No operation is waiting for approval.</i>")
        ]
        return pending

    def approve(
        self,
        code_or_id: str,
        *,
        device_id: str | None = None,
        registration_token_lifetime: float | None = None,
    ) -> OperationOut:
        """Approve by verification code or id (what the row's button does)."""
        try:
            if device_id is not None and not _DEVICE_ID.match(device_id):
                raise PanelError("Device ID: 4-90 characters of 0-9 a-z A-Z - _ .")
            op = self.client.approve_operation(
                code_or_id,
                device_id=device_id,
                registration_token_lifetime=registration_token_lifetime,
            )
        except (PlatformError, PanelError) as exc:
            self._show_error(exc)
            raise
        self._show(f"approved {op.verification_code} as <b>{op.device_id}</b>")
        self.refresh()
        return op

    def preview(self, text: str | None = None) -> BatchOut:
        """Dry-run approving every pending operation whose Device ID matches ``text`` (or
        the text box): a glob if it holds ``*`` or ``?``, else a prefix. Shows the count
        and the first :data:`PREVIEW_ROWS` rows, and arms *Approve all N*."""
        if text is not None:
            self.match_text.value = text
        typed = self.match_text.value.strip()
        try:
            if not typed:
                raise PanelError("type a Device ID prefix (line3-) or glob (line3-*) first")
            field = "device_id_pattern" if any(c in typed for c in "*?") else "device_id_prefix"
            answer = self.client.approve_operations({field: typed}, dry_run=True)
        except (PlatformError, PanelError) as exc:
            self._forget_preview()
            self._show_error(exc)
            raise
        ids = [
            r.provisioning_operation_id
            for r in answer.results
            if r.result == "would_approve" and r.provisioning_operation_id
        ]
        self.previewed_ids = ids
        self.approve_all_button.description = f"Approve all {len(ids)}"
        self.approve_all_button.disabled = not ids
        rows = "".join(
            f"<tr><td>{html.escape(r.verification_code or '-')}</td>"
            f"<td>{html.escape(r.device_id or '-')}</td><td>{html.escape(r.result)}</td>"
            f"<td>{html.escape(r.reason or '')}</td></tr>"
            for r in answer.results[: self.PREVIEW_ROWS]
        )
        more = len(answer.results) - self.PREVIEW_ROWS
        summary = f"{answer.matched} match {html.escape(typed)!s}: {len(ids)} would be approved"
        if answer.truncated:
            summary += f" (only the first {len(answer.results)} per call)"
        self.preview_box.value = f"<b>{summary}</b><table>{rows}</table>" + (
            f"<i>… and {more} more</i>" if more > 0 else ""
        )
        return answer

    def approve_all(self) -> BatchOut:
        """Approve exactly the operations the last :meth:`preview` listed as would-approve
        (by id: one that started since is not included; one approved or expired since is
        reported skipped)."""
        try:
            if not self.previewed_ids:
                raise PanelError("preview first: nothing is selected")
            answer = self.client.approve_operations({"ids": self.previewed_ids})
        except (PlatformError, PanelError) as exc:
            self._show_error(exc)
            raise
        self._forget_preview()
        counts = ", ".join(f"{n} {result}" for result, n in sorted(answer.counts.items()))
        if answer.counts.get("failed") or answer.counts.get("skipped"):
            self._show_error(PanelError(f"batch: {counts} (see the preview box)"))
            self.preview_box.value = "".join(
                f"<div>{html.escape(r.device_id or r.provisioning_operation_id or '-')}: "
                f"{html.escape(r.result)} {html.escape(r.reason or '')}</div>"
                for r in answer.results
                if r.result in ("failed", "skipped")
            )
        else:
            self._show(f"batch: {counts}")
        self.refresh()
        return answer

    def _forget_preview(self) -> None:
        """A preview holds only for the text and workspace it was made for."""
        self.previewed_ids = []
        self.approve_all_button.description = "Approve all"
        self.approve_all_button.disabled = True
        self.preview_box.value = ""

    def approve_row(self, row: _Row) -> OperationOut:
        return self.approve(row.op.id, **row.overrides())

    def cancel(self, code_or_id: str) -> OperationOut:
        try:
            op = self.client.cancel_operation(code_or_id)
        except PlatformError as exc:
            self._show_error(exc)
            raise
        self._show(f"cancelled {op.verification_code}")
        self.refresh()
        return op

    def row(self, code_or_id: str) -> _Row:
        """The row showing this code or id (for tests and notebooks)."""
        for row in self.rows.values():
            if code_or_id in (row.op.id, row.op.verification_code):
                return row
        raise KeyError(f"no pending operation {code_or_id!r} in the panel")

    def _click(self, action: Callable[..., Any], *args: Any) -> None:
        try:
            action(*args)
        except Exception as exc:  # a button must never print a traceback: the panel says
            self._show_error(exc)

    def _show(self, html: str) -> None:
        self.status.value = f"<span style='color:green'>{html}</span>"

    def _show_error(self, exc: BaseException) -> None:
        detail = getattr(exc, "detail", None) or str(exc)
        field = getattr(exc, "field", None)
        where = f" (field {field})" if field else ""
        self.status.value = f"<span style='color:#b00'>{detail}{where}</span>"


def convergence_html(twin: TwinOut) -> str:
    """Each desired property's convergence as a line: state, for how long, and who set it
    (``pending 30 s since v3, by base-all (priority 1)``)."""
    import html

    colours = {
        "pending": "#b58900",
        "converged": "#2e7d32",
        "drifted": "#c62828",
        "failed": "#6a1b9a",
    }
    lines = []
    for name, p in twin.convergence.items():
        source = (
            f"{html.escape(p.configuration_id or '')} (priority {p.priority})"
            if p.source == "configuration"
            else "manual patch"
        )
        lines.append(
            f"<li>{html.escape(name)}: <b style='color:{colours[p.state]}'>{p.state}</b> "
            f"{p.seconds_in_state:.0f} s (desired v{p.desired_version} "
            f"{p.seconds_since_change:.0f} s ago, by {source})</li>"
        )
    return "<b>convergence</b><ul>" + "".join(lines) + "</ul>" if lines else ""


_SEVERITY_COLOURS = {"high": "#b00020", "medium": "#b26a00", "low": "#555555"}


def alerts_html(alerts: list[AlertOut]) -> str:
    """A device's open leak-detection alerts (``docs/leak_detection.md``), newest first;
    empty when there are none."""
    import html

    if not alerts:
        return ""
    items = "".join(
        f"<li><b style='color:{_SEVERITY_COLOURS.get(a.severity, '#555555')}'>"
        f"{html.escape(a.severity)}</b> {html.escape(a.kind)} since {a.at:%Y-%m-%d %H:%M:%S}"
        f" (seen {a.occurrences}x{', ' + html.escape(a.response) if a.response else ''})</li>"
        for a in alerts
    )
    return f"<b>open alerts</b><ul>{items}</ul>"


def audit_html(events: list[AuditEventOut]) -> str:
    """A device's last audit events (``docs/audit.md``), newest first: what changed, who,
    why; empty when there are none."""
    if not events:
        return ""
    items = "".join(
        f"<li>{e.at:%Y-%m-%d %H:%M:%S} {html.escape(e.action)} by {html.escape(e.actor)}"
        f"{': ' + html.escape(e.reason) if e.reason else ''}</li>"
        for e in events
    )
    return f"<b>last changes</b><ul>{items}</ul>"


class DeviceView:
    """A device's twin (desired / reported / tags with versions), connection state, open
    leak-detection alerts, recent messages and, for an admin key, its last audit events;
    desired properties and tags are edited as JSON merge patches."""

    def __init__(
        self, admin: AdminClient, device_id: str, *, messages: int = 10, changes: int = 5
    ) -> None:
        self.admin = admin
        self.device_id = device_id
        self.messages = messages
        self.changes = changes
        self.header = w.HTML()
        self.alerts = w.HTML()
        self.sections = {name: w.HTML() for name in ("desired", "reported", "tags")}
        self.convergence = w.HTML()
        self.desired_patch = w.Textarea(placeholder='{"interval": 10}', description="desired")
        self.tags_patch = w.Textarea(placeholder='{"site": "hall-3"}', description="tags")
        self.apply_desired = w.Button(description="Patch desired")
        self.apply_tags = w.Button(description="Patch tags")
        self.apply_desired.on_click(lambda _b: self._click(self._patch, "desired"))
        self.apply_tags.on_click(lambda _b: self._click(self._patch, "tags"))
        self.recent = w.HTML()
        self.history = w.HTML()
        self.status = w.HTML()
        self.widget = w.VBox(
            [
                self.header,
                self.alerts,
                w.HBox(list(self.sections.values())),
                self.convergence,
                w.HBox([self.desired_patch, self.apply_desired]),
                w.HBox([self.tags_patch, self.apply_tags]),
                self.recent,
                self.history,
                self.status,
            ]
        )
        self.refresh()

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)

    def refresh(self) -> None:
        import html
        import json

        device = self.admin.get_device(self.device_id)
        twin = self.admin.get_twin(self.device_id)
        state = "connected" if device.connected else "disconnected"
        self.header.value = (
            f"<b>{self.device_id}</b> &nbsp;{state} &nbsp;token "
            f"{device.registration_token_status or '-'} &nbsp;takeovers "
            f"{device.connection_takeovers}"
        )
        self.alerts.value = alerts_html(
            self.admin.alerts(device_id=self.device_id, state="open", limit=20)
        )
        for name, box in self.sections.items():
            section = getattr(twin, name)
            body = html.escape(json.dumps(section.properties, indent=1, sort_keys=True))
            box.value = f"<b>{name}</b> v{section.version}<pre>{body}</pre>"
        self.convergence.value = convergence_html(twin)
        rows = self.admin.list_device_messages(self.device_id, limit=10_000)[-self.messages :]
        items = "".join(
            f"<li>{m.received_at:%H:%M:%S} {html.escape(m.stream)}: "
            f"{html.escape(m.payload[:80])}</li>"
            for m in rows
        )
        self.recent.value = f"<b>recent messages</b><ul>{items}</ul>"
        try:  # the audit trail is an admin key's to read: a technician's view goes without
            changes = self.admin.audit(device_id=self.device_id, limit=self.changes)
        except PlatformError:
            changes = []
        self.history.value = audit_html(changes)

    def set_desired(self, patch: dict[str, Any]) -> None:
        self.admin.update_desired_properties(self.device_id, patch)
        self.refresh()

    def set_tags(self, patch: dict[str, Any]) -> None:
        self.admin.update_tags(self.device_id, patch)
        self.refresh()

    def _patch(self, section: str) -> None:
        import json

        text = (self.desired_patch if section == "desired" else self.tags_patch).value
        try:
            patch = json.loads(text or "{}")
        except ValueError as exc:
            raise PanelError(f"{section}: not JSON ({exc})") from None
        if not isinstance(patch, dict):
            raise PanelError(f"{section}: a merge patch is a JSON object")
        (self.set_desired if section == "desired" else self.set_tags)(patch)
        self.status.value = f"<span style='color:green'>{section} patched</span>"

    def _click(self, action: Callable[..., Any], *args: Any) -> None:
        try:
            action(*args)
        except Exception as exc:
            detail = getattr(exc, "detail", None) or str(exc)
            self.status.value = f"<span style='color:#b00'>{detail}</span>"


_OFF_KINDS = ("exponential", "lognormal", "weibull")
ARCHITECT_LIFETIMES_HOURS: tuple[float, ...] = (1, 6, 24, 72, 168, 720, 2160, math.inf)
"""The Registration Token lifetimes architects choose among: 1 h, 6 h, 1 d, 3 d, 7 d,
30 d, 90 d and infinite (``math.inf``)."""
REFRESH_FRACTIONS: tuple[float, ...] = (0.1, 0.2, 0.25, 0.3, 0.4, 0.5, 0.6, 0.7, 0.75, 0.8, 0.9)
"""Refresh points offered, as fractions of the lifetime."""
_WIDE = {"description_width": "initial"}  # a description is never cut to "outage m…"


def _hours_label(hours: float) -> str:
    from .sim.plots import duration

    return duration(None if math.isinf(hours) else hours * 3600)


class PolicyExplorer:
    """Controls for the policy and the outages of a scenario; each change re-runs the
    simulator over a band of lifetimes and redraws both plots: the trade-off (the
    current policy ringed) and the fleet over time at the current policy.

    The scenario is ``base`` unchanged except what the controls set (lifetime, refresh
    fraction, the default connectivity's off-period distribution, technicians), so the
    explorer's numbers at a lifetime are ``simulate()``'s for the base scenario with that
    lifetime. Lifetimes are picked from :data:`ARCHITECT_LIFETIMES_HOURS` (plus the base's
    own, if it is not one of them). Runs are cached by scenario, so a lifetime inside the
    band only redraws. A change of another control answers at once for the policy shown
    (one run), drawing the lifetimes already known and saying the band is updating; the
    rest of the band runs in a background thread and both plots are redrawn when it is
    done (a newer change supersedes it). Re-running the whole band before answering took
    1.5-3 s at 300 devices x 30 days on the 2-core machine; ``benchmarks/explorer.py``
    prints both times.

    ``explorer.set(lifetime_hours=24, technicians=1)`` does from code what the controls
    do, and returns once the whole band is run (notebooks assert on its numbers).
    """

    result: SimulationResult
    """the last run at the controls' values"""
    sweep: pd.DataFrame
    """the last band of runs, one row per lifetime in ``lifetimes_hours`` (as ``sweep``)"""
    figure: Any
    """the last figure drawn (trade-off, fleet state)"""
    draws: int
    """how many times the plots were drawn"""
    band_pending: int
    """lifetimes of the band still running in the background (0: the plots are final)"""

    def __init__(
        self,
        base: Scenario | None = None,
        *,
        lifetimes_hours: tuple[float, ...] = ARCHITECT_LIFETIMES_HOURS,
        cache_size: int = 64,
    ) -> None:
        from .sim import Scenario

        self.base = base or Scenario(fleet_size=300, duration_days=30)
        self.lifetimes_hours = tuple(float(h) for h in lifetimes_hours)
        self._cache: OrderedDict[bytes, SimulationResult] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.RLock()  # the cache and the shown state, kernel vs band thread
        self._generation = 0  # bumped by every change: a stale band run draws nothing
        self._band_thread: threading.Thread | None = None
        self.draws = 0
        self.band_pending = 0
        token = self.base.token
        self._base_hours = math.inf if token.lifetime is None else token.lifetime / 3600
        hours = sorted({*ARCHITECT_LIFETIMES_HOURS, *self.lifetimes_hours, self._base_hours})
        fractions = sorted({*REFRESH_FRACTIONS, token.refresh_fraction})
        off = self.base.connectivity.off
        off_h = off.mean / 3600
        kinds = list(_OFF_KINDS) if off.kind in _OFF_KINDS else [*_OFF_KINDS, off.kind]
        self.controls: dict[str, Any] = {
            "lifetime_hours": w.SelectionSlider(
                options=[(_hours_label(h), h) for h in hours], value=self._base_hours,
                description="token lifetime", style=_WIDE, layout=w.Layout(width="420px"),
            ),
            "refresh_fraction": w.SelectionSlider(
                options=[(f"{f:g}", f) for f in fractions], value=token.refresh_fraction,
                description="refresh at (fraction of lifetime)", style=_WIDE,
                layout=w.Layout(width="420px"),
            ),
            "off_kind": w.Dropdown(
                options=kinds, value=off.kind, description="outages", style=_WIDE
            ),
            "off_mean_hours": w.BoundedFloatText(
                value=off_h, min=min(1e-3, off_h), max=max(1e4, off_h),
                description="outage mean (h)", style=_WIDE, layout=w.Layout(width="220px"),
            ),
            "off_shape": w.BoundedFloatText(
                value=off.shape, min=min(1e-3, off.shape), max=max(100.0, off.shape),
                description="outage shape (σ or k)", style=_WIDE, layout=w.Layout(width="240px"),
            ),
            "technicians": w.IntSlider(
                value=self.base.provisioning.technicians, min=1,
                max=max(20, self.base.provisioning.technicians), description="technicians",
                style=_WIDE,
            ),
        }  # fmt: skip
        self.output = w.Output()
        self.summary = w.HTML()
        self._holding = False
        for control in self.controls.values():
            control.observe(lambda _change: self._changed(), names="value")
        self.widget = w.VBox(
            [
                w.HBox([self.controls["lifetime_hours"], self.controls["refresh_fraction"]]),
                w.HBox([self.controls[k] for k in ("off_kind", "off_mean_hours", "off_shape")]),
                self.controls["technicians"],
                self.summary,
                self.output,
            ]
        )
        self._enable()
        self.run()

    def _repr_mimebundle_(self, **kwargs: Any) -> Any:
        return self.widget._repr_mimebundle_(**kwargs)

    def _off(self) -> Distribution:
        """The off-period distribution the controls describe: the base's own object while
        they show its values (an empirical one is kept whatever the mean/shape say)."""
        from .sim import Distribution

        off = self.base.connectivity.off
        kind = self.controls["off_kind"].value
        mean_h = float(self.controls["off_mean_hours"].value)
        shape = float(self.controls["off_shape"].value)
        if kind == off.kind and (
            kind == "empirical" or (mean_h, shape) == (off.mean / 3600, off.shape)
        ):
            return off
        return Distribution(kind, mean_h * 3600, shape if kind in ("lognormal", "weibull") else 1.0)

    def scenario(self, lifetime_hours: float | None = None) -> Scenario:
        """The base scenario with the controls' values (``lifetime_hours`` overrides the
        lifetime control: how the band is built)."""
        hours = self.controls["lifetime_hours"].value if lifetime_hours is None else lifetime_hours
        if hours == self._base_hours:
            lifetime = self.base.token.lifetime
        else:
            lifetime = None if math.isinf(hours) else hours * 3600
        changes: dict[str, Any] = {}
        if lifetime != self.base.token.lifetime:
            changes["token.lifetime"] = lifetime
        fraction = self.controls["refresh_fraction"].value
        if fraction != self.base.token.refresh_fraction:
            changes["token.refresh_fraction"] = fraction
        off = self._off()
        if off is not self.base.connectivity.off:
            changes["connectivity.off"] = off
        technicians = self.controls["technicians"].value
        if technicians != self.base.provisioning.technicians:
            changes["provisioning.technicians"] = technicians
        return self.base.replace(**changes) if changes else self.base

    def set(self, **values: Any) -> SimulationResult:
        """Set controls (keys as in ``controls``) and re-run once; returns the result."""
        for key in values:
            if key not in self.controls:
                raise PanelError(f"{key}: not a control ({', '.join(self.controls)})")
        with self._held():
            for key, value in values.items():
                control = self.controls[key]
                if isinstance(control, w.SelectionSlider):
                    allowed = [v for _label, v in control.options]
                    if value not in allowed:
                        shown = ", ".join(f"{v:g}" for v in allowed)
                        raise PanelError(f"{key}: one of {shown}, got {value!r}")
                control.value = value
        return self.run()

    @contextlib.contextmanager
    def _held(self) -> Iterator[None]:
        """Control changes inside do not re-run the simulator (``set`` runs it once)."""
        self._holding = True
        try:
            yield
        finally:
            self._holding = False

    def _changed(self) -> None:
        self._enable()
        if not self._holding:
            self._answer_now()

    def _answer_now(self) -> None:
        """A person moved a control: show the policy's run at once, finish the band in a
        background thread."""
        with self._lock:
            self._generation += 1
            generation = self._generation
        self.result = self._simulate(self.scenario())
        missing = [h for h in self.lifetimes_hours if not self._cached(self.scenario(h))]
        with self._lock:
            self.band_pending = len(missing)
            self.sweep = self._band(only_cached=True)
            self._show()
        if missing:
            scenarios = [self.scenario(h) for h in missing]
            self._band_thread = threading.Thread(
                target=self._finish_band, args=(generation, scenarios),
                name="policy-explorer-band", daemon=True,
            )  # fmt: skip
            self._band_thread.start()

    def _finish_band(self, generation: int, scenarios: list[Scenario]) -> None:
        try:
            for scenario in scenarios:
                if generation != self._generation:
                    return  # a newer change started its own band
                self._simulate(scenario)
            with self._lock:
                if generation != self._generation:
                    return
                self.band_pending = 0
                self.sweep = self._band(only_cached=True)
                self._show()
        except Exception as exc:  # shown in the panel, never a traceback in a thread
            self.summary.value = f"<span style='color:#b00'>band not updated: {exc}</span>"

    def wait_for_band(self, give_up_after: float = 60.0) -> None:
        """Wait until the background band run of the last change is drawn (tests)."""
        thread = self._band_thread
        if thread is not None:
            thread.join(give_up_after)
            if thread.is_alive():
                raise TimeoutError(f"the band was still running after {give_up_after:g} s")

    def _enable(self) -> None:
        """Shape only for lognormal (σ) and Weibull (k); an empirical sample has neither."""
        kind = self.controls["off_kind"].value
        self.controls["off_shape"].disabled = kind not in ("lognormal", "weibull")
        self.controls["off_mean_hours"].disabled = kind == "empirical"

    def _simulate(self, scenario: Scenario) -> SimulationResult:
        """``simulate(scenario)``, remembered for the last ``cache_size`` scenarios."""
        from .sim import simulate

        key = scenario.to_json()
        with self._lock:
            result = self._cache.get(key)
        if result is None:
            result = simulate(scenario)  # outside the lock: the other thread may run too
        with self._lock:
            self._cache[key] = result
            self._cache.move_to_end(key)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return result

    def _cached(self, scenario: Scenario) -> bool:
        with self._lock:
            return scenario.to_json() in self._cache

    def _band(self, *, only_cached: bool = False) -> pd.DataFrame:
        """One row per lifetime of the band (``only_cached``: those already run)."""
        import pandas as pd

        rows = []
        for hours in self.lifetimes_hours:
            scenario = self.scenario(hours)
            if only_cached and not self._cached(scenario):
                continue
            rows.append(
                {
                    "token.lifetime": scenario.token.lifetime,
                    "token.refresh_fraction": scenario.token.refresh_fraction,
                    "repetition": 0,
                    "seed": scenario.seed,
                    **{str(k): v for k, v in self._simulate(scenario).summary.items()},
                }
            )
        return pd.DataFrame(rows)

    def run(self) -> SimulationResult:
        """Run (or recall) the band and the current policy, then redraw both plots."""
        with self._lock:
            self._generation += 1  # supersedes a background band still running
        sweep = self._band()
        result = self._simulate(self.scenario())
        with self._lock:
            self.sweep, self.result, self.band_pending = sweep, result, 0
            self._show()
        return self.result

    def _show(self) -> None:
        from matplotlib.figure import Figure

        from .sim import plots

        s = self.result.summary
        token = self.result.scenario.token
        policy = f"{plots.duration(token.lifetime)}, refresh at {token.refresh_fraction:g}" + (
            ""
            if token.lifetime is None
            else f" ({plots.duration(token.lifetime * token.refresh_fraction)})"
        )
        self.summary.value = (
            f"<b>{policy}</b>: lockouts per 1,000 device-days"
            f" <b>{s['lockouts_per_1000_device_days']:.1f}</b>"
            f" &nbsp;recovery p95 <b>{s['lockout_recovery_p95_h']:.1f} h</b>"
            f" &nbsp;leaked-token exposure mean <b>{s['rt_leak_exposure_mean_h']:.1f} h</b>"
            f" &nbsp;online <b>{100 * s['online_fraction']:.1f}%</b>"
        )
        if self.band_pending:
            self.summary.value += (
                f" &nbsp;<i>updating the trade-off: {self.band_pending} lifetimes to run</i>"
            )
        # a Figure, not pyplot: this may run in the band's thread, and pyplot is not
        # thread-safe; the PNG goes into the Output widget as its one output (also safe
        # from a thread, where `with output:` would capture nothing)
        fig = Figure(figsize=(13, 4.5))
        axes = fig.subplots(1, 2)
        if len(self.sweep):
            plots.tradeoff(self.sweep, ax=axes[0], highlight=token.lifetime)
            axes[0].set_xscale("symlog", linthresh=1.0)  # 0 to hundreds of lockouts
        axes[0].set_title(
            f"Lifetimes at refresh {token.refresh_fraction:g}; ringed: {policy}"
            + (" (updating)" if self.band_pending else "")
        )
        plots.fleet_state(self.result, ax=axes[1])
        fig.tight_layout()
        png = io.BytesIO()
        fig.savefig(png, format="png", dpi=80)
        self.figure = fig
        self.draws += 1
        self.output.outputs = (
            {
                "output_type": "display_data",
                "data": {
                    "image/png": base64.b64encode(png.getvalue()).decode("ascii"),
                    "text/plain": f"<policy explorer: {policy}>",
                },
                "metadata": {},
            },
        )
