# recfx: `make demo` runs the main job, `make test` runs the tests. Both set up .venv on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.recfx-installed
HAS_GPU := $(shell nvidia-smi -L >/dev/null 2>&1 && echo 1)
TORCH_CPU := torch==2.13.0
PYTEST_ARGS ?=

.PHONY: demo test install typecheck lint clean movielens

$(STAMP): setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
ifeq ($(HAS_GPU),)
	$(PY) -m pip install -q $(TORCH_CPU)
endif
	$(PY) -m pip install -q -e '.[dev]'
	$(PY) -m pip install -q --no-deps tensorrt-stubs
	$(PY) -m pip install -q --no-deps recbole==1.2.1  # only for its bundled MovieLens-100k (recfx movielens)
	touch $@

install: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/recfx bench --model onerec-tiny --backends eager,auto,auto-fp8 --batch 8 --compact

test: $(STAMP)
	$(PY) -m pytest -q -n 2 --timeout 900 $(PYTEST_ARGS)

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

typecheck: $(STAMP)
	$(PY) -m mypy recfx

lint: $(STAMP)
	$(PY) -m ruff check recfx tests bench

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache recfx_dumps
