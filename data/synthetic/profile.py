"""Generator profiles: the scene parameters a synthetic set is drawn with, chosen by name.

`v1` is the generator every committed result was trained on; its frames must stay byte-identical, so
its values are the constants the generator had before profiles existed. `calibrated` moves the scene
toward the published class shares of real Cityscapes (gtFine train), as measured by
`python -m data.check DIR`: fewer and farther vehicles, wider sidewalks, grass verges, more poles,
people and trees, grass verges and facades set back from the camera. Measured on 300 train frames at
256x512 (seed 0), % of pixels (reference): road 30.1 (33), building 23.3 (20), vegetation 13.5 (14),
car 6.5 (6), sidewalk 4.3 (5), sky 3.0 (3.5), person 1.0, terrain 1.05, pole 1.1, truck 0.18, bus 0.19,
train 0.26 (0.2 each), instance pixels 9.0 (9); v1: car 14.7, truck 1.9, instance pixels 18.8.
"""

import json
import os
from dataclasses import dataclass, replace
from pathlib import Path

Range = tuple[float, float]


@dataclass(frozen=True)
class SceneProfile:
    """Scene parameters of one generator profile (metres, Poisson rates per frame, probabilities)."""

    name: str
    # Street layout (scene.random_street).
    road_left: Range = (2.5, 7.0)  # distance of the left kerb from the camera
    road_right: Range = (3.0, 8.0)
    sidewalk: Range = (1.5, 4.5)
    setback_p: float = 0.5  # probability of a strip of outer ground between sidewalk and facades
    setback: Range = (0.0, 4.0)
    verge_p: float = 0.0  # probability of a grass verge (terrain) between kerb and sidewalk, per side
    verge: Range = (0.8, 1.5)
    # Background (background.background_things).
    facade_start: Range = (5.0, 14.0)  # depth of the first facade block on each side
    facade_gap: Range = (6.0, 22.0)
    building_p: float = 0.85  # a block is a facade (else maybe a hedge, else a gap)
    building_height: Range = (7.0, 26.0)
    tree_rate: float = 2.5  # per side
    tree_depth: Range = (5.0, 70.0)
    pole_rate: float = 2.0  # per side
    pole_depth: Range = (4.0, 60.0)
    skyline: tuple[int, int] = (2, 6)  # number of distant buildings or woods across the street's end (exclusive)
    # Ground (render.draw_ground) and the bonnet (render.draw_ego_vehicle).
    terrain_p: float = 0.5  # the outer ground is terrain (else sidewalk)
    ego_depth: Range = (0.07, 0.15)  # share of the rows the bonnet covers at the centre
    # Objects (objects.object_things): Poisson rates, probabilities and depth ranges.
    truck_rate: float = 0.35
    truck_depth: Range = (8.0, 70.0)
    bus_rate: float = 0.2
    bus_depth: Range = (9.0, 70.0)
    tram_p: float = 0.06
    tram_depth: Range = (10.0, 60.0)
    caravan_p: float = 0.06
    trailer_p: float = 0.06
    heavy_side_p: float = 0.25  # a truck, bus or tram is seen from the side (else rear or front)
    car_rate: float = 6.0
    car_depth: Range = (4.5, 70.0)
    person_rate: float = 3.5
    person_depth: Range = (4.0, 45.0)
    cyclist_rate: float = 0.8
    parked_bicycle_rate: float = 0.5
    cargroup_p: float = 0.3
    persongroup_p: float = 0.2


V1 = SceneProfile("v1")
CALIBRATED = replace(
    V1,
    name="calibrated",
    road_left=(2.8, 6.5),
    road_right=(3.2, 7.0),
    sidewalk=(3.5, 7.5),
    setback_p=0.7,
    setback=(1.0, 5.0),
    verge_p=0.4,
    facade_start=(10.0, 20.0),
    building_height=(14.0, 40.0),
    tree_rate=4.0,
    pole_rate=2.2,
    skyline=(4, 8),
    terrain_p=0.35,
    ego_depth=(0.08, 0.15),
    truck_rate=0.18,
    truck_depth=(20.0, 80.0),
    bus_rate=0.12,
    bus_depth=(20.0, 80.0),
    tram_p=0.1,
    tram_depth=(20.0, 70.0),
    heavy_side_p=0.1,
    car_rate=3.5,
    car_depth=(8.0, 70.0),
    person_rate=5.0,
    persongroup_p=0.4,
)
PROFILES = {p.name: p for p in (V1, CALIBRATED)}
DEFAULT_PROFILE = V1.name


def get_profile(name: str) -> SceneProfile:
    """The profile called `name`; ValueError naming the known ones otherwise."""
    try:
        return PROFILES[name]
    except KeyError:
        raise ValueError(f"unknown synthetic profile {name!r} (known: {', '.join(PROFILES)})") from None


MARKER = ".synthetic"


def read_marker(root: str | os.PathLike) -> dict | None:
    """What `root/.synthetic` records (profile, seed, size, train, val), or None when `root` holds no
    synthetic set. An empty marker (sets written before profiles existed) reads as {"profile": "v1"}."""
    marker = Path(root) / MARKER
    if not marker.is_file():
        return None
    text = marker.read_text().strip()
    if not text:
        return {"profile": "v1"}
    try:
        info = json.loads(text)
    except json.JSONDecodeError:
        return None
    return info if isinstance(info, dict) and isinstance(info.get("profile"), str) else None


def profile_problem(root: str | os.PathLike, expected: str) -> str | None:
    """None when `root` holds a synthetic set of generator profile `expected`, else why not (one line
    naming the root, the expected and the found profile)."""
    info = read_marker(root)
    found = "not a synthetic set" if info is None else f"profile {info['profile']!r}"
    if info is not None and info["profile"] == expected:
        return None
    return (f"{root}: data.synthetic_profile={expected} expects a synthetic set of profile {expected!r} "
            f"(python -m data.synthetic --profile {expected}), found {found}")
