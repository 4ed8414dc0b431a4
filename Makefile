# The two commands a newcomer types: `make serve` and `make test` (see README.md).
PYTHON ?= $(shell command -v python3.11 || command -v python3)
UV := .tools/bin/uv
UV_ENV := UV_PYTHON_DOWNLOADS=never UV_PROJECT_ENVIRONMENT=.venv
PY := .venv/bin/python

.PHONY: venv serve test lint unit notebooks clean

$(UV):
	$(PYTHON) -m venv .tools
	.tools/bin/python -m pip install --quiet --disable-pip-version-check "uv==0.13.8"

# Always re-synced: uv makes this a no-op (well under a second) when nothing changed.
venv: $(UV)
	$(UV_ENV) $(UV) sync --locked --python $(PYTHON) --all-extras

serve: venv
	.venv/bin/iiotsim serve

lint: venv
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy

unit: venv
	.venv/bin/pytest

test: lint unit

clean:
	rm -rf .venv .tools
