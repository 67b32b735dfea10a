# isogauss-hf: `make test` (install + test suite), `make demo` (install + offline assets + main job).
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: install test demo assets clean

install: $(STAMP)

# torch is pinned first: 2.13.0 is the CPU build available offline; an unpinned torch pulls CUDA wheels.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --disable-pip-version-check torch==2.13.0
	$(BIN)/python -m pip install -q --disable-pip-version-check -e ".[test]"
	touch $(STAMP)

test: install
	$(BIN)/python -m pytest

assets: install
	bash scripts/fetch_offline_assets.sh --python $(BIN)/python

demo: assets
	$(BIN)/isogauss-finetune --recipe minilm-bbc-news --compare-dense --output-dir runs/minilm-bbc-news --overwrite

clean:
	rm -rf $(VENV) runs
