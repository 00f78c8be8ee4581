# The commands of the README. Both set themselves up first (scripts/bootstrap.sh).
SHELL := /bin/bash
VENV := .venv
# pytest processes for `make test` (pytest-xdist); each starts its own servers (see README).
TEST_WORKERS ?= auto

.PHONY: demo test bootstrap

bootstrap:
	@bash scripts/bootstrap.sh

demo: bootstrap
	$(VENV)/bin/rai demo

test: bootstrap
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/pytest -n $(TEST_WORKERS) --dist loadfile --durations=15

