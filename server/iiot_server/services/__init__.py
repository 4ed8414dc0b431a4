"""iiot_server.services."""
