"""iiotsim device SDK."""
