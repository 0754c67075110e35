# Two commands on a fresh machine with Python 3.11+ and make:  make run  |  make test  (make demo: no keys)
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat requirements.lock pyproject.toml | cksum | cut -d' ' -f1)
PG_ADMIN_URL ?= postgresql://postgres@127.0.0.1:5432/postgres

.PHONY: install run demo migrate test test-sqlite test-postgres lint typecheck bench clean

install: $(STAMP)

$(STAMP): requirements.lock pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11+ is required")'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -r requirements.lock
	rm -f $(VENV)/.installed-* && touch $@

run: install
	$(BIN)/python -m bot

# No keys: the service + fake Telegram and Meta; the customer at :8080/, Kimmie at :8081/kimmie.
demo: install
	$(BIN)/python -m demo

migrate: install
	$(BIN)/python -m core.db.migrate

# The whole suite, on SQLite and on PostgreSQL, both at once (each half's output is printed whole
# when it ends; the run fails if either fails).
test: install
	@$(MAKE) --no-print-directory -j2 --output-sync=target test-sqlite test-postgres

test-sqlite: install
	CHESHIRE_TEST_DATABASE=sqlite $(BIN)/python -m pytest $(PYTEST_ARGS)

test-postgres: install
	@if $(BIN)/python -m tests.support.pg_available "$(PG_ADMIN_URL)"; then \
		CHESHIRE_TEST_DATABASE=postgres CHESHIRE_TEST_PG_ADMIN_URL="$(PG_ADMIN_URL)" $(BIN)/python -m pytest $(PYTEST_ARGS); \
	elif [ -n "$$CI" ]; then echo "PostgreSQL is not reachable at $(PG_ADMIN_URL): failing (CI)"; exit 1; \
	else echo "!!! PostgreSQL is not reachable at $(PG_ADMIN_URL): the PostgreSQL half of the suite did NOT run"; fi

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check core bot channels tests bench || true

typecheck: install
	$(BIN)/mypy

bench: install
	@for script in bench/bench_*.py; do echo "== $$script"; $(BIN)/python $$script || exit 1; done

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache var
