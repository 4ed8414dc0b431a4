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
# # 8. The real Spotflow device SDK against the local platform
#
# The platform's device API and its IoT Hub MQTT dialect are meant to be wire-compatible with
# Spotflow's. This notebook proves it with another project's client: the **`spotflow-device`
# 2.1.1 SDK from PyPI** (a Rust core), not iiotsim's own. It provisions with a verification code
# that a technician approves in the panel, starts, sends telemetry, reports and receives twin
# properties, and takes a cloud-to-device message.
#
# What it needs from the platform, and why (see `docs/protocol.md`):
# - **TLS.** The SDK speaks only HTTPS and MQTT over TLS, and trusts the system's CA store or the
#   file `SSL_CERT_FILE` names. `Platform(tls=True)` makes a development CA in its data directory;
#   this kernel points `SSL_CERT_FILE` at it (for this kernel only: other HTTPS from this kernel
#   then trusts that CA alone).
# - **Port 8883.** The SDK connects to port 8883 of the `iotHubHostName` the register answer
#   names, and to no other: `Platform(tls=True)` takes 8883 when it is free.
#
# *Live demo:* set `LIVE = True` and click **Approve** when the SDK shows its code.

# %% tags=["parameters"]
# Parameters (CI runs these values; a trainer may change them)
LIVE = False   # True: wait for a person to click Approve in the panel
READINGS = 12  # telemetry messages the SDK sends

# %%
import json
import os
import threading

import matplotlib.pyplot as plt
import pandas as pd
import spotflow_device

from iiotsim import Platform
from iiotsim.admin import to_frame
from iiotsim.platform import SPOTFLOW_MQTT_PORT
from iiotsim.widgets import ApprovalPanel, wait_for

platform = Platform(tls=True).start()
os.environ["SSL_CERT_FILE"] = str(platform.ca_cert_path)  # what the SDK's TLS trusts
print("HTTPS:", platform.http_url, "| MQTT over TLS:", platform.mqtt_host, platform.mqtt_port)
print("development CA:", platform.ca_cert_path)
if platform.mqtt_port != SPOTFLOW_MQTT_PORT:
    print(f"Port {SPOTFLOW_MQTT_PORT} was taken: the SDK will not reach MQTT. Free it and restart.")

# %% [markdown]
# ## A Provisioning Token and the technician's panel

# %%
pt = platform.admin.create_provisioning_token("spotflow class").provisioning_token
panel = ApprovalPanel(platform.admin)
panel

# %% [markdown]
# ## Start the SDK
#
# `DeviceClient.start` blocks until the device is provisioned, registered and connected (it polls
# the operation every 5 s), so it runs in a thread. Its display callback receives the
# Provisioning Operation: the code a technician matches in the panel.

# %%
shown = []
started = []

def display(operation):
    shown.append(operation.verification_code)
    print("The SDK shows the verification code", operation.verification_code)

def start_sdk():
    started.append(spotflow_device.DeviceClient.start(
        device_id="spotflow-demo",
        provisioning_token=pt,
        db=str(platform.data_dir / "spotflow-demo.db"),  # the SDK's own local store
        instance=platform.http_url.removeprefix("https://"),
        display_provisioning_operation_callback=display,
    ))

threading.Thread(target=start_sdk, daemon=True, name="spotflow-sdk").start()
await wait_for(lambda: bool(shown), give_up_after=60, waiting_for="the SDK's verification code")

# %% [markdown]
# ## Approve
#
# Live, click **Approve** on its row. In CI this cell approves from code, as the button would.

# %%
if LIVE:
    print(f"Click Approve in the panel above for {shown[0]} ...")
else:
    panel.refresh()
    panel.approve(shown[0])
await wait_for(lambda: bool(started), give_up_after=600,
               waiting_for=f"the SDK to start (code {shown[0]})")
client = started[0]
print("started:", client.workspace_id, client.device_id)

# %%
assert (client.workspace_id, client.device_id) == ("default", "spotflow-demo")
assert platform.admin.get_device("spotflow-demo").connected

# %% [markdown]
# ## Telemetry
#
# The SDK stores each message in its own SQLite file, then publishes it on
# `devices/default:spotflow-demo/messages/events/stream-name=…&message-id=…`; the platform
# stores it on that stream, once per message id.

# %%
sender = client.create_stream_sender(stream_group="plant", stream="temperature")
for n in range(READINGS):
    sender.send_message(json.dumps({"n": n, "celsius": 20 + 0.25 * n}).encode())
client.wait_enqueued_messages_sent()
await wait_for(lambda: len(platform.admin.list_device_messages("spotflow-demo")) >= READINGS,
               give_up_after=60, waiting_for="the messages to be stored")
frame = to_frame(platform.admin.list_device_messages("spotflow-demo"))
frame[["seq", "stream", "message_id", "payload"]].head()

# %%
readings = pd.DataFrame([json.loads(p) for p in frame["payload"]])
ax = readings.plot(x="n", y="celsius", marker="o", legend=False, figsize=(7, 3))
ax.set_xlabel("message number"); ax.set_ylabel("temperature (°C)")
ax.set_title("Sent by the Spotflow SDK, stored by the platform");

# %%
assert readings["n"].tolist() == list(range(READINGS))  # in order, each once
assert set(frame["stream"]) == {"temperature"}

# %% [markdown]
# ## The twin, both ways
#
# Reported properties go up as IoT Hub's `$iothub/twin/PATCH/properties/reported/`; a desired
# change made over the admin API comes down as `$iothub/twin/PATCH/properties/desired/`.

# %%
client.update_reported_properties({"firmware": "2.1.1", "fan": "off"})
platform.admin.update_desired_properties("spotflow-demo", {"fan": "on", "interval_s": 30})
await wait_for(lambda: client.get_desired_properties().values.get("fan") == "on",
               give_up_after=60, waiting_for="the desired change to reach the SDK")
await wait_for(lambda: platform.admin.get_twin("spotflow-demo").reported.properties.get("fan") == "off",
               give_up_after=60, waiting_for="the reported properties to land")
twin = platform.admin.get_twin("spotflow-demo")
pd.DataFrame({"desired": pd.Series(twin.desired.properties),
              "reported": pd.Series(twin.reported.properties)})

# %%
assert client.get_desired_properties().values == {"fan": "on", "interval_s": 30}
assert twin.reported.properties == {"firmware": "2.1.1", "fan": "off"}

# %% [markdown]
# ## A cloud-to-device message
#
# Sent on `devices/default:spotflow-demo/messages/devicebound/…` at QoS 1. The SDK keeps it in its
# database and acknowledges it; the platform marks it *delivered* only at that acknowledgement.
# (The SDK 2.1.1's Python API has no call to read it back.)

# %%
platform.admin.send_to_device("spotflow-demo", "calibrate", properties={"sensor": "t1"})
await wait_for(
    lambda: [m.state for m in platform.admin.list_cloud_to_device_messages("spotflow-demo")] == ["delivered"],
    give_up_after=60, waiting_for="the SDK to acknowledge the message")
to_frame(platform.admin.list_cloud_to_device_messages("spotflow-demo"))[
    ["message_id", "state", "payload", "properties"]]

# %%
assert platform.admin.list_cloud_to_device_messages("spotflow-demo")[0].state == "delivered"

# %% [markdown]
# The platform and the SDK stay live after *Run All*: try `platform.admin.revoke_device("spotflow-demo")`
# and watch the SDK provision again (a new code in the panel) at its next start. Shutting the kernel
# down stops both.
