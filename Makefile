# Cadenza: `make demo` (set up, export the tiny bundle, stream a sentence to out.wav)
#          `make test` (set up, run the test suite)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
TEXT   ?= Hello from Cadenza. This reference model has random weights, so it streams noise, not speech.

.PHONY: setup demo test bench gate gpu-check clean

setup: $(STAMP)

# torch==2.13.0 first: a CPU build lies on disk on our machines; a looser pin downloads several GB.
$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q torch==2.13.0
	$(BIN)/python -m pip install -q -e '.[dev,server,ray]'
	touch $(STAMP)

bundles/tiny/manifest.json: $(STAMP)
	$(BIN)/cadenza export --size tiny --seed 0 --torch-weights --out bundles/tiny

demo: bundles/tiny/manifest.json
	$(BIN)/cadenza say "$(TEXT)" --bundle bundles/tiny -o out.wav --seed 0

test: $(STAMP)
	$(BIN)/python -m pytest -q

bench: bundles/tiny/manifest.json
	$(BIN)/cadenza bench --bundle bundles/tiny --streams 1,4 --runs 3 --json bench-tiny.json --markdown --plot bench-tiny.png

gate: bundles/tiny/manifest.json
	$(BIN)/cadenza bench --bundle bundles/tiny --streams 1 --runs 3 --warmup 1 --frames 24 --json bench-gate.json --plot bench-gate.png --markdown
	$(BIN)/cadenza gate bench-gate.json --rules benchmarks/gates.toml

gpu-check: $(STAMP)
	bash benchmarks/gpu_check.sh

clean:
	rm -rf bundles out.wav bench-*.json bench-*.png .pytest_cache
