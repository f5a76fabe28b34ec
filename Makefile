# One entry point for set-up, tests and training. Every target installs what it needs first.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed
TORCH_VERSION ?= 2.13.0
# Set TORCH_INDEX=https://download.pytorch.org/whl/cpu on a machine whose pip has no local CPU wheel.
TORCH_INDEX ?=

.PHONY: install native test test-slow lint train format clean

$(PY):
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

# torch first, pinned, from the CPU file / index: a bare `torch` requirement pulls GBs of CUDA wheels.
$(STAMP): $(PY) pyproject.toml
	$(PY) -m pip install -q "torch==$(TORCH_VERSION)" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(PY) -m pip install -q -e ".[dev]"
	touch $(STAMP)

install: $(STAMP)

# The C++ kernels of bindense.native (compiled once into .venv/var, rebuilt when a source changes); a failed build
# is an error here (tests would otherwise fall back to the pure-torch kernels).
native: install
	BINDENSE_REQUIRE_NATIVE=1 $(PY) -m bindense.native

lint: install
	$(VENV)/bin/ruff check .

test: install lint native
	$(VENV)/bin/pytest -q

test-slow: install
	$(VENV)/bin/pytest -q -m slow; rc=$$?; [ $$rc -eq 0 ] || [ $$rc -eq 5 ]

train: install
	$(PY) train.py $(ARGS)

format: install
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

clean:
	rm -rf $(VENV) logs .cache
