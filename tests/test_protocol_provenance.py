"""The comparison protocol's machinery below the planner: a held-out test split from the generator, scoring
on it (data.test_split) with val kept for selection, the provenance of every new record (data root, profile,
precision, dirty tree, whole-run wall time, kept when recorded again) and the Adam step-size control."""

import json

import numpy as np
import pytest
import torch

import train
from data.cityscapes import CityscapesMultiTask
from data.synthetic import generate
from data.synthetic.profile import read_marker
from engine.build import build_optimizer
from engine.config import load_config
from experiments.layout import Paths
from experiments.records import write_record
from losses import build_weighting
from models import build_model
from tasks import TASK_KINDS

TINY = ["model.backbone=resnet18", "model.aspp_channels=8", "model.head_channels=8", "data.size=[32,64]",
        "optim.batch_size=2", "data.num_workers=0", "log_every=1", "eval_batch_size=4", "deterministic=true"]


@pytest.fixture(scope="module")
def three_split_root(tmp_path_factory):
    root = tmp_path_factory.mktemp("three-splits")
    return generate(root, train=2, val=2, test=2, size=(32, 64), seed=0, workers=1, profile="calibrated")


def test_generator_writes_a_readable_held_out_test_split(three_split_root, tmp_path):
    test = CityscapesMultiTask(three_split_root, "test", size=None)
    val = CityscapesMultiTask(three_split_root, "val", size=None)
    assert len(test) == 2 and test.frames[0].name.startswith("berlin_")
    assert not np.array_equal(test[0]["image"].numpy(), val[0]["image"].numpy())  # its own random streams
    assert read_marker(three_split_root)["test"] == 2
    plain = generate(tmp_path / "plain", train=1, val=1, size=(32, 64), workers=1)
    assert "test" not in read_marker(plain) and not (plain / "leftImg8bit" / "test").exists()  # as before


def test_scores_on_test_keeps_val_for_selection_and_records_provenance(three_split_root, tmp_path):
    run = tmp_path / "run"
    args = [*TINY, f"data.root={three_split_root}", f"run_dir={run}", "optim.iterations=2", "ckpt_every=1",
            "data.test_split=test", "data.synthetic_profile=calibrated", "amp=bf16"]
    train.main(args)
    final = json.loads((run / "metrics.json").read_text())
    assert final["score_split"] == "test" and final["selection_split"] == "val"
    assert final["metrics"] != final["val_metrics"]  # two different splits scored
    assert final["data_profile"] == "calibrated" and final["precision"] == "bfloat16"
    assert isinstance(final["dirty"], bool) and final["wall_time_complete"] is True
    assert torch.load(run / "checkpoint.pt", weights_only=True)["wall_time_s"] > 0
    # A resumed run adds the time its checkpoint had already spent.
    ckpt = torch.load(run / "checkpoint.pt", weights_only=True)
    ckpt["wall_time_s"] = 1000.0
    torch.save(ckpt, run / "checkpoint.pt")
    (run / "metrics.json").unlink()
    train.main(args)
    assert json.loads((run / "metrics.json").read_text())["wall_time_s"] >= 1000.0


def test_a_record_written_again_keeps_its_original_wall_time(tmp_path):
    paths = Paths(tmp_path / "configs", tmp_path / "runs", tmp_path / "results")
    path = write_record(paths, "p", {"identity": "abc", "wall_time_s": 412.0, "metrics": {}})
    write_record(paths, "p", {"identity": "abc", "wall_time_s": 3.0, "metrics": {"x": 1}})
    assert json.loads(path.read_text())["wall_time_s"] == 412.0


def test_a_tree_is_dirty_for_modified_code_not_for_the_runners_own_tables(tmp_path):
    """The runner rewrites results/ tables between its trainings: those made every later run of a chained
    invocation say "-dirty" (8 precision-check records did) though no code differed from the commit."""
    import subprocess

    from infra.provenance import git_commit

    def git(*args):
        subprocess.run(["git", *args], cwd=tmp_path, check=True, capture_output=True)

    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "table.md").write_text("old\n")
    (tmp_path / "train.py").write_text("x = 1\n")
    git("init", "-q")
    git("add", ".")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "files")
    head = git_commit(tmp_path)
    assert len(head) == 40 and not head.endswith("-dirty")
    (tmp_path / "results" / "table.md").write_text("new\n")  # the runner's own output
    (tmp_path / "notes.txt").write_text("untracked\n")
    assert git_commit(tmp_path) == head
    (tmp_path / "train.py").write_text("x = 2\n")  # code
    assert git_commit(tmp_path) == head + "-dirty"


def test_adam_variant_builds_with_the_same_groups():
    cfg = load_config([], ["optim.optimizer=adam", "model.backbone=resnet18", "model.aspp_channels=8",
                           "model.head_channels=8"])
    model = build_model(cfg)
    method = build_weighting("uncertainty", {t: TASK_KINDS[t] for t in cfg.tasks})
    opt = build_optimizer(cfg, model, method)
    assert isinstance(opt, torch.optim.Adam) and len(opt.param_groups) == 3
    assert load_config([], []).identity() != cfg.identity()  # a different experiment
    with pytest.raises(Exception, match="optim.optimizer"):
        load_config([], ["optim.optimizer=rmsprop"])


def test_a_null_metric_in_the_log_reads_as_nan(tmp_path):
    """A metric that is NaN at a validation (a class absent at 4 iterations) is logged as null; recording the
    run must not fail on it (found by the protocol's smoke run)."""
    import math

    from experiments import plots

    log = tmp_path / "metrics.jsonl"
    log.write_text('{"step": 2, "val/semantic/miou": 3.0}\n{"step": 4, "val/semantic/miou": null}\n')
    curves = plots.read_curves(log, prefixes=("val/",))
    assert curves["val/semantic/miou"][0] == 3.0 and math.isnan(curves["val/semantic/miou"][1])
