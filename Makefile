# Two commands do all set-up on a fresh clone with Python 3.11:
#   make run    create .venv, install sessiond (runtime dependencies only), run the daemon in the foreground
#   make test   install the test dependencies too, check lint and types, and run the whole suite
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
SUM := $(shell cksum pyproject.toml | cut -d' ' -f1)
# Two stamps: `make run` needs the runtime dependencies only; the test extras come with `make test`.
RUN_STAMP := $(VENV)/.installed-run-$(SUM)
TEST_STAMP := $(VENV)/.installed-test-$(SUM)

# LINT_STRICT=1 (the default): `make lint` (and so `make test`) fails on any ruff finding, any file
# `ruff format` would change, and any mypy error. LINT_STRICT=0 fails only on what can never be right:
# syntax errors and undefined names (E9, F63, F7, F82), for a branch caught mid-way.
LINT_STRICT ?= 1

.PHONY: run test test-long bench install lint typecheck-tree clean

$(RUN_STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e .
	rm -f $(VENV)/.installed-run-*
	touch $@

# `make test` on a fresh clone installs once: the runtime dependencies with the test extras, both stamps written
# (it ran `pip install -e .` first, then again with the extras: the same editable build and resolve twice, ~4 s of
# CPU, ~10 s of a loaded machine's wall time). A venv whose runtime install is up to date gets the extras only.
$(TEST_STAMP): pyproject.toml
	$(if $(wildcard $(RUN_STAMP)),,$(PYTHON) -m venv $(VENV))
	$(if $(wildcard $(RUN_STAMP)),,$(PY) -m pip install --quiet --upgrade pip)
	$(PY) -m pip install --quiet -e '.[test]'
	rm -f $(VENV)/.installed-test-* $(VENV)/.installed-run-*
	touch $@ $(RUN_STAMP)

install: $(TEST_STAMP)

run: $(RUN_STAMP)
	$(VENV)/bin/sessiond daemon $(ARGS)

# The folders install as sessiond.<folder> (pyproject's package-dir), which mypy cannot map from the
# source tree: link them under .typecheck/sessiond/ (re-read from pyproject.toml on every run).
typecheck-tree: $(RUN_STAMP)
	$(PY) .ci/typecheck_tree.py

lint: $(TEST_STAMP) typecheck-tree
ifeq ($(LINT_STRICT),1)
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy
else
	$(PY) -m ruff check --select E9,F63,F7,F82 .
	@echo "lint: LINT_STRICT=0, only syntax errors and undefined names fail; the full check: make lint LINT_STRICT=1"
endif

# The suite runs on TEST_WORKERS processes (pytest-xdist), each test file whole on one worker (its
# module-scoped daemons started once). Most tests wait on daemons in other processes (a store's timeout, a
# retry, an expiry): with three workers two cores stood idle ~30% of the run (~680 s of CPU in a 490 s run),
# four fill more of it (a sample of 47 files: 346 s against 376 s with three, back to back on a loaded
# machine); TEST_WORKERS=0 runs it in this one process.
TEST_WORKERS ?= 4

# The suite starts many Python processes (daemons, CLI calls): each imports sessiond's modules, which an
# environment with PYTHONDONTWRITEBYTECODE set (as this machine's) compiles from source every time, ~0.3 s of CPU a
# process. compileall writes their bytecode once (it skips what is up to date); Python reads it whatever
# that variable says.
PACKAGE_DIRS := api cli client daemon relay storage stores sync

# pytest rewrites the test modules' asserts (~12 s of CPU for the suite) and keeps the result (tests/conftest.py):
# every worker did it at its start, four times, before the first test (~30 s of a 2-core machine's wall time on a
# fresh clone). Two processes write them here, half the files each; the workers read them.
# `make lint` runs beside them and the suite (it ran before them: mypy's ~7 s of CPU on a fresh clone, ~20 s of
# a loaded machine's wall time, while the suite's workers leave part of two cores idle, waiting on daemons); its
# output is printed when the suite ends, and a finding fails `make test` as it did (`make lint` alone: seconds).
LINT_OUT := $(VENV)/lint.out
test: $(TEST_STAMP) typecheck-tree
	$(PY) -m compileall -q $(PACKAGE_DIRS) tests
	$(MAKE) --no-print-directory lint >$(LINT_OUT) 2>&1 & lint=$$!; \
	$(PY) -m pytest -q -p no:cacheprovider --collect-only tests/test_[a-l]*.py >/dev/null & half=$$!; \
	$(PY) -m pytest -q -p no:cacheprovider --collect-only tests/test_[m-z]*.py >/dev/null; wait $$half; \
	$(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder $(PYTEST_ARGS); suite=$$?; \
	wait $$lint; linted=$$?; cat $(LINT_OUT); \
	if [ $$linted -ne 0 ]; then echo "make test: make lint failed (its output above)"; fi; \
	[ $$suite -eq 0 ] && [ $$linted -eq 0 ]

# The long versions of the proofs (issue 6): the whole suite with every daemon and CLI call started as a new
# program (make test starts most from tests/forkserver.py, which imported sessiond once), 200 SIGKILLs, 300 schemathesis examples per operation,
# 50 stateful sequences of 30 steps over three daemons (issue 19), 300 delivery orders of each convergence
# property, the full load test. Results: docs/SECURITY.md.
test-long: $(TEST_STAMP)
	SESSIOND_TEST_EXEC=1 $(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder
	CRASH_KILLS=200 CRASH_SEED=7 $(PY) -m pytest -q tests/test_crash.py
	CRASH_LONG=1 $(PY) -m pytest -q -n $(TEST_WORKERS) --dist loadfile --timeout=3600 tests/test_crash_claims_walk_loop.py tests/test_crash_mirror_repair_loop.py tests/test_crash_gc_rekey_relay_loop.py
	SCHEMATHESIS_EXAMPLES=300 FUZZ_EXAMPLES=300 $(PY) -m pytest -q --timeout=3600 tests/test_schemathesis.py tests/test_fuzz.py
	STATEFUL_EXAMPLES=50 STATEFUL_STEPS=30 $(PY) -m pytest -q --timeout=7200 tests/test_stateful.py
	CONVERGE_EXAMPLES=300 $(PY) -m pytest -q --timeout=3600 tests/test_converge.py
	$(PY) bench/load.py

bench: $(TEST_STAMP)
	$(PY) bench/append.py
	$(PY) bench/push.py
	$(PY) bench/import.py
	$(PY) bench/load.py
	$(PY) bench/complete.py
	$(PY) bench/relay.py
	$(PY) bench/memory.py
	$(PY) bench/search.py
	$(PY) bench/delete.py
	$(PY) bench/checkpoint.py
	$(PY) bench/floors.py

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .typecheck
