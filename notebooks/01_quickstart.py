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
# **messages** arrive. Its last section approves a **factory line** of devices in one call.
#
# *Live demo:* set `LIVE = True` below and click **Approve** in the panel when the device shows its
# code. In CI the same cells approve from code.

# %% tags=["parameters"]
# Parameters (CI runs these values; a trainer may change them)
LIVE = False          # True: wait for a person to click Approve in the panel
MESSAGES = 20         # telemetry messages the device sends
LINE_DEVICES = 50     # devices a factory line boots in the batch-approval section

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
# ## A factory line: approving a batch
#
# A factory line boots its devices by the dozen, each with line 3's Provisioning Token and a
# Device ID from the line (`line3-0001`, ...). Approving them one by one is a morning of
# clicking. One call approves every pending operation a **filter** selects: a Provisioning
# Token, a Device ID prefix or glob, attribute values, a creation window, ids or
# verification codes (the fields are AND-ed), at most 1,000 per call. A **dry run** says what
# would happen to each operation and changes nothing.
#
# Two other operations are pending at the same time and must stay so: a device of line 4
# (its own token) and a bench unit that borrowed line 3's token under another name.
# The devices here open their operations with plain HTTP, the SDK's first call, which is
# quicker than booting 50 SDK clients.

# %%
import httpx

line3 = platform.admin.create_provisioning_token("line 3")
line4 = platform.admin.create_provisioning_token("line 4")


def open_operation(http, token, device_id):
    """What a booting device sends first: its Provisioning Token and the Device ID it asks for."""
    answer = http.post(
        "/provisioning-operations/init",
        json={"deviceId": device_id, "attributes": {"site": "hall-3"}},
        headers={"Authorization": f"DeviceToken {token.provisioning_token}"},
    )
    answer.raise_for_status()
    return answer.json()


with httpx.Client(base_url=platform.http_url, timeout=30) as http:
    line_ops = {
        f"line3-{i:04d}": open_operation(http, line3, f"line3-{i:04d}")
        for i in range(1, LINE_DEVICES + 1)
    }
    foreign_ops = {
        "line4-0001": open_operation(http, line4, "line4-0001"),
        "bench-0001": open_operation(http, line3, "bench-0001"),  # line 3's token, not the line
    }
pending = {o.device_id for o in platform.admin.list_operations(state="pending")}
print(f"{len(pending)} operations pending: {len(line_ops)} from line 3, {len(foreign_ops)} others")

# %% [markdown]
# The dry run: line 3's token **and** the line's Device ID prefix. The same call in a shell is
# `iiotsim approve-batch --token <id> --prefix line3- --dry-run` (see *Batch approval and
# cancellation* in docs/tokens.md).

# %%
line3_filter = {"provisioning_token_id": line3.id, "device_id_prefix": "line3-"}
preview = platform.admin.approve_operations(line3_filter, dry_run=True)
print(f"dry run: {preview.matched} matched, {preview.counts}")
to_frame(preview.results)[["device_id", "verification_code", "result"]].head()

# %%
assert preview.dry_run and not preview.truncated
assert preview.counts == {"would_approve": LINE_DEVICES}
assert sorted(r.device_id for r in preview.results) == sorted(line_ops)
assert {r.provisioning_operation_id for r in preview.results} == {
    o["provisioningOperationId"] for o in line_ops.values()
}
# the dry run changed nothing: all of them are still pending
assert {o.device_id for o in platform.admin.list_operations(state="pending")} == (
    set(line_ops) | set(foreign_ops)
)

# %% [markdown]
# ### The same selection in the approval panel
#
# The panel's **Matching** box does this for a technician: type the line's prefix (or a glob
# such as `line3-00?1`), click **Preview** (a dry run: how many, and the first rows), then
# **Approve all N**, which approves exactly the previewed operations. Here the cell types the
# prefix and clicks *Preview*; the panel is the one shown above, displayed again.

# %%
panel_preview = panel.preview("line3-")   # what the Preview button does
panel

# %%
assert panel_preview.dry_run and panel_preview.counts == {"would_approve": LINE_DEVICES}
assert panel.approve_all_button.description == f"Approve all {LINE_DEVICES}"
line_op_ids = sorted(o["provisioningOperationId"] for o in line_ops.values())
assert sorted(panel.previewed_ids) == line_op_ids
assert f"{LINE_DEVICES} match line3-" in panel.preview_box.value

# %% [markdown]
# ### Approve the line
#
# The real call, with a **reason** the audit trail keeps beside each approval. Line 4's device
# and the bench unit are left pending for their own technicians.

# %%
REASON = "line 3 morning shift: codes checked against the build sheet"
done = platform.admin.approve_operations(line3_filter, reason=REASON)
panel.match_text.value = ""   # the preview is spent (editing the box clears it, as in the lab)
panel.refresh()
operations = to_frame(platform.admin.list_operations())
operations.groupby(operations["device_id"].str.split("-").str[0].rename("Device ID prefix"))[
    "state"
].value_counts().unstack(fill_value=0)

# %%
assert not done.dry_run and not done.truncated and done.matched == LINE_DEVICES
assert done.counts == {"approved": LINE_DEVICES}
# exactly the operations the dry run listed
assert sorted(r.provisioning_operation_id for r in done.results) == sorted(
    r.provisioning_operation_id for r in preview.results
)
state = dict(zip(operations["device_id"], operations["state"], strict=True))
assert {state[d] for d in line_ops} == {"approved"}
assert {d: state[d] for d in foreign_ops} == {"line4-0001": "pending", "bench-0001": "pending"}
assert state["pump-0001"] == "completed"
assert sorted(r.op.device_id for r in panel.rows.values()) == ["bench-0001", "line4-0001"]

# %% [markdown]
# ### The audit trail
#
# Each approval of the batch is one audit row: who (the admin key), when, which operation,
# and the batch's reason. The quickstart device's approval above is there too, without one.

# %%
approvals = to_frame(platform.admin.audit(action="operation.approved"))
batch_rows = approvals[approvals["reason"] == REASON]
batch_rows[["at", "actor_role", "action", "target_kind", "target_id", "reason"]].head()

# %%
assert len(batch_rows) == LINE_DEVICES
assert set(batch_rows["target_id"]) == {r.provisioning_operation_id for r in done.results}
assert set(batch_rows["actor_role"]) == {"admin"} and set(batch_rows["target_kind"]) == {
    "provisioning_operation"
}
# nothing else carries the reason: the only other approval is the quickstart device's
others = approvals[approvals["reason"] != REASON]
assert others["target_id"].tolist() == [op.id] and others["reason"].isna().all()

# %% [markdown]
# The platform, the device and the panel stay live after *Run All*, so you can keep
# clicking and sending. When you are done: `device.close(); platform.stop()` (shutting the
# kernel down also stops them).
