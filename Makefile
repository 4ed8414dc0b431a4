# The commands a newcomer types: `make lab`, `make serve` and `make test` (see README.md).
# The interpreter's real path: a pyenv shim's path looks like another interpreter to uv,
# which then deletes and rebuilds .venv on every target.
PYTHON ?= $(shell for p in python3.11 python3; do command -v $$p >/dev/null && exec $$p -c 'import sys; print(sys.executable)'; done)
UV := .tools/bin/uv
UV_ENV := UV_PYTHON_DOWNLOADS=never UV_PROJECT_ENVIRONMENT=.venv
PY := .venv/bin/python

.PHONY: venv serve lab test lint unit notebooks clean

$(UV):
	$(PYTHON) -m venv .tools
	.tools/bin/python -m pip install --quiet --disable-pip-version-check "uv==0.13.8"

# Always re-synced: uv makes this a no-op (well under a second) when nothing changed.
venv: $(UV)
	$(UV_ENV) $(UV) sync --locked --python $(PYTHON) --all-extras

serve: venv
	.venv/bin/iiotsim serve

lab: venv
	.venv/bin/iiotsim lab

lint: venv
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy

unit: venv
	.venv/bin/pytest

# nbval's imports cost seconds of start-up: the notebooks run in their own pytest call
notebooks: venv
	.venv/bin/pytest --nbval-lax --nbval-current-env \
		--nbval-sanitize-with notebooks/sanitize.cfg notebooks/

test: lint unit notebooks

clean:
	rm -rf .venv .tools
