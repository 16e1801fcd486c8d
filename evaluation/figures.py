"""Qualitative figures: one frame's input, predictions and ground truth side by side."""

from __future__ import annotations

from pathlib import Path

import matplotlib
import numpy as np
import torch
from matplotlib.figure import Figure  # no pyplot: no global state, no display needed
from matplotlib.patches import Patch

from data import show
from data.cityscapes import CityscapesMultiTask
from infra.atomic import atomic_write_bytes
from models import autocast_forward
from tasks.labels import CLASS_NAMES, ID_TO_TRAINID, INSTANCE_IDS, TRAIN_PALETTE

# trainIds of the classes whose objects are instances (person ... bicycle).
INSTANCE_TRAIN_IDS = torch.tensor(sorted(int(ID_TO_TRAINID[i]) for i in INSTANCE_IDS))


def frame_figure(item: dict, outputs: dict, title: str) -> Figure:
    """2x4 grid of one frame, every cell used: the input and a class legend in the first column; then
    semantics, instance vectors and disparity, predicted (top) over true (bottom).

    Semantics use the official palette (the legend names the classes; ignore is black). Vectors are HSV
    (hue = direction, brightness = length), both panels on one length scale. Predicted and true disparity
    share one colour scale, shown by a colour bar beside each (invalid pixels black). A task the model
    was not trained for says so in its cell.
    """
    fig = Figure(figsize=(17, 5.2))
    axes = fig.subplots(2, 4)
    for ax in axes.flat:
        ax.set_axis_off()
    true_sem = item["semantic"]
    pred_sem = outputs["semantic"].argmax(0) if "semantic" in outputs else None
    # Predicted vectors matter only where an instance class is predicted (everywhere without semantics).
    shown = torch.isin(pred_sem, INSTANCE_TRAIN_IDS) if pred_sem is not None else torch.ones_like(true_sem, dtype=bool)
    _image(axes[0, 0], title, show.image_rgb(item["image"]))
    _class_legend(axes[1, 0])

    _image(axes[1, 1], "true semantics", show.semantic_rgb(true_sem))
    if pred_sem is not None:
        _image(axes[0, 1], "predicted semantics", show.semantic_rgb(pred_sem))

    pred_vec = outputs["instance"] * shown if "instance" in outputs else None
    lengths = [float(v.norm(dim=0).max()) for v in (item["instance"] * item["instance_mask"], pred_vec)
               if v is not None]
    top = max(lengths) or 1.0
    _image(axes[1, 2], f"true instance vectors (brightest: {top:.3g} px)",
           show.vectors_rgb(item["instance"], item["instance_mask"], top))
    if pred_vec is not None:
        _image(axes[0, 2], "predicted instance vectors (same scale)", show.vectors_rgb(pred_vec, shown, top))

    true_d = item["depth"][0].numpy()
    valid = item["depth_mask"].numpy()
    pred_d = outputs["depth"][0].numpy() if "depth" in outputs else None
    highs = [float(true_d[valid].max()) if valid.any() else 0.0] + ([float(pred_d.max())] if pred_d is not None else [])
    vmax = max(highs) or 1.0
    _disparity(fig, axes[1, 3], "true disparity (px)", np.ma.masked_where(~valid, true_d), vmax)
    if pred_d is not None:
        _disparity(fig, axes[0, 3], "predicted disparity (px, same scale)", pred_d, vmax)

    for (row, col), task in (((0, 1), "semantic"), ((0, 2), "instance"), ((0, 3), "depth")):
        if task not in outputs:
            axes[row, col].text(0.5, 0.5, f"{task}: not trained", ha="center", va="center", fontsize=9,
                                transform=axes[row, col].transAxes)
    fig.tight_layout()
    return fig


def _image(ax, caption: str, rgb: np.ndarray) -> None:
    ax.imshow(rgb)
    ax.set_title(caption, fontsize=9)


def _disparity(fig: Figure, ax, caption: str, values, vmax: float) -> None:
    """Disparity on the turbo colour map from 0 to `vmax` with a colour bar; masked pixels black."""
    cmap = matplotlib.colormaps["turbo"].with_extremes(bad="black")
    im = ax.imshow(values, cmap=cmap, vmin=0.0, vmax=vmax)
    ax.set_title(caption, fontsize=9)
    fig.colorbar(im, ax=ax, fraction=0.046, pad=0.02).ax.tick_params(labelsize=7)


def _class_legend(ax) -> None:
    """The 19 classes in their official colours (ignore: black)."""
    handles = [Patch(facecolor=np.asarray(c) / 255, edgecolor="0.5", label=name)
               for name, c in zip(CLASS_NAMES, TRAIN_PALETTE)]
    handles.append(Patch(facecolor="black", label="ignore / invalid"))
    ax.legend(handles=handles, loc="center", ncol=2, fontsize=6.5, frameon=False, title="classes",
              title_fontsize=8, handlelength=1.2, columnspacing=0.8)


@torch.no_grad()
def write_figures(model: torch.nn.Module, dataset: CityscapesMultiTask, device: torch.device, out_dir: Path,
                  count: int = 4, amp_dtype: torch.dtype | None = None) -> list[Path]:
    """`frame_figure` for the first `count` frames of `dataset`, one PNG per frame; returns the paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    model.eval()
    paths = []
    for i in range(min(count, len(dataset))):
        item = dataset[i]
        outputs = autocast_forward(model, item["image"][None].to(device), amp_dtype)
        outputs = {k: v[0].float().cpu() for k, v in outputs.items()}  # (C, H, W)
        name = dataset.frames[i].name
        paths.append(out_dir / f"{name}.png")
        figure = frame_figure(item, outputs, name)
        atomic_write_bytes(paths[-1], lambda f, fig=figure: fig.savefig(f, format="png", dpi=80))
    return paths
