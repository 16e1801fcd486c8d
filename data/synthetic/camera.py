"""The stereo camera: Cityscapes intrinsics scaled to the width, baseline 0.209 m, camera about
1.2 m above a flat ground pitched down a little.

Ground pixels have the plane's disparity d(y) = fx * B * (cos(pitch) * (y - v0) / fy + sin(pitch)) / h;
a fronto-parallel surface at depth Z has disparity fx * B / Z.
"""

import math
from dataclasses import dataclass

import numpy as np

# Cityscapes camera (a typical camera.json) at 2048 x 1024.
BASELINE = 0.209313
FX_2048, FY_2048, U0_2048, V0_1024 = 2262.52, 2265.3017905988554, 1096.98, 513.137


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
