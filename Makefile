# vae_cats: every target creates the virtual environment first when it is missing or stale.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
DEMO_DIR := outputs/demo

.PHONY: install demo train test test-fast lint lock clean

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
	$(BIN)/python vae_cats/predict_model.py --model $(DEMO_DIR)/checkpoints/best.ckpt --out $(DEMO_DIR)/predict
	@echo "training pictures per epoch: $(DEMO_DIR)/images/"

train: $(STAMP)  ## train experiments=exp1 (full recipe, cats64 when ../shared has it)
	$(BIN)/python vae_cats/train_model.py experiments=exp1

test: $(STAMP)  ## the whole test suite, real training included
	$(BIN)/pytest

test-fast: $(STAMP)  ## tests under about 10 s each
	$(BIN)/pytest -m "not slow"

lint: $(STAMP)
	$(BIN)/ruff check vae_cats tests
	$(BIN)/ruff format --check vae_cats tests
	$(BIN)/mypy vae_cats

lock:  ## re-pin requirements.lock from the current .venv
	$(BIN)/pip freeze --exclude-editable | grep -v '^vae_cats' > requirements.lock

clean:
	rm -rf $(VENV) outputs multirun .pytest_cache
