# The two commands: `make run` serves the hook locally, `make test` checks everything.
# ARGS passes arguments on: `make test ARGS="-k receipts -x"`, `make bench ARGS="--against main"`.
PYTHON ?= python3
ARGS ?=
VENV := .venv
BIN := $(VENV)/bin

.PHONY: run test lint typecheck unit bench deploy clean

$(BIN)/python:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11 or later is needed: make ... PYTHON=python3.11")'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.runtime: requirements.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet -r requirements.txt
	touch $@

$(VENV)/.dev: requirements.txt requirements-dev.txt | $(BIN)/python
	$(BIN)/python -m pip install --quiet -r requirements-dev.txt
	touch $@ $(VENV)/.runtime

# The sandbox checks requests against Twilio's contract with jsonschema, a dev dependency.
run: $(VENV)/.dev
	$(BIN)/python -m tools.sandbox.run_local

test: $(VENV)/.dev
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/python -m pytest $(ARGS)

# The in-process tests only (no functions-framework, sandbox or other process): seconds, not minutes.
unit: $(VENV)/.dev
	$(BIN)/python -m pytest -m "not e2e" $(ARGS)

# Timings against Okta's limits, side by side with baselines; not part of `make test`.
bench: $(VENV)/.runtime
	$(BIN)/python -m tools.bench.bench $(ARGS)

clean:
	rm -rf $(VENV) .run .mypy_cache .ruff_cache .pytest_cache .hypothesis
	find . -name __pycache__ -type d -prune -exec rm -rf {} +

# Deploy to Cloud Run functions; DRY_RUN=1 prints the gcloud command only. See docs/deploy.md.
deploy: $(VENV)/.runtime
	$(BIN)/python -m tools.deploy
