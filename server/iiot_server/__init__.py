"""iiotsim platform server: HTTP API, MQTT broker, storage and the domain rules.

Entry points live in their modules, not here: ``iiot_server.app.create_app``,
``iiot_server.runner.ServerRunner``, ``iiot_server.settings.Settings`` and
``python -m iiot_server``. The package itself exports nothing, so that the fleet
simulator's ``import iiot_server.domain`` (pure rules) does not load Litestar and amqtt.
"""

__all__: list[str] = []
