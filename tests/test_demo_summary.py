"""experiments.demo_summary: the README's demo sentence comes from a record of a finished demo run."""

import json

from engine.config import load_config
from experiments import demo_summary
from infra.provenance import ROOT


def _finished_run(run, miou=20.59):
    cfg = load_config([ROOT / "configs" / "demo.yaml"])
    run.mkdir(parents=True)
    (run / "metrics.json").write_text(json.dumps({
        "metrics": {"semantic/miou": miou, "instance/mean_error_px": 7.25, "depth/mean_error_px": 3.5},
        "config": cfg.to_dict(), "command": ["python", "train.py", "--config", "configs/demo.yaml"],
        "git_commit": "0123456789abcdef-dirty", "wall_time_s": 150.0}))
    return cfg


def test_the_demo_sentence_is_written_from_the_run(tmp_path):
    cfg = _finished_run(tmp_path / "demo")
    out = tmp_path / "results"
    assert demo_summary.main(["--run", str(tmp_path / "demo"), "--out", str(out)]) == 0
    record = json.loads((out / "demo.json").read_text())
    assert record["metrics"]["semantic/miou"] == 20.59 and record["seed"] == cfg.seed
    text = (out / "demo.md").read_text()
    assert "semantic mIoU 20.6 %" in text and f"trained {cfg.optim.iterations} iterations" in text
    assert "git commit 0123456789ab-dirty" in text and "about 5 %" in text and record["wall_time_s"] == 150.0


def test_without_a_finished_run_it_says_so_and_writes_nothing(tmp_path, capsys):
    out = tmp_path / "results"
    assert demo_summary.main(["--run", str(tmp_path / "nothing"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no finished run" in err and "make demo" in err
    assert not out.exists()
