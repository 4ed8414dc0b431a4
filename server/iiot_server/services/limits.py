"""Limits on the device API: request rates per credential and open operations.

Before these, one Provisioning Token opened 1,401 pending operations for one Device ID in
10 s (303 requests/s, no 429); only technicians' code look-ups were limited (issue 10).
Every refusal is :class:`~iiot_server.domain.errors.TooManyRequests`: HTTP 429 with
``Retry-After`` (seconds until the limit lets the next request through) and a problem body.

Three kinds of limit (values in :class:`~iiot_server.settings.Settings`):

- **Open operations** (pending or approved, unexpired): per Device ID (3) and per PT
  (10,000); checked when an operation starts, in its transaction.
- **Requests per device key** (1/s, burst 20): a Registration Token's calls count for its
  Device ID; a Provisioning Token's calls count for what they act on (the operation
  polled, the Device ID initiated, the token refreshed), so 10,000 devices sharing one
  PT do not share one bucket, while one client hammering one operation or device does.
- **Requests per Provisioning Token** (5,000/s, burst 20,000): all of a PT's calls.

What 10,000 devices booting at once after a power cut send (poll interval 2 s):

- a provisioned device: register (1 request on its Device ID), a refresh if due (1 on its
  PT); then MQTT. Per device key: 1-2 requests, far under the burst of 20.
- an unprovisioned or pending one: init or a status look-up (1), then complete every 2 s
  (0.5/s on its operation's key, under 1/s) until a technician approves.
- per-device PTs (bulk, one device each): every PT sees one device's traffic.
- one PT shared by the whole run (10,000 devices): 10,000 requests at once (burst
  20,000), then at most 10,000 / 2 s = 5,000 polls/s (rate 5,000/s), and at most 10,000
  open operations (the limit). The PT's bucket is sized for exactly this; a bigger run on
  one PT needs these settings raised (or per-device PTs, the recommended shape).
"""

from __future__ import annotations

from ..clock import Clock
from ..domain.verification import RateLimiter
from ..settings import Settings

MAX_TRACKED_KEYS = 200_000
"""Buckets kept per limiter (about 20 MB at most): two keys for each of 10,000 devices
with room to spare; idle ones are forgotten first."""


class DeviceApiLimits:
    """The device API's request-rate limits, on the injected clock."""

    def __init__(self, settings: Settings, clock: Clock) -> None:
        self._clock = clock
        self._per_device = RateLimiter(
            capacity=settings.device_request_burst,
            rate=settings.device_requests_per_second,
            max_keys=MAX_TRACKED_KEYS,
        )
        self._per_provisioning_token = RateLimiter(
            capacity=settings.provisioning_token_request_burst,
            rate=settings.provisioning_token_requests_per_second,
            max_keys=MAX_TRACKED_KEYS,
        )

    def provisioning_token_request(self, provisioning_token_id: str) -> None:
        """Count one call made with this PT (any route), or raise TooManyRequests."""
        self._per_provisioning_token.check(
            provisioning_token_id,
            self._clock.now(),
            what="requests with this Provisioning Token",
            field=None,
        )

    def device_request(self, key: str, *, field: str | None = None) -> None:
        """Count one call for a device key (see the module docstring)."""
        self._per_device.check(
            key, self._clock.now(), what="requests for this device or operation", field=field
        )
