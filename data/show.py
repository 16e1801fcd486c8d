"""Render one item's targets: `python -m data.show ROOT --split val --index 0 --out FILE.png`.

Four panels side by side (2 x 2): the image, semantic trainIds in the official palette (ignore in
black), instance vectors as an HSV flow picture (direction -> hue, length -> brightness, masked
pixels black) and disparity in a colour map (invalid black; sky is valid at 0).
"""

import argparse
from pathlib import Path

import cv2
import numpy as np
import torch

from data.cityscapes import CityscapesMultiTask, DataError
from data.labels import IGNORE_INDEX, TRAIN_PALETTE
from data.transforms import MEAN, STD, parse_size
from infra.atomic import atomic_write_bytes


def image_rgb(image: torch.Tensor) -> np.ndarray:
    """Undo the ImageNet normalisation: (3, H, W) float -> (H, W, 3) uint8 RGB."""
    rgb = image.numpy().transpose(1, 2, 0) * STD + MEAN
    return np.clip(rgb * 255 + 0.5, 0, 255).astype(np.uint8)


def semantic_rgb(semantic: torch.Tensor) -> np.ndarray:
    """trainIds -> official colours; ignore (255) is black."""
    palette = np.zeros((256, 3), np.uint8)
    palette[: len(TRAIN_PALETTE)] = TRAIN_PALETTE
    palette[IGNORE_INDEX] = 0
    return palette[semantic.numpy()]


def vectors_rgb(vectors: torch.Tensor, mask: torch.Tensor, top: float | None = None) -> np.ndarray:
    """(dx, dy) as HSV: angle -> hue, magnitude (relative to `top`, default the largest) -> value."""
    dx, dy = vectors.numpy()
    magnitude, angle = cv2.cartToPolar(dx, dy, angleInDegrees=True)
    hsv = np.zeros(dx.shape + (3,), np.uint8)
    hsv[..., 0] = (angle / 2).astype(np.uint8)  # OpenCV hue runs 0..179
    hsv[..., 1] = 255
    top = top or float(magnitude.max()) or 1.0
    hsv[..., 2] = np.clip(magnitude / top * 255, 0, 255).astype(np.uint8)
    hsv[~mask.numpy()] = 0
    return cv2.cvtColor(hsv, cv2.COLOR_HSV2RGB)


def disparity_rgb(depth: torch.Tensor, mask: torch.Tensor) -> np.ndarray:
    """Disparity through the turbo colour map (0 dark blue); invalid pixels black."""
    d = depth.numpy()[0]
    valid = mask.numpy()
    top = float(d[valid].max()) if valid.any() else 1.0
    scaled = np.clip(d / (top or 1.0) * 255, 0, 255).astype(np.uint8)
    rgb = cv2.cvtColor(cv2.applyColorMap(scaled, cv2.COLORMAP_TURBO), cv2.COLOR_BGR2RGB)
    rgb[~valid] = 0
    return rgb


def render(item: dict[str, torch.Tensor]) -> np.ndarray:
    """2 x 2 panel (H*2, W*2, 3) RGB uint8 with a caption on each panel."""
    panels = [
        ("image", image_rgb(item["image"])),
        ("semantic", semantic_rgb(item["semantic"])),
        ("instance vectors", vectors_rgb(item["instance"], item["instance_mask"])),
        ("disparity", disparity_rgb(item["depth"], item["depth_mask"])),
    ]
    h = panels[0][1].shape[0]
    scale = max(0.3, h / 512)
    panels = [(caption, np.ascontiguousarray(panel)) for caption, panel in panels]
    for caption, panel in panels:
        cv2.putText(panel, caption, (4, int(18 * scale * 2)), cv2.FONT_HERSHEY_SIMPLEX, scale, (255, 255, 255), 1,
                    cv2.LINE_AA)  # fmt: skip
    top = np.concatenate([panels[0][1], panels[1][1]], axis=1)
    bottom = np.concatenate([panels[2][1], panels[3][1]], axis=1)
    return np.concatenate([top, bottom], axis=0)


def main(argv: list[str] | None = None) -> None:
    """Write the picture of one item."""
    parser = argparse.ArgumentParser(description="Render an item's image and targets side by side.")
    parser.add_argument("root", nargs="?", default=None, help="dataset root (default: $CITYSCAPES_DATASET)")
    parser.add_argument("--split", default="val")
    parser.add_argument("--index", type=int, default=0)
    parser.add_argument("--size", type=parse_size, default=None, help="HxW to resize to (default: file size)")
    parser.add_argument("--out", type=Path, required=True, help="PNG to write")
    args = parser.parse_args(argv)
    if args.out.is_dir():
        parser.error(f"--out {args.out} is a directory; give a PNG file name")
    try:
        dataset = CityscapesMultiTask(args.root, args.split, size=args.size)
        if not 0 <= args.index < len(dataset):
            parser.error(f"--index {args.index} is out of range: split {args.split!r} has {len(dataset)} frames")
        picture = render(dataset[args.index])
        ok, png = cv2.imencode(".png", np.ascontiguousarray(picture[..., ::-1]))
        if not ok:
            raise SystemExit(f"error: {args.out}: could not encode the picture")
        atomic_write_bytes(args.out, lambda f: f.write(png.tobytes()))
    except (DataError, OSError) as e:
        raise SystemExit(f"error: {e}") from None
    print(f"{dataset.frames[args.index].name} -> {args.out}")


if __name__ == "__main__":
    main()
