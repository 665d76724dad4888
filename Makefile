# The front door. `make run` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: run test lint bench clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

## run: install, migrate the embedded SQLite database, bootstrap a first tenant, serve on :8080
run: $(STAMP)
	$(BIN)/connector bootstrap
	$(BIN)/connector serve --host 127.0.0.1 --port 8080

## test: install and run the whole suite on SQLite and PostgreSQL
test: $(STAMP)
	$(BIN)/python tests/ensure_services.py
	$(BIN)/pytest $(PYTEST_ARGS)

## lint: ruff on everything, then mypy on the packages (what it checks: [tool.mypy])
lint: $(STAMP)
	$(BIN)/ruff check connector scim azure_sync billing tests bench
	$(BIN)/mypy

## bench: SCIM throughput at 100,000 users (see docs/benchmarks.md)
bench: $(STAMP)
	$(BIN)/python bench/scim_bench.py --users 100000 --worker-class gevent

clean:
	rm -rf $(VENV) var/*.sqlite3 .pytest_cache
