"""iiotsim platform server."""
