# The two commands a new user runs: `make demo` and `make test`. Both create .venv if absent.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.dreml-installed

.PHONY: demo test bench clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[test]"
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m dreml.demo --out demo_out

test: $(STAMP)
	$(PY) -m pytest -q

# BENCH_ARGS=--quick for a smoke run
bench: $(STAMP)
	$(PY) -m benchmarks.run $(BENCH_ARGS)

clean:
	rm -rf demo_out bench_out .pytest_cache
