# technic-stream: `make demo` runs the whole system locally; `make test` runs the suite.
# Both set everything up themselves (a .venv with the project and its local servers).

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip --disable-pip-version-check -q
STAMP  := $(VENV)/.installed

.PHONY: install demo test test-unit test-integration lint schemas bench clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip
	$(PIP) install -e '.[dev,local]'
	@touch $(STAMP)

demo: $(STAMP)
	$(BIN)/technic-stream up

test: $(STAMP)
	$(BIN)/python -m pytest

test-unit: $(STAMP)
	$(BIN)/python -m pytest tests/unit tests/kernels

test-integration: $(STAMP)
	$(BIN)/python -m pytest tests/integration

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: $(STAMP)
	$(PIP) install -e '.[bench]'
	$(BIN)/python bench/kernels.py
	$(BIN)/python bench/rules.py
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/engine.py
	$(BIN)/python bench/gateway.py
	$(BIN)/python bench/scan.py

schemas: $(STAMP)
	$(BIN)/technic-stream schemas export

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis build *.egg-info
