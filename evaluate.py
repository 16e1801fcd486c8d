"""Evaluate a trained checkpoint: dataset-level metrics, the official Cityscapes scores, pictures.

    python evaluate.py --checkpoint runs/demo/checkpoint.pt [--split val] [--out metrics.json]
    python evaluate.py --checkpoint CKPT --official [--pred-dir DIR]   # + Table 2 numbers
    python evaluate.py --checkpoint CKPT --figures figures/            # qualitative grid

The metrics (metrics.MultiTaskMetrics, re-exported here) are computed at the model's input
resolution over the whole split. `--official` also upsamples every prediction to ground-truth
resolution, writes label-id PNGs and scores them with cityscapesscripts' evaluator (IoU class,
iIoU class, IoU category, iIoU category, as in the paper's Table 2), and reports the disparity
mean error and RMSE in pixels at full resolution.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
from pathlib import Path

import torch
from matplotlib.figure import Figure  # no pyplot: no global state, no display needed
from torch.utils.data import DataLoader, Dataset

from checkpoint import load_checkpoint
from config import Config, ConfigError, config_from_dict
from data import show
from data.cityscapes import CityscapesMultiTask, DataError
from data.labels import ID_TO_TRAINID, INSTANCE_IDS
from metrics import MultiTaskMetrics
from official_eval import run_pixel_level, to_full_resolution, write_prediction_png

__all__ = ["MultiTaskMetrics", "evaluate_model", "main"]

# trainIds of the classes whose objects are instances (person ... bicycle).
INSTANCE_TRAIN_IDS = torch.tensor(sorted(int(ID_TO_TRAINID[i]) for i in INSTANCE_IDS))


def evaluate_model(model: torch.nn.Module, loader, device: torch.device | str,
                   amp_dtype: torch.dtype | None = None, tasks=None) -> dict[str, float]:
    """MultiTaskMetrics of `model` over `loader` (summed over DDP processes); restores train mode.

    `tasks` limits the scored tasks (default: every task the model outputs). Under DDP each
    process passes its own shard of the split; the accumulators are summed before computing.
    """
    device = torch.device(device)
    was_training = model.training
    model.eval()
    metrics = MultiTaskMetrics()
    with torch.no_grad():
        for batch in loader:
            batch = {k: v.to(device, non_blocking=True) for k, v in batch.items()}
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                outputs = model(batch["image"])  # {task: (B, C, H, W)}
            metrics.update(_select(outputs, tasks), batch)
    metrics.all_reduce()
    model.train(was_training)
    return metrics.compute()


def _select(outputs: dict[str, torch.Tensor], tasks) -> dict[str, torch.Tensor]:
    if tasks is None:
        return outputs
    missing = [t for t in tasks if t not in outputs]
    if missing:
        raise KeyError(f"the model does not output task(s) {missing}; it outputs {list(outputs)}")
    return {t: outputs[t] for t in tasks}


# ----------------------------------------------------------------------------- checkpoint and data

def load_model(path: str | Path) -> tuple[Config, torch.nn.Module, int]:
    """(config, model with the checkpoint's weights, training step) from a train.py checkpoint."""
    from models import build_model  # the model code is only needed here, not by evaluate_model

    ckpt = load_checkpoint(Path(path))
    try:
        cfg = config_from_dict(ckpt["config"])
    except (ConfigError, TypeError, AttributeError) as e:
        raise RuntimeError(f"{path}: the saved config is not valid for this code ({e})") from e
    model = build_model(cfg)
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        raise RuntimeError(f"{path}: the weights do not fit the model its config describes:\n{e}") from e
    return cfg, model, int(ckpt["step"])


def dataset_root(cli_root: str | None, cfg: Config) -> str:
    """--root, else the config's data.root, else $CITYSCAPES_DATASET."""
    root = cli_root or cfg.data.root or os.environ.get("CITYSCAPES_DATASET")
    if not root:
        raise SystemExit("no dataset root: pass --root, or set data.root in the config or $CITYSCAPES_DATASET")
    return root


class PairedFrames(Dataset):
    """Item i of the input-resolution set and of the same frame at file resolution."""

    def __init__(self, inputs: CityscapesMultiTask, full: CityscapesMultiTask):
        self.inputs, self.full = inputs, full

    def __len__(self) -> int:
        return len(self.inputs)

    def __getitem__(self, i: int) -> tuple[dict, dict]:
        return self.inputs[i], self.full[i]


# ----------------------------------------------------------------------------- --official

def evaluate_official(model: torch.nn.Module, data: CityscapesMultiTask, device: torch.device,
                      amp_dtype: torch.dtype | None, pred_dir: Path, workers: int = 0) -> dict:
    """One pass: input-resolution metrics, full-resolution metrics, and the official pixel-level scores.

    Each prediction is upsampled to the frame's file resolution (`official_eval.to_full_resolution`),
    its argmax written as a label-id PNG to `pred_dir`, and scored there by cityscapesscripts.
    """
    full = data if data.size is None else CityscapesMultiTask(data.root, data.split, size=None, limit=len(data))
    loader = DataLoader(PairedFrames(data, full), batch_size=1, num_workers=workers)
    at_input, at_full = MultiTaskMetrics(), MultiTaskMetrics()
    wrote_predictions = False
    model.eval()
    with torch.no_grad():
        for i, (batch, gt) in enumerate(loader):
            batch = {k: v.to(device) for k, v in batch.items()}
            gt = {k: v.to(device) for k, v in gt.items()}
            with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                outputs = model(batch["image"])
            at_input.update(outputs, batch)
            outputs = to_full_resolution(outputs, tuple(gt["semantic"].shape[-2:]))
            at_full.update(outputs, gt)
            if "semantic" in outputs:
                write_prediction_png(pred_dir, data.frames[i].name, outputs["semantic"][0].argmax(0))
                wrote_predictions = True
    result = {"metrics": at_input.compute(), "full_resolution": at_full.compute()}
    if wrote_predictions:  # a model without the semantic task has nothing for the official evaluator
        result["official"] = run_pixel_level(data.root, data.split, pred_dir, [f.name for f in data.frames])
    return result


# ----------------------------------------------------------------------------- --figures

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


# ----------------------------------------------------------------------------- report

def format_report(metrics: dict, official: dict | None = None, full: dict | None = None) -> str:
    """Per-class IoU table (with the official full-resolution column when given) and task metrics."""
    lines = []
    classes = [k.split("/", 2)[2] for k in metrics if k.startswith("semantic/iou/")]
    if classes:
        head = f"{'class':<16}{'IoU %':>8}" + (f"{'official %':>12}" if official else "")
        lines += [head, "-" * len(head)]
        for name in classes:
            row = f"{name:<16}{metrics[f'semantic/iou/{name}']:>8.2f}"
            if official:
                row += f"{official['class_iou'].get(name, math.nan):>12.2f}"
            lines.append(row)
        lines += ["-" * len(head), f"{'mIoU':<16}{metrics['semantic/miou']:>8.2f}"
                  + (f"{official['iou_class']:>12.2f}" if official else ""),
                  f"{'pixel accuracy':<16}{metrics['semantic/pixel_acc']:>8.2f}", ""]
    names = {"instance/mean_error_px": "instance mean |dx|+|dy| error (px)",
             "depth/mean_error_px": "disparity mean abs error (px)", "depth/rmse_px": "disparity RMSE (px)"}
    for key, label in names.items():
        if key in metrics:
            lines.append(f"{label:<38}{metrics[key]:>10.4f}  (input resolution)")
    if full:
        for key, label in names.items():
            if key in full:
                lines.append(f"{label:<38}{full[key]:>10.4f}  (full resolution)")
    if official:
        lines += ["", "official pixel-level (cityscapesscripts, full resolution, %):",
                  "  IoU class  iIoU class  IoU category  iIoU category",
                  f"  {official['iou_class']:>9.2f}  {official['iiou_class']:>10.2f}  "
                  f"{official['iou_category']:>12.2f}  {official['iiou_category']:>13.2f}"]
        if full and "semantic/miou" in full:  # the same predictions through our metric: must agree
            lines.append(f"  MultiTaskMetrics on the same full-resolution predictions: "
                         f"mIoU {full['semantic/miou']:.6f} (official {official['iou_class']:.6f})")
    return "\n".join(lines)


def _json_safe(obj):
    """NaN -> None so that --out is strict JSON."""
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, float) and math.isnan(obj):
        return None
    return obj


# ----------------------------------------------------------------------------- command line

def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="checkpoint.pt written by train.py")
    p.add_argument("--split", default=None, help="split to evaluate (default: the config's data.val_split)")
    p.add_argument("--out", type=Path, help="write the metrics as JSON here")
    p.add_argument("--official", action="store_true", help="also run cityscapesscripts' pixel-level evaluator")
    p.add_argument("--pred-dir", type=Path, help="keep the official label-id PNGs here (default: a temporary dir)")
    p.add_argument("--figures", type=Path, help="write a qualitative grid per frame into this folder")
    p.add_argument("--num-figures", type=int, default=4, help="frames drawn by --figures (default 4)")
    p.add_argument("--batch-size", type=int, default=None, help="default: the config's eval_batch_size")
    p.add_argument("--root", default=None, help="dataset root (default: data.root, else $CITYSCAPES_DATASET)")
    p.add_argument("--limit", type=int, default=None, help="evaluate only the first N frames of the split")
    p.add_argument("--workers", type=int, default=None, help="data loader workers (default: data.num_workers)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> dict:
    """Run the command line; returns what --out would hold."""
    args = parse_args(argv)
    try:
        cfg, model, step = load_model(args.checkpoint)
    except (FileNotFoundError, RuntimeError) as e:
        raise SystemExit(f"error: {e}") from e
    use_cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    device = torch.device("cuda" if use_cuda else "cpu")
    model.to(device)
    amp_dtype = cfg.autocast_dtype(device.type)
    split = args.split or cfg.data.val_split
    workers = cfg.data.num_workers if args.workers is None else args.workers
    try:
        data = CityscapesMultiTask(dataset_root(args.root, cfg), split, size=cfg.data.size, augment=False,
                                   limit=args.limit)
    except DataError as e:
        raise SystemExit(f"error: {e}") from e
    report = {"checkpoint": str(args.checkpoint), "step": step, "split": split, "root": str(data.root),
              "frames": len(data), "size": cfg.data.size, "tasks": list(cfg.tasks)}

    if args.official:
        with tempfile.TemporaryDirectory(prefix="official-pred-") as tmp:
            pred_dir = args.pred_dir or Path(tmp)
            report |= evaluate_official(model, data, device, amp_dtype, pred_dir, workers)
    else:
        loader = DataLoader(data, batch_size=args.batch_size or cfg.eval_batch_size, num_workers=workers)
        report["metrics"] = evaluate_model(model, loader, device, amp_dtype)
    print(format_report(report["metrics"], report.get("official"), report.get("full_resolution")))

    if args.figures:
        paths = write_figures(model, data, device, args.figures, args.num_figures, amp_dtype)
        print(f"\nwrote {len(paths)} figure(s) to {args.figures}")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(_json_safe(report), indent=2) + "\n")
        print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
