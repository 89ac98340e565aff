# recfx: `make demo` runs the main job, `make test` runs the tests. Both set up .venv on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.recfx-installed
HAS_GPU := $(shell nvidia-smi -L >/dev/null 2>&1 && echo 1)
TORCH_CPU := torch==2.13.0
PYTEST_ARGS ?=
N ?= 50
BACKENDS ?= eager,eager-fp8,ort,ort-fp8,inductor
FUZZ_ARGS ?=

.PHONY: demo test fuzz install typecheck lint clean

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
ifeq ($(HAS_GPU),)
	$(PY) -m pip install -q $(TORCH_CPU)
endif
	$(PY) -m pip install -q -e '.[dev]'
	$(PY) -m pip install -q --no-deps tensorrt-stubs
	touch $@

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/recfx bench --model onerec-tiny --backends eager,auto,auto-fp8 --batch 8 --compact

test: $(STAMP)
	$(PY) -m pytest -q -n 2 --timeout 900 $(PYTEST_ARGS)

# the random-model fuzzer beyond CI's slice: N models per backend; e.g. make fuzz N=300 BACKENDS=ort,ort-fp8
fuzz: $(STAMP)
	PYTHONPATH=$(CURDIR) $(PY) -m tests.fuzz -n $(N) --backends $(BACKENDS) $(FUZZ_ARGS)

typecheck: $(STAMP)
	$(PY) -m mypy recfx

lint: $(STAMP)
	$(PY) -m ruff check recfx tests bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache recfx_dumps
