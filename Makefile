# Everything runs from the project's own virtualenv, created on first use.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: run serve test lint bench vendor clean

# Development only: a data key in var/ (production reads HOTLINE_DATA_KEY alone).
DEV_KEY = test -s var/data.key || (umask 077 && $(BIN)/hotline new-data-key > var/data.key)

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

# The demo: training accounts and the chat simulator.
run: $(STAMP)
	mkdir -p var
	$(DEV_KEY)
	$(BIN)/hotline migrate
	$(BIN)/hotline import-units
	$(BIN)/hotline serve --demo --host 127.0.0.1 --port 8080

# The service itself, with the chat channels the environment configures.
serve: $(STAMP)
	mkdir -p var
	$(DEV_KEY)
	$(BIN)/hotline migrate
	$(BIN)/hotline import-units
	$(BIN)/hotline serve --host 127.0.0.1 --port 8080

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

test: $(STAMP)
	bash scripts/test.sh

# Re-fetch the vendored JS libraries (committed) from the npm registry.
vendor:
	bash scripts/vendor.sh

bench: $(STAMP)
	$(BIN)/python bench/intake.py
	$(BIN)/python bench/escalation.py
	$(BIN)/python bench/photos.py
	$(BIN)/python bench/routing.py
	$(BIN)/python bench/stats.py
	$(BIN)/python bench/map.py
	$(BIN)/python bench/scaleout.py
	$(BIN)/python bench/webhooks.py

clean:
	rm -rf $(VENV) var .mypy_cache .pytest_cache .ruff_cache
