# Two entry points (see README): `make demo` and `make test`. Both create .venv on first use.
VENV    ?= .venv
PYTHON  ?= python3
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.ferkit-installed
PYTEST_ARGS ?= -n 2 --durations=15
DEMO_OUT ?= demo_out

.PHONY: demo test lint setup bench gpu-check clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	$(PY) -c "import ferkit, torch, torchvision; print('ferkit ready: torch', torch.__version__, 'torchvision', torchvision.__version__)"
	touch $(STAMP)

setup: $(STAMP)

demo: $(STAMP)
	$(VENV)/bin/ferkit demo --out $(DEMO_OUT)

# lint and types first (configured in pyproject.toml): a finding fails `make test` before pytest starts
lint: $(STAMP)
	$(PY) -m ruff check src tests scripts bench
	$(PY) -m ruff format --check src tests scripts bench
	$(PY) -m mypy

test: lint
	$(PY) -m pytest -q $(PYTEST_ARGS)

bench: $(STAMP)
	$(PY) bench/train_throughput.py

# on a CUDA machine: one table + gpu_check.json in under 8 minutes; elsewhere one line and a plumbing check
gpu-check: $(STAMP)
	$(PY) bench/gpu_check.py

clean:
	rm -rf demo_out runs .pytest_cache

.PHONY: mutate
mutate: $(STAMP)
	$(PY) scripts/mutate.py

.PHONY: fuzz
fuzz: $(STAMP)
	PYTHONPATH=src $(PY) -m tests.fuzz_data --cases 2000 --cli 5
	$(PY) -m pytest -q -n 0 tests/test_fuzz.py --fuzz-cases 2000
