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

# one BLAS thread in the test process: its Dask workers already keep the cores busy, and
# oversubscribed OpenBLAS threads made small dense solves 100x slower on a loaded 2-core machine
test: $(STAMP)
	OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(PY) -m pytest -q --durations=20

# BENCH_ARGS=--quick for a smoke run
bench: $(STAMP)
	$(PY) -m benchmarks.run $(BENCH_ARGS)

clean:
	rm -rf demo_out bench_out .pytest_cache
