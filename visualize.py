"""Pictures of predictions: official-palette semantics, HSV instance vectors, disparity; the qualitative grid.

`write_figures` draws, for the first frames of a dataset, the input and the predicted and true
semantics, instance vectors and disparity (one PNG per frame), used by `evaluate.py --figures`.
"""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
import torch
from matplotlib.colors import hsv_to_rgb
from matplotlib.figure import Figure  # no pyplot: no global figure state, no display backend

from data.labels import ID_TO_TRAINID, IGNORE_INDEX, INSTANCE_IDS, TRAIN_PALETTE
from data.transforms import MEAN, STD

INSTANCE_TRAIN_IDS = np.array(sorted(int(ID_TO_TRAINID[i]) for i in INSTANCE_IDS))


def colorize_semantic(train_ids: np.ndarray) -> np.ndarray:
    """(H, W) trainIds -> (H, W, 3) uint8 in the official Cityscapes palette; ignore (255) is black."""
    palette = np.zeros((256, 3), np.uint8)
    palette[: len(TRAIN_PALETTE)] = TRAIN_PALETTE
    return palette[np.asarray(train_ids).astype(np.int64).clip(0, IGNORE_INDEX)]


def colorize_vectors(vectors: np.ndarray, mask: np.ndarray, max_norm: float | None = None) -> np.ndarray:
    """(2, H, W) vectors -> (H, W, 3) float RGB like an optical-flow picture: hue = direction,
    brightness = length (saturating at `max_norm`, default the largest masked length); unmasked black."""
    dx, dy = vectors
    norm = np.hypot(dx, dy)
    if max_norm is None:
        max_norm = float(norm[mask].max()) if mask.any() else 1.0
    hue = (np.arctan2(dy, dx) / (2 * np.pi)) % 1.0
    value = np.clip(norm / max(max_norm, 1e-6), 0, 1) * mask
    return hsv_to_rgb(np.stack([hue, np.ones_like(hue), value], axis=-1))


def denormalize(image: torch.Tensor) -> np.ndarray:
    """Normalised (3, H, W) image -> (H, W, 3) float RGB in [0, 1]."""
    rgb = image.cpu().numpy().transpose(1, 2, 0) * STD + MEAN
    return np.clip(rgb, 0, 1)


def frame_figure(item: dict, outputs: dict, title: str) -> Figure:
    """A 2x4 grid: input | semantics | instance vectors | disparity; top row predicted, bottom true."""
    fig = Figure(figsize=(16, 4.6))
    axes = fig.subplots(2, 4, squeeze=False)
    for ax in axes.flat:
        ax.set_axis_off()
    axes[0, 0].imshow(denormalize(item["image"]))
    axes[0, 0].set_title(title, fontsize=9)
    pred_sem = outputs["semantic"].argmax(0).cpu().numpy() if "semantic" in outputs else None
    if pred_sem is not None:
        axes[0, 1].imshow(colorize_semantic(pred_sem))
        axes[0, 1].set_title("predicted semantics", fontsize=9)
    axes[1, 1].imshow(colorize_semantic(item["semantic"].numpy()))
    axes[1, 1].set_title("true semantics", fontsize=9)

    true_mask = item["instance_mask"].numpy()
    true_vec = item["instance"].numpy()
    scale = float(np.hypot(*true_vec)[true_mask].max()) if true_mask.any() else None
    if "instance" in outputs:
        # Predicted vectors only matter where an instance class is predicted (everywhere if no semantics).
        shown = np.isin(pred_sem, INSTANCE_TRAIN_IDS) if pred_sem is not None else np.ones_like(true_mask)
        axes[0, 2].imshow(colorize_vectors(outputs["instance"].cpu().numpy(), shown, scale))
        axes[0, 2].set_title("predicted instance vectors", fontsize=9)
    axes[1, 2].imshow(colorize_vectors(true_vec, true_mask, scale))
    axes[1, 2].set_title("true instance vectors (hue = direction)", fontsize=9)

    true_disp = np.ma.masked_where(~item["depth_mask"].numpy(), item["depth"][0].numpy())
    vmax = float(true_disp.max()) if true_disp.count() else None
    cmap = matplotlib.colormaps["magma"].with_extremes(bad="black")
    if "depth" in outputs:
        axes[0, 3].imshow(outputs["depth"][0].cpu().numpy(), cmap=cmap, vmin=0, vmax=vmax)
        axes[0, 3].set_title("predicted disparity", fontsize=9)
    axes[1, 3].imshow(true_disp, cmap=cmap, vmin=0, vmax=vmax)
    axes[1, 3].set_title("true disparity (black: invalid)", fontsize=9)
    fig.tight_layout()
    return fig


@torch.no_grad()
def write_figures(model: torch.nn.Module, dataset, device: torch.device, out_dir: str | Path, count: int = 4,
                  amp_dtype: torch.dtype | None = None) -> list[Path]:
    """Draw `frame_figure` for the first `count` frames of `dataset` into `out_dir`; return the paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.eval()
    paths = []
    for i in range(min(count, len(dataset))):
        item = dataset[i]
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            outputs = model(item["image"][None].to(device))
        outputs = {k: v[0].float() for k, v in outputs.items()}
        name = dataset.frames[i].name
        fig = frame_figure(item, outputs, name)
        paths.append(out_dir / f"{name}.png")
        fig.savefig(paths[-1], dpi=80)
    return paths
