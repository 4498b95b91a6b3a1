# Two commands on a fresh machine (see README): `make demo` and `make test`.
# Both create .venv and install what they need; torch is pinned to the CPU build.
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test test-fast bench clean

$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e '.[test]'
	touch $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/nas-search demo --out demo_out

test: $(STAMP)
	$(VENV)/bin/lint-imports
	$(VENV)/bin/ruff check .
	$(VENV)/bin/pytest -q -ra

test-fast: $(STAMP)
	$(VENV)/bin/pytest -q -m "not slow"

bench: $(STAMP)
	$(PY) -m benchmarks.bench_lut
	$(PY) -m benchmarks.bench_supernet
	$(PY) -m benchmarks.bench_search
	$(PY) benchmarks/bench_depth.py

clean:
	rm -rf $(VENV) demo_out .pytest_cache
