# make run   set up .venv from the pinned requirements and run the whole workflow
# make test  set up .venv, check style (ruff, ruff format; pytest runs snakefmt and
#            snakemake --lint) and run the tests (two pytest workers; PYTEST_ARGS= runs them in one)

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

# Without a GPU (no nvidia-smi), two trainings run side by side, each on half the cores: a
# training spends much of its time in one-threaded work (building and tracing the graphs,
# saving), so two at once finish sooner than one after another on all cores (measured in
# docs/benchmarks.md, default_run). With GPUs the profile's `gpu` resource decides.
GPUS := $(shell nvidia-smi -L 2>/dev/null | grep -c '^GPU')
RUN_CORES := $(if $(filter all,$(CORES)),$(shell nproc 2>/dev/null || echo 2),$(CORES))
TRAIN_THREADS := $(shell echo $$(( $(RUN_CORES) / 2 > 0 ? $(RUN_CORES) / 2 : 1 )))
CPU_TRAINING := $(if $(filter-out 0,$(GPUS)),,--resources gpu=2 --set-threads train_model=$(TRAIN_THREADS))

run: venv
	$(BIN)/snakemake --cores $(CORES) $(CPU_TRAINING)

test: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/python -m pytest $(PYTEST_ARGS) tests

lint: venv
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/snakefmt --check Snakefile workflow/rules
	$(BIN)/snakemake --lint

docs: venv
	$(BIN)/python docs/make_figures.py

# Removes what the workflow and the tools wrote; keeps .venv.
clean:
	find results -mindepth 1 -maxdepth 1 ! -name README.md -exec rm -rf {} +
	rm -rf .snakemake .pytest_cache .ruff_cache
