"""iiot_server.api."""
