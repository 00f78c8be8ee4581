# The commands of the README. Each sets itself up first (scripts/bootstrap.sh).
SHELL := /bin/bash
VENV := .venv
# pytest processes for `make test` (pytest-xdist); each starts its own servers (see README).
# Three per core: most tests spend most of their time waiting for servers, subprocesses and
# Temporal, so with fewer the cores sit idle; with more, the servers each process starts cost
# more than they save (2 cores: 4 processes 211-222 s, 6 188 s, 8 211 s).
TEST_WORKERS ?= $(shell echo $$(( 3 * $$(nproc) )))

# Options of the acceptance battery (`python -m tests.acceptance --help`); none: every
# scenario, the load one for the full 600 s.
ACCEPTANCE_ARGS ?=

.PHONY: demo test acceptance bootstrap

bootstrap:
	@bash scripts/bootstrap.sh

demo: bootstrap
	$(VENV)/bin/rai demo

test: bootstrap
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/pytest -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder --durations=15


acceptance: bootstrap
	$(VENV)/bin/python -m tests.acceptance $(ACCEPTANCE_ARGS)
