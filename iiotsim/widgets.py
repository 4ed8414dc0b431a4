"""Notebook widgets (ipywidgets): the technician's approval panel.

Every action is also a method (``panel.approve("WDJB-MJHT")``), so a notebook runs the
same cells headless in CI that a trainer clicks through live.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Callable
from datetime import datetime
from typing import Any

import ipywidgets as w
from iiot_server.api.models import OperationOut
from iiot_server.domain.tokens import DeviceIdOverrideMode, LifetimeOverrideMode

from .admin import AdminClient
from .errors import PlatformError

_DEVICE_ID = re.compile(r"^[0-9A-Za-z_.-]{4,90}$")


class PanelError(ValueError):
    """An input the panel refused before sending it (names the field)."""


def _age(created: datetime, now: datetime) -> str:
    seconds = max(0, int((now - created).total_seconds()))
    return f"{seconds // 60} min {seconds % 60:02d} s" if seconds >= 60 else f"{seconds} s"


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
    """

    def __init__(
        self,
        admin: AdminClient,
        *,
        refresh_every: float = 2.0,
        auto_refresh: bool = True,
        now: Callable[[], datetime] | None = None,
    ) -> None:
        from .clock import wall_clock_now

        self.admin = admin
        self.now = now or wall_clock_now
        self.rows: dict[str, _Row] = {}
        self.title = w.HTML("<b>Pending provisioning operations</b>")
        self.status = w.HTML()
        self.list = w.VBox()
        self.refresh_button = w.Button(description="Refresh", icon="refresh")
        self.refresh_button.on_click(lambda _b: self._click(self.refresh))
        self.widget = w.VBox([w.HBox([self.title, self.refresh_button]), self.list, self.status])
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

    def _auto(self, every: float) -> None:
        while not self._stop.wait(every):
            try:
                self.refresh()
            except Exception as exc:  # the panel shows it; the thread keeps going
                self._show_error(exc)

    # actions -------------------------------------------------------------------------

    def refresh(self) -> list[OperationOut]:
        """Reload pending operations; returns them (newest first)."""
        pending = self.admin.list_operations(state="pending")
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
            op = self.admin.approve_operation(
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

    def approve_row(self, row: _Row) -> OperationOut:
        return self.approve(row.op.id, **row.overrides())

    def cancel(self, code_or_id: str) -> OperationOut:
        try:
            op = self.admin.cancel_operation(code_or_id)
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
