"""The Cityscapes label table: cityscapesscripts' `helpers.labels.labels`, held here as data.

Everything that depends on the classes (number of classes, names, palette, id -> trainId lookup,
the evaluated instance classes) is derived from this one table. It is a verbatim copy of
cityscapesscripts 2.3.0's table (tests/test_targets.py checks it equals the installed one, row by
row), so that training and data tools run without cityscapesscripts, which only the official
evaluators (evaluation/official.py) need.
"""

from typing import NamedTuple

import numpy as np


class Label(NamedTuple):
    """One row of the table, with cityscapesscripts' field names."""

    name: str
    id: int
    trainId: int
    category: str
    categoryId: int
    hasInstances: bool
    ignoreInEval: bool
    color: tuple[int, int, int]


_LABELS = (
    Label('unlabeled', 0, 255, 'void', 0, False, True, (0, 0, 0)),
    Label('ego vehicle', 1, 255, 'void', 0, False, True, (0, 0, 0)),
    Label('rectification border', 2, 255, 'void', 0, False, True, (0, 0, 0)),
    Label('out of roi', 3, 255, 'void', 0, False, True, (0, 0, 0)),
    Label('static', 4, 255, 'void', 0, False, True, (0, 0, 0)),
    Label('dynamic', 5, 255, 'void', 0, False, True, (111, 74, 0)),
    Label('ground', 6, 255, 'void', 0, False, True, (81, 0, 81)),
    Label('road', 7, 0, 'flat', 1, False, False, (128, 64, 128)),
    Label('sidewalk', 8, 1, 'flat', 1, False, False, (244, 35, 232)),
    Label('parking', 9, 255, 'flat', 1, False, True, (250, 170, 160)),
    Label('rail track', 10, 255, 'flat', 1, False, True, (230, 150, 140)),
    Label('building', 11, 2, 'construction', 2, False, False, (70, 70, 70)),
    Label('wall', 12, 3, 'construction', 2, False, False, (102, 102, 156)),
    Label('fence', 13, 4, 'construction', 2, False, False, (190, 153, 153)),
    Label('guard rail', 14, 255, 'construction', 2, False, True, (180, 165, 180)),
    Label('bridge', 15, 255, 'construction', 2, False, True, (150, 100, 100)),
    Label('tunnel', 16, 255, 'construction', 2, False, True, (150, 120, 90)),
    Label('pole', 17, 5, 'object', 3, False, False, (153, 153, 153)),
    Label('polegroup', 18, 255, 'object', 3, False, True, (153, 153, 153)),
    Label('traffic light', 19, 6, 'object', 3, False, False, (250, 170, 30)),
    Label('traffic sign', 20, 7, 'object', 3, False, False, (220, 220, 0)),
    Label('vegetation', 21, 8, 'nature', 4, False, False, (107, 142, 35)),
    Label('terrain', 22, 9, 'nature', 4, False, False, (152, 251, 152)),
    Label('sky', 23, 10, 'sky', 5, False, False, (70, 130, 180)),
    Label('person', 24, 11, 'human', 6, True, False, (220, 20, 60)),
    Label('rider', 25, 12, 'human', 6, True, False, (255, 0, 0)),
    Label('car', 26, 13, 'vehicle', 7, True, False, (0, 0, 142)),
    Label('truck', 27, 14, 'vehicle', 7, True, False, (0, 0, 70)),
    Label('bus', 28, 15, 'vehicle', 7, True, False, (0, 60, 100)),
    Label('caravan', 29, 255, 'vehicle', 7, True, True, (0, 0, 90)),
    Label('trailer', 30, 255, 'vehicle', 7, True, True, (0, 0, 110)),
    Label('train', 31, 16, 'vehicle', 7, True, False, (0, 80, 100)),
    Label('motorcycle', 32, 17, 'vehicle', 7, True, False, (0, 0, 230)),
    Label('bicycle', 33, 18, 'vehicle', 7, True, False, (119, 11, 32)),
    Label('license plate', -1, -1, 'vehicle', 7, False, True, (0, 0, 142)),
)

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
# Names of the classes whose objects carry instance ids (groups of them keep the plain id).
HAS_INSTANCES_NAMES = frozenset(lb.name for lb in _LABELS if lb.hasInstances)
ID_TO_COLOR = {lb.id: lb.color for lb in _LABELS if lb.id >= 0}
NAME_TO_ID = {lb.name: lb.id for lb in _LABELS if lb.id >= 0}
