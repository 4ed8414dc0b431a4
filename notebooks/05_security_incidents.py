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
# Three incidents on the real embedded platform, and what the simulator says about their cost:
#
# 1. a **leaked Provisioning Token**: approval stops it;
# 2. a **leaked Registration Token**: revocation ends it; its exposure window depends on the lifetime;
# 3. **duplicate Device IDs**: two devices fighting over one connection, recorded as takeovers.

# %% tags=["parameters"]
LIFETIMES_H = [1, 24, 168]
FLEET = 200

# %%
import threading
import httpx
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
device.device_id

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
[d.device_id for d in platform.admin.list_devices()]

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
before, after

# %%
assert before == 201 and after in (401, 403)

# %%
from iiotsim.sim import Scenario, sweep
exposure = sweep(Scenario(fleet_size=FLEET, duration_days=20, seed=5),
                 token__lifetime=[h * 3600 for h in LIFETIMES_H], processes=1, progress=False)
exposure[["token.lifetime", "rt_leak_exposure_mean_h", "rt_leak_exposure_p95_h"]]

# %%
assert exposure["rt_leak_exposure_mean_h"].is_monotonic_increasing

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
platform.admin.get_device("pump-0200").connection_takeovers

# %%
assert platform.admin.get_device("pump-0200").connection_takeovers >= 1
for c in (first, second):
    c.disconnect(); c.loop_stop()
panel.close(); platform.stop()
