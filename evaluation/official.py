"""The official Cityscapes pixel-level evaluator, run safely, and full-resolution predictions for it.

cityscapesscripts' evalPixelLevelSemanticLabeling reads CITYSCAPES_DATASET / CITYSCAPES_RESULTS
when it is imported, keeps its state in module globals and writes files, so `run_pixel_level`
runs it in a fresh subprocess with an explicit environment and a temporary working directory,
and reads back the JSON it writes. Only the list of ground-truth files is ours (so a split other
than val, or a subset of frames, can be scored); the matching of predictions to ground truth and
all the arithmetic are the evaluator's own.

Predictions are label-id PNGs (0..33, never trainIds) at ground-truth resolution named
`<city>_<seq>_<frame>_pred.png`, which the evaluator's `<city>_<seq>_<frame>*.png` pattern finds.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from cityscapesscripts.helpers.labels import category2labels, labels
from PIL import Image
from torch.utils.data import DataLoader, Dataset

import tasks
from data.cityscapes import CityscapesMultiTask
from data.labels import NUM_CLASSES, TRAINID_TO_ID
from evaluation.metrics import MultiTaskMetrics

GT_SUFFIX = "_gtFine_labelIds.png"
PRED_SUFFIX = "_pred.png"
# The classes and categories the evaluator scores (the others come back as NaN).
EVAL_CLASSES = tuple(lb.name for lb in sorted(labels, key=lambda lb: lb.trainId) if not lb.ignoreInEval)
EVAL_CATEGORIES = tuple(c for c, lbs in category2labels.items() if not all(lb.ignoreInEval for lb in lbs))

# Runs inside the subprocess: the module reads the environment set by run_pixel_level on import.
_DRIVER = """
import json, sys
from cityscapesscripts.evaluation import evalPixelLevelSemanticLabeling as ev
gt_files = json.load(open(sys.argv[1]))
ev.args.colorized = False
predictions = [ev.getPrediction(ev.args, gt) for gt in gt_files]
ev.evaluateImgLists(predictions, gt_files, ev.args)
"""
_RESULT_NAME = "resultPixelLevelSemanticLabeling.json"  # what the evaluator writes into CITYSCAPES_EXPORT_DIR


def write_prediction_png(pred_dir: str | Path, frame: str, train_ids: np.ndarray | torch.Tensor) -> Path:
    """Write a (H, W) trainId map as the label-id PNG `<pred_dir>/<frame>_pred.png` and return its path."""
    train_ids = train_ids.cpu().numpy() if isinstance(train_ids, torch.Tensor) else np.asarray(train_ids)
    if train_ids.ndim != 2:
        raise ValueError(f"prediction for {frame} must be (H, W), got shape {train_ids.shape}")
    if train_ids.size and not (train_ids.min() >= 0 and train_ids.max() < NUM_CLASSES):
        raise ValueError(f"prediction for {frame} has values outside the trainIds 0..{NUM_CLASSES - 1}")
    path = Path(pred_dir) / f"{frame}{PRED_SUFFIX}"
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(TRAINID_TO_ID[train_ids]).save(path)
    return path


def gt_label_files(gt_root: str | Path, split: str, frames=None) -> list[Path]:
    """The `*_gtFine_labelIds.png` files of `split` (all, or those of the given frame ids)."""
    split_dir = Path(gt_root) / "gtFine" / split
    if not split_dir.is_dir():
        raise FileNotFoundError(f"no ground truth folder {split_dir}")
    if frames is None:
        files = sorted(split_dir.glob(f"*/*{GT_SUFFIX}"))
        if not files:
            raise FileNotFoundError(f"no *{GT_SUFFIX} files under {split_dir}")
        return files
    files = [split_dir / frame.split("_")[0] / f"{frame}{GT_SUFFIX}" for frame in frames]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} ground-truth file(s) missing, e.g. {missing[0]}")
    if not files:
        raise ValueError("frames is empty: nothing to evaluate")
    return files


def run_pixel_level(gt_root: str | Path, split: str, pred_dir: str | Path, frames=None,
                    timeout: float | None = None) -> dict:
    """Score the label-id PNGs in `pred_dir` with cityscapesscripts' evalPixelLevelSemanticLabeling.

    Returns percentages: `iou_class`, `iiou_class`, `iou_category`, `iiou_category` (the four numbers
    of the Cityscapes benchmark and the paper's Table 2), `class_iou` and `category_iou` per name,
    `class_iiou` and `category_iiou` for the instance classes and categories, and `frames`.
    """
    gt_root, pred_dir = Path(gt_root).resolve(), Path(pred_dir).resolve()
    gt_files = gt_label_files(gt_root, split, frames)
    _check_predictions(gt_files, pred_dir)
    with tempfile.TemporaryDirectory(prefix="cs-pixel-eval-") as work:
        work = Path(work)
        (work / "gt_files.json").write_text(json.dumps([str(f) for f in gt_files]))
        env = {k: v for k, v in os.environ.items() if not k.startswith("CITYSCAPES_")}
        env.update(CITYSCAPES_DATASET=str(gt_root), CITYSCAPES_RESULTS=str(pred_dir), CITYSCAPES_EXPORT_DIR=str(work))
        proc = subprocess.run([sys.executable, "-c", _DRIVER, str(work / "gt_files.json")], cwd=work, env=env,
                              capture_output=True, text=True, timeout=timeout)
        result_file = work / _RESULT_NAME
        if proc.returncode != 0 or not result_file.is_file():
            tail = (proc.stdout + proc.stderr)[-2000:]
            raise RuntimeError(f"official pixel-level evaluator failed (exit {proc.returncode}) on {pred_dir}:\n{tail}")
        raw = json.loads(result_file.read_text())
    return parse_pixel_level_result(raw, len(gt_files))


def parse_pixel_level_result(raw: dict, frames: int) -> dict:
    """Turn the evaluator's result JSON (fractions) into the percentages `run_pixel_level` returns."""
    def pct(x: float) -> float:
        return 100.0 * x if x is not None and not math.isnan(x) else math.nan

    return {
        "iou_class": pct(raw["averageScoreClasses"]),
        "iiou_class": pct(raw["averageScoreInstClasses"]),
        "iou_category": pct(raw["averageScoreCategories"]),
        "iiou_category": pct(raw["averageScoreInstCategories"]),
        "class_iou": {name: pct(raw["classScores"][name]) for name in EVAL_CLASSES},
        "class_iiou": {name: pct(v) for name, v in raw["classInstScores"].items() if name in EVAL_CLASSES
                       and not math.isnan(v)},
        "category_iou": {c: pct(raw["categoryScores"][c]) for c in EVAL_CATEGORIES},
        "category_iiou": {c: pct(v) for c, v in raw["categoryInstScores"].items() if not math.isnan(v)},
        "frames": frames,
    }


def _check_predictions(gt_files: list[Path], pred_dir: Path) -> None:
    """Fail here, naming the frame, rather than deep inside the subprocess."""
    if not pred_dir.is_dir():
        raise FileNotFoundError(f"prediction folder not found: {pred_dir}")
    names = {p.name for p in pred_dir.rglob("*.png")}
    for gt in gt_files:
        frame = gt.name[: -len(GT_SUFFIX)]
        if not any(n.startswith(frame) for n in names):
            raise FileNotFoundError(f"no prediction {frame}*.png in {pred_dir} for ground truth {gt}")


def to_full_resolution(outputs: dict[str, torch.Tensor], size: tuple[int, int]) -> dict[str, torch.Tensor]:
    """Upsample model outputs to the files' (H, W), rescaling values measured in input pixels.

    Every output is resized bilinearly; a channel measured along x (dx, disparity) is multiplied by
    W_file / W_in and one along y (dy) by H_file / H_in, as its TaskSpec's `pixel_axes` say.
    """
    h_in, w_in = next(iter(outputs.values())).shape[-2:]
    factor = {"x": size[1] / w_in, "y": size[0] / h_in, None: 1.0}
    full = {}
    for task, out in outputs.items():
        up = F.interpolate(out.float(), size=tuple(size), mode="bilinear", align_corners=False)
        axes = tasks.TASK_SPECS[task].pixel_axes
        if any(axes):
            up = up * torch.tensor([factor[a] for a in axes], dtype=up.dtype, device=up.device).view(1, -1, 1, 1)
        full[task] = up
    return full


class PairedFrames(Dataset):
    """Item i of the input-resolution set and of the same frame at file resolution."""

    def __init__(self, inputs: CityscapesMultiTask, full: CityscapesMultiTask):
        self.inputs, self.full = inputs, full

    def __len__(self) -> int:
        return len(self.inputs)

    def __getitem__(self, i: int) -> tuple[dict, dict]:
        return self.inputs[i], self.full[i]


def evaluate_official(model: torch.nn.Module, data: CityscapesMultiTask, device: torch.device,
                      amp_dtype: torch.dtype | None, pred_dir: Path, workers: int = 0) -> dict:
    """One pass: input-resolution metrics, full-resolution metrics, and the official pixel-level scores.

    Each prediction is upsampled to the frame's file resolution (`to_full_resolution`),
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
