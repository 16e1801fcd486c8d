"""The Cityscapes label table, taken from cityscapesscripts (never retyped here).

Everything that depends on the classes (number of classes, names, palette, id -> trainId lookup,
the evaluated instance classes) is derived from `cityscapesscripts.helpers.labels`.
"""

import numpy as np
from cityscapesscripts.helpers.labels import labels as _LABELS

IGNORE_INDEX = 255

# Training classes in trainId order (19 for Cityscapes).
TRAIN_LABELS = sorted((lb for lb in _LABELS if 0 <= lb.trainId < IGNORE_INDEX), key=lambda lb: lb.trainId)
NUM_CLASSES: int = len(TRAIN_LABELS)
CLASS_NAMES: tuple[str, ...] = tuple(lb.name for lb in TRAIN_LABELS)
# RGB colour per trainId, (NUM_CLASSES, 3) uint8, the official palette.
TRAIN_PALETTE = np.array([lb.color for lb in TRAIN_LABELS], dtype=np.uint8)
# trainId -> label id (what the official evaluators expect in predictions).
TRAINID_TO_ID = np.array([lb.id for lb in TRAIN_LABELS], dtype=np.uint8)

# label id (0..33 and -1 for license plate) -> trainId; unknown ids -> 255.
_MAX_ID = 256
ID_TO_TRAINID = np.full(_MAX_ID, IGNORE_INDEX, dtype=np.uint8)
for _lb in _LABELS:
    if 0 <= _lb.id < _MAX_ID and 0 <= _lb.trainId < IGNORE_INDEX:
        ID_TO_TRAINID[_lb.id] = _lb.trainId
KNOWN_IDS = frozenset(lb.id for lb in _LABELS if lb.id >= 0)

# Label ids whose individual objects are evaluated as instances (person ... bicycle): classes
# that have instances and a valid trainId. Caravan and trailer have instances but trainId 255.
INSTANCE_IDS = frozenset(lb.id for lb in _LABELS if lb.hasInstances and 0 <= lb.trainId < IGNORE_INDEX)
# Label ids whose objects may carry an instanceId >= 1000 (the evaluated ones plus caravan and trailer).
HAS_INSTANCES_IDS = frozenset(lb.id for lb in _LABELS if lb.hasInstances and lb.id >= 0)
ID_TO_COLOR = {lb.id: lb.color for lb in _LABELS if lb.id >= 0}
NAME_TO_ID = {lb.name: lb.id for lb in _LABELS if lb.id >= 0}
