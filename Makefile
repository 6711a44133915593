# trainhub: `make run` starts the API and one worker (embedded mode); `make test` runs the suite.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PORT ?= 8000

.PHONY: install run test test-fast test-slow bench bench-quick services clean audit

install: $(VENV)/.installed

# pip (not uv/poetry): torch==2.14.1 and torchvision==0.29.1 come from this machine's disk.
# constraints.txt pins every package the install resolves to (docs/operations.md says how to
# update it).
$(VENV)/.installed: pyproject.toml constraints.txt
	@echo "== creating $(VENV) and installing trainhub (torch is large: a few minutes) =="
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --disable-pip-version-check --progress-bar on -c constraints.txt -e '.[test]'
	touch $@

run: install
	PORT=$(PORT) $(VENV)/bin/trainhub up

services:
	bash scripts/services.sh

# Coverage of the product packages over both tiers: the fast tier records it (.coverage), the
# slow tier appends to it, prints the report and fails under the floor. Only the pytest process
# is measured, not the API/worker processes the tests start. The suite reached 82.8%; the
# floor sits a little below.
COV := --cov=api --cov=core --cov=worker --cov=cli --cov=models
COV_FAIL_UNDER ?= 80

test: install services
	$(PY) -m pytest -m "not slow" -q $(COV) --cov-report=
	$(PY) -m pytest -m slow -q $(COV) --cov-append --cov-report=term:skip-covered \
		--cov-fail-under=$(COV_FAIL_UNDER)

test-fast: install services
	$(PY) -m pytest -m "not slow" -q

test-slow: install services
	$(PY) -m pytest -m slow -q

# Embedded mode (SQLite, filesystem broker): needs no PostgreSQL or Redis. Rewrites
# BENCHMARKS.md; `make bench BENCH_ARGS=--quick` for a short run, `--help` for the options.
bench: install
	$(PY) bench/run.py $(BENCH_ARGS)

# The short form CI runs as smoke checks (tests/bench, slow tier): every benchmark, rough
# numbers, BENCHMARKS.md left alone; about 2 minutes on 2 cores.
bench-quick: install
	$(PY) bench/run.py --quick --no-write $(BENCH_ARGS)

# Release step, not part of CI: needs network access to the vulnerability service (PyPI/OSV).
# pip-audit lives in its own venv so that its dependencies never mix with the product's.
# --disable-pip --no-deps: audit exactly the pinned set as written, without a pip resolve;
# --strict: fail if any pinned package cannot be audited.
AUDIT_VENV ?= .venv-audit
PIP_AUDIT ?= pip-audit==2.10.1

$(AUDIT_VENV)/.installed:
	$(PYTHON) -m venv $(AUDIT_VENV)
	$(AUDIT_VENV)/bin/python -m pip install --disable-pip-version-check -q '$(PIP_AUDIT)'
	touch $@

audit: $(AUDIT_VENV)/.installed
	$(AUDIT_VENV)/bin/pip-audit --strict --no-deps --disable-pip -r constraints.txt

clean:
	rm -rf $(VENV) data .pytest_cache .coverage
