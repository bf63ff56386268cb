# KTO Forge, local mode and checks. `make dev` runs the system without Docker; `make test` runs the tests.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PIP := $(BIN)/python -m pip
REQS := requirements/api.txt requirements/torch.txt requirements/mlx.txt requirements/dev.txt
PYTEST_ARGS ?=
# pytest exits 5 when it collected no test: that must fail, never pass as green.
PYTEST = $(BIN)/python -m pytest $(1) $(PYTEST_ARGS); rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "pytest collected no tests"; exit 1; fi; exit $$rc

.PHONY: install dev test test-fault bench lint check-compose clean

install: $(STAMP)

# torch first and alone, pinned: pip takes the CPU wheel from its find-links (/opt/wheels here) and nothing
# later may pull a CUDA torch. Then everything else under the constraints file, then the project itself.
$(STAMP): pyproject.toml $(REQS) requirements/base.txt requirements/constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -c "import sys; assert sys.version_info >= (3, 11), 'KTO Forge needs Python >= 3.11: make PYTHON=python3.11'"
	$(PIP) install --quiet --upgrade pip setuptools wheel
	$(PIP) install --quiet torch==2.13.0
	$(PIP) install --quiet -c requirements/constraints.txt $(addprefix -r ,$(REQS))
	$(PIP) install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/python -c "import os, torch; assert not (os.environ.get('CI') and torch.version.cuda), 'CUDA torch in CI'"
	touch $(STAMP)

dev: install
	$(BIN)/ktoforge up

test: install
	$(call PYTEST,)

test-fault: install
	$(call PYTEST,tests/fault)

bench: install
	$(BIN)/python bench/dataset_bench.py
	$(BIN)/python bench/mlx_vs_torch.py

# The Compose-spec schema, then the references it cannot check (services, volumes, files).
check-compose: install
	$(BIN)/check-jsonschema --builtin-schema vendor.compose-spec docker-compose.yml
	$(BIN)/python -m tests.deploy.compose_refs docker-compose.yml

# Real errors only (pyflakes: undefined names, unused imports; syntax), not style.
lint: install check-compose
	$(BIN)/ruff check --select E9,F,W6 --target-version py311 shared services native-mac tests bench
	bash -n .ci/run

clean:
	rm -rf $(VENV) var
