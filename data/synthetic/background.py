"""The static background of a street: buildings, vegetation, walls, fences, poles, signs, lights."""

import numpy as np

from data.synthetic.colors import _around, _building_color, _clothes_color, _grey
from data.synthetic.profile import SceneProfile
from data.synthetic.scene import Street, Thing
from data.synthetic.shapes import _ellipse, _shape


def background_things(rng: np.random.Generator, street: Street, profile: SceneProfile) -> list[Thing]:
    """Buildings, vegetation, walls, fences, poles with signs and lights, static clutter."""
    things = []
    for side in (-1, 1):
        road_edge = street.road_left if side < 0 else street.road_right
        sidewalk = street.sidewalk_left if side < 0 else street.sidewalk_right
        setback = street.setback_left if side < 0 else street.setback_right
        inner = abs(road_edge) + sidewalk + setback
        # Facades as a staircase of fronto-parallel blocks receding along the street.
        z = rng.uniform(*profile.facade_start)
        while z < 140:
            if rng.random() < profile.building_p:
                x_in = inner + rng.uniform(0, 1.5)
                width = 40.0
                height = rng.uniform(*profile.building_height)
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
            z += rng.uniform(*profile.facade_gap)
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
        for z in rng.uniform(*profile.tree_depth, rng.poisson(profile.tree_rate)):
            x = side * (abs(road_edge) + sidewalk * rng.uniform(0.4, 0.9))
            crown = rng.uniform(2.5, 6)
            color = _around(rng, street.vegetation_color, 20)
            trunk_color = _around(rng, (80, 65, 50), 15)
            things.append(Thing(z, "vegetation", "rect", x, rng.uniform(0.2, 0.4), 3.0, trunk_color))
            things.append(Thing(z, "vegetation", "crown", x, crown, crown * rng.uniform(0.8, 1.3), color,
                                lift=rng.uniform(2.0, 3.5)))  # fmt: skip
        # Poles at the kerb, some carrying a traffic sign or a traffic light.
        for z in rng.uniform(*profile.pole_depth, rng.poisson(profile.pole_rate)):
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
    for _ in range(rng.integers(*profile.skyline)):
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
