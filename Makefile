# sparsearch: `make demo` runs the main job, `make test` the test suite. Both create or refresh
# the virtual environment first (reinstalling whenever pyproject.toml changes).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
# torch is pinned to the CPU build; any other spec would pull GBs of CUDA packages.
TORCH := torch==2.13.0
EXTRAS ?= splade,dense,service,distributed,milvus,test
DEMO_ENCODERS ?= --encoder bm25 --encoder dense --encoder splade-doc

.PHONY: demo test bench env clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q $(TORCH)
	$(PIP) install -q -e ".[$(EXTRAS)]"
	touch $(STAMP)

env: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/sparsearch demo $(DEMO_ENCODERS)

test: $(STAMP)
	bash scripts/install-browser.sh
	$(PY) -m pytest -q -p no:cacheprovider

# Peer systems (bm25s, Seismic, BMP, Milvus Lite, ranx) for the side-by-side benchmarks.
bench: $(STAMP)
	$(PIP) install -q -e ".[$(EXTRAS),bench]"
	$(PY) benchmarks/bm25_vs_bm25s.py

clean:
	rm -rf $(VENV) indexes .pytest_cache
