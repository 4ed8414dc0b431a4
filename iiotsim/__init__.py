"""iiotsim: notebook-facing library."""
