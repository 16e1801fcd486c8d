"""Training machinery: the config, the one training step, building the training parts, checkpoints,
atomic writes, distributed helpers (replica check) and the run log. train.py and bench/train.py use it."""
