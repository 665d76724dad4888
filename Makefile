# The front door. `make run` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: run test test-fast lint bench clean

# Python compiles the suite's modules (and pytest rewrites its asserts) on every run when
# PYTHONDONTWRITEBYTECODE is set, as on these machines: ~6 s a run. Tests keep their
# bytecode in __pycache__ (ignored by git).
PYTEST := env -u PYTHONDONTWRITEBYTECODE $(BIN)/pytest

# pip's output goes to a log, shown only if the install fails: `make run` ends with
# what it created and where to go, not with a page of installer notes.
$(STAMP): pyproject.toml
	@echo "Installing the connector and its tools into $(VENV) (a minute or two on a fresh machine; log: $(VENV)/install.log)..."
	@$(PYTHON) -m venv $(VENV)
	@{ $(BIN)/pip install -q --upgrade pip && $(BIN)/pip install -q -e '.[dev]'; } \
		> $(VENV)/install.log 2>&1 || { cat $(VENV)/install.log; \
		echo "Installing failed; the log is above and in $(VENV)/install.log."; exit 1; }
	@touch $(STAMP)

## run: install, migrate the embedded SQLite database, bootstrap a first tenant and admin,
## serve on 127.0.0.1:8080 (HOST=… PORT=… to change; so do CONNECTOR_SERVER__HOST/PORT)
run: $(STAMP)
	$(if $(HOST),CONNECTOR_SERVER__HOST=$(HOST)) $(if $(PORT),CONNECTOR_SERVER__PORT=$(PORT)) \
	$(BIN)/connector serve --bootstrap

## test: install and run the whole suite on SQLite and PostgreSQL
test: $(STAMP)
	$(BIN)/python tests/ensure_services.py
	$(PYTEST) $(PYTEST_ARGS)

## test-fast: the quick loop, under a minute: SQLite only, without the tests marked slow
## (live servers, subprocesses, kill -9, browsers, long generated runs), one worker per core
## (PYTEST_ARGS="-n 0" runs it in one process, for -x or --pdb)
test-fast: $(STAMP)
	$(PYTEST) -m "not slow" --db sqlite -n auto $(PYTEST_ARGS)

## lint: ruff on everything, then mypy on the packages (what it checks: [tool.mypy])
lint: $(STAMP)
	$(BIN)/ruff check connector scim azure_sync billing tests bench
	$(BIN)/mypy

## bench: SCIM throughput at 100,000 users (see docs/benchmarks.md)
bench: $(STAMP)
	$(BIN)/python bench/scim_bench.py --users 100000 --worker-class gevent

clean:
	rm -rf $(VENV) var/*.sqlite3 .pytest_cache
