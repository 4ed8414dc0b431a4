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
# # 3. Device twin and fleet configurations
#
# Three real devices (the SDK) at two sites. A **fleet configuration** targets devices by tags
# and sets desired properties; the devices receive them, apply them and report them back; the
# configuration's metrics count targeted and applied devices.

# %% tags=["parameters"]
DEVICES = 3

# %%
import threading
from iiot_device import DeviceClient
from iiotsim import Platform
from iiotsim.widgets import DeviceView

platform = Platform().start()
token = platform.admin.create_provisioning_token("pumps")
devices = {}
def applied(name):
    def on_desired(desired):   # a device applies what it is told and reports it back
        devices[name].update_reported_properties(
            {k: v for k, v in desired.properties.items()} | {"applied_version": desired.version})
    return on_desired

for i in range(DEVICES):
    name = f"pump-{i:04d}"
    devices[name] = DeviceClient.start(token.provisioning_token, platform.data_dir / f"{name}.db",
                                       server_url=platform.http_url, device_id=name,
                                       on_provisioning_operation=lambda op: platform.admin.approve_operation(op.id),
                                       on_desired_properties=applied(name))
for i, name in enumerate(devices):
    platform.admin.update_tags(name, {"site": "hall-3" if i % 2 == 0 else "hall-7"})
sorted(devices)

# %%
config = platform.admin.create_fleet_configuration(
    {"eq": {"path": "tags.site", "value": "hall-3"}}, {"interval": 30}, priority=1,
    configuration_id="hall3-slow")
override = platform.admin.create_fleet_configuration(
    {"eq": {"path": "tags.site", "value": "hall-3"}}, {"interval": 5}, priority=9,
    configuration_id="hall3-urgent")
(config.metrics, override.metrics)


# %%
def wait(check, timeout=30):
    deadline = threading.Event()
    for _ in range(int(timeout / 0.05)):
        if check(): return True
        deadline.wait(0.05)
    return check()

hall3 = [n for i, n in enumerate(devices) if i % 2 == 0]
assert wait(lambda: all(devices[n].desired_properties.properties.get("interval") == 5 for n in hall3))
assert wait(lambda: platform.admin.get_fleet_configuration("hall3-urgent").metrics.applied == len(hall3))
metrics = platform.admin.get_fleet_configuration("hall3-urgent").metrics
metrics

# %%
m = platform.admin.get_fleet_configuration("hall3-urgent").metrics
assert (m.targeted, m.applied) == (len(hall3), len(hall3))

# %%
view = DeviceView(platform.admin, "pump-0000")
view

# %%
platform.admin.delete_fleet_configuration("hall3-urgent")   # the lower priority takes over
assert wait(lambda: all(devices[n].desired_properties.properties.get("interval") == 30 for n in hall3))
assert "pump-0001" not in hall3 and "interval" not in devices["pump-0001"].desired_properties.properties

# %%
for d in devices.values():
    d.close()
platform.stop()
