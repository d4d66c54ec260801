# Every target creates the virtualenv itself: nothing is installed by hand.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test lint migrate run demo bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

install: $(STAMP)

test: $(STAMP)
	$(BIN)/python -m pytest --cov=worker --cov-report=term --cov-fail-under=90

lint: $(STAMP)
	$(BIN)/ruff check worker tests bench alembic
	$(BIN)/ruff format --check worker tests bench alembic

migrate: $(STAMP)
	$(BIN)/openrouter-watcher migrate

clean:
	rm -rf $(VENV) .pytest_cache .coverage build *.egg-info
