# voxinv — common tasks. `make install` then `make test`; `make demo` runs the offline demo (~1 min).
PY ?= python
export PYTHONUNBUFFERED = 1

.PHONY: install install-dev test test-all lint format demo bench data clean

# torch: an installed one is kept (CI and machines with a pinned torch); otherwise machines without
# nvidia-smi get the CPU wheels (≈ 0.2 GB, not ≈ 6 GB of CUDA libraries). `make install TORCH_INDEX=URL`
# chooses another index (e.g. https://download.pytorch.org/whl/cu124); TORCH_INDEX= uses pip's default.
TORCH_INDEX ?= $(if $(shell command -v nvidia-smi 2>/dev/null),,https://download.pytorch.org/whl/cpu)

install:
	@$(PY) -c "import torch, torchaudio" 2>/dev/null && echo "keeping the installed torch" || \
	  $(PY) -m pip install "torch>=2.4" "torchaudio>=2.4" $(if $(TORCH_INDEX),--index-url $(TORCH_INDEX))
	$(PY) -m pip install -e ".[dev,eval,wandb]"
	$(PY) -m pip install --no-deps resemblyzer

test:
	$(PY) -m pytest -q

test-all:
	$(PY) -m pytest -q -m "slow or not slow"

lint:
	ruff check voxinv tests experiments
	ruff format --check voxinv tests experiments

format:
	ruff check --fix voxinv tests experiments
	ruff format voxinv tests experiments

demo:
	$(PY) -m voxinv.run experiment=demo

data:
	$(PY) experiments/benchmarks/prepare_real.py

bench:
	$(PY) experiments/bench_codec.py
	$(PY) experiments/bench_tts.py

clean:
	rm -rf outputs multirun .pytest_cache
