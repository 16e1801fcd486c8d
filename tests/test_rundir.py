"""The RunDir contract (engine/rundir.py): one holder per run directory, resume checks, checkpoints that bring
back the weights and the RNG streams, and a metrics.json written atomically. No data and no training: the
parts are built from a tiny config and the checks run on the run directory alone."""

import json
import random

import numpy as np
import pytest
import torch

import infra.atomic
from engine.build import build_parts
from engine.config import ConfigError, load_config
from engine.rundir import RunDir
from infra.lock import LockHeld

TINY = ["model.backbone=resnet18", "model.aspp_channels=8", "model.head_channels=8", "data.size=[32,64]",
        "optim.batch_size=2", "optim.iterations=4", "model.pretrained=none"]


def config(run_dir, *extra):
    return load_config(overrides=[*TINY, f"run_dir={run_dir}", *extra])


def parts_of(cfg):
    return build_parts(cfg, torch.device("cpu"), steps_per_epoch=2, pretrained=False)


def draws() -> tuple:
    return torch.rand(3).tolist(), random.random(), float(np.random.rand())


def test_a_second_holder_is_refused_naming_the_first(tmp_path):
    cfg = config(tmp_path / "run")
    with RunDir(cfg, ["python", "train.py", "first"]):
        with pytest.raises(LockHeld, match=r"pid \d+ .*train\.py first"):
            with RunDir(cfg, ["python", "train.py", "second"]):
                pass
    with RunDir(cfg):  # released on leaving the block
        pass
    assert not (tmp_path / "run").exists()  # nothing written: no orphan run directory


def test_checkpoint_round_trip_brings_back_weights_rng_and_refuses_other_experiments(tmp_path):
    run_dir, data = tmp_path / "run", tmp_path / "data"
    cfg = config(run_dir)
    with RunDir(cfg) as run:
        assert run.finished() is None and run.resume(data) is None
        parts = parts_of(cfg)
        assert run.start(parts, None) == 0 and (run_dir / "config.yaml").is_file()
        with torch.no_grad():
            next(parts.model.parameters()).add_(0.5)  # weights a fresh build does not have
        torch.manual_seed(11), random.seed(12), np.random.seed(13)
        run.checkpoint(3)
        expected = draws()
        trained = {k: v.clone() for k, v in parts.model.state_dict().items()}
    with RunDir(cfg) as run:
        ckpt = run.resume(data)
        assert ckpt["step"] == 3 and ckpt["data_root"] == str(data)
        fresh = parts_of(cfg)
        torch.manual_seed(0), random.seed(0), np.random.seed(0)
        assert run.start(fresh, ckpt) == 3
        assert draws() == expected  # the RNG streams continue where the checkpoint left them
        for k, v in fresh.model.state_dict().items():
            assert torch.equal(v, trained[k]), k
        with pytest.raises(ConfigError, match=r"was trained on .*data but this run reads .*elsewhere"):
            run.resume(tmp_path / "elsewhere")
    with RunDir(config(run_dir, "seed=1")) as run:
        with pytest.raises(ConfigError, match=r"holds a run with a different config \(differs in seed"):
            run.resume(data)


def test_finish_writes_metrics_json_atomically(tmp_path, monkeypatch, capsys):
    run_dir = tmp_path / "run"
    cfg = config(run_dir)
    metrics = {"semantic/miou": 12.5, "depth/mean_error_px": 3.0}
    real = infra.atomic.os.replace

    def full_disk(src, dst):
        if str(dst).endswith("metrics.json"):
            raise OSError(28, "No space left on device")
        return real(src, dst)

    with RunDir(cfg) as run:
        run.resume(tmp_path)
        run.start(parts_of(cfg), None)
        run.checkpoint(4)
        monkeypatch.setattr(infra.atomic.os, "replace", full_disk)
        with pytest.raises(OSError, match="No space left"):
            run.finish(4, metrics, metrics)
        assert sorted(p.name for p in run_dir.iterdir()) == [".lock", "checkpoint.pt", "config.yaml",
                                                             "metrics.csv", "metrics.jsonl"]  # no partial file
        monkeypatch.setattr(infra.atomic.os, "replace", real)
        run.finish(4, metrics, metrics)
        final = json.loads((run_dir / "metrics.json").read_text())
        assert final["metrics"] == metrics and final["step"] == 4 and final["identity"] == cfg.identity()
        assert final["replicas"] == {"processes": 1, "identical": True}
        assert run.finished()["metrics"] == metrics
    assert "finished" in capsys.readouterr().out
    with RunDir(cfg) as run:  # a finished run is read back, not retrained
        assert run.finished()["step"] == 4
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert [x["step"] for x in lines] == [4]  # the final validation logged once despite the failed first write
