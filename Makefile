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
	$(BIN)/isogauss-finetune --recipe minilm-tweets-table2 --seeds 0,1,2 --layers "1;3;5;2,4;2,4,6" --no-save-models --output-dir runs/table2-tweets
	$(BIN)/isogauss-finetune --recipe minilm-tweets-table2 --seeds 0,1,2 --layers 3 --baselines frozen --no-save-models --output-dir runs/table2-tweets
	$(BIN)/isogauss-finetune --recipe minilm-tweets-table2 --seeds 0,1,2 --layers 4 --no-save-models --output-dir runs/table2-tweets
	$(BIN)/isogauss-finetune --recipe minilm-tweets-table2 --seeds 0,1,2,3,4 --layers 4,5,6 --no-save-models --output-dir runs/table2-tweets
	$(BIN)/isogauss-finetune --recipe minilm-bbc-news-table2 --seeds 0,1,2 --layers "1;3;5;2,4;2,4,6" --no-save-models --output-dir runs/table2-bbc-news
	$(BIN)/isogauss-finetune --recipe minilm-tweets-table2 --layers none --epochs 3 --eval-every 25 --output-dir runs/curve-tweets --overwrite
	$(BIN)/isogauss-finetune --recipe minilm-bbc-news-table2 --layers none --epochs 6 --eval-every 25 --output-dir runs/curve-bbc-news --overwrite
	$(BIN)/python scripts/analysis_correlation.py --datasets tweets bbc_news --seeds 0 1 2 --triple-seeds 1 --scan-seeds 0 1 2
	$(BIN)/python scripts/reproduce_cnn_offline.py --seeds 0 1 2
	$(BIN)/python scripts/measure_wdu_seeded_drift.py
	$(BIN)/python scripts/reproduce_table7.py --threads 2
	$(BIN)/python scripts/reproduce_table8.py --threads 2
	$(BIN)/python scripts/reproduce_figures.py

clean:
	rm -rf $(VENV) runs
