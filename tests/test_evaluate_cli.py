"""evaluate_model on an oracle with known errors, and `python evaluate.py` end to end on a built checkpoint."""

import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import evaluate
from data.labels import CLASS_NAMES, NUM_CLASSES
from engine.config import load_config
from models import build_model

TINY = ["model.backbone=resnet18", "model.aspp_channels=8", "model.head_channels=8", "data.size=[32,64]",
        "data.num_workers=0", "eval_batch_size=2"]


class Oracle(nn.Module):
    """Reads its 'prediction' out of the image tensor: channels 0..18 logits, 19..20 vectors, 21 disparity."""

    def forward(self, image):
        assert not torch.is_grad_enabled() and not self.training
        return {"semantic": image[:, :NUM_CLASSES], "instance": image[:, NUM_CLASSES:NUM_CLASSES + 2],
                "depth": image[:, NUM_CLASSES + 2:]}


def oracle_batches():
    """Two batches: semantics perfect except one pixel; vector error 0.5 + 1.0; disparity error 2 on one
    of the two valid pixels of batch 1 and 0 on the four of batch 2 (so mean 2/6, RMSE sqrt(4/6))."""
    batches = []
    for b in range(2):
        gt = torch.arange(8).view(1, 2, 4) + 8 * b  # trainIds 0..15, one of each
        logits = F.one_hot(gt, NUM_CLASSES).permute(0, 3, 1, 2).float()
        if b == 1:
            logits[0, :, 0, 0] = F.one_hot(torch.tensor(0), NUM_CLASSES)  # class 8 predicted as road
        inst_gt = torch.zeros(1, 2, 2, 4)
        inst_pred = inst_gt + torch.tensor([0.5, -1.0]).view(1, 2, 1, 1)
        depth_gt = torch.ones(1, 1, 2, 4)
        depth_pred = depth_gt.clone()
        depth_mask = torch.zeros(1, 2, 4, dtype=torch.bool)
        if b == 0:
            depth_pred[0, 0, 0, 0] += 2.0
            depth_mask[0, 0, :2] = True
        else:
            depth_mask[0, 1] = True
        batches.append({"image": torch.cat([logits, inst_pred, depth_pred], 1), "semantic": gt,
                        "instance": inst_gt, "instance_mask": torch.ones(1, 2, 4, dtype=torch.bool),
                        "depth": depth_gt, "depth_mask": depth_mask})
    return batches


def test_evaluate_model_on_an_oracle():
    model = Oracle().train()
    r = evaluate.evaluate_model(model, oracle_batches(), "cpu")
    assert model.training  # mode restored for the training loop
    # Confusion: 15 correct, class 8 -> road once. IoU road = 1/2, class 8 = 0/1, 14 others 1, 16..18 NaN.
    assert r["semantic/iou/road"] == 50.0 and r[f"semantic/iou/{CLASS_NAMES[8]}"] == 0.0
    assert all(math.isnan(r[f"semantic/iou/{n}"]) for n in CLASS_NAMES[16:])
    assert r["semantic/miou"] == pytest.approx(100 * 14.5 / 16)
    assert r["semantic/pixel_acc"] == pytest.approx(100 * 15 / 16)
    assert r["instance/mean_error_px"] == 1.5
    assert r["depth/mean_error_px"] == pytest.approx(2 / 6)
    assert r["depth/rmse_px"] == pytest.approx(math.sqrt(4 / 6))
    only = evaluate.evaluate_model(model, oracle_batches(), "cpu", tasks=["depth"])
    assert set(only) == {"depth/mean_error_px", "depth/rmse_px"}
    with pytest.raises(KeyError, match="normals"):
        evaluate.evaluate_model(model, oracle_batches(), "cpu", tasks=["normals"])


@pytest.fixture(scope="module")
def checkpoint(synthetic_root, tmp_path_factory):
    torch.manual_seed(0)
    cfg = load_config([], TINY + [f"data.root={synthetic_root}"])
    path = tmp_path_factory.mktemp("ckpt") / "checkpoint.pt"
    torch.save({"config": cfg.to_dict(), "model": build_model(cfg).state_dict(), "step": 42, "optimizer": {}}, path)
    return path


def test_cli_end_to_end(checkpoint, tmp_path, capsys):
    out = tmp_path / "metrics.json"
    report = evaluate.main(["--checkpoint", str(checkpoint), "--limit", "2", "--official", "--out", str(out),
                            "--figures", str(tmp_path / "figs"), "--num-figures", "1", "--workers", "0"])
    printed = capsys.readouterr().out
    saved = json.loads(out.read_text())
    assert saved["step"] == 42 and saved["frames"] == 2 and saved["split"] == "val"
    for name in CLASS_NAMES:
        assert name in printed
    assert "IoU class  iIoU class  IoU category  iIoU category" in printed
    # The official evaluator and MultiTaskMetrics agree on the same full-resolution predictions.
    assert report["official"]["iou_class"] == pytest.approx(report["full_resolution"]["semantic/miou"], abs=1e-9)
    for name in CLASS_NAMES:
        a, b = report["official"]["class_iou"][name], report["full_resolution"][f"semantic/iou/{name}"]
        assert (math.isnan(a) and math.isnan(b)) or a == pytest.approx(b, abs=1e-9), name
    assert set(saved["metrics"]) >= {"semantic/miou", "instance/mean_error_px", "depth/mean_error_px", "depth/rmse_px"}
    assert set(saved["full_resolution"]) >= {"depth/mean_error_px", "depth/rmse_px"}
    assert len(list((tmp_path / "figs").glob("*.png"))) == 1
    # The three-task model also gets the official instance AP (hough grouping by default).
    assert set(saved["instance_ap"]) == {"hough"} and saved["errors"] == []
    assert set(saved["instance_ap"]["hough"]) >= {"ap", "ap50", "ap100m", "ap50m", "class_ap"}
    assert "official instance-level" in printed


def test_a_failing_official_evaluator_keeps_the_other_numbers_and_exits_nonzero(checkpoint, tmp_path, monkeypatch):
    import evaluation.official as official

    def broken(*args, **kwargs):
        raise official.EvaluatorError("official instance-level evaluator failed (exit 1) on x: boom")

    monkeypatch.setattr(official, "run_instance_level", broken)
    out = tmp_path / "metrics.json"
    with pytest.raises(SystemExit, match="error: official instance-level evaluator failed"):
        evaluate.main(["--checkpoint", str(checkpoint), "--limit", "1", "--official", "--out", str(out),
                       "--workers", "0"])
    saved = json.loads(out.read_text())  # written before the non-zero exit, with everything computed
    assert "semantic/miou" in saved["metrics"] and "iou_class" in saved["official"]
    assert saved["errors"] == ["official instance-level evaluator failed (exit 1) on x: boom"]


def test_a_hanging_official_evaluator_times_out(synthetic_root, tmp_path):
    from evaluation.official import EvaluatorError, run_pixel_level, write_prediction_png

    frame = sorted((synthetic_root / "gtFine" / "val").glob("*/*_labelIds.png"))[0].name.split("_gtFine")[0]
    write_prediction_png(tmp_path, frame, torch.zeros(64, 128, dtype=torch.long))
    with pytest.raises(EvaluatorError, match="timed out after 0.01 s"):
        run_pixel_level(synthetic_root, "val", tmp_path, frames=[frame], timeout=0.01)


def test_cli_metrics_equal_evaluate_model(checkpoint, synthetic_root):
    from torch.utils.data import DataLoader

    from data.cityscapes import CityscapesMultiTask

    report = evaluate.main(["--checkpoint", str(checkpoint), "--limit", "3", "--workers", "0", "--batch-size", "2"])
    cfg, model, _ = evaluate.load_model(checkpoint)
    data = CityscapesMultiTask(synthetic_root, "val", size=(32, 64), limit=3)
    direct = evaluate.evaluate_model(model, DataLoader(data, batch_size=3), "cpu")  # other batching, same numbers
    for k, v in direct.items():
        assert (math.isnan(v) and math.isnan(report["metrics"][k])) or report["metrics"][k] == pytest.approx(v), k


def test_bad_checkpoints_and_roots_are_named(tmp_path, checkpoint):
    with pytest.raises(SystemExit, match="not found"):
        evaluate.main(["--checkpoint", str(tmp_path / "nope.pt")])
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(SystemExit, match="cannot read checkpoint"):
        evaluate.main(["--checkpoint", str(tmp_path / "junk.pt")])
    torch.save({"model": {}}, tmp_path / "keys.pt")
    with pytest.raises(SystemExit, match="missing keys"):
        evaluate.main(["--checkpoint", str(tmp_path / "keys.pt")])
    with pytest.raises(SystemExit, match="nowhere"):
        evaluate.main(["--checkpoint", str(checkpoint), "--root", str(tmp_path / "nowhere")])
    ckpt = torch.load(checkpoint, weights_only=True)
    ckpt["config"]["model"]["head_channels"] = 16  # weights no longer fit
    torch.save(ckpt, tmp_path / "mismatch.pt")
    with pytest.raises(SystemExit, match="do not fit"):
        evaluate.main(["--checkpoint", str(tmp_path / "mismatch.pt")])
