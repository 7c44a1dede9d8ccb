# technic-stream: `make demo` runs the whole system locally; `make test` runs the suite.
# Both set everything up themselves (a .venv with the project and its local servers).

PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip --disable-pip-version-check -q
STAMP  := $(VENV)/.installed

# the dashboard's charting library, vendored from the npm registry at install time
LWC_VERSION := 5.2.1
STATIC      := technic_stream/gateway/static/vendor
CHARTS      := $(STATIC)/lightweight-charts.standalone.production.js
# the browser the dashboard's tests drive (Debian's package; Playwright's own download
# cannot run here)
CHROMIUM    ?= /usr/bin/chromium

.PHONY: install demo test test-unit test-integration lint schemas bench clean browser

install: $(STAMP) $(CHARTS)

$(CHARTS):
	@mkdir -p $(STATIC) build/npm
	cd build/npm && npm pack --silent lightweight-charts@$(LWC_VERSION) > /dev/null
	tar -xzf build/npm/lightweight-charts-$(LWC_VERSION).tgz -C build/npm
	cp build/npm/package/LICENSE $(STATIC)/lightweight-charts.LICENSE
	cp build/npm/package/dist/lightweight-charts.standalone.production.js $(CHARTS)

browser:
	@test -x $(CHROMIUM) || { echo "installing Debian's chromium for the dashboard tests"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium > /dev/null) \
	  || { echo "could not install chromium (needs root and Debian's package registry)"; exit 1; }; }

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(PIP) install --upgrade pip
	$(PIP) install -e '.[dev,local]'
	@touch $(STAMP)

demo: install
	$(BIN)/technic-stream up

test: install browser
	$(BIN)/python -m pytest

test-unit: install
	$(BIN)/python -m pytest tests/unit tests/kernels

test-integration: install browser
	$(BIN)/python -m pytest tests/integration

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

bench: install
	$(PIP) install -e '.[bench]'
	bench/run_all

schemas: $(STAMP)
	$(BIN)/technic-stream schemas export

clean:
	rm -rf $(VENV) $(STATIC) .pytest_cache .mypy_cache .ruff_cache .hypothesis build *.egg-info
