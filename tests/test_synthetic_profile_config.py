"""data.synthetic_profile: validated, part of the identity only when set, checked by train.py and
evaluate.py against the dataset root's .synthetic marker before any run directory exists."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

import evaluate
import train
from data.synthetic import generate
from engine.config import Config, ConfigError, config_from_dict, load_config

ROOT = Path(__file__).resolve().parents[1]
TINY = ["model.backbone=resnet18", "model.aspp_channels=8", "model.head_channels=8", "data.size=[32,64]",
        "optim.batch_size=2", "data.num_workers=0", "log_every=1", "eval_batch_size=4", "deterministic=true",
        "data.train_frames=2", "data.val_frames=1", "optim.iterations=1"]


def test_committed_records_keep_their_identity():
    """The key's default (null) leaves every committed run record's identity (its file name) as it was; the
    records made before the key existed (synthetic-cpu) do not set it."""
    records = sorted((ROOT / "results").glob("*/runs/*.json"))
    assert records
    for path in records:
        config = json.loads(path.read_text())["config"]
        if path.parent.parent.name == "synthetic-cpu":
            assert "synthetic_profile" not in config["data"] or config["data"]["synthetic_profile"] is None
        assert config_from_dict(config).identity() == path.stem, path


def test_identity_changes_only_when_set():
    base = load_config([], [])
    assert base.data.synthetic_profile is None
    assert load_config([], ["data.synthetic_profile=null"]).identity() == base.identity() == Config().identity()
    v1 = load_config([], ["data.synthetic_profile=v1"])
    calibrated = load_config([], ["data.synthetic_profile=calibrated"])
    assert len({base.identity(), v1.identity(), calibrated.identity()}) == 3
    assert config_from_dict(calibrated.to_dict()).identity() == calibrated.identity()


def test_unknown_profile_is_a_config_error():
    with pytest.raises(ConfigError, match="data.synthetic_profile must be null or one of v1, calibrated, got 'v2'"):
        load_config([], ["data.synthetic_profile=v2"])


@pytest.fixture(scope="module")
def calibrated_root(tmp_path_factory):
    return generate(tmp_path_factory.mktemp("cal") / "set", train=2, val=1, size=(32, 64), workers=1,
                    profile="calibrated")


def _run(root, run_dir, profile):
    return subprocess.run([sys.executable, "train.py", *TINY, f"data.root={root}", f"run_dir={run_dir}",
                           f"data.synthetic_profile={profile}"], cwd=ROOT, capture_output=True, text=True)


def test_train_refuses_a_set_of_another_profile_in_one_line(calibrated_root, tmp_path):
    run = tmp_path / "run"
    done = _run(calibrated_root, run, "v1")
    assert done.returncode == 1 and "Traceback" not in done.stderr
    last = done.stderr.strip().splitlines()[-1]
    assert last.startswith(f"error: {calibrated_root.resolve()}: data.synthetic_profile=v1 expects")
    assert "found profile 'calibrated'" in last
    assert not run.exists()


def test_train_refuses_a_root_that_is_not_a_synthetic_set(calibrated_root, tmp_path):
    foreign = tmp_path / "real"
    for kind in ("leftImg8bit", "gtFine"):
        (foreign / kind).mkdir(parents=True)
    run = tmp_path / "run"
    match = r"^error: .*real: data.synthetic_profile=calibrated .*found not a synthetic set$"
    with pytest.raises(SystemExit, match=match):
        train.main([*TINY, f"data.root={foreign}", f"run_dir={run}", "data.synthetic_profile=calibrated"])
    assert not run.exists()


def test_empty_marker_of_an_older_set_counts_as_v1(tmp_path):
    from data.synthetic.profile import profile_problem

    root = generate(tmp_path / "old", train=1, val=0, size=(32, 64), workers=1)
    (root / ".synthetic").write_text("")
    assert profile_problem(root, "v1") is None
    assert "found profile 'v1'" in profile_problem(root, "calibrated")


def test_train_runs_on_a_matching_set_and_evaluate_checks_its_root(calibrated_root, tmp_path):
    run = tmp_path / "run"
    metrics = train.main([*TINY, f"data.root={calibrated_root}", f"run_dir={run}",
                          "data.synthetic_profile=calibrated"])  # fmt: skip
    assert (run / "metrics.json").is_file() and metrics
    v1 = generate(tmp_path / "v1", train=1, val=1, size=(32, 64), workers=1)
    with pytest.raises(SystemExit, match=r"^error: .*v1: data.synthetic_profile=calibrated .*found profile 'v1'$"):
        evaluate.main(["--checkpoint", str(run / "checkpoint.pt"), "--root", str(v1), "--device", "cpu"])
    report = evaluate.main(["--checkpoint", str(run / "checkpoint.pt"), "--device", "cpu"])
    assert report["root"] == str(calibrated_root)
