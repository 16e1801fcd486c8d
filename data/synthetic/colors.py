"""Colours of the scene: overlapping class colours with per-object variation (RGB, 0..255)."""

import cv2
import numpy as np


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


def _building_color(rng: np.random.Generator) -> tuple[float, float, float]:
    """Facade colours: greys and whites (overlapping road, sidewalk and overcast sky), beige, brick."""
    r = rng.random()
    if r < 0.5:
        return _around(rng, _grey(rng, 70, 220), 8)
    if r < 0.8:
        return _around(rng, (175, 155, 120), 20)
    return _around(rng, (140, 80, 60), 20)


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
