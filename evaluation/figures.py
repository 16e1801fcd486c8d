"""Qualitative figures: one frame's input, predictions and ground truth side by side."""

from __future__ import annotations

from pathlib import Path

import torch
from matplotlib.figure import Figure  # no pyplot: no global state, no display needed

from data import show
from data.cityscapes import CityscapesMultiTask
from data.labels import ID_TO_TRAINID, INSTANCE_IDS

# trainIds of the classes whose objects are instances (person ... bicycle).
INSTANCE_TRAIN_IDS = torch.tensor(sorted(int(ID_TO_TRAINID[i]) for i in INSTANCE_IDS))


def frame_figure(item: dict, outputs: dict, title: str) -> Figure:
    """2x4 grid of one frame: input | semantics | instance vectors | disparity; top predicted, bottom true.

    Colours come from data.show: official palette, HSV vectors (hue = direction, brightness =
    length relative to the panel's largest), disparity relative to the panel's largest, invalid black.
    """
    fig = Figure(figsize=(16, 4.8))
    axes = fig.subplots(2, 4)
    for ax in axes.flat:
        ax.set_axis_off()
    true_sem = item["semantic"]
    pred_sem = outputs["semantic"].argmax(0) if "semantic" in outputs else None
    # Predicted vectors matter only where an instance class is predicted (everywhere without semantics).
    shown = torch.isin(pred_sem, INSTANCE_TRAIN_IDS) if pred_sem is not None else torch.ones_like(true_sem, dtype=bool)
    panels = {
        (0, 0): (title, show.image_rgb(item["image"])),
        (1, 1): ("true semantics", show.semantic_rgb(true_sem)),
        (1, 2): ("true instance vectors", show.vectors_rgb(item["instance"], item["instance_mask"])),
        (1, 3): ("true disparity", show.disparity_rgb(item["depth"], item["depth_mask"])),
    }
    if pred_sem is not None:
        panels[0, 1] = ("predicted semantics", show.semantic_rgb(pred_sem))
    if "instance" in outputs:
        panels[0, 2] = ("predicted instance vectors", show.vectors_rgb(outputs["instance"] * shown, shown))
    if "depth" in outputs:
        panels[0, 3] = ("predicted disparity", show.disparity_rgb(outputs["depth"], torch.ones_like(shown)))
    for (row, col), (caption, rgb) in panels.items():
        axes[row, col].imshow(rgb)
        axes[row, col].set_title(caption, fontsize=9)
    fig.tight_layout()
    return fig


@torch.no_grad()
def write_figures(model: torch.nn.Module, dataset: CityscapesMultiTask, device: torch.device, out_dir: Path,
                  count: int = 4, amp_dtype: torch.dtype | None = None) -> list[Path]:
    """`frame_figure` for the first `count` frames of `dataset`, one PNG per frame; returns the paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    model.eval()
    paths = []
    for i in range(min(count, len(dataset))):
        item = dataset[i]
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            outputs = model(item["image"][None].to(device))
        outputs = {k: v[0].float().cpu() for k, v in outputs.items()}  # (C, H, W)
        name = dataset.frames[i].name
        paths.append(out_dir / f"{name}.png")
        frame_figure(item, outputs, name).savefig(paths[-1], dpi=80)
    return paths
