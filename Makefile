# attnbench: `make help` lists the targets.
.DEFAULT_GOAL := help
SHELL := bash

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
# Which torch to install into the venv. The default is the version CI uses; on a GPU machine pass your
# CUDA build's spec (`make install TORCH=torch`), or VENV_FLAGS=--system-site-packages to reuse one.
TORCH ?= torch==2.13.0
VENV_FLAGS ?=
STORE := $(CURDIR)/mlruns
# `make server` and `make ui`: their port; `make server`'s database (SQLite in mlruns/server/ by default, a store
# of its own: docs/tracking.md, "A shared tracking server", says why; or DB=postgresql://user@host:port/database).
PORT ?= 5000
SERVER_STORE := $(STORE)/server
DB ?= sqlite:///$(SERVER_STORE)/mlflow.db

.PHONY: help install run single seed-sdpa seed-csa sync report test test-fast test-long ui server clean gpu-wheels \
	slurm-install slurm-up slurm-down

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV_FLAGS) $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -c "import torch" 2>/dev/null || $(BIN)/python -m pip install -q "$(TORCH)"
	$(BIN)/python -m pip install -q -e ".[dev,server]"
	touch $@

install: $(VENV)/.installed ## create .venv and install attnbench with its dependencies

run: install ## the seed comparison sweep (3 backends × eager/compiled) into the local MLflow store
	$(BIN)/python run.py -m backend=math,flash,efficient compile=true,false $(ARGS)

single: install ## one job with the defaults (ARGS="shape=tiny" etc. to change it)
	$(BIN)/python run.py $(ARGS)

seed-sdpa: install ## the article's first experiment: every SDPA backend, B64 H32 S256 D32 fp16
	$(BIN)/python run.py -m experiment=seed_sdpa $(ARGS)

seed-csa: install ## the article's CausalSelfAttention module, eager vs compiled
	$(BIN)/python run.py -m experiment=seed_causal_self_attention $(ARGS)

sync: install ## upload a sweep folder's saved results to MLflow: make sync DIR=multirun/DATE/TIME [ARGS="--uri URI"]
	$(BIN)/attnbench sync $(DIR) $(ARGS)

report: install ## the latest sweep's summary.csv, summary.md and plots, logged to its parent run [ARGS="RUN_ID --baseline math"]
	$(BIN)/attnbench report $(ARGS)

test: install ## the import rules of the four wings (lint-imports), then the tests but the long ones (~8 min on 2 cores)
	$(BIN)/lint-imports --no-cache
	$(BIN)/python -m pytest -m "not long" $(ARGS)

# Every wing in well under a minute and a half: what a change most likely broke, to run between edits. A test goes
# out of it (marked `slow`: pyproject.toml) when it costs seconds that a cheaper test beside it mostly covers.
test-fast: install ## the import rules, then the tests but the slow and long ones: between edits (~70 s on 2 cores)
	$(BIN)/lint-imports --no-cache
	$(BIN)/python -m pytest -m "not slow and not long" $(ARGS)

test-long: install ## the long tests: hundreds of jobs, whole experiments, Slurm (~11 min on 2 cores; CI runs them)
	$(BIN)/python -m pytest -m long $(ARGS)

# A busy port stops it before the links are printed (mlflow ui itself would exit 0 after them).
ui: install ## the MLflow UI for the local store on http://127.0.0.1:PORT (5000), after the links to the latest sweep
	@$(BIN)/python -m attnbench.store.tracking.port '$(PORT)' ui
	mkdir -p $(STORE)
	-$(BIN)/attnbench url --uri sqlite:///$(STORE)/mlflow.db --base http://127.0.0.1:$(PORT)
	MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false $(BIN)/mlflow ui --host 127.0.0.1 --port $(PORT) --workers 1 \
	  --backend-store-uri sqlite:///$(STORE)/mlflow.db --default-artifact-root $(STORE)/artifacts

# Artifacts are uploaded through the server (--serve-artifacts), so a client needs nothing but its URL. The DB is
# not echoed: it may hold a password (the check prints it masked).
server: install ## a shared MLflow tracking server on 127.0.0.1:PORT (5000) [DB=postgresql://user@host/db]
	@mkdir -p $(SERVER_STORE)/artifacts
	@$(BIN)/python -m attnbench.store.tracking.serve '$(DB)' $(PORT) $(SERVER_STORE)/artifacts
	@MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false exec $(BIN)/mlflow server --host 127.0.0.1 --port $(PORT) --workers 1 \
	  --backend-store-uri '$(DB)' --serve-artifacts --artifacts-destination $(SERVER_STORE)/artifacts

# A one-node Slurm cluster on this machine, for the tests marked `slurm` (which bring up their own) and for trying
# hydra/launcher=slurm_cpu by hand: its daemons, config and database live in SLURM_DIR (tests/slurm_cluster.py).
SLURM_DIR ?= /tmp/attnbench-slurm
SLURM_PACKAGES := slurm-wlm slurmdbd mariadb-server munge

slurm-install: ## install Debian's Slurm, slurmdbd, MariaDB and munge (root; what CI's tests marked slurm need)
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $(SLURM_PACKAGES)

slurm-up: install ## start a one-node Slurm cluster in SLURM_DIR (/tmp/attnbench-slurm); prints the SLURM_CONF to export
	$(BIN)/python tests/slurm_cluster.py up $(SLURM_DIR)

slurm-down: install ## cancel its jobs and stop the cluster of make slurm-up
	$(BIN)/python tests/slurm_cluster.py down $(SLURM_DIR)

# The offline GPU host's Python; its torch, numpy and rich are expected to be there already.
GPU_PYTHON_VERSION ?= 3.12
# The venv's MLflow version: a store written on the GPU host must open here (a newer MLflow migrates its schema).
MLFLOW_VERSION := $(shell $(BIN)/python -c "import importlib.metadata as m; print(m.version('mlflow'))" 2>/dev/null)
GPU_WHEELS := hydra-core==1.3.8 omegaconf==2.3.0 mlflow-skinny$(if $(MLFLOW_VERSION),==$(MLFLOW_VERSION)) sqlalchemy alembic pytest hydra-joblib-launcher joblib hydra-submitit-launcher submitit

gpu-wheels: ## wheels of hydra/omegaconf/mlflow/pytest for an offline GPU host that already has torch (.whl/)
	mkdir -p .whl
	# antlr4 (needed by hydra) publishes only a source archive: build its wheel here
	$(PYTHON) -m pip wheel -q --no-deps -w .whl antlr4-python3-runtime==4.9.3
	$(PYTHON) -m pip download -q --only-binary=:all: --python-version $(GPU_PYTHON_VERSION) --implementation cp \
	  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
	  --platform any --find-links .whl -d .whl $(GPU_WHEELS)

clean: ## remove Hydra's output folders (keeps the MLflow store)
	rm -rf multirun outputs
