"""Synthetic Cityscapes: street scenes from a pinhole stereo camera, written in the official layout.

`python -m data.synthetic --out DIR [...]` (see `cli.py`) or `generate(DIR, ...)` writes a set that
the real Cityscapes tools and this project's loader read. The modules, in the order a frame is made:
`profile` (the scene parameters of each generator profile), `camera` (stereo geometry), `scene`
(things and the street), `shapes` and `colors` (their outlines and appearance), `background` and
`objects` (what stands in the street), `canvas` and `render` (painting one frame), `writer` (files in
the official layout) and `cli` (the command line).
"""

from data.synthetic.camera import BASELINE, Camera, random_camera
from data.synthetic.cli import main
from data.synthetic.render import render_frame
from data.synthetic.writer import frame_name, generate, write_frame

__all__ = ["BASELINE", "Camera", "frame_name", "generate", "main", "random_camera", "render_frame", "write_frame"]
