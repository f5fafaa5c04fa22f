# The two commands: `make demo` runs the platform, `make test` proves it against real services.
VENV ?= .venv
DEMO_ARGS ?=

.PHONY: demo test lint check deps clean

demo:
	@scripts/venv.sh $(VENV) server
	$(VENV)/bin/smartcity demo $(DEMO_ARGS)

deps:
	@scripts/install-test-deps.sh

test: deps
	@scripts/venv.sh $(VENV) dev
	$(VENV)/bin/python -m pytest
	# Detection once more as plain Python, so the JIT-compiled code is also covered by Python's rules
	# (bounds, integer overflow, exceptions) and by coverage.
	NUMBA_DISABLE_JIT=1 $(VENV)/bin/python -m pytest -q tests/processing

lint:
	@scripts/venv.sh $(VENV) dev
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

check: lint test

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .mypy_cache .ruff_cache
