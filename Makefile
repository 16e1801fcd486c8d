# Every target installs what it needs into .venv first (created when missing).
PY      ?= python3
VENV    := .venv
BIN     := $(VENV)/bin
STAMP   := $(VENV)/.installed
DATA    ?= datasets/synthetic-cityscapes
DATA_CALIBRATED ?= datasets/synthetic-cityscapes-calibrated
DATA_PROTOCOL ?= datasets/synthetic-cityscapes-protocol
export NO_ALBUMENTATIONS_UPDATE := 1
export WANDB_MODE ?= disabled

.PHONY: venv demo test lint data data-calibrated data-protocol bench reproduce clean

venv: $(STAMP)

$(STAMP): pyproject.toml
	test -d $(VENV) || $(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -e '.[dev]'
	touch $(STAMP)

$(DATA)/.complete: | $(STAMP)
	$(BIN)/python -m data.synthetic --out $(DATA)

data: $(DATA)/.complete

# The same generator with the scene parameters calibrated toward real Cityscapes' class shares
# (data/synthetic/profile.py; `python -m data.check $(DATA_CALIBRATED)` prints them). Profile v1 above
# is what the committed results were trained on; train on this one with data.synthetic_profile=calibrated.
$(DATA_CALIBRATED)/.complete: | $(STAMP)
	$(BIN)/python -m data.synthetic --out $(DATA_CALIBRATED) --profile calibrated

data-calibrated: $(DATA_CALIBRATED)/.complete

# The comparison protocol's set (configs/synthetic-protocol.yaml): calibrated, with a held-out test split, and
# its Tiny cache at the preset's 64x128 (items identical to the PNGs'; a training step 1.2x faster:
# results/perf/cpu-synthetic-protocol-loader.json).
$(DATA_PROTOCOL)/.complete: | $(STAMP)
	$(BIN)/python -m data.synthetic --out $(DATA_PROTOCOL) --profile calibrated --test 100
	$(BIN)/python -m data.cache $(DATA_PROTOCOL) --size 64x128 --splits train val test

data-protocol: $(DATA_PROTOCOL)/.complete

# The main job on the embedded synthetic data: train (or resume, or skip if finished), evaluate,
# print the metrics table, draw sigma^2 / effective weights over training and a few val frames.
DEMO := runs/demo
demo: $(STAMP) $(DATA)/.complete
	$(BIN)/python train.py --config configs/demo.yaml data.root=$(DATA) run_dir=$(DEMO)
	$(BIN)/python evaluate.py --checkpoint $(DEMO)/checkpoint.pt --root $(DATA) --out $(DEMO)/eval.json --figures $(DEMO)/figures
	$(BIN)/python -m experiments.plots curves $(DEMO)/metrics.jsonl --out $(DEMO)/uncertainty.png
	@echo "demo outputs: $(DEMO)/eval.json, $(DEMO)/uncertainty.png, $(DEMO)/figures/"

# Two pytest workers (pytest-xdist), one thread each: the 2-core machines run two tests at a time.
test: $(STAMP)
	$(BIN)/ruff check .
	OMP_NUM_THREADS=1 MKL_NUM_THREADS=1 $(BIN)/python -m pytest -n 2 --durations=15

bench: $(STAMP) $(DATA)/.complete
	$(BIN)/python -m bench.data --root $(DATA)
	$(BIN)/python -m bench.eval
	$(BIN)/python -m bench.train --config configs/demo.yaml
	$(BIN)/python -m bench.train --config configs/paper_tiny.yaml --steps 3 --warmup 1

reproduce: $(STAMP) $(DATA)/.complete
	CITYSCAPES_DATASET=$(abspath $(DATA)) $(BIN)/python reproduce.py all --preset synthetic-cpu

clean:
	rm -rf runs
