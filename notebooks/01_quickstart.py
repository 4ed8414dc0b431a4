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
# # 1. Quickstart: provision a real device
#
# This notebook starts the **embedded platform** (HTTP API + MQTT broker, SQLite in a temporary
# directory), creates a **Provisioning Token**, boots a **real device** (the `iiot_device` SDK in
# this kernel), lets a technician **approve** it in the approval panel, and watches its
# **messages** arrive.
#
# *Live demo:* set `LIVE = True` below and click **Approve** in the panel when the device shows its
# code. In CI the same cells approve from code.

# %% tags=["parameters"]
# Parameters (CI runs these values; a trainer may change them)
LIVE = False          # True: wait for a person to click Approve in the panel
MESSAGES = 20         # telemetry messages the device sends

# %%
import queue

import matplotlib.pyplot as plt
from matplotlib.ticker import MaxNLocator
import pandas as pd

from iiot_device import DeviceClient
from iiotsim import Platform
from iiotsim.admin import to_frame
from iiotsim.widgets import ApprovalPanel

platform = Platform().start()
print("platform:", platform.http_url, "| MQTT:", platform.mqtt_host, platform.mqtt_port)

# %% [markdown]
# ## A Provisioning Token
#
# Manufactured into the device. This one lets each device name itself and gives it a
# Registration Token valid for one day (refreshed by the SDK at half its lifetime).

# %%
token = platform.admin.create_provisioning_token("quickstart", max_registration_token_lifetime=86400)
pt = token.provisioning_token   # the secret: shown once
token.id

# %% [markdown]
# ## The technician's approval panel
#
# Pending Provisioning Operations appear here with their verification code, the Device ID the
# device asked for, its attributes, age and expiry countdown.

# %%
panel = ApprovalPanel(platform.admin)
panel

# %% [markdown]
# ## Boot the device
#
# `DeviceClient.start` opens a Provisioning Operation, shows its verification code (here through a
# callback), and waits for approval. It runs in a background thread, so the panel above keeps
# working while the device waits.

# %%
from concurrent.futures import ThreadPoolExecutor

shown = queue.Queue()
booting = ThreadPoolExecutor(max_workers=1, thread_name_prefix="device").submit(
    DeviceClient.start,
    pt, platform.data_dir / "device-0001.db",
    server_url=platform.http_url,
    device_id="pump-0001",
    attributes={"site": "hall-3", "model": "P-200"},
    on_provisioning_operation=shown.put,
)
op = shown.get(timeout=30)
print("The device shows:", op.verification_code)

# %% [markdown]
# ## Approve
#
# Live, click **Approve** on the device's row in the panel above. This cell waits for the
# device to be registered, and the panel's buttons keep working while it waits, also under
# *Run All*: the cell *awaits* (`await wait_for(...)`), and while a cell awaits, the kernel
# handles clicks. In CI the cell approves from code, as the button would.

# %%
from iiotsim.widgets import wait_for

if LIVE:
    print(f"Click Approve in the panel above for {op.verification_code} ...")
else:
    panel.refresh()
    panel.approve(op.verification_code)   # what the Approve button does
await wait_for(booting.done, give_up_after=600,
               waiting_for=f"the device to be approved (code {op.verification_code})")
device = booting.result()   # the device's own error, if provisioning failed
print("registered as", device.device_id, "| token valid until", device.registration_token_expires_at)

# %%
assert device.device_id == "pump-0001"
assert platform.admin.get_operation(op.id).state == "completed"

# %% [markdown]
# ## Messages
#
# `send_message` returns as soon as the message is durable in the device's SQLite outbox; the SDK
# sends it over MQTT and deletes it when the platform acknowledges it (after storing it).

# %%
import json
for i in range(MESSAGES):
    device.send_message(json.dumps({"temperature": 20 + (i % 7) * 0.5, "n": i}), stream="telemetry")
assert device.wait_sent(timeout=60)
frame = to_frame(platform.admin.list_device_messages("pump-0001", stream="telemetry"))
frame[["seq", "stream", "message_id", "payload"]].head()

# %%
values = pd.DataFrame([json.loads(p) for p in frame["payload"]])
ax = values.plot(x="n", y="temperature", marker="o", figsize=(7, 3), legend=False)
ax.set_xlabel("message number"); ax.set_ylabel("temperature (°C)")
ax.xaxis.set_major_locator(MaxNLocator(integer=True))   # messages are counted, not measured
ax.set_title("pump-0001 telemetry");

# %%
assert len(frame) == MESSAGES
assert values["n"].tolist() == list(range(MESSAGES))   # in order, each once
assert device.pending_messages_count == 0

# %% [markdown]
# ## The device record
#
# Connection state and token status as the platform sees them.

# %%
record = platform.admin.get_device("pump-0001")
record.connected, record.registration_token_status, record.connection_takeovers

# %%
assert (record.connected, record.registration_token_status, record.connection_takeovers) == (
    True, "valid", 0
)

# %% [markdown]
# The platform, the device and the panel stay live after *Run All*, so you can keep
# clicking and sending. When you are done: `device.close(); platform.stop()` (shutting the
# kernel down also stops them).
