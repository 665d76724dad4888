# The front door. `make run` and `make test` work on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: run test test-fast lint bench image image-base image-smoke clean

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

## test: install and run the whole suite on SQLite and PostgreSQL, two pytest-xdist workers
## per core up to 4 (TEST_WORKERS=… to change; 0 runs it in one process)
# Each worker has its own databases (tests/support/databases.py) and ports, so they never
# share state. Two per core, because much of the suite waits (servers and processes
# starting, rounds and deliveries arriving): on 2 cores, 2 workers used 1.1 cores and took
# 15 min, 4 workers 12.5 min. More than 4 buys little: live-server tests run their own.
TEST_WORKERS ?= $(shell n=$$(nproc 2>/dev/null || echo 1); n=$$((n * 2)); [ $$n -gt 4 ] && n=4; echo $$n)
test: $(STAMP)
	$(BIN)/python tests/ensure_services.py
	$(PYTEST) -n $(TEST_WORKERS) $(PYTEST_ARGS)

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

## image: build the container image $(IMAGE) from the checkout (Containerfile; docs/container.md).
## BASE=… picks the base image (any Debian bookworm image; default Python's slim one from
## Docker Hub); CONTAINER=docker builds with Docker instead of podman; CA_BUNDLE=FILE is
## trusted by pip during the build (a TLS-inspecting proxy's CA); IMAGE_BUILD_ARGS=… are
## passed to the build as they are.
comma     := ,
CONTAINER ?= podman
IMAGE     ?= localhost/connector:latest
BASE      ?= docker.io/library/python:3.11-slim-bookworm
# podman writes OCI images by default, which have no HEALTHCHECK: ask for Docker's format.
IMAGE_FORMAT := $(if $(filter podman,$(notdir $(CONTAINER))),--format docker)
image:
	$(CONTAINER) build $(IMAGE_FORMAT) --build-arg BASE=$(BASE) -f Containerfile -t $(IMAGE) \
		$(if $(CA_BUNDLE),--secret id=ca$(comma)src=$(CA_BUNDLE)) $(IMAGE_BUILD_ARGS) .

## image-base: where no registry is reachable, a Debian bookworm base image built with
## debootstrap from the Debian mirror (root, debootstrap and podman needed), imported as
## $(DEBIAN_BASE); then `make image BASE=$(DEBIAN_BASE)`
# debootstrap lists bookworm alone: sources.list adds its updates and security fixes, as
# Debian's own images do, so the python3 the image installs is the patched one.
DEBIAN_BASE     ?= localhost/debian-base:bookworm
DEBIAN_MIRROR   ?= http://deb.debian.org/debian
DEBIAN_SECURITY ?= http://deb.debian.org/debian-security
DEBIAN_ROOT     ?= /var/tmp/connector-debian-base
image-base:
	rm -rf $(DEBIAN_ROOT)
	debootstrap --variant=minbase bookworm $(DEBIAN_ROOT) $(DEBIAN_MIRROR)
	printf 'deb %s bookworm main\ndeb %s bookworm-updates main\ndeb %s bookworm-security main\n' \
		$(DEBIAN_MIRROR) $(DEBIAN_MIRROR) $(DEBIAN_SECURITY) > $(DEBIAN_ROOT)/etc/apt/sources.list
	rm -rf $(DEBIAN_ROOT)/var/lib/apt/lists/* $(DEBIAN_ROOT)/var/cache/apt/*.bin \
		$(DEBIAN_ROOT)/var/cache/apt/archives/*.deb
	tar -C $(DEBIAN_ROOT) -c . | $(CONTAINER) import - $(DEBIAN_BASE)
	rm -rf $(DEBIAN_ROOT)

## image-smoke: build the image, run it against the local PostgreSQL, one SCIM call
## (tests/container/smoke.sh; not part of `make test`)
image-smoke:
	IMAGE=$(IMAGE) BASE=$(BASE) CONTAINER=$(CONTAINER) tests/container/smoke.sh

clean:
	rm -rf $(VENV) var/*.sqlite3 .pytest_cache
