"""Evaluate a trained checkpoint: dataset-level metrics, the official Cityscapes scores, pictures.

    python evaluate.py --checkpoint runs/demo/checkpoint.pt [--split val] [--out metrics.json]
    python evaluate.py --checkpoint CKPT --official [--pred-dir DIR] [--grouping hough,optics]   # + Table 2
    python evaluate.py --checkpoint CKPT --figures figures/            # qualitative grid

The metrics (evaluation.MultiTaskMetrics) are computed at the model's input
resolution over the whole split. `--official` also upsamples every prediction to ground-truth
resolution, writes label-id PNGs and scores them with cityscapesscripts' evaluator (IoU class,
iIoU class, IoU category, iIoU category, as in the paper's Table 2), and reports the disparity
mean error and RMSE in pixels at full resolution. A model with the semantic and instance tasks also
gets the official instance AP (AP, AP50, AP 100m, AP 50m, per class): its predicted centroid votes
are grouped into instances (evaluation.instances; --grouping picks the methods) and scored with
cityscapesscripts' instance-level evaluator. If an official evaluator fails, everything else is
still printed and written, and the exit status is 1.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from data.cityscapes import CityscapesMultiTask, DataError, one_line
from data.frames import root_setting
from data.synthetic.profile import profile_problem
from engine.checkpoint import load_checkpoint, nonfinite_tensors
from engine.config import Config, ConfigError, config_from_dict
from engine.distributed import pick_device
from evaluation import MultiTaskMetrics, NonFiniteOutputError, evaluate_model
from evaluation.figures import write_figures
from evaluation.instances import METHODS as GROUPING_METHODS
from evaluation.official import evaluate_official
from infra.atomic import write_json
from tasks import METRICS

__all__ = ["MultiTaskMetrics", "evaluate_model", "main"]


# ----------------------------------------------------------------------------- checkpoint and data

def load_model(path: str | Path) -> tuple[Config, torch.nn.Module, int]:
    """(config, model with the checkpoint's weights, training step) from a train.py checkpoint."""
    from models import build_model

    ckpt = load_checkpoint(Path(path))
    bad = nonfinite_tensors(ckpt["model"]) if isinstance(ckpt["model"], dict) else []
    if bad:  # its metrics would be meaningless numbers
        raise RuntimeError(f"{path}: non-finite weights ({', '.join(bad[:3])}{' ...' if len(bad) > 3 else ''}); "
                           "not evaluated")
    try:
        cfg = config_from_dict(ckpt["config"])
    except (ConfigError, TypeError, AttributeError) as e:
        raise RuntimeError(f"{path}: the saved config is not valid for this code ({e})") from e
    model = build_model(cfg, pretrained=False)  # the checkpoint's weights replace any initial ones
    try:
        model.load_state_dict(ckpt["model"])
    except RuntimeError as e:
        raise RuntimeError(f"{path}: the weights do not fit the model its config describes:\n{e}") from e
    return cfg, model, int(ckpt["step"])


def dataset_root(cli_root: str | None, cfg: Config) -> str:
    """--root, else the config's data.root, else $CITYSCAPES_DATASET."""
    root = root_setting(cli_root, cfg.data.root)
    if not root:
        raise SystemExit("error: no dataset root: pass --root, or set data.root in the config or $CITYSCAPES_DATASET")
    return root



def format_instance_ap(instance_ap: dict, seconds: dict) -> list[str]:
    """Lines of the official instance AP per grouping method, with the per-class AP."""
    def f(v):
        return f"{v:6.2f}" if v is not None else "     -"

    lines = ["", "official instance-level (cityscapesscripts, full resolution, %):",
             f"  {'grouping':<9}{'AP':>7}{'AP50':>7}{'AP100m':>7}{'AP50m':>7}   s/frame"]
    for method, r in instance_ap.items():
        lines.append(f"  {method:<9} {f(r['ap'])} {f(r['ap50'])} {f(r['ap100m'])} {f(r['ap50m'])}"
                     f"   {seconds.get(method, math.nan):.3f}")
    for method, r in instance_ap.items():
        lines.append(f"  AP per class ({method}): "
                     + ", ".join(f"{k} {f(v).strip()}" for k, v in r["class_ap"].items()))
    return lines


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
    names = {m.key: m.title for m in METRICS.values() if m.task != "semantic"}  # the regression metrics
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


# ----------------------------------------------------------------------------- command line

def positive_int(text: str) -> int:
    """argparse type: an integer >= 1 (--limit 0 would score nothing, -1 would drop the last frame)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def _grouping(text: str) -> tuple[str, ...]:
    methods = tuple(m for m in text.split(",") if m)
    bad = [m for m in methods if m not in GROUPING_METHODS]
    if bad or not methods:
        raise argparse.ArgumentTypeError(f"unknown grouping {bad or text!r}; choose from {sorted(GROUPING_METHODS)}")
    return methods


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--checkpoint", required=True, help="checkpoint.pt written by train.py")
    p.add_argument("--split", default=None, help="split to evaluate (default: the config's data.val_split)")
    p.add_argument("--out", type=Path, help="write the metrics as JSON here")
    p.add_argument("--official", action="store_true",
                   help="also run cityscapesscripts' pixel-level and (instance task) instance-level evaluators")
    p.add_argument("--grouping", type=_grouping, default=("hough",),
                   help="comma-separated instance grouping methods for --official: hough (default), optics")
    p.add_argument("--timeout", type=float, default=3600.0,
                   help="seconds each official evaluator may run (default 3600)")
    p.add_argument("--pred-dir", type=Path, help="keep the official label-id PNGs here (default: a temporary dir)")
    p.add_argument("--figures", type=Path, help="write a qualitative grid per frame into this folder")
    p.add_argument("--num-figures", type=positive_int, default=4, help="frames drawn by --figures (default 4)")
    p.add_argument("--batch-size", type=positive_int, default=None, help="default: the config's eval_batch_size")
    p.add_argument("--root", default=None, help="dataset root (default: data.root, else $CITYSCAPES_DATASET)")
    p.add_argument("--limit", type=positive_int, default=None, help="evaluate only the first N frames of the split")
    p.add_argument("--workers", type=int, default=None, help="data loader workers (default: data.num_workers)")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")
    return p.parse_args(argv)


def check_outputs(out: Path | None, figures: Path | None) -> None:
    """Refuse, before any frame is scored, an --out or --figures path that cannot be written."""
    if out is not None:
        if out.is_dir():
            raise SystemExit(f"error: --out {out} is a directory; give a file name, e.g. {out / 'metrics.json'}")
        parent = _existing_parent(out)
        if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
            raise SystemExit(f"error: --out {out}: cannot write into {parent}")
    if figures is not None:
        if figures.exists() and not figures.is_dir():
            raise SystemExit(f"error: --figures {figures} is a file; give a folder")
        parent = _existing_parent(figures / "x")
        if not parent.is_dir() or not os.access(parent, os.W_OK | os.X_OK):
            raise SystemExit(f"error: --figures {figures}: cannot write into {parent}")


def _existing_parent(path: Path) -> Path:
    """The nearest existing folder above `path` (where its missing folders would be created)."""
    parent = path.absolute().parent
    while not parent.exists() and parent != parent.parent:
        parent = parent.parent
    return parent


def main(argv: list[str] | None = None) -> dict:
    """Run the command line; returns what --out would hold. Ctrl-C ends it with status 130, nothing written."""
    try:
        return _main(argv)
    except KeyboardInterrupt:
        print("\ninterrupted (Ctrl-C); nothing more written", file=sys.stderr)
        raise SystemExit(130) from None


def _main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    check_outputs(args.out, args.figures)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("error: --device cuda but no CUDA GPU is usable here; use --device auto or cpu")
    try:
        cfg, model, step = load_model(args.checkpoint)
    except (FileNotFoundError, RuntimeError) as e:
        raise SystemExit(f"error: {e}") from e
    device = pick_device(args.device)
    model.to(device)
    amp_dtype = cfg.autocast_dtype(device.type)
    split = args.split or cfg.data.val_split
    workers = cfg.data.num_workers if args.workers is None else args.workers
    try:
        root = dataset_root(args.root, cfg)
        if cfg.data.synthetic_profile is not None and (problem := profile_problem(root, cfg.data.synthetic_profile)):
            raise DataError(problem)
        if cfg.data.format == "npy":  # the 2-task protocols' layout (data/npy.py); no official evaluator there
            from data.npy import NpyTwoTask

            if args.official:
                raise DataError("--official scores the official Cityscapes layout; this run reads the npy layout")
            data = NpyTwoTask(root, split, cfg.data.size, augment=False, limit=args.limit)
        else:
            data = CityscapesMultiTask(root, split, size=cfg.data.size, augment=False, limit=args.limit,
                                       cache=cfg.data.cache)
    except DataError as e:
        raise SystemExit(f"error: {e}") from e
    report = {"checkpoint": str(args.checkpoint), "step": step, "split": split, "root": str(data.root),
              "frames": len(data), "size": cfg.data.size, "tasks": list(cfg.tasks)}

    try:
        if args.official:
            with tempfile.TemporaryDirectory(prefix="official-pred-") as tmp:
                pred_dir = args.pred_dir or Path(tmp)
                report |= evaluate_official(model, data, device, amp_dtype, pred_dir, workers, args.grouping,
                                            args.timeout, progress=True)
        else:
            loader = DataLoader(data, batch_size=args.batch_size or cfg.eval_batch_size, num_workers=workers)
            report["metrics"] = evaluate_model(model, loader, device, amp_dtype, progress=True)
    except NonFiniteOutputError as e:
        raise SystemExit(f"error: {args.checkpoint}: {e}") from e
    except DataError as e:  # e.g. a corrupt PNG read in a DataLoader worker: one line naming the file
        raise SystemExit(f"error: {one_line(e)}") from None
    print(format_report(report["metrics"], report.get("official"), report.get("full_resolution")))
    if report.get("instance_ap"):
        print("\n".join(format_instance_ap(report["instance_ap"], report.get("grouping_s_per_frame", {}))))

    failed = []
    if args.out:  # first: the report is the expensive part, the figures can be drawn again
        try:
            write_json(args.out, report)  # atomic, strict JSON (NaN -> null)
            print(f"wrote {args.out}")
        except OSError as e:
            failed.append(f"cannot write --out {args.out} ({e}); the report is printed above")
    if args.figures:
        try:
            paths = write_figures(model, data, device, args.figures, args.num_figures, amp_dtype)
            print(f"\nwrote {len(paths)} figure(s) to {args.figures}")
        except OSError as e:
            failed.append(f"cannot write --figures {args.figures} ({e})")
    if failed:
        raise SystemExit("error: " + "\nerror: ".join(failed + report.get("errors", [])))
    if report.get("errors"):  # the numbers above stand; the missing official ones make the run a failure
        raise SystemExit("error: " + "\nerror: ".join(report["errors"]))
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
