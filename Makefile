# recfx: `make demo` runs the main job, `make test` runs the tests. Both set up .venv on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.recfx-installed
SERVE_VENV ?= .venv-serve
SERVE_PY := $(SERVE_VENV)/bin/python
SERVE_STAMP := $(SERVE_VENV)/.recfx-installed
HAS_GPU := $(shell nvidia-smi -L >/dev/null 2>&1 && echo 1)
TORCH_VERSION := 2.13.0
# Without an NVIDIA GPU: the CPU build of torch (no CUDA, no nvidia-* wheels). Linux needs the "+cpu" build, which
# is not on PyPI (PyPI's Linux torch is the CUDA build); macOS wheels on PyPI are CPU-only already.
TORCH_CPU := torch==$(TORCH_VERSION)$(if $(filter Darwin,$(shell uname -s)),,+cpu)
TORCH_CPU_INDEX ?= https://download.pytorch.org/whl/cpu
# Types of TensorRT and Torch-TensorRT for `make typecheck-trt` (recfx/backends/tensorrt). Both are installed
# WITHOUT their dependencies: they require TensorRT itself, which PyPI does not serve (its packages download from
# NVIDIA). Torch-TensorRT's version follows torch's.
TRT_TYPES := tensorrt-stubs==10.13.0.35.1 $(if $(filter Darwin,$(shell uname -s)),,torch-tensorrt==$(TORCH_VERSION))
PYTEST_ARGS ?=
N ?= 50
BACKENDS ?= eager,eager-fp8,ort,ort-fp8,inductor,cuda-fp8-passes-fp8
FUZZ_ARGS ?=

.PHONY: demo test test-serve serve-venv bench-serve corpus fuzz install typecheck typecheck-trt lint lint-trt-large clean \
	movielens

# $(call install_torch,VENV_PYTHON): without an NVIDIA GPU, the CPU build of torch, first from pip's own sources (a
# local wheel folder in pip's config, a mirror), else from PyTorch's CPU index. The pin to the CPU build means no
# other index can substitute a CUDA build. With a GPU, nothing (pip installs PyPI's CUDA build as a dependency).
install_torch = $(if $(HAS_GPU),true,$(1) -m pip install -q '$(TORCH_CPU)' 2>/dev/null \
	  || { echo "$(TORCH_CPU) is not in pip's configured sources; trying $(TORCH_CPU_INDEX)"; \
	       $(1) -m pip install -q '$(TORCH_CPU)' --extra-index-url '$(TORCH_CPU_INDEX)'; } \
	  || { echo "error: cannot install $(TORCH_CPU) (the CPU build of torch) from pip's configured sources or" \
	            "$(TORCH_CPU_INDEX). Make one reachable (a proxy, a local wheel via pip's find-links, or" \
	            "TORCH_CPU_INDEX=<mirror>), or install torch into that venv yourself and rerun make." >&2; exit 1; })

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(call install_torch,$(PY))
	$(PY) -m pip install -q -e '.[dev]'
	$(PY) -m pip install -q --no-deps recbole==1.2.1  # only for its bundled MovieLens-100k (recfx movielens)
	$(PY) -m pip install -q --no-deps $(TRT_TYPES)
	touch $@

# PyTriton (recfx serve, export-triton; the serve extra) pins numpy<2 while the main .venv has numpy 2 (ml_dtypes
# 0.7 needs it): the serving tests run in their own venv, with the same torch and recfx in editable mode.
$(SERVE_STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(SERVE_VENV)
	$(SERVE_PY) -m pip install -q --upgrade pip
	$(call install_torch,$(SERVE_PY))
	$(SERVE_PY) -m pip install -q -e '.[serve]' 'pytest>=8' 'pytest-timeout>=2'
	touch $@

serve-venv: $(SERVE_STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/recfx demo

test: $(STAMP) $(SERVE_STAMP)
	$(PY) -m pytest -q -n 2 --timeout 900 $(PYTEST_ARGS)
	RECFX_REQUIRE_SERVE=1 $(SERVE_PY) -m pytest -q -p no:xdist --timeout 600 tests/serving

# only the serving tests (Triton through PyTriton, in .venv-serve)
test-serve: $(SERVE_STAMP)
	RECFX_REQUIRE_SERVE=1 $(SERVE_PY) -m pytest -q -p no:xdist --timeout 600 tests/serving $(PYTEST_ARGS)

# served (Triton through PyTriton) vs in-process, with and without dynamic batching: BENCHMARKS.md, "Serving on Triton"
bench-serve: $(SERVE_STAMP)
	PYTHONPATH=$(CURDIR) $(SERVE_PY) bench/serve.py --model dlrm-small --out docs/bench/serve-cpu
	PYTHONPATH=$(CURDIR) $(SERVE_PY) bench/serve.py --model onerec-tiny --requests 24 --out docs/bench/serve-cpu

# The MovieLens-100k FP8 study of docs/movielens/README.md (CPU, ~15 min): train both models, evaluate, analyse.
ML := docs/movielens
movielens: $(STAMP)
	$(VENV)/bin/recfx movielens train generative --out $(ML)/generative --seed 0
	$(VENV)/bin/recfx movielens train ranking --out $(ML)/ranking --seed 0
	$(VENV)/bin/recfx movielens eval $(ML)/generative $(ML)/ranking --backends eager-fp8,ort-fp8 --sensitivity \
		--json $(ML)/eval.json --markdown $(ML)/eval.md
	$(VENV)/bin/recfx movielens eval $(ML)/generative --backends eager-fp8,ort-fp8 --auto-exclude 0.99999 \
		--json $(ML)/eval_auto_exclude_generative.json --markdown $(ML)/eval_auto_exclude_generative.md
	$(VENV)/bin/recfx movielens eval $(ML)/ranking --backends eager-fp8,ort-fp8 --auto-exclude 0.9999 \
		--json $(ML)/eval_auto_exclude_ranking.json --markdown $(ML)/eval_auto_exclude_ranking.md
	$(VENV)/bin/recfx movielens eval $(ML)/ranking --backends eager-fp8 --auto-exclude 0.99999 \
		--json $(ML)/eval_auto_exclude_ranking_99999.json --markdown $(ML)/eval_auto_exclude_ranking_99999.md
	$(VENV)/bin/recfx analyze $(ML)/generative $(ML)/ranking --batch 64 --layers 0 \
		--out $(ML)/distributions.png --json $(ML)/distributions.json

# every corpus model (tests/models/corpus.py) on every backend; CI runs a slice of it
corpus: $(STAMP)
	RECFX_CORPUS=all $(PY) -m pytest -q -n 2 --timeout 1800 tests/models/test_corpus.py

# the strict TensorRT-rules lint of what is too big or slow for CI: onerec-1b exported fp32 and FP8 (batch 2, ~4 GB
# files in a temporary folder, removed after; ~7 and ~30 CPU-minutes, up to 7 GB of memory) and every corpus model
lint-trt-large: $(STAMP)
	@tmp=$$(mktemp -d) && trap 'rm -rf "$$tmp"' EXIT && \
	PYTHONPATH=$(CURDIR) $(PY) -m recfx.tools.cli export-onnx onerec-1b --strict --batch 2 -o "$$tmp/onerec-1b.onnx" && \
	PYTHONPATH=$(CURDIR) $(PY) -m recfx.tools.cli export-onnx onerec-1b --fp8 --strict --batch 2 \
		-o "$$tmp/onerec-1b-fp8.onnx"
	RECFX_CORPUS=all $(PY) -m pytest -q -n 2 --timeout 1800 tests/models/test_corpus.py -k tensorrt_lint

# the random-model fuzzer beyond CI's slice: N models per backend; e.g. make fuzz N=300 BACKENDS=ort,ort-fp8
fuzz: $(STAMP)
	PYTHONPATH=$(CURDIR) $(PY) -m tests.fuzz -n $(N) --backends $(BACKENDS) $(FUZZ_ARGS)

typecheck: $(STAMP)
	$(PY) -m mypy recfx

# mypy --disallow-untyped-defs over the TensorRT backends against TensorRT's and Torch-TensorRT's own types
typecheck-trt: $(STAMP)
	$(PY) ci/typecheck_trt.py

lint: $(STAMP)
	$(PY) -m ruff check recfx tests bench ci

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache recfx_dumps
