"""iiot_server.store."""
