# Scripts to rule them all: demo, test, bench, check. Each bootstraps .venv idempotently.
PYTHON ?= $(shell command -v python3.11 2>/dev/null || command -v python3)
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed

.PHONY: demo test bench bench-ci check venv clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	flock /tmp/obs-middleware-venv.lock $(PY) -m pip install -q --upgrade pip
	flock /tmp/obs-middleware-venv.lock $(PY) -m pip install -q -e '.[dev]'
	touch $(STAMP)

demo: $(STAMP)
	$(PY) -m obs_middleware.cli demo

test: $(STAMP)
	$(PY) -m pytest -q

bench: $(STAMP)
	$(PY) -m pytest benchmarks -q -p no:randomly --benchmark-columns=median,min,max,rounds --benchmark-sort=name

# The CI plan: issue 15's gates only (in-process A/B, load, export throughput), fewer runs and
# rounds, same method; <= 15 min on the 2-core machine. Needs wrk (.ci/bench.sh installs it).
bench-ci: $(STAMP)
	OBS_BENCH_PLAN=ci $(PY) -m pytest benchmarks -q -p no:randomly -m gate --benchmark-disable

check: $(STAMP)
	$(VENV)/bin/ruff check src tests integrations benchmarks
	$(VENV)/bin/ruff format --check src
	$(VENV)/bin/mypy src

clean:
	rm -rf $(VENV) build dist .mypy_cache .ruff_cache
