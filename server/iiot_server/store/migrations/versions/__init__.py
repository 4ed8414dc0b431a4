"""The revisions, oldest first by their number (``0001_…``); see the package docstring."""
