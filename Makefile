# Every target creates the virtualenv itself: nothing is installed by hand.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install browser promtool test test-long lint migrate run demo dashboard bench clean fuzz

# The tests start about a hundred Python processes (xdist workers, the CLI, daemons): with
# PYTHONDONTWRITEBYTECODE set (as on our CI machines) each one compiles the worker and pytest
# rewrites every test module again. Cached bytecode (git-ignored) saves that.
unexport PYTHONDONTWRITEBYTECODE

# The venv gets the current pip from the interpreter's own pip (13 s → 5 s: venv's ensurepip
# would install the bundled old one first). pip would byte-compile on one core (14 s here);
# compileall on every core takes 8 s. A file that does not compile (none today) is simply
# compiled when imported.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv --without-pip $(VENV)
	$(PYTHON) -m pip --python $(BIN)/python install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet --no-compile -e '.[dev]'
	$(BIN)/python -m compileall -qq -j 0 $(VENV)/lib || true
	touch $(STAMP)

install: $(STAMP)

# The dashboard test drives Debian's Chromium (never a browser download): installed once.
CHROMIUM ?= /usr/bin/chromium
browser: $(CHROMIUM)
$(CHROMIUM):
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium

# The shipped Prometheus rules (deploy/) are checked by promtool, from Debian's prometheus
# package (the server is not started: no service runs here): installed once.
PROMTOOL ?= /usr/bin/promtool
promtool: $(PROMTOOL)
$(PROMTOOL):
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends prometheus

# Three workers on two cores: a third of the tests wait (on a daemon, a deadline, a browser)
# rather than compute; worksteal evens out the slow ones at the end.
test: $(STAMP) $(CHROMIUM) $(PROMTOOL)
	PROMTOOL=$(PROMTOOL) $(BIN)/python -m pytest -n 3 --dist worksteal --cov=worker --cov-report=term --cov-fail-under=90

# The long fault variants (a 30-second sync under idle_session_timeout = 5s, …): minutes.
test-long: $(STAMP)
	$(BIN)/python -m pytest -m long tests/faults

# The property tests (tests/property) with many more examples than `make test` runs.
fuzz: $(STAMP)
	HYPOTHESIS_PROFILE=fuzz $(BIN)/python -m pytest -m property

lint: $(STAMP)
	$(BIN)/ruff check worker tests bench alembic
	$(BIN)/ruff format --check worker tests bench alembic
	$(BIN)/mypy

migrate: $(STAMP)
	$(BIN)/openrouter-watcher migrate

# Local foreground run on the defaults: console logs, and a local master key in
# ./data/master.key created on the first run when none is configured.
run: $(STAMP)
	$(BIN)/openrouter-watcher migrate
	OPENROUTER_WATCHER_LOGGING_FORMAT=$${OPENROUTER_WATCHER_LOGGING_FORMAT:-console} \
		$(BIN)/openrouter-watcher run --local-key-file ./data/master.key

# Offline: a fake OpenRouter, a throw-away database, one sync, the resulting spend.
demo: $(STAMP)
	$(BIN)/python -m worker.demo

# The demo database's dashboard, API and metrics until Ctrl-C (runs the demo first if needed).
DASHBOARD_LISTEN ?= 127.0.0.1:8787
dashboard: $(STAMP)
	$(BIN)/python -m worker.demo dashboard --listen $(DASHBOARD_LISTEN)

# Speed and memory figures (not tests): BENCH_SCALE=small for a one-minute run.
bench: $(STAMP)
	$(BIN)/python bench/run.py

clean:
	rm -rf $(VENV) .pytest_cache .coverage build *.egg-info
