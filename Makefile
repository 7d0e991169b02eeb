# sweepd — every target sets up what it needs; `make demo` and `make test` work on a fresh machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
# CPU build by default (this machine ships it; no multi-GB CUDA download). On a GPU machine:
#   make setup TORCH_SPEC="torch==2.13.0" TORCH_PIP_ARGS="--index-url https://download.pytorch.org/whl/cu128"
TORCH_SPEC ?= torch==2.13.0
TORCH_PIP_ARGS ?=
STAMP := $(VENV)/.sweepd-installed
export SWEEPD_HOME ?= $(CURDIR)/.sweepd
# DeepSpeed picks its accelerator itself; on a CPU-only machine make that explicit.
export DS_ACCELERATOR ?= $(shell command -v nvidia-smi >/dev/null 2>&1 && echo cuda || echo cpu)

.PHONY: setup demo demo-trial test test-fast bench data clean pg-start pg-stop frozen-db

# uPlot for the dashboard's curves, from the npm registry (pinned + sha512 in vendor.lock.json).
VENDOR_JS := api/dashboard/static/vendor/uPlot.iife.min.js

setup: $(STAMP) $(VENDOR_JS)

$(VENDOR_JS): scripts/fetch_vendor.py api/dashboard/vendor.lock.json
	$(PYTHON) scripts/fetch_vendor.py
	touch $@

$(STAMP): pyproject.toml constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade "pip==26.3" "wheel" "setuptools>=68"
	$(PIP) install -q "$(TORCH_SPEC)" $(TORCH_PIP_ARGS)
	# DeepSpeed ships as an sdist that needs torch at build time: build it against ours.
	DS_BUILD_OPS=0 $(PIP) install -q --no-build-isolation -c constraints.txt deepspeed
	$(PIP) install -q -c constraints.txt -e '.[test]'
	touch $@

data: setup
	$(PY) -m trainer make-data data/builtin

demo: setup data
	bash scripts/demo.sh

# One trial alone, no service: the trainer CLI on the built-in data.
demo-trial: setup data
	$(PY) -m trainer run examples/trial_demo.yaml --metrics-out runs/demo/metrics.jsonl

test: setup
	bash scripts/run_tests.sh

test-fast: setup
	bash scripts/run_tests.sh -x -m "not slow"

# A PostgreSQL server for running single tests by hand:
#   export SWEEPD_TEST_POSTGRES_URL="$$(scripts/postgres.sh start)"   (or: make pg-start)
pg-start:
	@bash scripts/postgres.sh start
pg-stop:
	@bash scripts/postgres.sh stop

# Remake the frozen databases of schema 0007 (tests/data/frozen/README.md): made by the release
# that has that schema (a git worktree of it), with this checkout's virtual environment.
FROZEN_COMMIT := 18a7b46
FROZEN_TREE ?= /tmp/sweepd-0007
frozen-db: setup
	test -d $(FROZEN_TREE) || git worktree add --detach $(FROZEN_TREE) $(FROZEN_COMMIT)
	export SWEEPD_TEST_POSTGRES_URL="$${SWEEPD_TEST_POSTGRES_URL:-$$(bash scripts/postgres.sh start)}" && \
	cd $(FROZEN_TREE) && PYTHONPATH=$(FROZEN_TREE) $(CURDIR)/$(PY) $(CURDIR)/tests/data/frozen/make_frozen.py

# The throughput benchmark's peers (TRL) come from the `bench` extra, pinned in constraints.txt.
BENCH_STAMP := $(VENV)/.sweepd-bench-installed
$(BENCH_STAMP): $(STAMP)
	$(PIP) install -q -c constraints.txt -e '.[test,bench]'
	touch $@

bench: setup $(BENCH_STAMP)
	$(PY) benchmarks/trainer_throughput.py --ablation
	$(PY) benchmarks/trainer_throughput.py --ablation --model llama1b-mix --peers hf,trl_grouped --steps 30 --trial-steps 0
	$(PY) benchmarks/preflight.py
	$(PY) benchmarks/preflight_api.py
	$(PY) benchmarks/api_load.py
	$(PY) benchmarks/api_scale.py
	bash scripts/ensure_chromium.sh >/dev/null && $(PY) benchmarks/dashboard_render.py

# The pruner benchmark (issues 7, 12). curve-bank regenerates benchmarks/data/ (base model + curve bank;
# ~40 min on 2 shared cores, one process, niced); night-bank records night 1 + night 2 from the stored
# base model (~25-35 min); algoperf-bank converts ../shared/curves/algoperf (seconds); the other two
# read the stored banks.
.PHONY: curve-bank night-bank algoperf-bank bench-report bench-pruning
curve-bank: setup
	nice -n 10 $(PY) -m benchmarks.curve_bank.generate

night-bank: setup
	nice -n 10 $(PY) -m benchmarks.curve_bank.generate --bank night

algoperf-bank: setup
	$(PY) -m benchmarks.curve_bank.algoperf

bench-report: setup
	$(PY) -m benchmarks.curve_bank.report

bench-pruning: setup
	nice -n 10 $(PY) -m benchmarks.pruning.bench

# What orchestration costs (issue 16): 1,000 replay trials through sweepd and through stock Ray Tune
# (wall / ideal), and results/s into the store on SQLite and PostgreSQL. ~45 min on 2 shared cores;
# a first reading: make bench-orchestration ORCH_ARGS="--trials 100". Not part of `make bench`.
ORCH_ARGS ?=
.PHONY: bench-orchestration
bench-orchestration: setup
	$(PY) -m benchmarks.orchestration $(ORCH_ARGS)

# A ~1.1B Llama-shaped model (random weights, built here) through the real trainer on this machine's
# GPU(s): ZeRO-2 and ZeRO-3, 1 worker (and 2 with two GPUs), 20 steps each; one line per run, exit 1
# on a failed run, a non-finite loss or disagreeing first steps. Not part of `make test`; no `setup`
# (that would install the CPU torch): it uses the venv when there is one, else $(PYTHON), which then
# needs torch, transformers, pyyaml, pydantic and deepspeed. Without a GPU it says so and exits 0.
# Try the path on a CPU: make gpu-check GPU_CHECK_ARGS="--size tiny --device cpu --steps 2"
GPU_CHECK_ARGS ?= --out test-artifacts/gpu-check.json
.PHONY: gpu-check
gpu-check:
	$(if $(wildcard $(PY)),$(PY),$(PYTHON)) scripts/gpu_check.py $(GPU_CHECK_ARGS)

clean:
	rm -rf $(VENV) .sweepd runs data test-artifacts .pgdata
