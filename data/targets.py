"""Training targets from Cityscapes ground-truth arrays: pure numpy functions.

Conventions (docs/design.md): pixel (x, y) has its centre at column x, row y; a centroid is the mean
(x, y) of an instance's pixels at file resolution, mapped to output coordinates by
`x_out = (x + 0.5) * W_out / W_file - 0.5`; disparity PNG value p gives `(p - 1) / 256` px for
p > 0 and is invalid for p = 0; resizing by s multiplies disparity by s.
"""

from functools import lru_cache

import numpy as np

from data.labels import HAS_INSTANCES_IDS, ID_TO_TRAINID, INSTANCE_IDS, KNOWN_IDS, NAME_TO_ID

SKY_ID: int = NAME_TO_ID["sky"]
# instanceIds of individual objects are label_id * 1000 + k; smaller values are plain label ids.
INSTANCE_OFFSET = 1000

_KNOWN = np.zeros(256, dtype=bool)
_KNOWN[sorted(KNOWN_IDS)] = True
# Label id -> "its individual objects are evaluated instances" (person, rider, car, truck, bus,
# train, motorcycle, bicycle; not caravan, trailer or groups).
_IS_INSTANCE_CLASS = np.zeros(256, dtype=bool)
_IS_INSTANCE_CLASS[sorted(INSTANCE_IDS)] = True
_HAS_INSTANCES = np.zeros(256, dtype=bool)
_HAS_INSTANCES[sorted(HAS_INSTANCES_IDS)] = True


def unknown_label_ids(label_ids: np.ndarray) -> list[int]:
    """Label ids present in `label_ids` (uint8) that the Cityscapes label table does not know."""
    # Fast path for every valid frame: the known ids are 0..33, so the maximum decides.
    if _KNOWN[: int(label_ids.max()) + 1].all():
        return []
    present = np.flatnonzero(np.bincount(label_ids.ravel(), minlength=256))
    return [int(i) for i in present if not _KNOWN[i]]


def invalid_instance_ids(instance_ids: np.ndarray) -> list[int]:
    """Values of an instanceIds map (uint16) that Cityscapes does not allow: a plain id (< 1000) that is no
    known label id, or an object id (label_id * 1000 + k) of a class without instances (road, sky...) or
    of an unknown class. Training would silently drop or mislabel those pixels."""
    present = np.flatnonzero(np.bincount(instance_ids.ravel()))
    plain, objects = present[present < INSTANCE_OFFSET], present[present >= INSTANCE_OFFSET]
    bad = plain[~_KNOWN[plain]].tolist() if plain.size else []
    if objects.size:
        classes = objects // INSTANCE_OFFSET
        ok = np.zeros(objects.shape, dtype=bool)
        ok[classes < 256] = _HAS_INSTANCES[classes[classes < 256]]
        bad += objects[~ok].tolist()
    return [int(i) for i in bad]


def train_ids(label_ids: np.ndarray) -> np.ndarray:
    """Map label ids (uint8) to trainIds 0..18 with 255 for ignored classes (uint8, same shape)."""
    return ID_TO_TRAINID[label_ids]


def instance_mask(instance_ids: np.ndarray) -> np.ndarray:
    """Pixels of individual objects of the evaluated instance classes (bool, same shape).

    instanceId >= 1000 marks an individual object; its class is instanceId // 1000. Caravan,
    trailer and groups (plain ids below 1000) are excluded.
    """
    ids = instance_ids.astype(np.int32, copy=False)  # uint16 at most 65535: ids // 1000 < 256
    return (ids >= INSTANCE_OFFSET) & _IS_INSTANCE_CLASS[ids // INSTANCE_OFFSET]


def instance_centroids(instance_ids: np.ndarray) -> dict[int, tuple[float, float]]:
    """Mean (x, y) of each evaluated instance's pixels, keyed by instanceId (file resolution)."""
    # Only pixels of individual objects (>= 1000) enter the sums, so the cost follows the objects;
    # the class filter is applied to the few ids found rather than to every pixel.
    index = np.flatnonzero(instance_ids.ravel() >= INSTANCE_OFFSET)
    if index.size == 0:
        return {}
    flat = instance_ids.ravel()[index]
    count = np.bincount(flat)
    present = np.flatnonzero(count)
    present = present[_IS_INSTANCE_CLASS[present // INSTANCE_OFFSET]]
    if present.size == 0:
        return {}
    xs, ys = _pixel_coordinates(*instance_ids.shape)
    cx = np.bincount(flat, weights=xs[index])[present] / count[present]
    cy = np.bincount(flat, weights=ys[index])[present] / count[present]
    return {int(i): (float(x), float(y)) for i, x, y in zip(present, cx, cy)}


@lru_cache(maxsize=4)
def _pixel_coordinates(h: int, w: int) -> tuple[np.ndarray, np.ndarray]:
    """Flattened x and y of every pixel of an (h, w) image (cached: cheaper than divmod per call)."""
    xs = np.tile(np.arange(w, dtype=np.float32), h)
    ys = np.repeat(np.arange(h, dtype=np.float32), w)
    return xs, ys


def map_coordinate(v: np.ndarray | float, size_in: int, size_out: int) -> np.ndarray | float:
    """Map a pixel coordinate between resolutions with the pixel-centre convention."""
    return (v + 0.5) * (size_out / size_in) - 0.5


def centroid_vectors(
    instance_ids: np.ndarray, centroids: dict[int, tuple[float, float]]
) -> tuple[np.ndarray, np.ndarray]:
    """Instance vector field (dx, dy) = centroid - pixel, (2, H, W) float32, and its mask (H, W).

    `instance_ids` is the id map at output resolution and `centroids` holds each instance's
    centroid in the same output coordinates. Pixels of instances missing from the table (or not
    evaluated instances) are masked out and get (0, 0).
    """
    h, w = instance_ids.shape
    if not centroids:
        return np.zeros((2, h, w), np.float32), np.zeros((h, w), bool)
    # Dense lookup tables indexed by instanceId: one gather per pixel instead of a loop per object.
    size = max(int(instance_ids.max()), max(centroids)) + 1
    has = np.zeros(size, bool)
    table_x = np.zeros(size, np.float32)
    table_y = np.zeros(size, np.float32)
    keys = np.fromiter(centroids, dtype=np.int64, count=len(centroids))
    values = np.array(list(centroids.values()), dtype=np.float32).reshape(-1, 2)
    has[keys] = True
    table_x[keys] = values[:, 0]
    table_y[keys] = values[:, 1]
    mask = has[instance_ids]
    vectors = np.empty((2, h, w), np.float32)
    np.subtract(table_x[instance_ids], np.arange(w, dtype=np.float32)[None, :], out=vectors[0])
    np.subtract(table_y[instance_ids], np.arange(h, dtype=np.float32)[:, None], out=vectors[1])
    vectors *= mask  # (0, 0) outside instances
    vectors += 0.0  # turns the -0.0 left by the product into +0.0
    return vectors, mask


def decode_disparity(png: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Disparity in pixels from the 16-bit PNG values, and its validity (p > 0)."""
    # uint16 arithmetic would wrap at p = 0: work in int32.
    p = png.astype(np.int32, copy=False)
    valid = p > 0
    disparity = np.where(valid, (p - 1).astype(np.float32) / 256.0, np.float32(0.0)).astype(np.float32)
    return disparity, valid


def depth_target(png: np.ndarray, label_ids: np.ndarray, scale: float = 1.0) -> tuple[np.ndarray, np.ndarray]:
    """Disparity target (H, W) float32 and mask: valid PNG pixels or sky; sky is 0; times `scale`.

    `png` and `label_ids` must already be at output resolution; `scale` is W_out / W_file.
    """
    disparity, valid = decode_disparity(png)
    sky = label_ids == SKY_ID
    disparity *= np.float32(scale)
    disparity[sky] = 0.0
    return disparity, valid | sky
