# voxinv — common tasks. From a fresh clone `make test` and `make demo` are all it takes: each builds the
# project's own environment (.venv, via `make install`) when it is missing or older than pyproject.toml /
# this Makefile. With an environment of your own: `make install PY=python`, then `make test PY=python`.
PYTHON ?= python3
VENV := .venv
PY ?= $(VENV)/bin/python
export PYTHONUNBUFFERED = 1

# the stamp of a finished install into .venv (empty when PY is someone else's interpreter: never rebuilt)
ENV := $(if $(filter $(VENV)/bin/python,$(PY)),$(VENV)/.installed)

.PHONY: install test test-all lint format demo bench data check-fresh clean

# torch: an installed one is kept (machines with a pinned or CUDA-specific torch); otherwise pip's
# default index decides (PyPI: the CUDA build on Linux, ≈ 7 GB of venv), except that machines
# without nvidia-smi take the CPU wheels (≈ 1 GB of venv) from TORCH_INDEX when that index answers
# within 5 s; an unreachable index falls back to pip's default, never fails. `make install
# TORCH_INDEX=URL` picks another index (e.g. https://download.pytorch.org/whl/cu124), TORCH_INDEX= none.
TORCH_INDEX ?= $(if $(shell command -v nvidia-smi 2>/dev/null),,https://download.pytorch.org/whl/cpu)
REACHABLE = $(PY) -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1] + '/torch/', timeout=5)"

install:
	@$(if $(ENV),test -x $(PY) || $(PYTHON) -m venv $(VENV))
	@if $(PY) -c "import torch, torchaudio" 2>/dev/null; then echo "keeping the installed torch"; \
	elif [ -n "$(TORCH_INDEX)" ] && $(REACHABLE) "$(TORCH_INDEX)" 2>/dev/null; then \
	  $(PY) -m pip install "torch>=2.4" "torchaudio>=2.4" --index-url "$(TORCH_INDEX)"; \
	else \
	  $(if $(TORCH_INDEX),echo "$(TORCH_INDEX) does not answer: torch from pip's default index";) \
	  $(PY) -m pip install "torch>=2.4" "torchaudio>=2.4"; \
	fi
	$(PY) -m pip install -e ".[dev,eval,wandb]"
	$(PY) -m pip install --no-deps resemblyzer
	$(if $(ENV),touch $(ENV))

# (re)built when missing or older than what defines it
$(VENV)/.installed: pyproject.toml Makefile
	$(MAKE) install

# the default suite: CPU, tiny checkpoints, two workers (pytest-xdist); `make test-all` adds the slow ones
test: $(ENV)
	$(PY) -m pytest -q -n 2

test-all: $(ENV)
	$(PY) -m pytest -q -n 2 -m "slow or not slow"

lint: $(ENV)
	$(PY) -m ruff check voxinv tests experiments
	$(PY) -m ruff format --check voxinv tests experiments

format: $(ENV)
	$(PY) -m ruff check --fix voxinv tests experiments
	$(PY) -m ruff format voxinv tests experiments

# a real voice (assets/demo/) cloned on the speech-trained proxy codec, offline, ≈ 1 min on CPU. One torch
# thread unless OMP_NUM_THREADS says otherwise: on 2 shared cores torch's default (2 threads) took 176 s
# of CPU and 428 s wall for the same run that took 32 s of CPU on one thread.
demo: $(ENV)
	OMP_NUM_THREADS=$${OMP_NUM_THREADS:-1} $(PY) -m voxinv.run experiment=demo

# what CI does (.ci/run) in a temporary clean clone of HEAD: no environment but pip's cache
check-fresh:
	@d=$$(mktemp -d) && git clone -q . "$$d/voxinv" && echo "clean clone of HEAD in $$d/voxinv" && \
	  cd "$$d/voxinv" && .ci/run && cd / && rm -rf "$$d"

data: $(ENV)
	$(PY) experiments/benchmarks/prepare_real.py

bench: $(ENV)
	$(PY) experiments/bench_codec.py
	$(PY) experiments/bench_tts.py

clean:
	rm -rf outputs multirun .pytest_cache
