# recfx: `make demo` runs the main job, `make test` runs the tests. Both set up .venv on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.recfx-installed
HAS_GPU := $(shell nvidia-smi -L >/dev/null 2>&1 && echo 1)
TORCH_VERSION := 2.13.0
# Without an NVIDIA GPU: the CPU build of torch (no CUDA, no nvidia-* wheels). Linux needs the "+cpu" build, which
# is not on PyPI (PyPI's Linux torch is the CUDA build); macOS wheels on PyPI are CPU-only already.
TORCH_CPU := torch==$(TORCH_VERSION)$(if $(filter Darwin,$(shell uname -s)),,+cpu)
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
PYTEST_ARGS ?=
N ?= 50
BACKENDS ?= eager,eager-fp8,ort,ort-fp8,inductor
FUZZ_ARGS ?=

.PHONY: demo test fuzz install typecheck lint clean

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
ifeq ($(HAS_GPU),)
	@# First from pip's own sources (a local wheel folder in pip's config, a mirror), else from PyTorch's CPU index.
	@# The pin to the CPU build means no other index can substitute a CUDA build.
	$(PY) -m pip install -q '$(TORCH_CPU)' 2>/dev/null \
	  || { echo "$(TORCH_CPU) is not in pip's configured sources; trying $(TORCH_CPU_INDEX)"; \
	       $(PY) -m pip install -q '$(TORCH_CPU)' --extra-index-url '$(TORCH_CPU_INDEX)'; } \
	  || { echo "error: cannot install $(TORCH_CPU) (the CPU build of torch) from pip's configured sources or" \
	            "$(TORCH_CPU_INDEX). Make one reachable (a proxy, a local wheel via pip's find-links, or" \
	            "TORCH_CPU_INDEX=<mirror>), or install torch into $(VENV) yourself and rerun make." >&2; exit 1; }
endif
	$(PY) -m pip install -q -e '.[dev]'
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
