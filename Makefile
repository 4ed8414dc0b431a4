# The commands a newcomer types: `make lab`, `make serve` and `make test` (see README.md).
# The interpreter's real path: a pyenv shim's path looks like another interpreter to uv,
# which then deletes and rebuilds .venv on every target.
PYTHON ?= $(shell for p in python3.11 python3; do command -v $$p >/dev/null && exec $$p -c 'import sys; print(sys.executable)'; done)
UV := .tools/bin/uv
UV_ENV := UV_PYTHON_DOWNLOADS=never UV_PROJECT_ENVIRONMENT=.venv
PY := .venv/bin/python

.PHONY: venv git-filter serve lab test lint unit notebooks clean

$(UV):
	$(PYTHON) -m venv .tools
	.tools/bin/python -m pip install --quiet --disable-pip-version-check "uv==0.13.8"

# Notebooks keep their outputs in the lab but never in git: git passes every *.ipynb it
# stages through this clean filter (.gitattributes), which drops outputs and execution
# counts but keeps cell ids, tags and the kernel (only language_info's name: no churn
# from the kernel's version). The path is relative: git runs filters at the top of the
# work tree, so a moved checkout still works. Skipped outside a git checkout (a tarball).
NBSTRIPOUT := .venv/bin/nbstripout --keep-id --extra-keys "metadata.language_info.codemirror_mode \
	metadata.language_info.file_extension metadata.language_info.mimetype \
	metadata.language_info.nbconvert_exporter metadata.language_info.pygments_lexer \
	metadata.language_info.version"

git-filter:
	@if git rev-parse --git-dir >/dev/null 2>&1 && [ -z "$$(git rev-parse --show-cdup)" ]; then \
		git config filter.nbstripout.clean '$(NBSTRIPOUT)' && \
		git config filter.nbstripout.smudge cat; \
	fi

# Always re-synced: uv makes this a no-op (about a second) when nothing changed.
# Bytecode is compiled here, ours too: with PYTHONDONTWRITEBYTECODE=1 (set on the machines
# that run CI here) nothing is ever cached, and every process (pytest's workers, notebook
# kernels, hybrid and Dask workers, the CLI tests' servers) compiled pandas, scipy,
# Litestar and the rest from source: 6.3-7.5 s of CPU to import the platform and the
# simulator, 2.5 s with bytecode (28 s to compile once, 1.3 s when it is there).
venv: $(UV) git-filter
	$(UV_ENV) $(UV) sync --locked --python $(PYTHON) --all-extras --compile-bytecode
	$(PY) -m compileall -q -j 0 server/iiot_server device/iiot_device iiotsim

serve: venv
	.venv/bin/iiotsim serve

lab: venv
	.venv/bin/iiotsim lab

lint: venv
	.venv/bin/ruff check .
	.venv/bin/ruff format --check .
	.venv/bin/mypy

# Both cores (-n auto): 12 min serial had outgrown the suite's budget. The tests that need
# port 8883 (Spotflow's) take it in turn (the spotflow_port fixture's file lock). The
# notebooks stay serial: two kernels starting at once under -n died before kernel_info
# (clean-clone CI, 23:12).
unit: venv
	.venv/bin/pytest -n auto --durations=25

# nbval's imports cost seconds of start-up: the notebooks run in their own pytest call
notebooks: venv
	.venv/bin/pytest --nbval-lax --nbval-current-env \
		--nbval-sanitize-with notebooks/sanitize.cfg notebooks/

test: lint unit notebooks

clean:
	rm -rf .venv .tools
