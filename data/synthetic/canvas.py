"""The canvas that polygons are painted on: labels, instances, disparity, colours and the json list."""

import cv2
import numpy as np

from data.labels import HAS_INSTANCES_NAMES, NAME_TO_ID
from data.targets import INSTANCE_OFFSET

# Classes whose individual objects get instanceIds id * 1000 + k (groups keep the plain id).
_HAS_INSTANCES = HAS_INSTANCES_NAMES


def _clip_polygon(points: np.ndarray, width: int, rows: int) -> np.ndarray:
    """Clip a polygon to the image rectangle [0, W-1] x [0, H-1] (Sutherland-Hodgman)."""
    lo = points.min(axis=0)
    hi = points.max(axis=0)
    if lo[0] >= 0 and lo[1] >= 0 and hi[0] <= width - 1 and hi[1] <= rows - 1:
        return points
    if hi[0] < 0 or hi[1] < 0 or lo[0] > width - 1 or lo[1] > rows - 1:
        return points[:0]  # wholly outside
    for axis, bound, keep_below in ((0, 0.0, False), (0, width - 1.0, True), (1, 0.0, False), (1, rows - 1.0, True)):
        if len(points) == 0:
            break
        inside = points[:, axis] <= bound if keep_below else points[:, axis] >= bound
        out = []
        n = len(points)
        for i in range(n):
            p, q = points[i], points[(i + 1) % n]
            if inside[i]:
                out.append(p)
            if inside[i] != inside[(i + 1) % n]:
                t = (bound - p[axis]) / (q[axis] - p[axis])
                out.append(p + t * (q - p))
        points = np.array(out).reshape(-1, 2)
    return points


class Canvas:
    """Label, instance, disparity and colour images painted polygon by polygon, plus the json list."""

    def __init__(self, rows: int, width: int):
        self.rows, self.width = rows, width
        self.label = np.zeros((rows, width), np.uint8)
        self.instance = np.zeros((rows, width), np.uint16)
        self.disparity = np.zeros((rows, width), np.float32)
        self.image = np.zeros((rows, width, 3), np.float32)
        self.objects: list[dict] = []
        self.counts: dict[int, int] = {}

    def to_pixels(self, points: np.ndarray) -> np.ndarray | None:
        """Clipped integer polygon (as stored in the json), or None when it leaves the image."""
        if not np.isfinite(points).all():
            return None
        clipped = _clip_polygon(points, self.width, self.rows)
        if len(clipped) < 3:
            return None
        pts = np.round(clipped).astype(np.int32)
        # Degenerate after rounding (a sliver along the border): nothing to draw.
        if np.ptp(pts[:, 0]) == 0 and np.ptp(pts[:, 1]) == 0:
            return None
        return pts

    def fill(self, points: np.ndarray, label: str, color, disparity: float | None) -> np.ndarray | None:
        """Paint a polygon of class `label` (a "...group" label gets the plain class id)."""
        pts = self.to_pixels(points)
        if pts is None:
            return None
        name = label[: -len("group")] if label.endswith("group") else label
        label_id = NAME_TO_ID[name]
        value = label_id
        if name in _HAS_INSTANCES and not label.endswith("group"):
            k = self.counts.get(label_id, 0)
            self.counts[label_id] = k + 1
            value = label_id * INSTANCE_OFFSET + k
        cv2.fillPoly(self.label, [pts], label_id)
        cv2.fillPoly(self.instance, [pts], value)
        if disparity is not None:
            cv2.fillPoly(self.disparity, [pts], float(disparity))
        cv2.fillPoly(self.image, [pts], tuple(float(c) for c in color))
        self.objects.append({"label": label, "polygon": pts.tolist()})
        return pts

    def paint(self, points: np.ndarray, color) -> None:
        """Paint on the colour image only (details, markings, shadows)."""
        pts = self.to_pixels(points)
        if pts is not None:
            cv2.fillPoly(self.image, [pts], tuple(float(c) for c in color))
