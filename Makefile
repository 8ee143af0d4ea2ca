# Everything a fresh machine needs: `make demo` and `make test` build .venv themselves.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home

.PHONY: venv demo dev dev-python test benchmark validate clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e ".[hdf5,dev]"
	touch $(STAMP)

demo: $(STAMP)
	mkdir -p $(DAGSTER_HOME)
	$(BIN)/python -m octue_dagster.testing.emulator --log .emulator/demo.log -- $(BIN)/python -m example_project.demo

# The example as a dg project (example_dg_project/, wiring in defs.yaml), opened with `dg dev`. Its Python assets come
# from example_project, so this checkout is on PYTHONPATH (as `uv sync` would install the project and its assets).
dev: $(STAMP)
	mkdir -p $(DAGSTER_HOME)
	$(BIN)/python -m octue_dagster.testing.emulator --log .emulator/dev.log -- \
		sh -c '$(BIN)/python -m example_project.demo --seed-only && cd example_dg_project && \
		PYTHONPATH=$(CURDIR):$(CURDIR)/example_dg_project/src exec $(abspath $(BIN))/dg dev'

# The same pipeline wired in Python (example_project/definitions.py), opened with `dagster dev -w workspace.yaml`.
dev-python: $(STAMP)
	mkdir -p $(DAGSTER_HOME)
	$(BIN)/python -m octue_dagster.testing.emulator --log .emulator/dev.log -- \
		sh -c '$(BIN)/python -m example_project.demo --seed-only && exec $(BIN)/dagster dev -w workspace.yaml'

test: $(STAMP)
	$(BIN)/python -m pytest -q -p no:cacheprovider $(PYTEST_ARGS)

benchmark: $(STAMP)
	$(BIN)/python -m benchmarks $(BENCHMARK_ARGS)

validate: $(STAMP)
	$(BIN)/dagster definitions validate -w workspace.yaml

clean:
	rm -rf $(VENV) .dagster_home .emulator

# Octue SDK 0.69.1 resource tests against our classes (needs OCTUE_SRC: an octue-sdk-python checkout or clone)
.PHONY: octue-compat
octue-compat: $(STAMP)
	$(BIN)/python compat/run_octue_tests.py --octue-src "$(OCTUE_SRC)" $(OCTUE_COMPAT_ARGS)
