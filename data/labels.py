"""The Cityscapes label table lives in tasks/labels.py (the bottom of the dependency graph); the dataset
code reads it under this name too."""

from tasks.labels import *  # noqa: F403
from tasks.labels import _LABELS  # noqa: F401
