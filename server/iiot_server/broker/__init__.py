"""iiot_server.broker."""
