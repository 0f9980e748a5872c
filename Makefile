# genvae developer tasks. `make test` builds .venv on first use, then runs the suite.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
# MNIST: ../shared/data/mnist when a shared copy sits beside the clone, else data/ inside the clone
# (downloaded there on first use; ignored by git). Override with `make fit DATA=path/to/mnist`.
DATA ?= $(if $(wildcard ../shared/data/mnist),../shared/data/mnist,data)
STAMP := $(VENV)/.installed
# `make results`: train + test every experiment of the tables (genvae.results.presets) over seeds, then render
PRESET ?= cpu
SEEDS ?= 0 1 2
EXPERIMENTS ?= classifier ae vae betavae arvae cvae arvae_conditional vae_causal arvae_causal vqvae vqvae_prior vqvae_prior_conditional

.PHONY: install test lint format docs docs-serve bench gpu-check fit results clean

install: $(STAMP)

$(STAMP): pyproject.toml constraints-dev.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet -c constraints-dev.txt -e '.[dev]'
	touch $(STAMP)

test: install
	WANDB_MODE=disabled $(BIN)/python -m pytest -q

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: install
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

# the documentation site (mkdocs.yml, docs/): strict, so a broken link, anchor or API reference fails
docs: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict

docs-serve: install
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs serve

bench: install
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(BIN)/python $$b --data $(DATA) || exit 1; done

# One table of GPU readiness (attributes, one epoch per family and precision, training ratios); says so
# and exits 0 on a machine without a CUDA GPU.
gpu-check: install
	$(BIN)/python benchmarks/gpu_check.py --data $(DATA)

fit: install
	$(BIN)/genvae fit --config experiments/vqvae.yaml --data.init_args.root $(DATA)

clean:
	rm -rf $(VENV) lightning_logs runs wandb site .pytest_cache .ruff_cache

results: install
	$(BIN)/python -m genvae.results run --preset $(PRESET) --seeds $(SEEDS) --experiments $(EXPERIMENTS) --data $(DATA)
