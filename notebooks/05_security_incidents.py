# ---
# jupyter:
#   jupytext:
#     text_representation:
#       extension: .py
#       format_name: percent
#       format_version: '1.3'
#       jupytext_version: 1.19.6
#   kernelspec:
#     display_name: Python 3 (ipykernel)
#     language: python
#     name: python3
# ---

# %% [markdown]
# # 5. Security incidents
#
# Four incidents on the real embedded platform, and what the simulator says about their cost:
#
# 1. a **leaked Provisioning Token**: approval stops it;
# 2. a **leaked Registration Token**: revocation ends it; its exposure window depends on the lifetime;
# 3. **duplicate Device IDs**: two devices fighting over one connection, recorded as takeovers;
# 4. a **rogue device approved**: the audit trail says who approved it, when, why, and what it did since.

# %% tags=["parameters"]
LIFETIMES_H = [1, 24, 168]
FLEET = 200

# %%
import threading

import httpx
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import paho.mqtt.client as mqtt
from paho.mqtt.enums import CallbackAPIVersion

from iiot_device import DeviceClient, ProvisioningOperationCancelled
from iiotsim import Platform
from iiotsim.widgets import ApprovalPanel

platform = Platform().start()
token = platform.admin.create_provisioning_token("line-4", max_registration_token_lifetime=86400)
panel = ApprovalPanel(platform.admin, auto_refresh=False)
device = DeviceClient.start(token.provisioning_token, platform.data_dir / "pump.db",
                            server_url=platform.http_url, device_id="pump-0100",
                            on_provisioning_operation=lambda op: panel.approve(op.verification_code))
print("provisioned:", device.device_id)

# %% [markdown]
# ## 1. A leaked Provisioning Token: approval stops it

# %%
rogue_ops = []
def rogue():
    try:
        DeviceClient.start(token.provisioning_token, platform.data_dir / "rogue.db",
                           server_url=platform.http_url, device_id="pump-0666",
                           on_provisioning_operation=rogue_ops.append, provisioning_attempts=1)
    except ProvisioningOperationCancelled as exc:
        rogue_ops.append(exc)

attacker = threading.Thread(target=rogue); attacker.start()
while not rogue_ops: threading.Event().wait(0.05)
panel.refresh()
panel   # the technician sees an operation nobody expected...

# %%
panel.cancel(rogue_ops[0].verification_code)   # ...and cancels it
attacker.join(30)
assert isinstance(rogue_ops[-1], ProvisioningOperationCancelled)
platform.admin.revoke_provisioning_token(token.id)   # and the leaked PT is revoked
refused = httpx.post(f"{platform.http_url}/provisioning-operations/init", json={"deviceId": "pump-0667"},
                     headers={"Authorization": f"DeviceToken {token.provisioning_token}"})
assert refused.status_code == 401
print("devices registered:", ", ".join(d.device_id for d in platform.admin.list_devices()),
      f"| the leaked token now gets HTTP {refused.status_code}")

# %%
assert sorted(d.device_id for d in platform.admin.list_devices()) == ["pump-0100"]

# %% [markdown]
# ## 2. A leaked Registration Token: revoke it

# %%
import sqlite3, json
# someone pulls the pump's flash: its local database holds the Registration Token
device.close()
with sqlite3.connect(platform.data_dir / "pump.db") as db:
    leaked_rt = json.loads(db.execute("select value from state where key='rt'").fetchone()[0])["token"]
def upload(rt):
    return httpx.post(f"{platform.http_url}/devices/messages", params={"stream": "x"}, content=b"forged",
                      headers={"Authorization": f"DeviceToken {rt}"}).status_code
before = upload(leaked_rt)
platform.admin.revoke_device("pump-0100")
after = upload(leaked_rt)
print(f"upload with the leaked token: HTTP {before} (accepted) before revocation, "
      f"HTTP {after} (refused) after")

# %%
assert before == 201 and after in (401, 403)

# %% [markdown]
# Revocation ends a leak the moment it is noticed. A leak nobody notices ends when the device's
# next refresh replaces the leaked token, so the token lifetime bounds the exposure window. The
# simulator measures that window for leaks at random times (200 devices, 20 days; leaks found
# after 3 days on average).

# %%
from iiotsim.sim import Scenario, sweep
from iiotsim.sim.plots import duration

exposure = sweep(Scenario(fleet_size=FLEET, duration_days=20, seed=5),
                 token__lifetime=[h * 3600 for h in LIFETIMES_H], processes=1, progress=True)
exposure_table = pd.DataFrame({
    "token lifetime": [duration(s) for s in exposure["token.lifetime"]],
    "mean exposure (h)": exposure["rt_leak_exposure_mean_h"].round(1),
    "95th percentile exposure (h)": exposure["rt_leak_exposure_p95_h"].round(1),
    "leaks sampled": exposure["rt_leak_exposure_samples"],
}).set_index("token lifetime")
exposure_table

# %%
fig, ax = plt.subplots(figsize=(7, 3.8))
x = np.arange(len(exposure_table))
width = 0.38
for offset, column, label in ((-width / 2, "rt_leak_exposure_mean_h", "mean"),
                              (width / 2, "rt_leak_exposure_p95_h", "95th percentile")):
    bars = ax.bar(x + offset, exposure[column], width, label=label)
    ax.bar_label(bars, labels=[f"{h:.1f} h" for h in exposure[column]], fontsize=8, padding=2)
ax.set_yscale("log")
ax.set_ylim(0.1, exposure["rt_leak_exposure_p95_h"].max() * 3)
ax.yaxis.set_major_formatter(plt.FuncFormatter(lambda h, _: f"{h:g}"))
ax.set_xticks(x, [f"lifetime {t}" for t in exposure_table.index])
ax.set_ylabel("hours a leaked token stays usable (log)")
ax.set_title("Exposure window of a leaked Registration Token")
ax.legend(loc="upper left", frameon=False);

# %%
assert exposure["rt_leak_exposure_mean_h"].is_monotonic_increasing

# %% [markdown]
# The platform also looks for leaks itself (`docs/leak_detection.md`). A thief who connects with the
# leaked token's credentials while the device is online takes over its session from another
# address: a `shared_credential` alert, and with `leak_response_shared_credential = "revoke_device"`
# the platform revokes the device at once. The simulator draws when that happens from each device's
# own connectivity: the first instant the device is online at or after the leak. A thief who
# connects only while the device is offline is not seen by that rule, and keeps the exposure above.

# %%
detection_variants = {
    "rules, automatic revocation": {"leaks__detection_rules": [True]},
    "rules, revoked by a technician within 4 h": {
        "leaks__detection_rules": [True], "leaks__response_delay": [4 * 3600.0]},
    "rules, a thief online only while the device is not": {
        "leaks__detection_rules": [True], "leaks__thief": ["stealthy"]},
}
detected = {"no leak rules (above)": exposure["rt_leak_exposure_mean_h"].to_numpy()}
for label, variant in detection_variants.items():
    swept = sweep(Scenario(fleet_size=FLEET, duration_days=20, seed=5),
                  token__lifetime=[h * 3600 for h in LIFETIMES_H], **variant, processes=1)
    detected[label] = swept["rt_leak_exposure_mean_h"].to_numpy()
detection_table = pd.DataFrame(detected, index=exposure_table.index).round(2)
detection_table.columns.name = "mean exposure (h)"
detection_table

# %%
without = detected["no leak rules (above)"]
for label, hours in detected.items():
    assert (hours <= without + 1e-9).all(), label  # detection never lengthens an exposure
assert (detected["rules, automatic revocation"]
        <= detected["rules, revoked by a technician within 4 h"] + 1e-9).all()
assert np.allclose(detected["rules, a thief online only while the device is not"], without)

# %% [markdown]
# ## 3. Duplicate Device IDs fight over one connection

# %%
# A second physical device flashed with the same identity: the same MQTT credentials.
token2 = platform.admin.create_provisioning_token("clone-test")
auth = {"Authorization": f"DeviceToken {token2.provisioning_token}"}
op = httpx.post(f"{platform.http_url}/provisioning-operations/init", json={"deviceId": "pump-0200"}, headers=auth).json()
platform.admin.approve_operation(op["provisioningOperationId"])
rt = httpx.put(f"{platform.http_url}/provisioning-operations/complete",
               json={"provisioningOperationId": op["provisioningOperationId"]}, headers=auth).json()["registrationToken"]
creds = httpx.put(f"{platform.http_url}/devices/register", headers={"Authorization": f"DeviceToken {rt}"}).json()

def twin_device():
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="pump-0200", protocol=mqtt.MQTTv311)
    c.username_pw_set("pump-0200", creds["mqttPassword"])
    return c

first, second = twin_device(), twin_device()
kicked = threading.Event()
first.on_disconnect = lambda *a: kicked.set()
first.connect(platform.mqtt_host, platform.mqtt_port); first.loop_start()
threading.Event().wait(0.5)
second.connect(platform.mqtt_host, platform.mqtt_port); second.loop_start()
assert kicked.wait(10)
for c in (first, second):   # stop the clones before they fight on (paho reconnects)
    c.disconnect(); c.loop_stop()
takeovers = [e for e in platform.admin.list_device_connections("pump-0200") if e.takeover]
print(f"pump-0200: {len(takeovers)} connection takeover(s) recorded, the first at "
      f"{takeovers[0].at:%H:%M:%S} UTC")

# %%
assert platform.admin.get_device("pump-0200").connection_takeovers >= 1
assert takeovers   # the platform kept a record of each takeover

# %% [markdown]
# ## 4. Who approved this rogue device, when, and what did it do since
#
# A device nobody ordered turns up in the fleet. Every change on the platform is in its audit
# trail (`GET /api/v1/audit`, `admin.audit(...)`): who (an API key, a device, the platform
# itself), what, when, why (the `reason` the technician gave) and in which request. The trail is
# append-only in the database itself: not even a database login can edit it.
#
# The staging: a technician's key approves the rogue's operation with a plausible reason; the
# rogue registers, connects, publishes, and refreshes its token.

# %%
from iiotsim.admin import AdminClient, to_frame

night_key = platform.admin.create_api_key("night-shift technician", "technician")
night_shift = AdminClient(platform.http_url, night_key.api_key)
token6 = platform.admin.create_provisioning_token("line-6")
pt6 = {"Authorization": f"DeviceToken {token6.provisioning_token}"}
rogue_op = httpx.post(f"{platform.http_url}/provisioning-operations/init", json={"deviceId": "pump-0777"},
                      headers=pt6).json()
night_shift.approve_operation(rogue_op["verificationCode"], reason="serial matches the delivery note")
rogue_rt = httpx.put(f"{platform.http_url}/provisioning-operations/complete",
                     json={"provisioningOperationId": rogue_op["provisioningOperationId"]},
                     headers=pt6).json()["registrationToken"]
rogue_creds = httpx.put(f"{platform.http_url}/devices/register",
                        headers={"Authorization": f"DeviceToken {rogue_rt}"}).json()
rogue_mqtt = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="pump-0777", protocol=mqtt.MQTTv311)
rogue_mqtt.username_pw_set("pump-0777", rogue_creds["mqttPassword"])
rogue_mqtt.connect(platform.mqtt_host, platform.mqtt_port); rogue_mqtt.loop_start()
for i in range(3):
    rogue_mqtt.publish(f"devices/pump-0777/messages/telemetry/mid=r{i}", f"{{\"probe\": {i}}}",
                       qos=1).wait_for_publish(10)
rogue_mqtt.disconnect(); rogue_mqtt.loop_stop()
refreshed = httpx.put(f"{platform.http_url}/devices/registration-tokens/refresh",
                      json={"registrationToken": rogue_rt}, headers=pt6)
assert refreshed.status_code == 201
for _ in range(100):  # the broker stores the messages as they arrive: a bounded wait
    if len(platform.admin.list_device_messages("pump-0777")) == 3:
        break
    threading.Event().wait(0.1)

# %% [markdown]
# The answer, from the trail alone: the device's record names the operation that provisioned
# it; the operation's `operation.approved` event names the approver's key, the time and the
# reason; the device's own events since then, with its stored messages and connections, say
# what it did.

# %%
rogue = platform.admin.get_device("pump-0777")
(approval,) = platform.admin.audit(action="operation.approved",
                                   target_id=rogue.provisioning_operation_id)
keys = {k.id: k for k in platform.admin.list_api_keys()}
approver = keys[approval.actor.removeprefix("api_key:")]
print(f"pump-0777 was approved by {approver.name!r} ({approval.actor_role} key {approver.id}) "
      f"at {approval.at:%H:%M:%S} UTC, reason: {approval.reason!r}, request {approval.request_id}")

since = [*platform.admin.audit(target_id=rogue.provisioning_operation_id, since=approval.at),
         *platform.admin.audit(actor="device:pump-0777", since=approval.at)]
timeline = pd.concat([
    pd.DataFrame({"at": [e.at for e in since], "what": [e.action for e in since],
                  "by": [e.actor for e in since]}),
    pd.DataFrame({"at": [c.at for c in platform.admin.list_device_connections("pump-0777")],
                  "what": ["connected" if c.connected else "disconnected"
                           for c in platform.admin.list_device_connections("pump-0777")],
                  "by": "broker"}),
    pd.DataFrame({"at": [m.received_at for m in platform.admin.list_device_messages("pump-0777")],
                  "what": [f"message on {m.stream}" for m in platform.admin.list_device_messages("pump-0777")],
                  "by": "device:pump-0777"}),
]).sort_values("at", kind="stable").reset_index(drop=True)
timeline = timeline[timeline["what"] != "operation.approved"].reset_index(drop=True)
timeline

# %%
assert approver.id == night_key.id and approver.name == "night-shift technician"
assert approval.actor_role == "technician" and approval.reason == "serial matches the delivery note"
actions = [w for w in timeline["what"] if "." in w]
assert actions == ["operation.completed", "device.registered", "token.refreshed"], actions
assert (timeline["what"] == "message on telemetry").sum() == 3
assert "connected" in set(timeline["what"])
assert timeline["at"].min() >= approval.at

# %% [markdown]
# The response, on the record too: the device is revoked with a reason, and the trail shows it
# (the full trail of the device: `to_frame(platform.admin.audit(device_id="pump-0777"))`, or
# `iiotsim audit --device pump-0777` on the command line).

# %%
platform.admin.revoke_device("pump-0777", reason="rogue: not on the line-6 delivery list")
to_frame(platform.admin.audit(device_id="pump-0777"))[["at", "action", "actor", "reason"]]

# %%
latest = platform.admin.audit(device_id="pump-0777", limit=1)[0]
assert (latest.action, latest.reason) == ("device.revoked", "rogue: not on the line-6 delivery list")

# %% [markdown]
# ## Still live
#
# The platform and the approval panel stay live after *Run All*. A new device asks to be
# provisioned: it appears in the panel (above, and again here); approve or cancel it there.

# %%
token3 = platform.admin.create_provisioning_token("line-5")
newcomer = httpx.post(f"{platform.http_url}/provisioning-operations/init", json={"deviceId": "pump-0300"},
                      headers={"Authorization": f"DeviceToken {token3.provisioning_token}"}).json()
pending = panel.refresh()
assert [op.device_id for op in pending] == ["pump-0300"]
assert "pump-0300" in panel.row(newcomer["verificationCode"]).info.value
panel

# %% [markdown]
# When you are done: `platform.stop()` (shutting the kernel down also stops it).
