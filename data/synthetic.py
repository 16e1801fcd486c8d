"""Synthetic Cityscapes: street scenes from a pinhole stereo camera, written in the official layout.

`python -m data.synthetic --out DIR [--train N] [--val N] [--size HxW] [--seed S] [--workers K]`
writes leftImg8bit, gtFine (labelIds, instanceIds, color, polygons), disparity and camera files
with real city names, then an empty `DIR/.complete`. Every frame is rendered from its own
generator seeded by (seed, split, index), so the bytes do not depend on the worker count.

Geometry: Cityscapes intrinsics scaled to the width, baseline 0.209 m, camera about 1.2 m above a
flat ground pitched down a little. Ground pixels have the plane's disparity
d(y) = fx * B * (cos(pitch) * (y - v0) / fy + sin(pitch)) / h; everything standing (buildings,
vegetation, walls, fences, poles, signs, lights, vehicles, people) is a fronto-parallel polygon at a
depth Z, with constant disparity fx * B / Z, metric size divided by Z and its bottom on the ground
row of Z; they are painted far to near so nearer things occlude. Sky and the ego vehicle have no
disparity (PNG 0), as with real SGM. The disparity PNG gets SGM-like noise and holes; the labels
are clean. Appearance: overlapping class colours, per-object variation, texture, per-frame
lighting and shading, so that a pixel's colour alone does not give its class.
"""

import argparse
import json
import math
import os
import shutil
import sys
import time
from dataclasses import dataclass, field
from multiprocessing import Pool
from pathlib import Path

import cv2
import numpy as np
from cityscapesscripts.helpers.labels import labels as _LABELS

from data.labels import ID_TO_COLOR, NAME_TO_ID
from data.targets import INSTANCE_OFFSET

TRAIN_CITIES = (
    "aachen", "bochum", "bremen", "cologne", "darmstadt", "dusseldorf", "erfurt", "hamburg", "hanover",
    "jena", "krefeld", "monchengladbach", "strasbourg", "stuttgart", "tubingen", "ulm", "weimar", "zurich",
)  # fmt: skip
VAL_CITIES = ("frankfurt", "lindau", "munster")
CITIES = {"train": TRAIN_CITIES, "val": VAL_CITIES}
SPLIT_CODES = {"train": 0, "val": 1}

# Cityscapes camera (a typical camera.json) at 2048 x 1024.
BASELINE = 0.209313
FX_2048, FY_2048, U0_2048, V0_1024 = 2262.52, 2265.3017905988554, 1096.98, 513.137
# Annotated Cityscapes frames are the 20th of each 30-frame snippet.
FRAME_NUMBER = 19

# Classes whose individual objects get instanceIds id * 1000 + k (groups keep the plain id).
_HAS_INSTANCES = frozenset(lb.name for lb in _LABELS if lb.hasInstances)
_COLOR_LUT_BGRA = np.zeros((256, 4), np.uint8)
for _id, (_r, _g, _b) in ID_TO_COLOR.items():
    if 0 <= _id < 256:
        _COLOR_LUT_BGRA[_id] = (_b, _g, _r, 255)

# Texture strength per label id (multiplicative high-frequency noise): vegetation and terrain are
# rough, sky and road smooth. Texture is a local cue only; colours overlap between classes.
_TEXTURE = np.full(256, 0.06, np.float32)
for _name, _t in {"vegetation": 0.22, "terrain": 0.16, "sky": 0.02, "road": 0.05, "sidewalk": 0.08,
                  "building": 0.07, "car": 0.04, "ego vehicle": 0.03}.items():  # fmt: skip
    _TEXTURE[NAME_TO_ID[_name]] = _t
# How readily stereo matching fails on each class (low texture, reflections): scales the holes.
_HOLE_PRONE = np.full(256, 1.0, np.float32)
for _name, _t in {"road": 1.6, "building": 1.3, "car": 1.5, "truck": 1.4, "bus": 1.5, "train": 1.4,
                  "vegetation": 0.6, "terrain": 0.7}.items():  # fmt: skip
    _HOLE_PRONE[NAME_TO_ID[_name]] = _t


@dataclass(frozen=True)
class Camera:
    """Pinhole stereo camera over a flat ground; pitch > 0 looks down."""

    fx: float
    fy: float
    u0: float
    v0: float
    height: float
    pitch: float
    yaw: float
    width: int
    rows: int

    def ground_row(self, z: np.ndarray | float) -> np.ndarray | float:
        """Image row of the ground at camera depth z."""
        return self.v0 + self.fy * (self.height / z - math.sin(self.pitch)) / math.cos(self.pitch)

    def horizon(self) -> float:
        """Row where the ground plane's disparity reaches 0."""
        return self.v0 - self.fy * math.tan(self.pitch)

    def ground_disparity(self, y: np.ndarray) -> np.ndarray:
        """Disparity (px) of the ground plane on row y (negative above the horizon)."""
        c, s = math.cos(self.pitch), math.sin(self.pitch)
        return self.fx * BASELINE * (c * (y - self.v0) / self.fy + s) / self.height

    def disparity(self, z: float) -> float:
        """Disparity (px) of a fronto-parallel surface at depth z."""
        return self.fx * BASELINE / z

    def project(self, x: np.ndarray, up: np.ndarray, z: float) -> np.ndarray:
        """Pixel (x, y) of points at lateral x, height `up` above the ground, depth z: (N, 2)."""
        return np.stack([self.u0 + self.fx * x / z, self.ground_row(z) - self.fy * up / z], axis=1)

    def to_json(self) -> dict:
        """camera.json content, in the format of the real files."""
        return {
            "extrinsic": {"baseline": BASELINE, "pitch": self.pitch, "roll": 0.0, "x": 1.7, "y": 0.1,
                          "yaw": self.yaw, "z": self.height},  # fmt: skip
            "intrinsic": {"fx": self.fx, "fy": self.fy, "u0": self.u0, "v0": self.v0},
        }


def random_camera(rng: np.random.Generator, rows: int, width: int) -> Camera:
    """Cityscapes intrinsics scaled to the width; height and pitch vary a little per frame."""
    s = width / 2048
    return Camera(
        fx=FX_2048 * s,
        fy=FY_2048 * s,
        u0=U0_2048 * s,
        v0=V0_1024 * rows / 1024,
        height=float(rng.uniform(1.15, 1.3)),
        pitch=float(rng.uniform(0.015, 0.06)),
        yaw=float(rng.uniform(-0.02, 0.03)),
        width=width,
        rows=rows,
    )


# Shapes in unit coordinates: u across the width (-0.5..0.5), v up the height (0 = ground).
def _shape(*points: tuple[float, float]) -> np.ndarray:
    return np.array(points, dtype=np.float64)


def _ellipse(cu: float, cv: float, ru: float, rv: float, n: int = 16) -> np.ndarray:
    t = np.linspace(0, 2 * np.pi, n, endpoint=False)
    return np.stack([cu + ru * np.cos(t), cv + rv * np.sin(t)], axis=1)


RECT = _shape((-0.5, 0), (0.5, 0), (0.5, 1), (-0.5, 1))
SHAPES = {
    "car_rear": _shape((-0.5, 0), (-0.36, 0), (-0.36, 0.13), (0.36, 0.13), (0.36, 0), (0.5, 0), (0.5, 0.55),
                       (0.44, 0.62), (0.34, 0.96), (0.27, 1.0), (-0.27, 1.0), (-0.34, 0.96), (-0.44, 0.62),
                       (-0.5, 0.55)),
    "car_side": _shape((-0.5, 0.2), (-0.49, 0.55), (-0.3, 0.62), (-0.16, 0.98), (0.18, 1.0), (0.32, 0.64),
                       (0.5, 0.56), (0.5, 0.2), (0.37, 0.2), (0.37, 0), (0.21, 0), (0.21, 0.14), (-0.2, 0.14),
                       (-0.2, 0), (-0.36, 0), (-0.36, 0.2)),
    "truck_rear": _shape((-0.5, 0), (-0.34, 0), (-0.34, 0.1), (0.34, 0.1), (0.34, 0), (0.5, 0), (0.5, 1),
                         (-0.5, 1)),
    "truck_side": _shape((-0.5, 0.1), (-0.5, 1.0), (0.22, 1.0), (0.22, 0.8), (0.4, 0.78), (0.5, 0.5), (0.5, 0.1),
                         (0.42, 0.1), (0.42, 0), (0.3, 0), (0.3, 0.08), (-0.22, 0.08), (-0.22, 0), (-0.36, 0),
                         (-0.36, 0.1)),
    "bus_rear": _shape((-0.5, 0), (-0.35, 0), (-0.35, 0.08), (0.35, 0.08), (0.35, 0), (0.5, 0), (0.5, 0.95),
                       (0.42, 1.0), (-0.42, 1.0), (-0.5, 0.95)),
    "bus_side": _shape((-0.5, 0.08), (-0.5, 0.95), (-0.48, 1.0), (0.47, 1.0), (0.5, 0.94), (0.5, 0.08),
                       (0.38, 0.08), (0.38, 0), (0.28, 0), (0.28, 0.08), (-0.26, 0.08), (-0.26, 0), (-0.36, 0),
                       (-0.36, 0.08)),
    "train_side": _shape((-0.5, 0.05), (-0.5, 0.92), (-0.47, 1.0), (0.47, 1.0), (0.5, 0.92), (0.5, 0.05),
                         (0.3, 0.05), (0.3, 0), (0.2, 0), (0.2, 0.05), (-0.2, 0.05), (-0.2, 0), (-0.3, 0),
                         (-0.3, 0.05)),
    "train_front": _shape((-0.5, 0.04), (-0.5, 0.9), (-0.4, 1.0), (0.4, 1.0), (0.5, 0.9), (0.5, 0.04),
                          (0.3, 0.04), (0.3, 0), (-0.3, 0), (-0.3, 0.04)),
    "person": _shape((-0.24, 0), (-0.06, 0), (0.0, 0.4), (0.06, 0), (0.24, 0), (0.2, 0.46), (0.34, 0.5),
                     (0.4, 0.78), (0.2, 0.84), (0.12, 0.86), (0.15, 0.95), (0.06, 1.0), (-0.06, 1.0),
                     (-0.15, 0.95), (-0.12, 0.86), (-0.2, 0.84), (-0.4, 0.78), (-0.34, 0.5), (-0.2, 0.46)),
    "rider": _shape((-0.2, 0.0), (0.05, 0.0), (0.1, 0.35), (0.45, 0.5), (0.42, 0.58), (0.15, 0.55),
                    (0.12, 0.8), (0.2, 0.88), (0.15, 1.0), (-0.05, 1.0), (-0.12, 0.9), (-0.05, 0.8),
                    (-0.3, 0.55), (-0.25, 0.35)),
    "bicycle": _shape((-0.5, 0.32), (-0.44, 0.06), (-0.3, 0.0), (-0.16, 0.06), (-0.1, 0.28), (0.1, 0.28),
                      (0.16, 0.06), (0.3, 0.0), (0.44, 0.06), (0.5, 0.32), (0.42, 0.58), (0.3, 0.66),
                      (0.32, 0.96), (0.22, 1.0), (0.2, 0.7), (-0.22, 0.74), (-0.32, 0.62)),
    "motorcycle": _shape((-0.5, 0.3), (-0.42, 0.04), (-0.28, 0.0), (-0.14, 0.06), (0.14, 0.06), (0.28, 0.0),
                         (0.42, 0.04), (0.5, 0.3), (0.44, 0.62), (0.34, 0.8), (0.3, 1.0), (0.2, 0.98),
                         (0.16, 0.72), (-0.3, 0.7), (-0.45, 0.55)),
    "caravan_side": _shape((-0.5, 0.1), (-0.5, 0.95), (-0.45, 1.0), (0.4, 1.0), (0.5, 0.8), (0.5, 0.1),
                           (0.12, 0.1), (0.12, 0), (-0.06, 0), (-0.06, 0.1)),
    "trailer": _shape((-0.5, 0.15), (-0.5, 1.0), (0.5, 1.0), (0.5, 0.15), (0.35, 0.15), (0.35, 0),
                      (0.15, 0), (0.15, 0.15), (-0.15, 0.15), (-0.15, 0), (-0.35, 0), (-0.35, 0.15)),
    "crown": _ellipse(0, 0.5, 0.5, 0.5),
    "disc": _ellipse(0, 0.5, 0.5, 0.5, 12),
    "triangle": _shape((-0.5, 0), (0.5, 0), (0, 1)),
    "hedge": _shape((-0.5, 0), (0.5, 0), (0.5, 0.8), (0.35, 1.0), (0.2, 0.85), (0.0, 1.0), (-0.2, 0.85),
                    (-0.35, 1.0), (-0.5, 0.8)),
}  # fmt: skip
# Details drawn on the image only (never on the labels), in the object's unit coordinates.
DETAILS = {
    "car_rear": [(_shape((-0.3, 0.64), (0.3, 0.64), (0.24, 0.93), (-0.24, 0.93)), "glass"),
                 (_shape((-0.47, 0.42), (-0.34, 0.42), (-0.34, 0.52), (-0.47, 0.52)), "rear_light"),
                 (_shape((0.34, 0.42), (0.47, 0.42), (0.47, 0.52), (0.34, 0.52)), "rear_light"),
                 (_shape((-0.5, 0), (-0.36, 0), (-0.36, 0.2), (-0.5, 0.2)), "tyre"),
                 (_shape((0.36, 0), (0.5, 0), (0.5, 0.2), (0.36, 0.2)), "tyre")],
    "car_side": [(_shape((-0.14, 0.64), (0.05, 0.64), (0.05, 0.94), (-0.12, 0.94)), "glass"),
                 (_shape((0.08, 0.64), (0.28, 0.64), (0.17, 0.95), (0.08, 0.95)), "glass"),
                 (_ellipse(-0.28, 0.16, 0.08, 0.16, 10), "tyre"), (_ellipse(0.29, 0.16, 0.08, 0.16, 10), "tyre")],
    "truck_side": [(_shape((0.26, 0.55), (0.4, 0.55), (0.38, 0.74), (0.26, 0.76)), "glass")],
    "bus_rear": [(_shape((-0.42, 0.55), (0.42, 0.55), (0.42, 0.9), (-0.42, 0.9)), "glass")],
    "bus_side": [(_shape((-0.46, 0.5), (0.46, 0.5), (0.46, 0.85), (-0.46, 0.85)), "glass")],
    "train_side": [(_shape((-0.46, 0.5), (0.46, 0.5), (0.46, 0.82), (-0.46, 0.82)), "glass")],
    "train_front": [(_shape((-0.4, 0.55), (0.4, 0.55), (0.35, 0.88), (-0.35, 0.88)), "glass")],
    "person": [(_shape((-0.24, 0), (0.24, 0), (0.2, 0.46), (-0.2, 0.46)), "trousers"),
               (_shape((-0.1, 0.86), (0.1, 0.86), (0.1, 0.99), (-0.1, 0.99)), "skin")],
    "rider": [(_shape((-0.08, 0.82), (0.14, 0.82), (0.12, 0.98), (-0.06, 0.98)), "skin")],
    "caravan_side": [(_shape((-0.3, 0.55), (0.1, 0.55), (0.1, 0.8), (-0.3, 0.8)), "glass")],
}  # fmt: skip


@dataclass
class Thing:
    """A fronto-parallel polygon standing at depth z: a shape scaled to metres and projected."""

    z: float
    label: str  # polygon label as in the json ("car", "cargroup", "building", ...)
    shape: str
    x: float  # lateral position of the shape's centre (m)
    width: float  # metres
    height: float  # metres
    color: tuple[float, float, float]
    lift: float = 0.0  # height of the shape's bottom above the ground (m)
    mirror: bool = False
    depth: float = 0.5  # extent along the viewing direction (m): ground footprint and shadow
    details: list = field(default_factory=list)  # extra (unit polygon, rgb) drawn on the image only


def _hsv_color(h: float, s: float, v: float) -> tuple[float, float, float]:
    """An RGB colour (0..255) from hue in degrees, saturation and value in 0..1."""
    rgb = cv2.cvtColor(np.array([[[h / 2, s * 255, v * 255]]], np.float32).astype(np.uint8), cv2.COLOR_HSV2RGB)
    return tuple(float(c) for c in rgb[0, 0])


def _around(rng: np.random.Generator, base: tuple[float, float, float], spread: float) -> tuple[float, float, float]:
    """A colour near `base`: a common brightness change plus a small per-channel change."""
    g = rng.normal(1.0, spread / 100)
    return tuple(float(np.clip(c * g + rng.normal(0, spread / 3), 0, 255)) for c in base)


def _grey(rng: np.random.Generator, lo: float, hi: float) -> tuple[float, float, float]:
    v = rng.uniform(lo, hi)
    return (v, v, v)


def _vehicle_color(rng: np.random.Generator) -> tuple[float, float, float]:
    """Any car colour; greys, black and white are the most common, as on real streets."""
    if rng.random() < 0.45:
        return _around(rng, _grey(rng, 15, 235), 5)
    return _hsv_color(rng.uniform(0, 360), rng.uniform(0.2, 0.9), rng.uniform(0.15, 0.9))


def _clothes_color(rng: np.random.Generator) -> tuple[float, float, float]:
    if rng.random() < 0.5:
        return _grey(rng, 10, 200)
    return _hsv_color(rng.uniform(0, 360), rng.uniform(0.1, 0.8), rng.uniform(0.1, 0.85))


@dataclass
class Street:
    """Lateral layout of the street (metres; x to the right of the camera)."""

    road_left: float
    road_right: float
    sidewalk_left: float
    sidewalk_right: float
    setback_left: float
    setback_right: float
    # Frame-wide base colours: classes overlap by construction (greys of road/sidewalk/building).
    road_color: tuple
    sidewalk_color: tuple
    terrain_color: tuple
    vegetation_color: tuple
    sky_color: tuple


def random_street(rng: np.random.Generator) -> Street:
    """Road width, sidewalks, building setbacks and the frame's base colours."""
    grey = rng.uniform(70, 150)
    if rng.random() < 0.5:  # overcast: as grey as a facade
        sky = _grey(rng, 165, 235)
    else:
        sky = _hsv_color(rng.uniform(195, 225), rng.uniform(0.1, 0.45), rng.uniform(0.7, 0.95))
    return Street(
        road_left=-rng.uniform(2.5, 7.0),
        road_right=rng.uniform(3.0, 8.0),
        sidewalk_left=rng.uniform(1.5, 4.5),
        sidewalk_right=rng.uniform(1.5, 4.5),
        setback_left=rng.uniform(0.0, 4.0) if rng.random() < 0.5 else 0.0,
        setback_right=rng.uniform(0.0, 4.0) if rng.random() < 0.5 else 0.0,
        road_color=_around(rng, (grey, grey * 0.98, grey * 1.03), 6),
        sidewalk_color=_around(rng, (grey * 1.08 + 8, grey * 1.05 + 6, grey + 4), 10),
        terrain_color=_around(rng, (110, 115, 70), 18),
        vegetation_color=_around(rng, (70, 100, 45), 18),
        sky_color=sky,
    )


def _log_uniform(rng: np.random.Generator, lo: float, hi: float, n: int | None = None):
    return np.exp(rng.uniform(math.log(lo), math.log(hi), n))


def background_things(rng: np.random.Generator, street: Street) -> list[Thing]:
    """Buildings, vegetation, walls, fences, poles with signs and lights, static clutter."""
    things = []
    for side in (-1, 1):
        road_edge = street.road_left if side < 0 else street.road_right
        sidewalk = street.sidewalk_left if side < 0 else street.sidewalk_right
        setback = street.setback_left if side < 0 else street.setback_right
        inner = abs(road_edge) + sidewalk + setback
        # Facades as a staircase of fronto-parallel blocks receding along the street.
        z = rng.uniform(5, 14)
        while z < 140:
            if rng.random() < 0.85:
                x_in = inner + rng.uniform(0, 1.5)
                width = 40.0
                height = rng.uniform(7, 26)
                label = "building" if rng.random() < 0.92 else "wall"
                color = _building_color(rng)
                thing = Thing(z, label, "rect", side * (x_in + width / 2), width, height, color)
                if label == "building":  # only the street end of a block is ever in view
                    lo, hi = (-width / 2, 12 - width / 2) if side > 0 else (width / 2 - 12, width / 2)
                    thing.details = _windows(rng, width, height, lo, hi)
                things.append(thing)
            elif rng.random() < 0.6:
                things.append(Thing(z, "vegetation", "hedge", side * (inner + 10), 20, rng.uniform(3, 9),
                                    _around(rng, street.vegetation_color, 15)))  # fmt: skip
            z += rng.uniform(6, 22)
        if setback > 1 and rng.random() < 0.7:
            label = "fence" if rng.random() < 0.5 else "wall"
            for z in rng.uniform(6, 40, rng.integers(1, 3)):
                color = _grey(rng, 60, 170) if label == "wall" else _around(rng, (110, 95, 75), 25)
                t = Thing(z, label, "rect", side * (abs(road_edge) + sidewalk + 6), 12, rng.uniform(0.8, 2.2), color)
                if label == "fence":
                    t.details = [(_shape((u, 0), (u + 0.01, 0), (u + 0.01, 1), (u, 1)), _grey(rng, 30, 80))
                                 for u in np.arange(-0.5, 0.5, 0.02)]  # fmt: skip
                things.append(t)
        # Trees along the sidewalk: trunk and crown are both vegetation, as in the annotations.
        for z in rng.uniform(5, 70, rng.poisson(2.5)):
            x = side * (abs(road_edge) + sidewalk * rng.uniform(0.4, 0.9))
            crown = rng.uniform(2.5, 6)
            color = _around(rng, street.vegetation_color, 20)
            trunk_color = _around(rng, (80, 65, 50), 15)
            things.append(Thing(z, "vegetation", "rect", x, rng.uniform(0.2, 0.4), 3.0, trunk_color))
            things.append(Thing(z, "vegetation", "crown", x, crown, crown * rng.uniform(0.8, 1.3), color,
                                lift=rng.uniform(2.0, 3.5)))  # fmt: skip
        # Poles at the kerb, some carrying a traffic sign or a traffic light.
        for z in rng.uniform(4, 60, rng.poisson(2.0)):
            x = side * (abs(road_edge) + rng.uniform(0.3, 0.8))
            height = rng.uniform(3, 8)
            things.append(Thing(z, "pole", "rect", x, rng.uniform(0.1, 0.25), height, _grey(rng, 60, 170)))
            r = rng.random()
            if r < 0.4:
                shape = ("rect", "disc", "triangle")[rng.integers(3)]
                color = ((200, 30, 30), (30, 60, 170), (230, 230, 230), (230, 190, 20))[rng.integers(4)]
                things.append(Thing(z, "traffic sign", shape, x, 0.65, 0.65, _around(rng, color, 10),
                                    lift=height - 0.8))  # fmt: skip
            elif r < 0.65:
                light = Thing(z, "traffic light", "rect", x, 0.35, 0.95, _grey(rng, 20, 70), lift=height - 1.0)
                lamp = ((230, 40, 30), (240, 180, 30), (40, 220, 90))[rng.integers(3)]
                light.details = [(_ellipse(0, 0.8 - 0.3 * i, 0.3, 0.1, 8), lamp if i == 1 else (30, 30, 30))
                                 for i in range(3)]  # fmt: skip
                things.append(light)
        # Static clutter (bins, boxes): a class with trainId 255.
        for z in rng.uniform(4, 30, rng.poisson(0.6)):
            x = side * (abs(road_edge) + sidewalk * rng.uniform(0.3, 0.9))
            things.append(Thing(z, "static", "rect", x, rng.uniform(0.5, 1.2), rng.uniform(0.6, 1.3),
                                _clothes_color(rng)))  # fmt: skip
    # Distant skyline across the end of the street.
    for _ in range(rng.integers(2, 6)):
        z = rng.uniform(90, 250)
        label = "building" if rng.random() < 0.6 else "vegetation"
        if label == "building":
            width, height = rng.uniform(15, 60), rng.uniform(8, 35)
            thing = Thing(z, label, "rect", rng.uniform(-40, 40), width, height, _building_color(rng))
            thing.details = _windows(rng, width, height, -width / 2, width / 2)
        else:
            thing = Thing(z, label, "hedge", rng.uniform(-40, 40), rng.uniform(15, 60), rng.uniform(8, 20),
                          _around(rng, street.vegetation_color, 20))
        things.append(thing)
    return things


def _building_color(rng: np.random.Generator) -> tuple[float, float, float]:
    """Facade colours: greys and whites (overlapping road, sidewalk and overcast sky), beige, brick."""
    r = rng.random()
    if r < 0.5:
        return _around(rng, _grey(rng, 70, 220), 8)
    if r < 0.8:
        return _around(rng, (175, 155, 120), 20)
    return _around(rng, (140, 80, 60), 20)


def _windows(rng: np.random.Generator, width: float, height: float, lo: float, hi: float) -> list:
    """Window grid of a facade (width x height m) between lateral offsets lo..hi from its centre."""
    floors = np.arange(1.0, height - 2.0, 3.0)
    columns = np.arange(lo + 0.6, hi - 1.2, rng.uniform(2.0, 3.2))
    glass = _grey(rng, 20, 70) if rng.random() < 0.6 else _around(rng, (150, 170, 190), 25)
    return [
        (_shape((c / width, f / height), ((c + 1.2) / width, f / height), ((c + 1.2) / width, (f + 1.5) / height),
                (c / width, (f + 1.5) / height)), glass)
        for f in floors
        for c in columns
    ]  # fmt: skip


def object_things(rng: np.random.Generator, street: Street) -> list[Thing]:
    """Instances: cars, trucks, buses, trams, people, riders on bicycles and motorbikes, groups.

    Each object takes a ground footprint (lateral extent x depth extent); placements that would
    overlap one already taken are redrawn, so no two objects occupy the same space.
    """
    things: list[Thing] = []
    footprints: list[tuple[float, float, float, float]] = []
    road_l, road_r = street.road_left, street.road_right

    def on_road(margin: float) -> float:
        return rng.uniform(road_l + margin, max(road_l + margin, road_r - margin))

    def on_sidewalk() -> float:
        if rng.random() < 0.5:
            return road_l - rng.uniform(0.3, street.sidewalk_left)
        return road_r + rng.uniform(0.3, street.sidewalk_right)

    def place(make) -> Thing | None:
        """Draw candidates from `make()` until one's footprint is free (8 tries)."""
        for _ in range(8):
            t = make()
            box = (t.x - t.width / 2, t.x + t.width / 2, t.z, t.z + t.depth)
            # Nothing right in front of the bonnet in the ego lane.
            if abs(t.x) < 1.5 + t.width / 2 and t.z < 6:
                continue
            if all(box[0] >= b[1] or b[0] >= box[1] or box[2] >= b[3] or b[2] >= box[3] for b in footprints):
                footprints.append(box)
                things.append(t)
                return t
        return None

    def vehicle(label: str, rear: str, side: str | None, z: float, x: float, size_rear, size_side) -> Thing:
        if side is not None and rng.random() < 0.25:
            (length, height), depth = size_side, size_rear[0]
            t = Thing(z, label, side, x, length, height, _vehicle_color(rng), mirror=bool(rng.random() < 0.5))
        else:
            (width, height), depth = size_rear, (size_side or (2 * size_rear[0], 0))[0]
            t = Thing(z, label, rear, x, width, height, _vehicle_color(rng))
        t.depth = depth
        t.details = [(poly, _detail_color(rng, kind)) for poly, kind in DETAILS.get(t.shape, [])]
        return t

    def car() -> Thing:
        parked = rng.random() < 0.5
        x = (road_l + 1.1 if rng.random() < 0.5 else road_r - 1.1) if parked else on_road(1.0)
        return vehicle("car", "car_rear", "car_side", float(_log_uniform(rng, 4.5, 70)), x,
                       (rng.uniform(1.7, 2.0), rng.uniform(1.4, 1.6)), (rng.uniform(3.8, 4.9), rng.uniform(1.4, 1.6)))

    for _ in range(rng.poisson(0.35)):
        place(lambda: vehicle("truck", "truck_rear", "truck_side", float(_log_uniform(rng, 8, 70)), on_road(1.3),
                              (2.5, rng.uniform(2.8, 3.8)), (rng.uniform(6, 9), rng.uniform(2.8, 3.8))))
    for _ in range(rng.poisson(0.2)):
        place(lambda: vehicle("bus", "bus_rear", "bus_side", float(_log_uniform(rng, 9, 70)), on_road(1.3),
                              (2.55, 3.1), (12.0, 3.1)))
    if rng.random() < 0.06:
        tram = place(lambda: vehicle("train", "train_front", "train_side", float(_log_uniform(rng, 10, 60)),
                                     on_road(1.4), (2.65, 3.5), (25.0, 3.5)))
        if tram is not None and tram.shape == "train_side":
            tram.depth = 2.65
    if rng.random() < 0.06:
        place(lambda: vehicle("caravan", "car_rear", "caravan_side", float(_log_uniform(rng, 7, 50)),
                              road_r - 1.2, (2.3, 2.7), (6.0, 2.7)))
    if rng.random() < 0.06:
        place(lambda: vehicle("trailer", "trailer", None, float(_log_uniform(rng, 7, 50)), on_road(1.0),
                              (2.0, 1.4), None))
    for _ in range(rng.poisson(6)):
        place(car)
    for _ in range(rng.poisson(3.5)):
        place(lambda: _person(rng, float(_log_uniform(rng, 4, 45)),
                              on_road(0.3) if rng.random() < 0.15 else on_sidewalk(), "person"))
    def bike_lane() -> float:
        return road_l + rng.uniform(0.5, 1.5) if rng.random() < 0.5 else road_r - rng.uniform(0.5, 1.5)

    for _ in range(rng.poisson(0.8)):
        motor = rng.random() < 0.3
        size = (2.0, 1.2) if motor else (1.75, 1.05)
        mirror = bool(rng.random() < 0.5)
        color = _around(rng, _grey(rng, 10, 90), 10) if rng.random() < 0.7 else _vehicle_color(rng)
        name = "motorcycle" if motor else "bicycle"
        bike = place(lambda n=name, s=size, c=color, m=mirror: Thing(float(_log_uniform(rng, 5, 45)), n, n,
                                                                     bike_lane(), *s, c, mirror=m))
        if bike is not None:
            rider = Thing(bike.z - 0.01, "rider", "rider", bike.x + rng.uniform(-0.15, 0.1), 0.75,
                          rng.uniform(1.2, 1.35), _clothes_color(rng), lift=size[1] * 0.45, mirror=mirror)
            rider.details = [(poly, _detail_color(rng, kind)) for poly, kind in DETAILS["rider"]]
            things.append(rider)
    for _ in range(rng.poisson(0.5)):
        place(lambda: Thing(float(_log_uniform(rng, 4, 30)), "bicycle", "bicycle", on_sidewalk(), 1.75, 1.05,
                            _grey(rng, 10, 120), mirror=bool(rng.random() < 0.5)))
    if rng.random() < 0.3:  # a cluster of distant cars annotated as one group (plain id, no instances)
        z0, x0 = rng.uniform(35, 90), on_road(1.0)
        for i in range(rng.integers(3, 7)):
            things.append(Thing(z0 + 2.5 * i, "cargroup", "car_rear", x0 + rng.uniform(-2, 2), 1.8,
                                rng.uniform(1.4, 1.6), _vehicle_color(rng)))
    if rng.random() < 0.2:
        z0, x0 = rng.uniform(15, 50), on_sidewalk()
        for _ in range(rng.integers(3, 7)):
            things.append(_person(rng, z0 + rng.uniform(0, 2), x0 + rng.uniform(-1.2, 1.2), "persongroup"))
    return things


def _person(rng: np.random.Generator, z: float, x: float, label: str) -> Thing:
    t = Thing(z, label, "person", x, rng.uniform(0.5, 0.65), rng.uniform(1.5, 1.95), _clothes_color(rng))
    t.details = [(poly, _detail_color(rng, kind)) for poly, kind in DETAILS["person"]]
    return t


def _detail_color(rng: np.random.Generator, kind: str) -> tuple[float, float, float]:
    if kind == "glass":
        return _around(rng, (40, 50, 60), 15) if rng.random() < 0.7 else _around(rng, (140, 160, 180), 20)
    if kind == "tyre":
        return _grey(rng, 15, 45)
    if kind == "rear_light":
        return _around(rng, (190, 30, 30), 15)
    if kind == "trousers":
        return _clothes_color(rng)
    if kind == "skin":
        return _around(rng, (200, 160, 130), 40)
    raise ValueError(f"unknown detail kind {kind!r}")


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


def _thing_points(cam: Camera, t: Thing, shape: np.ndarray) -> np.ndarray:
    u = -shape[:, 0] if t.mirror else shape[:, 0]
    return cam.project(t.x + u * t.width, t.lift + shape[:, 1] * t.height, t.z)


def _ground_quad(cam: Camera, x0: float, x1: float, z0: float, z1: float) -> np.ndarray:
    """Pixel polygon of the ground rectangle x0..x1 (lateral) by z0..z1 (depth)."""
    xs = np.array([x0, x1, x1, x0])
    zs = np.array([z0, z0, z1, z1])
    return np.stack([cam.u0 + cam.fx * xs / zs, cam.ground_row(zs)], axis=1)


def draw_ground(canvas: Canvas, cam: Camera, street: Street, rng: np.random.Generator, things: list[Thing]) -> None:
    """Sky above the horizon, then terrain, sidewalks and the road with markings and shadows."""
    h, w = canvas.rows, canvas.width
    horizon = cam.horizon()
    top = int(math.floor(horizon))
    canvas.fill(_shape((0, 0), (w - 1, 0), (w - 1, top), (0, top)), "sky", street.sky_color, None)
    # Nearest depth that is still in view (the bottom row), farthest well past everything standing.
    z_near = cam.height / ((math.cos(cam.pitch) * (h + 20 - cam.v0) / cam.fy) + math.sin(cam.pitch))
    z_far = 2000.0
    outer = "terrain" if rng.random() < 0.5 else "sidewalk"
    outer_color = street.terrain_color if outer == "terrain" else _around(rng, street.sidewalk_color, 8)
    canvas.fill(_shape((0, top + 1), (w - 1, top + 1), (w - 1, h - 1), (0, h - 1)), outer, outer_color, None)
    left = street.road_left - street.sidewalk_left
    right = street.road_right + street.sidewalk_right
    canvas.fill(_ground_quad(cam, left, right, z_near, z_far), "sidewalk", street.sidewalk_color, None)
    if rng.random() < 0.25:  # a parking strip along one kerb (trainId 255)
        x = street.road_right - 2.2
        canvas.fill(_ground_quad(cam, x, street.road_right, z_near, z_far), "parking",
                    _around(rng, street.road_color, 10), None)  # fmt: skip
        road_right = x
    else:
        road_right = street.road_right
    canvas.fill(_ground_quad(cam, street.road_left, road_right, z_near, z_far), "road", street.road_color, None)
    trams = [t.x for t in things if t.label == "train"]
    if trams:
        for x in (-0.72, 0.72):  # tram rails in the road
            xc = trams[0]
            canvas.fill(_ground_quad(cam, xc + x - 0.1, xc + x + 0.1, z_near, z_far), "rail track",
                        _grey(rng, 90, 160), None)  # fmt: skip
    # Dashed lane markings (image only: they are road).
    marking = _around(rng, (215, 215, 205), 10)
    lanes = np.arange(street.road_left + 3.2, road_right - 1.5, 3.2)
    phase = rng.uniform(0, 9)
    for x in lanes:
        for z in np.arange(z_near + phase, 80, 9.0):
            canvas.paint(_ground_quad(cam, x - 0.07, x + 0.07, z, z + 3.0), marking)
    # Dark shadows under vehicles: the road is dark there too, so darkness alone is no car cue.
    for t in things:
        if t.label in ("car", "truck", "bus", "caravan", "trailer", "cargroup"):
            # Under the body: it shows between the wheels and as a strip at the bottom edge.
            half = t.width / 2 + 0.05
            shadow = _around(rng, tuple(c * 0.45 for c in street.road_color), 5)
            canvas.paint(_ground_quad(cam, t.x - half, t.x + half, t.z - 0.15, t.z + max(t.depth, 1.0)), shadow)


def draw_things(canvas: Canvas, cam: Camera, things: list[Thing]) -> None:
    """Paint standing things far to near; each thing's details go on right after it."""
    order = sorted(range(len(things)), key=lambda i: (-things[i].z, i))
    for i in order:
        t = things[i]
        # Far outside the view: skip before any projection work.
        if abs(t.x) - t.width / 2 > t.z * (cam.width / cam.fx) + 1:
            continue
        shape = RECT if t.shape == "rect" else SHAPES[t.shape]
        pts = canvas.fill(_thing_points(cam, t, shape), t.label, t.color, cam.disparity(t.z))
        if pts is None:
            continue
        for poly, color in t.details:
            canvas.paint(_thing_points(cam, t, poly), color)


def draw_ego_vehicle(canvas: Canvas, rng: np.random.Generator) -> None:
    """The bonnet at the bottom: label ego vehicle, no disparity."""
    h, w = canvas.rows, canvas.width
    depth = rng.uniform(0.07, 0.15) * h  # the bonnet covers the bottom 7-15% of the centre rows
    xs = np.linspace(0, w - 1, 17)
    ys = h - 1 - depth * (0.55 + 0.45 * (1 - ((xs - w / 2) / (w / 2)) ** 2))
    points = np.concatenate([np.stack([xs, ys], 1), [[w - 1, h - 1], [0, h - 1]]])
    canvas.fill(points, "ego vehicle", _grey(rng, 10, 60), 0.0)


def _smooth_noise(rng: np.random.Generator, rows: int, width: int, cell: int) -> np.ndarray:
    """Zero-mean, unit-ish low-frequency noise (H, W) float32 from an upsampled coarse grid."""
    coarse = rng.standard_normal((rows // cell + 2, width // cell + 2), dtype=np.float32)
    return cv2.resize(coarse, (width, rows), interpolation=cv2.INTER_CUBIC)


def finish_image(canvas: Canvas, rng: np.random.Generator) -> np.ndarray:
    """Lighting, shading, texture and sensor noise on the painted colours; uint8 RGB."""
    h, w = canvas.rows, canvas.width
    image = canvas.image
    gain = rng.uniform(0.55, 1.25)
    tint = 1.0 + rng.normal(0, 0.06, 3).astype(np.float32)
    shading = 1.0 + 0.12 * _smooth_noise(rng, h, w, 24)
    texture = 1.0 + _TEXTURE[canvas.label] * rng.standard_normal((h, w), dtype=np.float32)
    image *= (shading * texture * gain)[..., None]
    image *= tint
    image += rng.normal(0, 3.0, (h, w, 3)).astype(np.float32)
    image = cv2.GaussianBlur(image, (3, 3), 0.6)
    return np.clip(image + 0.5, 0, 255).astype(np.uint8)


def stereo_disparity(canvas: Canvas, cam: Camera, rng: np.random.Generator) -> np.ndarray:
    """SGM-like disparity PNG values from the exact disparity: noise, fattening and holes."""
    h, w = canvas.rows, canvas.width
    d = canvas.disparity.copy()
    label = canvas.label
    valid = d > 0
    # Foreground fattening: near (larger) disparities bleed a pixel into the background at edges.
    dilated = cv2.dilate(d, np.ones((3, 3), np.uint8))
    edge = (dilated - d) > 0.5
    fatten = edge & (rng.random((h, w), dtype=np.float32) < 0.5)
    d[fatten & valid] = dilated[fatten & valid]
    # Noise grows with disparity like matching errors do; scaled with the resolution.
    s = w / 2048
    d += rng.standard_normal((h, w), dtype=np.float32) * (0.4 * s + 0.015 * d)
    # Holes: smooth random blobs, more on low-texture classes, and at depth edges.
    blobs = _smooth_noise(rng, h, w, 16) * _HOLE_PRONE[label]
    holes = blobs > rng.uniform(1.6, 2.4)
    holes |= edge & (rng.random((h, w), dtype=np.float32) < 0.5)
    holes[:, : int(round(w * rng.uniform(0.0, 0.04)))] = True  # left band: no match in the right view
    outliers = rng.random((h, w), dtype=np.float32) < 0.003
    d[outliers] *= rng.uniform(0.3, 1.7, int(outliers.sum())).astype(np.float32)
    ok = valid & ~holes & (d > 0)
    png = np.zeros((h, w), np.uint16)
    png[ok] = np.clip(np.round(d[ok] * 256) + 1, 1, 65535).astype(np.uint16)
    return png


def render_frame(rng: np.random.Generator, rows: int, width: int) -> dict:
    """One synthetic frame: image, labelIds, instanceIds, disparity PNG, polygons and camera json."""
    cam = random_camera(rng, rows, width)
    street = random_street(rng)
    canvas = Canvas(rows, width)
    # Ground plane disparity below the horizon; sky (above) stays 0 = invalid.
    ys = np.arange(rows, dtype=np.float32)
    canvas.disparity[:] = np.maximum(cam.ground_disparity(ys), 0)[:, None]
    things = background_things(rng, street) + object_things(rng, street)
    draw_ground(canvas, cam, street, rng, things)
    draw_things(canvas, cam, things)
    draw_ego_vehicle(canvas, rng)
    canvas.disparity[canvas.label == NAME_TO_ID["sky"]] = 0.0
    return {
        "image": finish_image(canvas, rng),
        "label_ids": canvas.label,
        "instance_ids": canvas.instance,
        "disparity": stereo_disparity(canvas, cam, rng),
        "polygons": {"imgHeight": rows, "imgWidth": width, "objects": canvas.objects},
        "camera": cam.to_json(),
    }


def frame_name(split: str, index: int) -> tuple[str, str]:
    """(city, name) of frame `index` of a split: cities in turn, sequence numbers within a city."""
    cities = CITIES[split]
    city = cities[index % len(cities)]
    return city, f"{city}_{index // len(cities):06d}_{FRAME_NUMBER:06d}"


def _write_png(path: Path, array: np.ndarray) -> None:
    if not cv2.imwrite(str(path), array, [cv2.IMWRITE_PNG_COMPRESSION, 3]):
        raise OSError(f"{path}: could not write PNG")


def write_frame(out: Path, split: str, index: int, seed: int, size: tuple[int, int]) -> None:
    """Render frame `index` of `split` from its own seed and write all of its files."""
    rng = np.random.default_rng([seed, SPLIT_CODES[split], index])
    frame = render_frame(rng, *size)
    city, name = frame_name(split, index)
    gt = out / "gtFine" / split / city / f"{name}_gtFine"
    _write_png(out / "leftImg8bit" / split / city / f"{name}_leftImg8bit.png", frame["image"][..., ::-1])
    _write_png(Path(f"{gt}_labelIds.png"), frame["label_ids"])
    _write_png(Path(f"{gt}_instanceIds.png"), frame["instance_ids"])
    _write_png(Path(f"{gt}_color.png"), _COLOR_LUT_BGRA[frame["label_ids"]])
    Path(f"{gt}_polygons.json").write_text(json.dumps(frame["polygons"], indent=4))
    _write_png(out / "disparity" / split / city / f"{name}_disparity.png", frame["disparity"])
    (out / "camera" / split / city / f"{name}_camera.json").write_text(json.dumps(frame["camera"], indent=4))


def _write_job(job: tuple) -> None:
    write_frame(*job)


def _prepare(out: Path) -> None:
    """Create `out`, refusing to overwrite anything that is not an earlier synthetic set."""
    marker = out / ".synthetic"
    if out.exists() and any(out.iterdir()) and not marker.exists():
        raise SystemExit(f"{out}: exists and is not a synthetic Cityscapes set; refusing to overwrite it")
    (out / ".complete").unlink(missing_ok=True)
    for kind in ("leftImg8bit", "gtFine", "disparity", "camera"):
        shutil.rmtree(out / kind, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    marker.touch()


def generate(
    out: str | os.PathLike,
    train: int = 300,
    val: int = 100,
    size: tuple[int, int] = (256, 512),
    seed: int = 0,
    workers: int | None = None,
) -> Path:
    """Write a synthetic Cityscapes set under `out` (official layout), then `out/.complete`."""
    out = Path(out)
    _prepare(out)
    counts = {"train": train, "val": val}
    for split, n in counts.items():
        for index in range(min(n, len(CITIES[split]))):
            city, _ = frame_name(split, index)
            for kind in ("leftImg8bit", "gtFine", "disparity", "camera"):
                (out / kind / split / city).mkdir(parents=True, exist_ok=True)
    jobs = [(out, split, i, seed, tuple(size)) for split, n in counts.items() for i in range(n)]
    workers = workers or len(os.sched_getaffinity(0))
    if workers <= 1:
        for job in jobs:
            _write_job(job)
    else:
        with Pool(workers) as pool:
            for _ in pool.imap_unordered(_write_job, jobs, chunksize=4):
                pass
    (out / ".complete").touch()
    return out


def _parse_size(text: str) -> tuple[int, int]:
    try:
        h, w = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size must look like 256x512 (HxW), got {text!r}") from None
    if h < 16 or w < 16:
        raise argparse.ArgumentTypeError(f"size {text!r} is too small (at least 16x16)")
    return h, w


def main(argv: list[str] | None = None) -> None:
    """Command line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="dataset root to write")
    parser.add_argument("--train", type=int, default=300, help="number of train frames")
    parser.add_argument("--val", type=int, default=100, help="number of val frames")
    parser.add_argument("--size", type=_parse_size, default=(256, 512), help="HxW, e.g. 256x512")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--workers", type=int, default=None, help="processes (default: all usable cores)")
    args = parser.parse_args(argv)
    start = time.perf_counter()
    out = generate(args.out, args.train, args.val, args.size, args.seed, args.workers)
    print(f"wrote {args.train} train + {args.val} val frames at {args.size[0]}x{args.size[1]} to {out} "
          f"in {time.perf_counter() - start:.1f} s", file=sys.stderr)  # fmt: skip


if __name__ == "__main__":
    main()
