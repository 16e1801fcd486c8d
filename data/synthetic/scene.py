"""What a frame holds: standing things and the lateral layout of the street with its base colours."""

from dataclasses import dataclass, field

import numpy as np

from data.synthetic.colors import _around, _grey, _hsv_color
from data.synthetic.profile import SceneProfile


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
    # Grass verges along the kerbs, on the road side of the sidewalks (terrain; 0 = none).
    verge_left: float = 0.0
    verge_right: float = 0.0


def random_street(rng: np.random.Generator, profile: SceneProfile) -> Street:
    """Road width, sidewalks, building setbacks and the frame's base colours."""
    grey = rng.uniform(70, 150)
    if rng.random() < 0.5:  # overcast: as grey as a facade
        sky = _grey(rng, 165, 235)
    else:
        sky = _hsv_color(rng.uniform(195, 225), rng.uniform(0.1, 0.45), rng.uniform(0.7, 0.95))
    street = Street(
        road_left=-rng.uniform(*profile.road_left),
        road_right=rng.uniform(*profile.road_right),
        sidewalk_left=rng.uniform(*profile.sidewalk),
        sidewalk_right=rng.uniform(*profile.sidewalk),
        setback_left=rng.uniform(*profile.setback) if rng.random() < profile.setback_p else 0.0,
        setback_right=rng.uniform(*profile.setback) if rng.random() < profile.setback_p else 0.0,
        road_color=_around(rng, (grey, grey * 0.98, grey * 1.03), 6),
        sidewalk_color=_around(rng, (grey * 1.08 + 8, grey * 1.05 + 6, grey + 4), 10),
        terrain_color=_around(rng, (110, 115, 70), 18),
        vegetation_color=_around(rng, (70, 100, 45), 18),
        sky_color=sky,
    )
    if profile.verge_p > 0:  # v1 has none and draws nothing for them
        street.verge_left = rng.uniform(*profile.verge) if rng.random() < profile.verge_p else 0.0
        street.verge_right = rng.uniform(*profile.verge) if rng.random() < profile.verge_p else 0.0
    return street
