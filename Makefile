# The commands of the README. Both set themselves up first (scripts/bootstrap.sh).
SHELL := /bin/bash
VENV := .venv
# Options of the acceptance battery, e.g. ACCEPTANCE_ARGS="--load-seconds 60 --only 6-rls-penetration".
ACCEPTANCE_ARGS ?=
# pytest processes for `make test` (pytest-xdist); each starts its own servers (see README).
TEST_WORKERS ?= auto

.PHONY: demo test bootstrap acceptance

bootstrap:
	@bash scripts/bootstrap.sh

demo: bootstrap
	$(VENV)/bin/rai demo

test: bootstrap
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(VENV)/bin/pytest -n $(TEST_WORKERS) --dist loadfile --durations=15

# The acceptance battery (issue 13): starts its own stack, writes acceptance-report.md/.json.
acceptance: bootstrap
	$(VENV)/bin/python -m tests.acceptance $(ACCEPTANCE_ARGS)
