# Two commands do all set-up on a fresh clone with Python 3.11:
#   make run    create .venv, install sessiond, run the daemon in the foreground on its defaults
#   make test   install the test dependencies too, and run the whole suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cksum pyproject.toml | cut -d' ' -f1)

.PHONY: run test test-long bench install clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[test]'
	rm -f $(VENV)/.installed-*
	touch $@

install: $(STAMP)

run: $(STAMP)
	$(VENV)/bin/sessiond daemon $(ARGS)

test: $(STAMP)
	$(PY) -m pytest -q $(PYTEST_ARGS)

# The long versions of the proofs (issue 6): 200 SIGKILLs, 300 schemathesis examples per operation,
# 50 stateful sequences of 30 steps over three daemons (issue 19), the full load test. Results: docs/SECURITY.md.
test-long: $(STAMP)
	CRASH_KILLS=200 CRASH_SEED=7 $(PY) -m pytest -q tests/test_crash.py
	SCHEMATHESIS_EXAMPLES=300 FUZZ_EXAMPLES=300 $(PY) -m pytest -q tests/test_schemathesis.py tests/test_fuzz.py
	STATEFUL_EXAMPLES=50 STATEFUL_STEPS=30 $(PY) -m pytest -q --timeout=7200 tests/test_stateful.py
	$(PY) bench/load.py

bench: $(STAMP)
	$(PY) bench/append.py
	$(PY) bench/push.py
	$(PY) bench/import.py
	$(PY) bench/load.py

clean:
	rm -rf $(VENV) .pytest_cache
