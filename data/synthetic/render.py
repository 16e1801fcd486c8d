"""Rendering one frame: the ground, the standing things, the ego vehicle, then image and disparity.

Ground pixels have the plane's disparity; everything standing (buildings, vegetation, walls, fences,
poles, signs, lights, vehicles, people) is a fronto-parallel polygon at a depth Z, with constant
disparity fx * B / Z, metric size divided by Z and its bottom on the ground row of Z; they are
painted far to near so nearer things occlude. Sky and the ego vehicle have no disparity (PNG 0), as
with real SGM. The disparity PNG gets SGM-like noise and holes; the labels are clean. Appearance:
overlapping class colours, per-object variation, texture, per-frame lighting and shading, so that a
pixel's colour alone does not give its class.
"""

import math

import cv2
import numpy as np

from data.labels import NAME_TO_ID
from data.synthetic.background import background_things
from data.synthetic.camera import Camera, random_camera
from data.synthetic.canvas import Canvas
from data.synthetic.colors import _around, _grey
from data.synthetic.objects import object_things
from data.synthetic.profile import V1, SceneProfile
from data.synthetic.scene import Street, Thing, random_street
from data.synthetic.shapes import RECT, SHAPES, _shape

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


def _thing_points(cam: Camera, t: Thing, shape: np.ndarray) -> np.ndarray:
    u = -shape[:, 0] if t.mirror else shape[:, 0]
    return cam.project(t.x + u * t.width, t.lift + shape[:, 1] * t.height, t.z)


def _ground_quad(cam: Camera, x0: float, x1: float, z0: float, z1: float) -> np.ndarray:
    """Pixel polygon of the ground rectangle x0..x1 (lateral) by z0..z1 (depth)."""
    xs = np.array([x0, x1, x1, x0])
    zs = np.array([z0, z0, z1, z1])
    return np.stack([cam.u0 + cam.fx * xs / zs, cam.ground_row(zs)], axis=1)


def draw_ground(canvas: Canvas, cam: Camera, street: Street, rng: np.random.Generator, things: list[Thing],
                terrain_p: float) -> None:
    """Sky above the horizon, then terrain, sidewalks and the road with markings and shadows."""
    h, w = canvas.rows, canvas.width
    horizon = cam.horizon()
    top = int(math.floor(horizon))
    canvas.fill(_shape((0, 0), (w - 1, 0), (w - 1, top), (0, top)), "sky", street.sky_color, None)
    # Nearest depth that is still in view (the bottom row), farthest well past everything standing.
    z_near = cam.height / ((math.cos(cam.pitch) * (h + 20 - cam.v0) / cam.fy) + math.sin(cam.pitch))
    z_far = 2000.0
    outer = "terrain" if rng.random() < terrain_p else "sidewalk"
    outer_color = street.terrain_color if outer == "terrain" else _around(rng, street.sidewalk_color, 8)
    canvas.fill(_shape((0, top + 1), (w - 1, top + 1), (w - 1, h - 1), (0, h - 1)), outer, outer_color, None)
    left = street.road_left - street.sidewalk_left
    right = street.road_right + street.sidewalk_right
    canvas.fill(_ground_quad(cam, left, right, z_near, z_far), "sidewalk", street.sidewalk_color, None)
    for x0, x1 in ((street.road_left - street.verge_left, street.road_left),
                   (street.road_right, street.road_right + street.verge_right)):  # fmt: skip
        if x1 > x0:
            canvas.fill(_ground_quad(cam, x0, x1, z_near, z_far), "terrain", street.terrain_color, None)
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


def draw_ego_vehicle(canvas: Canvas, rng: np.random.Generator, depth_range: tuple[float, float]) -> None:
    """The bonnet at the bottom: label ego vehicle, no disparity."""
    h, w = canvas.rows, canvas.width
    depth = rng.uniform(*depth_range) * h  # the bonnet covers this share of the centre rows
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


def render_frame(rng: np.random.Generator, rows: int, width: int, profile: SceneProfile = V1) -> dict:
    """One synthetic frame of `profile`: image, labelIds, instanceIds, disparity PNG, polygons, camera json."""
    cam = random_camera(rng, rows, width)
    street = random_street(rng, profile)
    canvas = Canvas(rows, width)
    # Ground plane disparity below the horizon; sky (above) stays 0 = invalid.
    ys = np.arange(rows, dtype=np.float32)
    canvas.disparity[:] = np.maximum(cam.ground_disparity(ys), 0)[:, None]
    things = background_things(rng, street, profile) + object_things(rng, street, profile)
    draw_ground(canvas, cam, street, rng, things, profile.terrain_p)
    draw_things(canvas, cam, things)
    draw_ego_vehicle(canvas, rng, profile.ego_depth)
    canvas.disparity[canvas.label == NAME_TO_ID["sky"]] = 0.0
    return {
        "image": finish_image(canvas, rng),
        "label_ids": canvas.label,
        "instance_ids": canvas.instance,
        "disparity": stereo_disparity(canvas, cam, rng),
        "polygons": {"imgHeight": rows, "imgWidth": width, "objects": canvas.objects},
        "camera": cam.to_json(),
    }
