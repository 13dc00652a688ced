# One target per thing a person does. `make help` lists them.
.PHONY: help setup lock demo test test-unit test-fast test-cluster chaos lint format up down status logs ui maintain migrate backup notebook bench clean

help: ## this list
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-10s %s\n", $$1, $$2}'

setup: ## create .venv with the packages pinned in requirements.lock, install the project, cache the jars
	@bin/setup

# requirements.lock pins every Python package (pyproject's dependencies + the dev extra, all platforms, with
# hashes); `bin/setup` and CI install exactly it. uv makes it, from its own small venv in .tools/.
UV_VERSION = 0.13.8
UV = .tools/uv/bin/uv
lock: ## re-pin requirements.lock after editing pyproject's dependencies (keeps other pins; UPGRADE=1: newest allowed)
	@test -x $(UV) || { python3 -m venv .tools/uv && .tools/uv/bin/pip install -q uv==$(UV_VERSION); }
	@$(UV) pip compile pyproject.toml --extra dev --universal --python-version 3.11 --generate-hashes \
		--custom-compile-command "make lock" --quiet $(if $(UPGRADE),--upgrade) -o requirements.lock
	@bin/setup

demo: setup ## run the whole pipeline on embedded services with a live dashboard (Ctrl-C stops)
	@.venv/bin/ecom demo

test: ## set up (incl. browser) and run every test: unit, integration, end to end
	@bin/setup --browser
	@.venv/bin/pytest

chaos: setup ## fault suite on the real local stack (outages, kill -9, fuzzing, ~1 h); table in docs/chaos.md
	@.venv/bin/python -m tests.chaos --doc docs/chaos.md

test-cluster: setup ## tests beyond one machine (Spark standalone, S3 lake, 3-broker Kafka; about 12 min, not in CI)
	@.venv/bin/pytest -m cluster

test-unit: setup ## unit tests only
	@.venv/bin/pytest tests/unit

lint: setup ## ruff lint and format check
	@.venv/bin/ruff check . && .venv/bin/ruff format --check .

format: setup ## ruff format
	@.venv/bin/ruff format . && .venv/bin/ruff check --fix .

up: setup ## start the embedded stack
	@.venv/bin/ecom up

down: ## stop everything the project started
	@.venv/bin/ecom down

status: ## ask each service and process for real; exit 3 if one is down (docs/observability.md)
	@.venv/bin/ecom status

logs: ## the processes' logs (`ecom logs NAME -f` follows one)
	@.venv/bin/ecom logs

ui: setup ## the MLflow UI's address (started on 127.0.0.1 if needed) and any Spark UI's
	@.venv/bin/ecom ui

notebook: setup ## JupyterLab on 127.0.0.1:8888 over notebooks/ with the project's kernel (installs JupyterLab once)
	@.venv/bin/python -c 'import jupyterlab' 2>/dev/null || .venv/bin/pip install -q -e ".[notebook]"
	@.venv/bin/ecom notebook


maintain: setup ## compact the streaming tables' small files and VACUUM them (docs/maintenance.md)
	@.venv/bin/ecom maintain all

migrate: setup ## after an upgrade: apply the PostgreSQL and lake migrations (`up` does too)
	@.venv/bin/ecom migrate

backup: setup ## back up the lake and PostgreSQL into BACKUP_DIR (default data/backups/<UTC time>)
	@.venv/bin/ecom backup create $(or $(BACKUP_DIR),data/backups/$(shell date -u +%Y%m%dT%H%M%SZ))

clean: down ## stop and delete local data (lake, Kafka, PostgreSQL, MLflow; keeps the jar cache and data/backups)
	@find data -mindepth 1 -maxdepth 1 ! -name jars ! -name backups -exec rm -rf {} +
