"""The annotated objects of a street: vehicles, people and riders, each placed on a free footprint."""

import math

import numpy as np

from data.synthetic.colors import _around, _clothes_color, _detail_color, _grey, _vehicle_color
from data.synthetic.profile import SceneProfile
from data.synthetic.scene import Street, Thing
from data.synthetic.shapes import DETAILS


def _log_uniform(rng: np.random.Generator, lo: float, hi: float, n: int | None = None):
    return np.exp(rng.uniform(math.log(lo), math.log(hi), n))


def object_things(rng: np.random.Generator, street: Street, profile: SceneProfile) -> list[Thing]:
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
        side_p = profile.heavy_side_p if label in ("truck", "bus", "train") else 0.25
        if side is not None and rng.random() < side_p:
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
        return vehicle("car", "car_rear", "car_side", float(_log_uniform(rng, *profile.car_depth)), x,
                       (rng.uniform(1.7, 2.0), rng.uniform(1.4, 1.6)), (rng.uniform(3.8, 4.9), rng.uniform(1.4, 1.6)))

    for _ in range(rng.poisson(profile.truck_rate)):
        place(lambda: vehicle("truck", "truck_rear", "truck_side", float(_log_uniform(rng, *profile.truck_depth)),
                              on_road(1.3), (2.5, rng.uniform(2.8, 3.8)), (rng.uniform(6, 9), rng.uniform(2.8, 3.8))))
    for _ in range(rng.poisson(profile.bus_rate)):
        place(lambda: vehicle("bus", "bus_rear", "bus_side", float(_log_uniform(rng, *profile.bus_depth)), on_road(1.3),
                              (2.55, 3.1), (12.0, 3.1)))
    if rng.random() < profile.tram_p:
        tram = place(lambda: vehicle("train", "train_front", "train_side",
                                     float(_log_uniform(rng, *profile.tram_depth)), on_road(1.4),
                                     (2.65, 3.5), (25.0, 3.5)))
        if tram is not None and tram.shape == "train_side":
            tram.depth = 2.65
    if rng.random() < profile.caravan_p:
        place(lambda: vehicle("caravan", "car_rear", "caravan_side", float(_log_uniform(rng, 7, 50)),
                              road_r - 1.2, (2.3, 2.7), (6.0, 2.7)))
    if rng.random() < profile.trailer_p:
        place(lambda: vehicle("trailer", "trailer", None, float(_log_uniform(rng, 7, 50)), on_road(1.0),
                              (2.0, 1.4), None))
    for _ in range(rng.poisson(profile.car_rate)):
        place(car)
    for _ in range(rng.poisson(profile.person_rate)):
        place(lambda: _person(rng, float(_log_uniform(rng, *profile.person_depth)),
                              on_road(0.3) if rng.random() < 0.15 else on_sidewalk(), "person"))
    def bike_lane() -> float:
        return road_l + rng.uniform(0.5, 1.5) if rng.random() < 0.5 else road_r - rng.uniform(0.5, 1.5)

    for _ in range(rng.poisson(profile.cyclist_rate)):
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
    for _ in range(rng.poisson(profile.parked_bicycle_rate)):
        place(lambda: Thing(float(_log_uniform(rng, 4, 30)), "bicycle", "bicycle", on_sidewalk(), 1.75, 1.05,
                            _grey(rng, 10, 120), mirror=bool(rng.random() < 0.5)))
    if rng.random() < profile.cargroup_p:  # a cluster of distant cars annotated as one group (plain id, no instances)
        z0, x0 = rng.uniform(35, 90), on_road(1.0)
        for i in range(rng.integers(3, 7)):
            things.append(Thing(z0 + 2.5 * i, "cargroup", "car_rear", x0 + rng.uniform(-2, 2), 1.8,
                                rng.uniform(1.4, 1.6), _vehicle_color(rng)))
    if rng.random() < profile.persongroup_p:
        z0, x0 = rng.uniform(15, 50), on_sidewalk()
        for _ in range(rng.integers(3, 7)):
            things.append(_person(rng, z0 + rng.uniform(0, 2), x0 + rng.uniform(-1.2, 1.2), "persongroup"))
    return things


def _person(rng: np.random.Generator, z: float, x: float, label: str) -> Thing:
    t = Thing(z, label, "person", x, rng.uniform(0.5, 0.65), rng.uniform(1.5, 1.95), _clothes_color(rng))
    t.details = [(poly, _detail_color(rng, kind)) for poly, kind in DETAILS["person"]]
    return t
