# Two commands for a fresh clone on a machine with PostgreSQL and RabbitMQ on localhost:
#   make run    set up, migrate, seed and start the service (API on :8000, 2 workers)
#   make test   set up and run the whole test suite against the real PostgreSQL and RabbitMQ
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: run test lint format bench clean

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

.env:
	$(PYTHON) -c "import secrets; print('EXPORTER_JWT_SECRET=' + secrets.token_urlsafe(48))" > .env

run: $(STAMP) .env
	$(BIN)/exporter migrate up
	$(BIN)/exporter seed
	$(BIN)/exporter run --workers 2

test: $(STAMP)
	$(BIN)/pytest -q

lint: $(STAMP)
	$(BIN)/ruff check service tests bench
	$(BIN)/ruff format --check service tests bench
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff check --fix service tests bench
	$(BIN)/ruff format service tests bench

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache
