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
	$(BIN)/python scripts/bench_layer.py --threads 2,1 --repeats 9 --compile --out results/bench_layer
	$(BIN)/python scripts/bench_model.py --threads 1 --batch 4 --seq 64 --eval-batch 4 --repeats 5 --eval-repeats 2 --out results/bench_model

repro: assets
	$(BIN)/python scripts/measure_wdu_seeded_drift.py
	$(BIN)/python scripts/reproduce_table7.py
	$(BIN)/python scripts/reproduce_table8.py
	$(BIN)/python scripts/reproduce_figures.py
	$(BIN)/python scripts/reproduce_table2_minilm.py --datasets tweets --num-samples 3
	$(BIN)/python scripts/reproduce_table2_minilm.py --datasets bbc_news --train-size 480 --test-size 96 --num-samples 3
	$(BIN)/python scripts/reproduce_table2_minilm.py --datasets bbc_news --train-size 480 --test-size 96 --num-samples 3 --rules gdu --noise seeded --name table2_minilm_seeded
	$(BIN)/python scripts/reproduce_table2_minilm.py --datasets tweets --num-samples 3 --rules gdu --noise seeded --name table2_minilm_seeded

clean:
	rm -rf $(VENV) runs
