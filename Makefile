# vae_cats: every target creates the virtual environment first when it is missing or stale.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
DEMO_DIR := outputs/demo

.PHONY: install demo train test test-fast lint lock clean
.PHONY: docs docker docker-predict docker-train docker-run-predict
.PHONY: data bench bench-ingest
.PHONY: serve bench-serve
.PHONY: test-latest profile reproduce-model

$(STAMP): requirements.lock pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -r requirements.lock
	$(BIN)/pip install --quiet --no-deps -e .
	touch $(STAMP)

install: $(STAMP)  ## create .venv from the lock file

demo: $(STAMP)  ## train the demo experiment on the bundled sample, then generate cats
	rm -rf $(DEMO_DIR)
	$(BIN)/python vae_cats/train_model.py experiments=demo hydra.run.dir=$(DEMO_DIR)
	$(BIN)/python vae_cats/predict_model.py --model $(DEMO_DIR)/checkpoints/best.ckpt --interpolate --out $(DEMO_DIR)/predict
	@echo "training pictures per epoch: $(DEMO_DIR)/images/"

train: $(STAMP)  ## train experiments=exp1 (full recipe, cats64 when ../shared has it)
	$(BIN)/python vae_cats/train_model.py experiments=exp1

# -n auto: one pytest-xdist worker per core (tests/conftest.py splits the torch threads).
# Whole test files go to one worker, in collection order (container tests first): one worker
# builds the predict image while the others run the rest. (Not --dist loadgroup: pytest 9.2
# ignores its xdist_group marks, pytest-dev/pytest-xdist#1386.)
PYTEST_PARALLEL := -n auto --dist loadfile --no-loadscope-reorder

test: $(STAMP)  ## the whole test suite, real training included, with coverage of vae_cats/
	$(BIN)/pytest $(PYTEST_PARALLEL) --durations=15 \
		--cov=vae_cats --cov-report=term-missing --cov-fail-under=90

test-fast: $(STAMP)  ## tests under about 10 s each
	$(BIN)/pytest $(PYTEST_PARALLEL) -m "not slow"

# Needs only python3: the newest releases go into their own venv, never into .venv.
LATEST_PYTEST_ARGS ?= -m "not slow and not container"
test-latest:  ## fast tests against the newest releases of the direct deps (in .venv-latest): which upgrade broke what
	$(PYTHON) scripts/test_latest.py --venv .venv-latest --pytest-args '$(LATEST_PYTEST_ARGS)'

lint: $(STAMP)
	$(BIN)/ruff check vae_cats tests hydra_plugins benchmarks scripts
	$(BIN)/ruff format --check vae_cats tests hydra_plugins benchmarks scripts
	$(BIN)/mypy vae_cats hydra_plugins
	$(BIN)/actionlint

docs: $(STAMP)  ## build the mkdocs site into site/ (warnings are errors)
	$(BIN)/mkdocs build --strict

DOCKER_DIR := outputs/docker

docker: docker-predict docker-train docker-run-predict  ## build both images (buildah), run predict once

docker-predict:  ## build predict:latest (CPU-only torch, slim)
	bash scripts/container.sh build predict

docker-train:  ## build train:latest (requirements.lock, CUDA torch)
	bash scripts/container.sh build train

docker-run-predict: $(STAMP) docker-predict  ## run predict:latest once: PNGs in outputs/docker/predict
	test -f $(DOCKER_DIR)/run/checkpoints/best.ckpt || $(BIN)/python vae_cats/train_model.py \
		experiments=demo trainer.max_steps=6 trainer.val_check_interval=3 hydra.run.dir=$(DOCKER_DIR)/run
	bash scripts/container.sh run-predict $(DOCKER_DIR)/run/checkpoints/best.ckpt $(DOCKER_DIR)/predict

# The shipped model's recipe with its step count fixed (the count exp1's 30-minute budget gave
# on the AVX-512 machine that trained it), so the schedule and the run are the same anywhere;
# bit-equal weights need the same CPU capability too (precision: auto picks bf16 or float32).
REPRODUCE_DIR ?= outputs/reproduce
REPRODUCE_STEPS ?= 10788
REPRODUCE_ARGS ?=
reproduce-model: $(STAMP)  ## retrain exp1 from this commit for REPRODUCE_STEPS steps and package it into REPRODUCE_DIR/cats_vae.ckpt
	@test -n "$(REPRODUCE_STEPS)" || { echo "reproduce-model: REPRODUCE_STEPS must be a step count" >&2; exit 2; }
	@test -n "$(ALLOW_DIRTY)" || git diff --quiet HEAD -- || { echo "reproduce-model: uncommitted changes: commit them first (the lineage must name a clean commit), or ALLOW_DIRTY=1" >&2; exit 2; }
	rm -rf $(REPRODUCE_DIR)
	$(BIN)/python vae_cats/train_model.py experiments=exp1 trainer.max_steps=$(REPRODUCE_STEPS) hydra.run.dir=$(REPRODUCE_DIR) $(REPRODUCE_ARGS)
	$(BIN)/python -m vae_cats.package_model --model $(REPRODUCE_DIR)/checkpoints/best.ckpt --out $(REPRODUCE_DIR)/cats_vae.ckpt

lock:  ## re-pin requirements.lock from the current .venv
	$(BIN)/pip freeze --exclude-editable | grep -v '^vae_cats' > requirements.lock

clean:
	rm -rf $(VENV) outputs multirun .pytest_cache

data: $(STAMP)  ## data/raw/ (tracked by data.dvc): dvc pull if a remote answers, else ../shared cats64, else the bundled sample
	DVC_NO_ANALYTICS=1 $(BIN)/python scripts/get_data.py

BENCH_RUNS ?= shipped=vae_cats/assets/cats_vae.ckpt
bench: $(STAMP)  ## score checkpoints on the cats64 test split into outputs/bench/: make bench BENCH_RUNS="exp1=PATH/best.ckpt" [BENCH_ARGS=--update-reports]
	$(BIN)/python benchmarks/bench_model.py $(addprefix --run ,$(BENCH_RUNS)) $(BENCH_ARGS)

bench-ingest: $(STAMP)  ## hardened ingest of cats64 against a sequential PIL loop: prints a table
	$(BIN)/python benchmarks/bench_ingest.py --repeat 3

SERVE_MODEL ?= vae_cats/assets/cats_vae.ckpt
SERVE_BACKEND ?= onnx
SERVE_HOST ?= 127.0.0.1
SERVE_PORT ?= 8000
serve: $(STAMP)  ## HTTP API on 127.0.0.1:8000 (shipped model, ONNX Runtime): make serve [SERVE_MODEL=PATH SERVE_BACKEND=torch SERVE_PORT=8001 SERVE_HOST=0.0.0.0]
	$(BIN)/python -m vae_cats.serving --model $(SERVE_MODEL) --backend $(SERVE_BACKEND) --host $(SERVE_HOST) --port $(SERVE_PORT)

bench-serve: $(STAMP)  ## load benchmark of the API (ONNX): closed and open loop, batching on and off, 8 x 15 s: prints a table
	$(BIN)/python benchmarks/bench_serve.py --duration 15

PROFILE_EXP ?= exp1
PROFILE_STEPS ?= 20
profile: $(STAMP)  ## PROFILE_STEPS training steps of PROFILE_EXP under torch.profiler: outputs/profile/<exp>/{trace.json,profile.md}
	$(BIN)/python benchmarks/profile_train.py --experiment $(PROFILE_EXP) --steps $(PROFILE_STEPS) $(PROFILE_ARGS)
