# voxinv — common tasks. `make install` then `make test`; `make demo` runs the offline demo (~1 min).
PY ?= python
export PYTHONUNBUFFERED = 1

.PHONY: install install-dev test test-all lint format demo bench data clean

install:
	$(PY) -m pip install -e ".[dev,eval]" "torch>=2.4" "torchaudio>=2.4"
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
