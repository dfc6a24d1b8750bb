# make run   set up .venv from the pinned requirements and run the whole workflow
# make test  set up .venv and run the tests (two pytest workers; PYTEST_ARGS= runs them in one)

PYTHON ?= python3.11
CORES ?= all
PYTEST_ARGS ?= -n 2
VENV := .venv
BIN := $(VENV)/bin

.PHONY: venv run test lint docs clean

venv: $(VENV)/.installed

# Redone only when the pins or the package metadata change.
$(VENV)/.installed: requirements.txt pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -r requirements.txt
	$(BIN)/python -m pip install --no-deps -e .
	touch $@

run: venv
	$(BIN)/snakemake --cores $(CORES)

test: venv
	$(BIN)/python -m pytest $(PYTEST_ARGS) tests

lint: venv
	$(BIN)/ruff check .
	$(BIN)/snakefmt --check Snakefile workflow/rules
	$(BIN)/snakemake --lint

docs: venv
	$(BIN)/python docs/make_figures.py

# Removes what the workflow and the tools wrote; keeps .venv.
clean:
	find results -mindepth 1 -maxdepth 1 ! -name README.md -exec rm -rf {} +
	rm -rf .snakemake .pytest_cache .ruff_cache
