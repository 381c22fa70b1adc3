# Two entry points: `make demo` (set up + run the embedded demo) and `make test` (set up + run the tests).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: setup demo mim-demo setdiff-benchmark test browser clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)

# torch is pinned to the CPU build available offline; the package and its dev extras come after it.
$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet torch==2.13.0
	$(BIN)/python -m pip install --quiet -e ".[dev]"
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(BIN)/seeinpairs demo --output runs/demo

# The two offline multi-image jobs (multi-image QA; set-difference description), a few minutes each.
mim-demo: $(STAMP)
	$(BIN)/seeinpairs mim demo --output runs/mim_demo

setdiff-benchmark: $(STAMP)
	$(BIN)/seeinpairs setdiff benchmark --output runs/setdiff_benchmark

# Headless Chromium for the web page test (Debian packages; Playwright drives it, no browser download).
browser:
	@if [ ! -x /usr/bin/chromium ]; then \
		SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
		$$SUDO apt-get update && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y chromium chromium-driver; \
	fi

test: $(STAMP) browser
	$(BIN)/python -m pytest

clean:
	rm -rf runs .pytest_cache .hypothesis
