"""Experiment files and the reproduction runner: paper weights on both presets, shared runs, shards, skip,
parallel jobs, and a real train.py run killed mid-way and resumed."""

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml
from config import load_config

import reproduce
from reproduce import Paths

ROOT = Path(__file__).resolve().parents[1]
PRESETS = ("paper_tiny", "synthetic-cpu")

# Table 1 of the paper, typed in by hand: tasks, weighting, fixed weights.
TABLE1 = {
    "semantic-only": (("semantic",), "fixed", {"semantic": 1.0}),
    "instance-only": (("instance",), "fixed", {"instance": 1.0}),
    "depth-only": (("depth",), "fixed", {"depth": 1.0}),
    "unweighted-sum": (("semantic", "instance", "depth"), "fixed",
                       {"semantic": 1 / 3, "instance": 1 / 3, "depth": 1 / 3}),
    "approx-optimal": (("semantic", "instance", "depth"), "fixed", {"semantic": 0.89, "instance": 0.01, "depth": 0.1}),
    "uncertainty-semantic-instance": (("semantic", "instance"), "uncertainty", {}),
    "uncertainty-semantic-depth": (("semantic", "depth"), "uncertainty", {}),
    "uncertainty-instance-depth": (("instance", "depth"), "uncertainty", {}),
    "uncertainty-3task": (("semantic", "instance", "depth"), "uncertainty", {}),
}
# Figure 2 of the paper: (first task weight, depth weight) pairs.
FIG2A = [(1, 0), (0.975, 0.025), (0.95, 0.05), (0.9, 0.1), (0.85, 0.15), (0.8, 0.2), (0.7, 0.3), (0.5, 0.5),
         (0.2, 0.8), (0.1, 0.9), (0, 1)]
FIG2B = [(1, 0), (0.75, 0.25), (0.5, 0.5), (0.4, 0.6), (0.3, 0.7), (0.2, 0.8), (0.1, 0.9), (0.05, 0.95),
         (0.025, 0.975), (0, 1)]


# ----------------------------------------------------------------------------- experiment files

@pytest.mark.parametrize("preset", PRESETS)
def test_table1_files_are_the_papers_rows(preset):
    names = sorted(p.stem for p in (ROOT / "configs" / "table1").glob("*.yaml"))
    assert names == sorted(TABLE1)
    base = load_config([ROOT / "configs" / f"{preset}.yaml"])
    for name, (tasks, method, weights) in TABLE1.items():
        cfg = load_config([ROOT / "configs" / f"{preset}.yaml", ROOT / "configs" / "table1" / f"{name}.yaml"])
        assert cfg.tasks == tasks, name
        assert cfg.weighting.name == method, name
        assert cfg.weighting.weights == weights, name
        # Only tasks and weighting change: the model, data and optimiser are the preset's.
        assert (cfg.model, cfg.data, cfg.optim) == (base.model, base.data, base.optim), name


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("figure, first, pairs", [("2a", "semantic", FIG2A), ("2b", "instance", FIG2B)])
def test_sweep_files_are_the_papers_weight_pairs(preset, figure, first, pairs):
    files = sorted((ROOT / "configs" / "sweep").glob(f"fig{figure}-*.yaml"))
    assert len(files) == len(pairs)
    found = []
    for f in files:
        cfg = load_config([ROOT / "configs" / f"{preset}.yaml", f])
        w = cfg.weighting.weights
        assert cfg.weighting.name == "fixed", f
        assert cfg.tasks == tuple(t for t in (first, "depth") if w.get(t, 0) > 0), f  # weight 0: task absent
        assert set(w) == set(cfg.tasks), f
        assert sum(w.values()) == pytest.approx(1.0, abs=1e-12), f
        found.append((w.get(first, 0.0), w.get("depth", 0.0)))
    assert sorted(found) == sorted((float(a), float(b)) for a, b in pairs)


def test_synthetic_cpu_preset_keeps_the_paper_recipe_at_small_scale():
    cfg = load_config([ROOT / "configs" / "synthetic-cpu.yaml"])
    paper = load_config([ROOT / "configs" / "paper_tiny.yaml"])
    assert cfg.tasks == ("semantic", "instance", "depth") and cfg.weighting.name == "uncertainty"
    assert (cfg.model.backbone, cfg.model.output_stride, cfg.data.size) == ("resnet18", 8, (64, 128))
    assert cfg.optim.batch_size == paper.optim.batch_size == 8 and cfg.optim.iterations == 200
    for key in ("momentum", "nesterov", "weight_decay", "poly_power"):  # the paper's optimiser but the lr
        assert getattr(cfg.optim, key) == getattr(paper.optim, key), key
    text = (ROOT / "configs" / "synthetic-cpu.yaml").read_text()
    assert "Measured" in text and "min" in text  # the timing behind the choice is written down


def test_plan_shares_identical_runs_and_shards_deterministically():
    seeds = reproduce.DEFAULT_SEEDS
    jobs = reproduce.plan("synthetic-cpu", reproduce.PARTS, seeds)
    # 9 rows x 3 seeds + 21 sweep points x 1 seed, minus the 4 sweep endpoints that are single-task rows.
    assert len(jobs) == 9 * 3 + 21 - 4
    assert len({j.run.config_hash for j in jobs}) == len(jobs)
    shared = {j.run.experiment.name: sorted(j.names[1:]) for j in jobs if j.aliases}
    assert shared == {"depth-only": ["fig2a-semantic0-depth1", "fig2b-instance0-depth1"],
                      "instance-only": ["fig2b-instance1-depth0"], "semantic-only": ["fig2a-semantic1-depth0"]}
    assert all(j.run.seed == 0 for j in jobs if j.aliases)
    assert len(reproduce.plan("synthetic-cpu", ("sweep",), seeds)) == 20  # depth only is in both sweeps

    shards = [reproduce.shard(jobs, i, 3) for i in (1, 2, 3)]
    flat = [j.run.config_hash for s in shards for j in s]
    assert sorted(flat) == sorted(j.run.config_hash for j in jobs) and len(set(flat)) == len(jobs)
    again = reproduce.plan("synthetic-cpu", reproduce.PARTS, seeds)
    assert [j.run.config_hash for j in reproduce.shard(again, 2, 3)] == [j.run.config_hash for j in shards[1]]
    with pytest.raises(ValueError, match="1 <= i <= n"):
        reproduce.shard(jobs, 0, 3)

    cmd = jobs[0].command(python="python")
    assert cmd[:6] == ["python", "train.py", "--config", "configs/synthetic-cpu.yaml", "--config",
                       f"configs/{jobs[0].run.experiment.part}/{jobs[0].run.experiment.name}.yaml"]
    assert cmd[6:] == [f"seed={jobs[0].run.seed}",
                       f"run_dir=runs/synthetic-cpu/{jobs[0].run.experiment.name}/seed{jobs[0].run.seed}"]


def test_job_env_splits_cores_or_gpus(monkeypatch):
    monkeypatch.setattr(reproduce, "cpu_count", lambda: 8)
    env = reproduce.job_env(1, 3, [])
    assert env["OMP_NUM_THREADS"] == env["MKL_NUM_THREADS"] == "2" and "CUDA_VISIBLE_DEVICES" not in env
    assert reproduce.job_env(0, 16, [])["OMP_NUM_THREADS"] == "1"
    assert [reproduce.job_env(s, 3, ["4", "6"])["CUDA_VISIBLE_DEVICES"] for s in range(3)] == ["4", "6", "4"]
    assert reproduce.job_env(0, 1, [], threads=1)["OMP_NUM_THREADS"] == "1"


# ----------------------------------------------------------------------------- runner, with a fake trainer

FAKE_TRAIN = textwrap.dedent("""
    # Stands in for train.py: same command line and run directory contract, no training.
    import json, os, sys, time
    from pathlib import Path
    sys.path.insert(0, os.getcwd())
    from config import load_config
    files = [sys.argv[i + 1] for i, a in enumerate(sys.argv) if a == "--config"]
    overrides = [a for a in sys.argv[1:] if "=" in a]
    cfg = load_config(files, overrides)
    run_dir = cfg.resolved_run_dir
    run_dir.mkdir(parents=True, exist_ok=True)
    if (run_dir / "metrics.json").exists():
        sys.exit(0)
    with open(run_dir / "launches.txt", "a") as f:
        f.write(f"{os.environ['OMP_NUM_THREADS']}\\n")
    if os.environ.get("FAKE_FAIL") == run_dir.parent.name:
        sys.exit(3)
    time.sleep(0.05)
    (run_dir / "metrics.jsonl").write_text(
        json.dumps({"step": 1, "sigma2/depth": 2.0, "weight/depth": 0.25}) + "\\n")
    metrics = {"semantic": {"semantic/miou": 10.0 + cfg.seed}, "depth": {"depth/mean_error_px": 1.0 + cfg.seed}}
    (run_dir / "metrics.json").write_text(json.dumps({
        "step": 1, "iterations": 1, "config": cfg.to_dict(), "config_hash": cfg.hash(), "command": sys.argv,
        "git_commit": "fake", "metrics": {k: v for t in cfg.tasks for k, v in metrics.get(t, {}).items()}}))
""")
SUBSET = {"table1": ["semantic-only", "depth-only", "uncertainty-semantic-depth"],
          "sweep": ["fig2a-semantic1-depth0", "fig2a-semantic0.5-depth0.5", "fig2a-semantic0-depth1",
                    "fig2b-instance0-depth1"]}
SEEDS = {"table1": (0, 1), "sweep": (0,)}


@pytest.fixture
def fake(tmp_path):
    """A few experiment files on a tiny preset, runs and results in tmp_path, and the fake trainer."""
    configs = tmp_path / "configs"
    for part, names in SUBSET.items():
        (configs / part).mkdir(parents=True)
        for n in names:
            shutil.copy(ROOT / "configs" / part / f"{n}.yaml", configs / part)
    (configs / "mini.yaml").write_text("model: {backbone: resnet18}\noptim: {iterations: 1}\n")
    script = tmp_path / "fake_train.py"
    script.write_text(FAKE_TRAIN)
    return Paths(configs, tmp_path / "runs", tmp_path / "results"), script


def launches(paths: Paths) -> dict[str, int]:
    return {p.parent.parent.name + "/" + p.parent.name: len(p.read_text().split())
            for p in sorted(paths.runs.rglob("launches.txt"))}


def go(paths, script, n_parallel=2, shard_of=(1, 1)):
    return reproduce.reproduce("mini", reproduce.PARTS, SEEDS, n_parallel, shard_of, paths=paths,
                               train_script=script)


def test_runner_trains_each_distinct_run_once_and_skips_finished(fake, monkeypatch):
    paths, script = fake
    monkeypatch.setattr(reproduce, "visible_gpus", lambda: [])
    monkeypatch.setattr(reproduce, "cpu_count", lambda: 4)
    summary = go(paths, script)
    trained = {f"{j.run.experiment.name}/seed{j.run.seed}" for j in summary["trained"]}
    # 3 rows x 2 seeds, plus the one sweep point that is no Table 1 row; the endpoints are shared.
    assert trained == {"semantic-only/seed0", "semantic-only/seed1", "depth-only/seed0", "depth-only/seed1",
                       "uncertainty-semantic-depth/seed0", "uncertainty-semantic-depth/seed1",
                       "fig2a-semantic0.5-depth0.5/seed0"}
    assert launches(paths) == {name: 1 for name in trained}
    assert set((paths.runs / "mini" / "depth-only" / "seed0" / "launches.txt").read_text().split()) == {"2"}  # 4/2
    kept = paths.results / "mini" / "runs"
    names = sorted(p.name for p in kept.glob("*.json"))
    assert names == sorted([f"{n}.json".replace("/", "-") for n in trained] + [
        "fig2a-semantic1-depth0-seed0.json", "fig2a-semantic0-depth1-seed0.json", "fig2b-instance0-depth1-seed0.json"])
    endpoint = json.loads((kept / "fig2a-semantic0-depth1-seed0.json").read_text())
    depth = json.loads((kept / "depth-only-seed0.json").read_text())
    assert endpoint["config_hash"] == depth["config_hash"] and endpoint["experiment"] == "fig2a-semantic0-depth1"
    assert endpoint["run_dir"].endswith("runs/mini/depth-only/seed0")
    assert depth["metrics"] == {"depth/mean_error_px": 1.0} and depth["git_commit"] == "fake"
    assert depth["curves"] == {"step": [1], "sigma2/depth": [2.0], "weight/depth": [0.25]}
    assert not any("checkpoint" in p.name or p.suffix == ".pt" for p in kept.iterdir())  # never weights

    # Again: nothing to train. Then a run kept only as a result (its run dir is gone, e.g. trained on another
    # machine) and a run finished but not yet exported: neither is retrained, the second is exported.
    summary = go(paths, script)
    assert summary["trained"] == [] and len(summary["skipped"]) == 7
    shutil.rmtree(paths.runs / "mini" / "semantic-only" / "seed1")
    (kept / "depth-only-seed1.json").unlink()
    summary = go(paths, script)
    assert summary["trained"] == [] and [j.run.experiment.name for j in summary["exported"]] == ["depth-only"]
    assert (kept / "depth-only-seed1.json").exists()
    assert launches(paths) == {name: 1 for name in trained if name != "semantic-only/seed1"}


def test_runner_reports_failures_and_shards(fake, monkeypatch):
    paths, script = fake
    monkeypatch.setattr(reproduce, "visible_gpus", lambda: [])
    monkeypatch.setenv("FAKE_FAIL", "depth-only")
    first = go(paths, script, n_parallel=1, shard_of=(1, 2))
    second = go(paths, script, n_parallel=1, shard_of=(2, 2))
    failed = [(j.run.experiment.name, j.run.seed) for j, _ in first["failed"] + second["failed"]]
    assert sorted(failed) == [("depth-only", 0), ("depth-only", 1)]
    assert all("exited with status 3" in why for _, why in first["failed"] + second["failed"])
    done = [f"{j.run.experiment.name}{j.run.seed}" for j in first["trained"] + second["trained"]]
    assert len(done) == len(set(done)) == 5  # the two shards are disjoint and cover the other runs
    assert not (paths.results / "mini" / "runs" / "depth-only-seed0.json").exists()


# ----------------------------------------------------------------------------- runner, with the real train.py

TINY_PRESET = """\
model: {backbone: resnet18, aspp_channels: 8, head_channels: 8}
data: {size: [32, 64], num_workers: 0, train_frames: 4, val_frames: 2}
optim: {iterations: 6, batch_size: 2}
log_every: 1
ckpt_every: 3
eval_batch_size: 2
"""
ITERATIONS = 6


def test_killed_run_resumes_and_finished_runs_are_not_retrained(synthetic_root, tmp_path, capsys):
    configs = tmp_path / "configs"
    (configs / "table1").mkdir(parents=True)
    (configs / "sweep").mkdir()
    shutil.copy(ROOT / "configs" / "table1" / "depth-only.yaml", configs / "table1")
    (configs / "tiny.yaml").write_text(TINY_PRESET)
    run_dir = tmp_path / "runs" / "tiny" / "depth-only" / "seed0"
    # One thread: two-thread torch crawls when another process holds the second core.
    args = ["table1", "--preset", "tiny", "--seeds", "0", "--jobs", "1", "--threads", "1",
            "--data-root", str(synthetic_root),
            "--configs-dir", str(configs), "--runs-dir", str(tmp_path / "runs"),
            "--results-dir", str(tmp_path / "results")]
    env = dict(os.environ, NO_ALBUMENTATIONS_UPDATE="1", WANDB_MODE="disabled")

    # First attempt in a subprocess with its own process group, killed (SIGKILL, train.py included) as soon
    # as the first checkpoint is on disk.
    proc = subprocess.Popen([sys.executable, str(ROOT / "reproduce.py"), *args], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    deadline = time.time() + 60
    while not (run_dir / "checkpoint.pt").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    assert (run_dir / "checkpoint.pt").exists() and not (run_dir / "metrics.json").exists(), "not killed mid-run"

    assert reproduce.main(args) == 0
    out = capsys.readouterr().out
    assert "0 to train, 1 to resume" in out and "trained 1, skipped 0, failed 0" in out
    log = (run_dir / "train.log").read_text()
    assert log.count("launch: ") == 2
    resumed_at = int(log.split("resuming ")[1].split("from step ")[1].split()[0])
    assert 3 <= resumed_at <= ITERATIONS  # a checkpoint (every 3 steps), not a fresh start
    final = json.loads((run_dir / "metrics.json").read_text())
    assert final["step"] == ITERATIONS and "depth/mean_error_px" in final["metrics"]
    steps = [json.loads(ln)["step"] for ln in (run_dir / "metrics.jsonl").read_text().splitlines()]
    assert steps[:-1] == list(range(1, ITERATIONS + 1))  # one line per step, none twice, then validation

    kept = json.loads((tmp_path / "results" / "tiny" / "runs" / "depth-only-seed0.json").read_text())
    assert kept["metrics"] == final["metrics"] and kept["config_hash"] == final["config_hash"]
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["seed"] == 0
    table = json.loads((tmp_path / "results" / "tiny" / "table1.json").read_text())
    assert table["rows"][0]["ours"]["depth_mean_error_px"]["values"] == [final["metrics"]["depth/mean_error_px"]]

    paths = Paths(configs, tmp_path / "runs", tmp_path / "results")
    again = reproduce.reproduce("tiny", ("table1",), {"table1": (0,)}, paths=paths, data_root=str(synthetic_root))
    assert (len(again["skipped"]), again["trained"], again["failed"]) == (1, [], [])
    assert (run_dir / "train.log").read_text().count("launch: ") == 2  # not launched again
