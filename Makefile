# genvae developer tasks. `make test` builds .venv on first use, then runs the suite.
PYTHON ?= python3.11
VENV ?= .venv
BIN := $(VENV)/bin
DATA ?= ../shared/data/mnist
STAMP := $(VENV)/.installed

.PHONY: install test lint format bench fit clean

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

bench: install
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(BIN)/python $$b --data $(DATA) || exit 1; done

fit: install
	$(BIN)/genvae fit --config experiments/vqvae.yaml --data.init_args.root $(DATA)

clean:
	rm -rf $(VENV) lightning_logs runs wandb .pytest_cache .ruff_cache
