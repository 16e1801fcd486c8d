"""The official Cityscapes evaluators (pixel level and instance level), run safely, and full-resolution
predictions for them.

cityscapesscripts' evalPixelLevelSemanticLabeling reads CITYSCAPES_DATASET / CITYSCAPES_RESULTS
when it is imported, keeps its state in module globals and writes files, so `run_pixel_level`
runs it in a fresh subprocess with an explicit environment and a temporary working directory,
and reads back the JSON it writes. Only the list of ground-truth files is ours (so a split other
than val, or a subset of frames, can be scored); the matching of predictions to ground truth and
all the arithmetic are the evaluator's own.

Predictions are label-id PNGs (0..33, never trainIds) at ground-truth resolution named
`<city>_<seq>_<frame>_pred.png`, which the evaluator's `<city>_<seq>_<frame>*.png` pattern finds.

`run_instance_level` runs evalInstanceLevelSemanticLabeling the same way on the official instance
format: per frame a text file `<frame>_pred.txt` whose lines are `masks/<name>.png <label id>
<confidence>`, the masks at ground-truth resolution (`write_instance_predictions`). Its ground-truth
cache (the package writes it next to its own source and reuses it for any dataset) is made fresh in
the temporary directory. The public evaluator has no distance per object, so AP 100m / AP 50m (objects
within 100 m / 50 m) would come out empty; we fill the two fields it reads for each ground-truth
object, `medDist` (the median distance of its pixels with a valid disparity, `baseline * fx / d` from
the frame's camera file) and `distConf` (the share of its pixels with a valid disparity), before it
runs; its thresholds (100 m / 50 m, density 0.5, 1000 pixels) and all matching are its own.
Without disparity and camera files the two columns are left out (None).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from cityscapesscripts.helpers.labels import category2labels, labels
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

import tasks
from data.cityscapes import CityscapesMultiTask
from evaluation.metrics import MultiTaskMetrics
from models import autocast_forward
from tasks.labels import NUM_CLASSES, TRAINID_TO_ID

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
        _run_evaluator("pixel-level", [sys.executable, "-c", _DRIVER, str(work / "gt_files.json")], work, env,
                       timeout, pred_dir)
        result_file = work / _RESULT_NAME
        if not result_file.is_file():
            raise EvaluatorError(f"official pixel-level evaluator wrote no result for {pred_dir}")
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


# Runs inside the subprocess: fills in the distances, then the evaluator's own steps.
_INSTANCE_DRIVER = """
import json, sys
from cityscapesscripts.evaluation import evalInstanceLevelSemanticLabeling as ev
from cityscapesscripts.evaluation.instances2dict import instances2dict
spec = json.load(open(sys.argv[1]))
gt_files = spec["gt_files"]
ev.args.quiet, ev.args.colorized, ev.args.JSONOutput = True, False, True
ev.args.exportFile, ev.args.gtInstancesFile = spec["export_file"], spec["gt_instances_file"]
ev.args.predictionPath = spec["pred_dir"]
distances = spec["distances"]
ev.args.distanceAvailable = distances is not None
ev.args.minRegionSizes = ev.args.minRegionSizes * spec["area_scale"]  # pixel areas set for 2048x1024 frames
gt = instances2dict(gt_files, False)
if distances is not None:
    for key, by_label in gt.items():
        for objects in by_label.values():
            for obj in objects:
                obj["medDist"], obj["distConf"] = distances[key].get(str(obj["instID"]), [-1.0, 0.0])
json.dump(gt, open(ev.args.gtInstancesFile, "w"))
predictions = [ev.getPrediction(g, ev.args) for g in gt_files]
ev.evaluateImgLists(predictions, gt_files, ev.args)
"""
INSTANCE_GT_SUFFIX = "_gtFine_instanceIds.png"
INSTANCE_PRED_SUFFIX = "_pred.txt"


def write_instance_predictions(pred_dir: str | Path, frame: str, instances) -> Path:
    """Write `instances` (evaluation.instances.Instance: mask, label_id, score) of one frame in the
    official format: `<pred_dir>/<frame>_pred.txt` and its masks under `<pred_dir>/masks/`."""
    pred_dir = Path(pred_dir)
    (pred_dir / "masks").mkdir(parents=True, exist_ok=True)
    lines = []
    for k, inst in enumerate(instances):
        if not math.isfinite(inst.score):
            raise ValueError(f"instance {k} of {frame} has a non-finite score {inst.score}")
        name = f"masks/{frame}_{k:04d}.png"
        Image.fromarray(inst.mask.astype(np.uint8) * 255).save(pred_dir / name)
        lines.append(f"{name} {int(inst.label_id)} {inst.score:.6f}\n")
    path = pred_dir / f"{frame}{INSTANCE_PRED_SUFFIX}"
    path.write_text("".join(lines))
    return path


def instance_distances(gt_root: Path, split: str, frames: list[str]) -> dict | None:
    """{abs instanceIds path: {instanceId: [median distance m, stereo density]}} for the objects of
    `frames` (>= 1000), from their disparity PNGs and camera files; None if any of those is missing."""
    out = {}
    for frame in frames:
        city = frame.split("_")[0]
        disparity = gt_root / "disparity" / split / city / f"{frame}_disparity.png"
        camera = gt_root / "camera" / split / city / f"{frame}_camera.json"
        if not (disparity.is_file() and camera.is_file()):
            return None
        cam = json.loads(camera.read_text())
        focal_baseline = float(cam["intrinsic"]["fx"]) * float(cam["extrinsic"]["baseline"])
        ids_path = gt_root / "gtFine" / split / city / f"{frame}{INSTANCE_GT_SUFFIX}"
        ids = np.asarray(Image.open(ids_path), dtype=np.int32)
        p = np.asarray(Image.open(disparity), dtype=np.int32)
        if p.shape != ids.shape:
            raise ValueError(f"{disparity} is {p.shape[::-1]}, its instanceIds {ids.shape[::-1]}")
        objects = {}
        for inst_id in np.unique(ids[ids >= 1000]):
            pix = p[ids == inst_id]
            valid = pix[pix > 1]  # value p gives (p - 1) / 256 px; 0 (and 1, disparity 0) has no distance
            dist = float(np.median(focal_baseline * 256.0 / (valid - 1))) if valid.size else float("inf")
            objects[str(int(inst_id))] = [dist, float(valid.size / pix.size)]
        out[str(ids_path.resolve())] = objects
    return out


# The width cityscapesscripts' instance evaluator's pixel-area thresholds (args.minRegionSizes: 100 px for AP,
# 1000 px for AP 100m / 50m) were set for.
EVALUATOR_WIDTH = 2048


def run_instance_level(gt_root: str | Path, split: str, pred_dir: str | Path, frames=None,
                       timeout: float | None = None, scale_thresholds: bool = True) -> dict:
    """Score the instance predictions in `pred_dir` with cityscapesscripts' evalInstanceLevelSemanticLabeling.

    With `scale_thresholds` (default) the evaluator's minimum region sizes, pixel areas set for 2048-wide frames,
    are scaled by (file width / 2048)^2 through its documented `args.minRegionSizes`, so a 512-wide file is
    scored by the rule a 2048-wide one is. Its distance bins (100 m, 50 m) are metres from each frame's own
    disparity and camera file, the same at any resolution, and stay as they are.

    Returns percentages: `ap`, `ap50`, `ap100m`, `ap50m` (None without distances), `class_ap` and
    `class_ap50` per instance class, and `frames`, plus `min_region_sizes` (the thresholds applied, px).
    """
    gt_root, pred_dir = Path(gt_root).resolve(), Path(pred_dir).resolve()
    label_files = gt_label_files(gt_root, split, frames)
    names = [f.name[: -len(GT_SUFFIX)] for f in label_files]
    gt_files = [f.parent / f"{n}{INSTANCE_GT_SUFFIX}" for f, n in zip(label_files, names)]
    missing = [str(f) for f in gt_files if not f.is_file()]
    if missing:
        raise FileNotFoundError(f"{len(missing)} instanceIds file(s) missing, e.g. {missing[0]}")
    absent = [n for n in names if not (pred_dir / f"{n}{INSTANCE_PRED_SUFFIX}").is_file()]
    if absent:
        raise FileNotFoundError(f"no instance prediction {absent[0]}{INSTANCE_PRED_SUFFIX} in {pred_dir}")
    distances = instance_distances(gt_root, split, names)
    width = Image.open(gt_files[0]).size[0] if gt_files else EVALUATOR_WIDTH
    area_scale = (width / EVALUATOR_WIDTH) ** 2 if scale_thresholds else 1.0
    with tempfile.TemporaryDirectory(prefix="cs-instance-eval-") as work:
        work = Path(work)
        spec = {"gt_files": [str(f) for f in gt_files], "pred_dir": str(pred_dir), "distances": distances,
                "export_file": str(work / "result.json"), "gt_instances_file": str(work / "gtInstances.json"),
                "area_scale": area_scale}
        (work / "spec.json").write_text(json.dumps(spec))
        env = {k: v for k, v in os.environ.items() if not k.startswith("CITYSCAPES_")}
        _run_evaluator("instance-level", [sys.executable, "-c", _INSTANCE_DRIVER, str(work / "spec.json")],
                       work, env, timeout, pred_dir)
        raw = json.loads((work / "result.json").read_text()) if (work / "result.json").is_file() else None
    if raw is None:
        raise EvaluatorError(f"official instance-level evaluator wrote no result for {pred_dir}")
    return parse_instance_level_result(raw, len(gt_files), distances is not None) | {
        "min_region_sizes": [v * area_scale for v in (100.0, 1000.0, 1000.0)], "file_width": width}


def parse_instance_level_result(raw: dict, frames: int, distances: bool) -> dict:
    """Turn the instance evaluator's result JSON (fractions) into percentages."""
    def pct(x) -> float | None:
        return None if x is None or (isinstance(x, float) and math.isnan(x)) else 100.0 * float(x)

    avg = raw["averages"]
    return {
        "ap": pct(avg["allAp"]), "ap50": pct(avg["allAp50%"]),
        "ap100m": pct(avg["allAp100m"]) if distances else None,
        "ap50m": pct(avg["allAp50m"]) if distances else None,
        "class_ap": {name: pct(v["ap"]) for name, v in avg["classes"].items()},
        "class_ap50": {name: pct(v["ap50%"]) for name, v in avg["classes"].items()},
        "frames": frames,
    }


class EvaluatorError(RuntimeError):
    """An official evaluator failed, timed out or wrote no result; the message says which and why."""


def _run_evaluator(what: str, command: list[str], work: Path, env: dict, timeout: float | None,
                   pred_dir: Path) -> None:
    """Run an evaluator subprocess in `work`; a failure or a timeout is an EvaluatorError with its output."""
    try:
        proc = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise EvaluatorError(f"official {what} evaluator timed out after {timeout:g} s on {pred_dir}") from e
    if proc.returncode != 0:
        tail = (proc.stdout + proc.stderr)[-2000:]
        raise EvaluatorError(f"official {what} evaluator failed (exit {proc.returncode}) on {pred_dir}:\n{tail}")


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
                      amp_dtype: torch.dtype | None, pred_dir: Path, workers: int = 0,
                      grouping: tuple[str, ...] = ("hough",), timeout: float | None = None,
                      progress: bool = False) -> dict:
    """One pass: input-resolution metrics, full-resolution metrics, and the official scores (Table 2).

    Each prediction is upsampled to the frame's file resolution (`to_full_resolution`); its argmax is
    written as a label-id PNG under `pred_dir/pixel` and scored by the pixel-level evaluator. With the
    semantic and instance tasks, the instances of each `grouping` method (evaluation.instances) are
    written under `pred_dir/instance-<method>` and scored by the instance-level evaluator. An evaluator
    that fails leaves its message in `errors` and every other number in place. `progress` shows a bar
    with the frames done and the time left (on stderr).
    """
    from evaluation.instances import group_instances

    full = data if data.size is None else CityscapesMultiTask(data.root, data.split, size=None, limit=len(data))
    loader = DataLoader(PairedFrames(data, full), batch_size=1, num_workers=workers)
    at_input, at_full = MultiTaskMetrics(), MultiTaskMetrics()
    has_semantic = has_instances = False
    grouping_s = dict.fromkeys(grouping, 0.0)
    model.eval()
    with torch.no_grad():
        for i, (batch, gt) in enumerate(tqdm(loader, desc="evaluate (official)", unit="frame", disable=not progress,
                                             dynamic_ncols=True)):
            batch = {k: v.to(device) for k, v in batch.items()}
            gt = {k: v.to(device) for k, v in gt.items()}
            outputs = autocast_forward(model, batch["image"], amp_dtype)
            at_input.update(outputs, batch)
            outputs = to_full_resolution(outputs, tuple(gt["semantic"].shape[-2:]))
            at_full.update(outputs, gt)
            frame = data.frames[i].name
            if "semantic" not in outputs:  # nothing for the official evaluators
                continue
            confidence, semantic = torch.softmax(outputs["semantic"][0], dim=0).max(dim=0)
            write_prediction_png(Path(pred_dir) / "pixel", frame, semantic)
            has_semantic = True
            if "instance" not in outputs:
                continue
            has_instances = True
            semantic, confidence = semantic.cpu().numpy(), confidence.cpu().numpy()
            vectors = outputs["instance"][0].cpu().numpy()
            for method in grouping:
                start = time.perf_counter()
                found = group_instances(semantic, vectors, method, probabilities=confidence)
                grouping_s[method] += time.perf_counter() - start
                write_instance_predictions(Path(pred_dir) / f"instance-{method}", frame, found)
    result = {"metrics": at_input.compute(), "full_resolution": at_full.compute(), "errors": [],
              "file_size": list(full[0]["semantic"].shape) if len(full) else None}
    frames = [f.name for f in data.frames]
    if has_semantic:
        try:
            result["official"] = run_pixel_level(data.root, data.split, Path(pred_dir) / "pixel", frames, timeout)
        except EvaluatorError as e:
            result["errors"].append(str(e))
    if has_instances:
        result["instance_ap"], result["grouping_s_per_frame"] = {}, {}
        for method in grouping:
            result["grouping_s_per_frame"][method] = grouping_s[method] / max(1, len(frames))
            try:
                result["instance_ap"][method] = run_instance_level(data.root, data.split,
                                                                   Path(pred_dir) / f"instance-{method}", frames,
                                                                   timeout)
            except EvaluatorError as e:
                result["errors"].append(str(e))
    return result
