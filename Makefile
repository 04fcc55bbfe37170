# Developer entry points. `make run` and `make test` set everything up on a fresh Debian box.

PYTHON ?= python3
VENV = .venv
BIN = $(VENV)/bin
CONFIG ?= config/sbc.yaml
PYTEST_ARGS ?=
# apt-get needs root: go through sudo unless we already are root.
SUDO := $(shell [ "$$(id -u)" -eq 0 ] || echo sudo)

.PHONY: all venv sipp postgres run test bench lint clean distclean

all: test

venv: $(VENV)/.installed

# Debian splits ensurepip, which `python3 -m venv` needs, into the python3-venv package.
$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -c 'import ensurepip' 2>/dev/null || { \
		echo "$(PYTHON) cannot create a virtualenv (no ensurepip): installing python3-venv"; \
		$(SUDO) apt-get update && $(SUDO) apt-get install -y python3-venv; \
	}
	@[ -x $(BIN)/pip ] || { echo "$(PYTHON) -m venv $(VENV)"; $(PYTHON) -m venv $(VENV); }
	$(BIN)/python -m pip install --upgrade pip
	$(BIN)/python -m pip install -e '.[test,dev]'
	touch $@

sipp:
	@command -v sipp >/dev/null 2>&1 || { \
		echo "sipp not found; installing Debian's sip-tester"; \
		$(SUDO) apt-get update && $(SUDO) apt-get install -y sip-tester; \
	}

# tests/integration/test_cdr_postgres.py runs its own throwaway cluster with Debian's initdb and
# pg_ctl (/usr/lib/postgresql/*/bin). Installed without a main cluster (create_main_cluster =
# false in postgresql-common's createcluster.conf), so no system-wide server is set up or
# started: nothing listens on 5432 because of the tests.
postgres:
	@ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || { \
		echo "initdb not found; installing Debian's postgresql (no main cluster)"; \
		$(SUDO) apt-get update && $(SUDO) apt-get install -y postgresql-common && \
		$(SUDO) sed -i 's/^#* *create_main_cluster *=.*/create_main_cluster = false/' \
			/etc/postgresql-common/createcluster.conf && \
		$(SUDO) apt-get install -y postgresql; \
	}

run: venv
	$(BIN)/sbc run -c $(CONFIG)

test: venv sipp postgres
	$(BIN)/python -m pytest $(PYTEST_ARGS)

bench: venv sipp
	@$(BIN)/python -c 'import sippy' 2>/dev/null || $(BIN)/python -m pip install -q sippy  # the parser comparison
	$(BIN)/python -m bench

lint: venv
	$(BIN)/ruff check sbc media trunks tests bench
	$(BIN)/mypy sbc media trunks

clean:
	rm -rf build dist *.egg-info .pytest_cache .mypy_cache .ruff_cache
	find . -path ./$(VENV) -prune -o -name __pycache__ -type d -exec rm -rf {} +

distclean: clean
	rm -rf $(VENV)
