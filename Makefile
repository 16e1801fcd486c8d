# Every target installs what it needs into .venv first (created when missing).
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
DATA    ?= datasets/synthetic-cityscapes
export NO_ALBUMENTATIONS_UPDATE := 1
export WANDB_MODE ?= disabled

.PHONY: venv demo test lint data bench reproduce clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

$(DATA)/.complete: | $(STAMP)
	$(BIN)/python -m data.synthetic --out $(DATA)

data: $(DATA)/.complete

# The main job on the embedded synthetic data.
demo: $(STAMP) $(DATA)/.complete
	$(BIN)/python -m demo --data $(DATA)

test: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/python -m pytest

bench: $(STAMP) $(DATA)/.complete
	$(BIN)/python -m bench.data --root $(DATA)

reproduce: $(STAMP) $(DATA)/.complete
	CITYSCAPES_DATASET=$(abspath $(DATA)) $(BIN)/python reproduce.py all --preset synthetic-cpu

clean:
	rm -rf runs
