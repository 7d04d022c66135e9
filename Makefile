# City AI Factory: `make run` (set up + one full pipeline run) and `make test` (the whole suite).
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := $(CURDIR)/.venv
BIN := $(VENV)/bin
# The CPU build of torch lies on disk on our machines; elsewhere pip takes it from PyPI.
FIND_LINKS := $(if $(wildcard /opt/wheels),--find-links /opt/wheels,)

# The embedded stack (git-ignored): Airflow home with SQLite, lake folder, keys, ...
export CITYFACTORY_HOME ?= $(CURDIR)/.cityfactory
export AIRFLOW_HOME ?= $(CITYFACTORY_HOME)/airflow
export AIRFLOW__CORE__DAGS_FOLDER := $(CURDIR)/dags
export AIRFLOW__CORE__PLUGINS_FOLDER := $(CURDIR)/plugins
export AIRFLOW__CORE__LOAD_EXAMPLES := False
export AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS ?= admin:admin
export PYTHONPATH := $(CURDIR)/plugins
# OpenLineage events from Airflow's provider, one JSON line each, beside the runs' reports
OPENLINEAGE_EVENTS := $(CITYFACTORY_HOME)/lake/governance/openlineage/events.jsonl
export AIRFLOW__OPENLINEAGE__NAMESPACE ?= cityfactory
export AIRFLOW__OPENLINEAGE__TRANSPORT ?= {"type": "file", "log_file_path": "$(OPENLINEAGE_EVENTS)", "append": true}

# A first run's search budget, in trials (deterministic, unlike a budget in seconds): the spec's
# hand-set model, its search's first trial. Nightly runs and `make evaluate` use the spec's
# budget, whose winner on validation may be the mean of the families' best trials.
FIRST_RUN_TRIALS ?= 1

.PHONY: install init run run-camera validate ui test test-fast services lint-imports bench evaluate screenshots lint clean

# -qq: errors only (a machine's pip settings, say an index folder it lacks, warn once per package)
$(BIN)/.installed: requirements.txt
	@echo "installing requirements.txt into $(VENV) (1-2 minutes)"
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/pip install -qq --upgrade pip
	@$(BIN)/pip install -qq $(FIND_LINKS) -r requirements.txt
	@touch $@

install: $(BIN)/.installed

$(AIRFLOW_HOME)/airflow.db: $(BIN)/.installed
	@mkdir -p $(AIRFLOW_HOME) $(dir $(OPENLINEAGE_EVENTS))
	@$(BIN)/airflow db migrate > $(CITYFACTORY_HOME)/db-migrate.log

init: $(AIRFLOW_HOME)/airflow.db

run: init  ## every scenario validated, then one full run of each forecaster over its whole replayed history
	@$(BIN)/python -m cityfactory.cli validate
	@$(BIN)/python -m cityfactory.cli run traffic_flow air_quality --history --trials $(FIRST_RUN_TRIALS)

run-camera: init  ## the camera scenario (solar_cells) over its whole replayed history: its CNN takes some 8 minutes
	@$(BIN)/python -m cityfactory.cli run solar_cells --history --trials 1

validate: install  ## check every scenario whole (YAML, spec, fleet, suites, dbt selection, pins)
	$(BIN)/python -m cityfactory.cli validate

ui: init  ## Airflow UI (api-server, scheduler, dag-processor, triggerer) on the embedded stack
	$(BIN)/python -m cityfactory.cli ui

test: install services lint-imports  ## the whole suite: layers checked, scenarios validated, unit, component and integration tests
	$(BIN)/python -m cityfactory.cli validate
	$(BIN)/python -m pytest -m "not integration" -n auto --dist loadfile
	$(BIN)/python -m pytest -m integration  # one at a time: health gates and rate limits measure time

test-fast: install lint-imports  ## while you work: unit and component tests (no services, no DAG runs), under 2 minutes, on every core
	$(BIN)/python -m pytest -m "not integration" -q -n auto --dist loadfile

services:  ## start PostgreSQL and Redis, install Chromium, where this machine allows (says what it could not)
	@.ci/services

lint-imports: install  ## the layers hold (import-linter contracts in .importlinter)
	@out=$$($(BIN)/lint-imports --no-cache 2>&1) && echo "lint-imports: $$(grep -E '^Contracts:' <<<"$$out")" \
		|| { echo "$$out" | sed -n '/Broken contracts/,$$p'; exit 1; }

screenshots: init  ## the README's screenshots, from the latest `make run` (Airflow form, run + report tab, report, MLflow version)
	$(BIN)/python tests/screenshots.py

bench: init  ## figures and ratios, printed; a run that fails ends it with its reason (SECTIONS="bench_parse ..." runs those alone)
	$(BIN)/python tests/bench.py $(SECTIONS) 2>/dev/null

evaluate: init  ## model quality with the production search budget, each forecaster run twice (about 35 minutes; SCENARIOS="traffic_flow" runs one)
	$(BIN)/python tests/evaluate.py $(SCENARIOS) 2>/dev/null

lint:
	$(BIN)/ruff check dags plugins tests
	$(BIN)/ruff check dags plugins --select AIR

clean:  ## removes the embedded stack (lake, Airflow DB, keys); the venv stays
	rm -rf $(CITYFACTORY_HOME)
