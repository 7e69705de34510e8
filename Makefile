# Two commands on a fresh machine:
#   make test    create .venv if missing, install torch (pinned) then the project, run the tests
#   make main    the main job: fit the Mauna Loa CO2 record (three seeds, pooled), score and
#                forecast its last two years (experiments/co2_main.py; writes reports/co2*, runs/co2/)
#   make bench   the solver benchmark against torchdiffeq / torchode (reports/)
#   make bench-gpu  the solver and latent ODE training benchmarks on CUDA against torchdiffeq
#                (reports/solver_benchmark_cuda.md, reports/latent_ode_step_cuda.md)
# TORCH_SPEC overrides the torch requirement, e.g. for a CUDA build:
#   make test TORCH_SPEC="torch==2.13.0" TORCH_INDEX="--index-url https://download.pytorch.org/whl/cu128"

PYTHON ?= python3
VENV ?= .venv
TORCH_SPEC ?= torch==2.13.0
TORCH_INDEX ?=
BIN := $(VENV)/bin
PYTEST_ARGS ?=
# pytest-xdist processes (0: one process): the suite takes ~9 min on 2 cores with 2
PYTEST_WORKERS ?= 2

.PHONY: test main bench bench-gpu lint format

$(BIN)/python:
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip

$(VENV)/.torch: | $(BIN)/python
	$(BIN)/python -m pip install --quiet "$(TORCH_SPEC)" $(TORCH_INDEX)
	touch $@

$(VENV)/.dev: pyproject.toml $(VENV)/.torch
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

$(VENV)/.bench: pyproject.toml $(VENV)/.dev
	$(BIN)/python -m pip install --quiet -e '.[dev,bench]'
	touch $@

test: $(VENV)/.dev
	$(BIN)/python -m pytest -n $(PYTEST_WORKERS) $(PYTEST_ARGS)

lint: $(VENV)/.dev
	$(BIN)/ruff check latentode tests benchmarks experiments
	$(BIN)/ruff format --check latentode tests benchmarks experiments

format: $(VENV)/.dev
	$(BIN)/ruff format latentode tests benchmarks experiments
	$(BIN)/ruff check --fix latentode tests benchmarks experiments

bench: $(VENV)/.bench
	$(BIN)/python benchmarks/solver_benchmark.py --output reports/solver_benchmark.md

bench-gpu: $(VENV)/.bench
	$(BIN)/python benchmarks/solver_benchmark.py --device cuda --output reports/solver_benchmark_cuda.md
	$(BIN)/python benchmarks/latent_ode_step.py --device cuda --output reports/latent_ode_step_cuda.md

main: $(VENV)/.dev
	$(BIN)/python experiments/co2_main.py
