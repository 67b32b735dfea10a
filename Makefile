# isogauss-hf: `make test` (install + test suite), `make wheel-check` (the built wheel in a clean venv),
# `make ci` (both), `make demo` (install + offline assets + main job).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test wheel-check ci demo assets bench repro clean

install: $(STAMP)

# torch is pinned first: 2.13.0 is the CPU build available offline; an unpinned torch pulls CUDA wheels.
$(STAMP): pyproject.toml setup.py
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check torch==2.13.0
	$(BIN)/python -m pip install -q --disable-pip-version-check -e ".[test]"
	touch $(STAMP)

test: install
	$(BIN)/python -m pytest

# Build the wheel, install it (torch pinned first) into a clean venv and run --version, --list-recipes and a
# recipe --dry-run outside the checkout (.ci/check_wheel; reuses pip's cache, a few minutes).
wheel-check: install
	.ci/check_wheel $(BIN)/python

ci: test wheel-check

assets: install
	$(BIN)/isogauss-fetch-assets

# The main job: MiniLM on tweets, dense vs Gaussian blocks 2,4,6 vs the same blocks removed (drop) and factored at
# the Gaussian budget (lowrank), with 95 % intervals (recipes/minilm-tweets.yaml).
demo: assets
	$(BIN)/isogauss-finetune --recipe minilm-tweets --output-dir runs/minilm-tweets --overwrite

# Benchmarks and reproductions: they write results/ (see README, Results). Run them on a quiet machine.
bench: install
	$(BIN)/python scripts/bench_layer.py --threads 2 --repeats 7 --shapes 3072x768,768x768 --convs 256x256x3@14b32 --aux-threads auto,1,none --draws --draws-reference --out results/bench_layer
	$(BIN)/python scripts/bench_model.py --threads 2 --batch 4 --seq 64 --eval-batch 4 --repeats 5 --eval-repeats 2 --rounds 2 --out results/bench_model

repro: assets
	$(BIN)/python scripts/reproduce_table2_baselines.py --datasets tweets bbc_news --seeds 0 1 2 --variants dense drop lowrank frozen "gdu/seeded+calib=200" wdu/resample
	$(BIN)/python scripts/reproduce_table2_baselines.py --datasets tweets --seeds 0 1 2 --blocks 3 --variants gdu/seeded backprop/seeded
	$(BIN)/python scripts/reproduce_table2_baselines.py --curve tweets --curve-every 25
	$(BIN)/python scripts/reproduce_table2_baselines.py --curve bbc_news --curve-every 10
	$(BIN)/python scripts/analysis_correlation.py --datasets tweets bbc_news --variant "gdu/seeded+calib=200" --seeds 0 1 2 --triple-seeds 1 --scan-seeds 0 1 2
	$(BIN)/python scripts/reproduce_cnn_offline.py --seeds 0 1 2
	$(BIN)/python scripts/measure_wdu_seeded_drift.py
	$(BIN)/python scripts/reproduce_table7.py --threads 2
	$(BIN)/python scripts/reproduce_table8.py --threads 2
	$(BIN)/python scripts/reproduce_figures.py

clean:
	rm -rf $(VENV) runs
