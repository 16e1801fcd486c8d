"""Manifests and the reproduction runner: the paper's rows and weights on both presets, shared runs, shards,
skip, parallel jobs, a manifest added with no code, and a real train.py run killed mid-way and resumed."""

import functools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import yaml

import reproduce
from engine.config import load_config
from experiments import runner
from experiments.layout import Paths
from experiments.manifest import find_manifests, list_manifests
from experiments.plan import plan, runs_of, shard

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


# ----------------------------------------------------------------------------- manifests

MANIFESTS = {m.name: m for m in list_manifests(ROOT / "configs" / "experiments")}


def configs_of(name: str, preset: str) -> dict:
    """{row name: resolved config (seed 0)} of a manifest on a preset."""
    return {r.row.name: r.config for r in runs_of(MANIFESTS[name], preset, (0,))}


@pytest.mark.parametrize("preset", PRESETS)
def test_table1_manifest_is_the_papers_rows(preset):
    configs = configs_of("table1", preset)
    assert sorted(configs) == sorted(TABLE1)
    base = load_config([ROOT / "configs" / f"{preset}.yaml"])
    for name, (tasks, method, weights) in TABLE1.items():
        cfg = configs[name]
        assert cfg.tasks == tasks, name
        assert cfg.method.name == method, name
        if method == "fixed":
            assert cfg.method.selected.weights == weights, name
        # Only tasks and the method change: the model, data and optimiser are the preset's.
        assert (cfg.model, cfg.optim) == (base.model, base.optim), name
        assert cfg.data.size == base.data.size and cfg.data.flip == base.data.flip, name
    assert MANIFESTS["table1"].seeds == (0, 1, 2) and MANIFESTS["table1"].paper == "table1"


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("figure, first, pairs", [("2a", "semantic", FIG2A), ("2b", "instance", FIG2B)])
def test_sweep_manifests_are_the_papers_weight_pairs(preset, figure, first, pairs):
    m = MANIFESTS[f"figure{figure}"]
    found = []
    for name, cfg in configs_of(m.name, preset).items():
        row = next(r for r in m.rows if r.name == name)
        if row.x == "learned":
            assert cfg.method.name == "uncertainty" and cfg.tasks == tuple(t for t in TABLE1[name][0])
            assert cfg.tasks == (first, "depth") and row.seeds == (0, 1, 2)
            continue
        w = cfg.method.selected.weights
        assert cfg.method.name == "fixed", name
        assert cfg.tasks == tuple(t for t in (first, "depth") if w.get(t, 0) > 0), name  # weight 0: task absent
        assert set(w) == set(cfg.tasks), name
        assert sum(w.values()) == pytest.approx(1.0, abs=1e-12), name
        assert row.x == w.get("depth", 0.0) and row.paper == {"where": {f"w_{first}": w.get(first, 0.0),
                                                                        "w_depth": w.get("depth", 0.0)}}
        found.append((w.get(first, 0.0), w.get("depth", 0.0)))
    assert sorted(found) == sorted((float(a), float(b)) for a, b in pairs)


def test_synthetic_cpu_preset_keeps_the_paper_recipe_at_small_scale():
    cfg = load_config([ROOT / "configs" / "synthetic-cpu.yaml"])
    paper = load_config([ROOT / "configs" / "paper_tiny.yaml"])
    assert cfg.tasks == ("semantic", "instance", "depth") and cfg.method.name == "uncertainty"
    assert (cfg.model.backbone, cfg.model.output_stride, cfg.data.size) == ("resnet18", 8, (64, 128))
    assert cfg.optim.batch_size == paper.optim.batch_size == 8 and cfg.optim.iterations == 200
    for key in ("momentum", "nesterov", "weight_decay", "poly_power"):  # the paper's optimiser but the lr
        assert getattr(cfg.optim, key) == getattr(paper.optim, key), key
    text = (ROOT / "configs" / "synthetic-cpu.yaml").read_text()
    assert "Measured" in text and "min" in text  # the timing behind the choice is written down


def test_plan_shares_identical_runs_and_shards_deterministically():
    manifests = [MANIFESTS[n] for n in ("table1", "figure2a", "figure2b")]
    jobs = plan("synthetic-cpu", manifests)
    # 9 rows x 3 seeds + 21 sweep points x 1 seed; the 4 sweep endpoints are single-task rows and the
    # two learned points (3 seeds each) are Table 1's 2-task uncertainty rows.
    assert len(jobs) == 9 * 3 + 21 - 4
    assert len({j.run.identity for j in jobs}) == len(jobs)
    shared = {f"{j.run.row.name} seed {j.run.seed}": sorted(j.names[1:]) for j in jobs if j.aliases}
    assert shared == {
        "depth-only seed 0": ["figure2a/fig2a-semantic0-depth1", "figure2b/fig2b-instance0-depth1"],
        "instance-only seed 0": ["figure2b/fig2b-instance1-depth0"],
        "semantic-only seed 0": ["figure2a/fig2a-semantic1-depth0"],
        **{f"uncertainty-{t}-depth seed {s}": [f"figure2{f}/uncertainty-{t}-depth"]
           for t, f in (("semantic", "a"), ("instance", "b")) for s in (0, 1, 2)}}
    assert len(plan("synthetic-cpu", manifests[1:])) == 21 - 1 + 2 * 3  # depth only is in both sweeps

    shards = [shard(jobs, i, 3) for i in (1, 2, 3)]
    flat = [j.run.identity for s in shards for j in s]
    assert sorted(flat) == sorted(j.run.identity for j in jobs) and len(set(flat)) == len(jobs)
    again = plan("synthetic-cpu", manifests)
    assert [j.run.identity for j in shard(again, 2, 3)] == [j.run.identity for j in shards[1]]
    with pytest.raises(ValueError, match="1 <= i <= n"):
        shard(jobs, 0, 3)

    cmd = jobs[0].command(python="python")
    assert cmd == ["python", "train.py", "--config", "configs/synthetic-cpu.yaml", "tasks=[semantic]",
                   "method.name=fixed", "method.fixed.weights={semantic: 1.0}", "seed=0",
                   f"run_dir=runs/synthetic-cpu/{jobs[0].run.identity}"]
    # The command alone rebuilds the run's config: the same identity without the manifest.
    assert load_config([ROOT / cmd[3]], cmd[4:]).identity() == jobs[0].run.identity


def test_a_bad_row_fails_at_planning_naming_the_manifest_and_row(tmp_path):
    (tmp_path / "experiments").mkdir()
    (tmp_path / "mini.yaml").write_text("optim: {iterations: 1}\n")
    (tmp_path / "experiments" / "t.yaml").write_text(
        "title: T\nseeds: [0]\ncolumns: [depth/mean_error_px]\nrows:\n"
        "  - {name: r, config: {method: {name: fixed, fixed: {weights: {depht: 1}}}}}\n")
    paths = Paths(tmp_path, tmp_path / "runs", tmp_path / "results")
    with pytest.raises(Exception, match=r"t.yaml: row r: .*unknown task"):
        plan("mini", find_manifests(paths.manifests, ["t"]), paths=paths)
    (tmp_path / "experiments" / "u.yaml").write_text("title: U\nseeds: [0]\ncolumns: [depth/rmse]\nrows: []\n")
    with pytest.raises(Exception, match="unknown metric 'depth/rmse'"):
        find_manifests(paths.manifests, ["u"])
    with pytest.raises(Exception, match="no manifest named nope.*available: t, u"):
        find_manifests(paths.manifests, ["nope"])


def test_job_env_splits_cores_or_gpus(monkeypatch):
    monkeypatch.setattr(runner, "cpu_count", lambda: 8)
    env = runner.job_env(1, 3, [])
    assert env["OMP_NUM_THREADS"] == env["MKL_NUM_THREADS"] == "2" and "CUDA_VISIBLE_DEVICES" not in env
    assert runner.job_env(0, 16, [])["OMP_NUM_THREADS"] == "1"
    assert [runner.job_env(s, 3, ["4", "6"])["CUDA_VISIBLE_DEVICES"] for s in range(3)] == ["4", "6", "4"]
    assert runner.job_env(0, 1, [], threads=1)["OMP_NUM_THREADS"] == "1"


def test_per_gpu_packs_n_trainings_onto_each_gpu(monkeypatch):
    monkeypatch.setattr(runner, "cpu_count", lambda: 16)
    gpus = ["3", "5"]
    n = runner.trainings_at_once(None, 2, gpus, 16)
    assert n == 4
    envs = [runner.job_env(slot, n, gpus) for slot in range(n)]
    assert sorted(e["CUDA_VISIBLE_DEVICES"] for e in envs) == ["3", "3", "5", "5"]  # two trainings per GPU
    assert {e["OMP_NUM_THREADS"] for e in envs} == {"4"}  # 16 cores / 4 trainings
    assert runner.trainings_at_once(4, 2, gpus, 16) == 4  # --jobs that agrees is accepted
    assert runner.trainings_at_once(None, None, gpus, 16) == 2 and runner.trainings_at_once(None, None, [], 16) == 16
    assert runner.trainings_at_once(3, None, [], 16) == 3
    for jobs, per_gpu, have, match in [(3, 2, gpus, "disagrees"), (None, 0, gpus, "at least 1"),
                                       (None, 2, [], "no GPU is visible"), (0, None, [], "at least 1")]:
        with pytest.raises(ValueError, match=match):
            runner.trainings_at_once(jobs, per_gpu, have, 16)


# ----------------------------------------------------------------------------- runner, with a fake trainer

FAKE_TRAIN = textwrap.dedent("""
    # Stands in for train.py: same command line and run directory contract, no training. A command that
    # known_commands() already parsed in the test process (with train.py's load_config) is looked up in
    # fake_configs.json beside this script, which spares each launch torch's import; any other command is
    # parsed here, as train.py would.
    import json, os, sys, time
    from pathlib import Path
    known = Path(sys.argv[0]).with_name("fake_configs.json")
    cfg = (json.loads(known.read_text()) if known.exists() else {}).get(json.dumps(sys.argv[1:]))
    if cfg is None:
        sys.path.insert(0, os.getcwd())
        from engine.config import load_config
        files = [sys.argv[i + 1] for i, a in enumerate(sys.argv) if a == "--config"]
        loaded = load_config(files, [a for a in sys.argv[1:] if "=" in a])
        cfg = {"run_dir": str(loaded.resolved_run_dir), "config": loaded.to_dict(), "identity": loaded.identity(),
               "tasks": list(loaded.tasks), "seed": loaded.seed}
    run_dir = Path(cfg["run_dir"])
    run_dir.mkdir(parents=True, exist_ok=True)
    if (run_dir / "metrics.json").exists():
        sys.exit(0)
    with open(run_dir / "launches.txt", "a") as f:
        f.write(f"{os.environ['OMP_NUM_THREADS']}\\n")
    (run_dir / "gpu.txt").write_text(os.environ.get("CUDA_VISIBLE_DEVICES", "none"))
    if os.environ.get("FAKE_FAIL") == ",".join(cfg["tasks"]):
        sys.exit(3)
    time.sleep(0.05)
    (run_dir / "metrics.jsonl").write_text(
        json.dumps({"step": 1, "sigma2/depth": 2.0, "weight/depth": 0.25}) + "\\n"
        + json.dumps({"step": 2, "sigma2/depth": 2.5, "weight/depth": 0.2}) + "\\n")
    metrics = {"semantic": {"semantic/miou": 10.0 + cfg["seed"]},
               "depth": {"depth/mean_error_px": 1.0 + cfg["seed"]}}
    (run_dir / "metrics.json").write_text(json.dumps({
        "step": 2, "iterations": 2, "config": cfg["config"], "identity": cfg["identity"], "command": sys.argv,
        "git_commit": "fake", "metrics": {k: v for t in cfg["tasks"] for k, v in metrics.get(t, {}).items()}}))
""")
SUBSET = {"table1": ["semantic-only", "depth-only", "uncertainty-semantic-depth"],
          "figure2a": ["fig2a-semantic1-depth0", "fig2a-semantic0.5-depth0.5", "fig2a-semantic0-depth1"],
          "figure2b": ["fig2b-instance0-depth1"]}


@pytest.fixture
def fake(tmp_path):
    """A few manifest rows on a tiny preset (Table 1 with seeds 0 and 1), runs and results in tmp_path,
    and the fake trainer."""
    configs = tmp_path / "configs"
    (configs / "experiments").mkdir(parents=True)
    for name, rows in SUBSET.items():
        data = yaml.safe_load((ROOT / "configs" / "experiments" / f"{name}.yaml").read_text())
        data["rows"] = [r for r in data["rows"] if r["name"] in rows]
        if name == "table1":
            data["seeds"] = [0, 1]
        (configs / "experiments" / f"{name}.yaml").write_text(yaml.safe_dump(data))
    (configs / "mini.yaml").write_text("model: {backbone: resnet18}\noptim: {iterations: 1}\n")
    script = tmp_path / "fake_train.py"
    script.write_text(FAKE_TRAIN)
    paths = Paths(configs, tmp_path / "runs", tmp_path / "results")
    known_commands(paths, script)
    return paths, script


def known_commands(paths: Paths, script: Path) -> None:
    """Parse, here and with train.py's load_config, the command of every run the manifests under `paths` plan
    (the fake trainer then need not import torch): each command must load to its run's own identity."""
    known = {}
    for job in plan("mini", list_manifests(paths.manifests), paths=paths):
        args = job.command(python=sys.executable, train_script=script)[2:]
        cfg = load_config([args[i + 1] for i, a in enumerate(args) if a == "--config"], [a for a in args if "=" in a])
        assert cfg.identity() == job.run.identity, args
        known[json.dumps(args)] = {"run_dir": str(cfg.resolved_run_dir), "config": cfg.to_dict(),
                                   "identity": cfg.identity(), "tasks": list(cfg.tasks), "seed": cfg.seed}
    (script.parent / "fake_configs.json").write_text(json.dumps(known))


def launches(paths: Paths) -> dict[str, int]:
    return {p.parent.name: len(p.read_text().split()) for p in sorted(paths.runs.rglob("launches.txt"))}


def go(paths, script, n_parallel=2, shard_of=(1, 1)):
    return runner.reproduce("mini", list_manifests(paths.manifests), None, n_parallel, shard_of, paths=paths,
                            train_script=script)


def test_runner_trains_each_distinct_run_once_and_skips_finished(fake, monkeypatch):
    paths, script = fake
    monkeypatch.setattr(runner, "visible_gpus", lambda: [])
    monkeypatch.setattr(runner, "cpu_count", lambda: 4)
    summary = go(paths, script)
    ids = {(r.row.name, r.seed): r.identity for j in plan("mini", list_manifests(paths.manifests), paths=paths)
           for r in (j.run, *j.aliases)}
    assert ids["fig2a-semantic1-depth0", 0] == ids["semantic-only", 0]  # one run serves both rows
    # 3 rows x 2 seeds, plus the one sweep point that is no Table 1 row; the endpoints are shared.
    names = [("semantic-only", 0), ("semantic-only", 1), ("depth-only", 0), ("depth-only", 1),
             ("uncertainty-semantic-depth", 0), ("uncertainty-semantic-depth", 1), ("fig2a-semantic0.5-depth0.5", 0)]
    ids = {k: ids[k] for k in names}
    assert {j.run.identity for j in summary["trained"]} == set(ids.values())
    assert launches(paths) == {i: 1 for i in ids.values()}  # run directories are named by identity
    assert set((paths.runs / "mini" / ids["depth-only", 0] / "launches.txt").read_text().split()) == {"2"}  # 4/2
    kept = paths.records("mini")
    assert sorted(p.stem for p in kept.glob("*.json")) == sorted(ids.values())
    depth = json.loads((kept / f"{ids['depth-only', 0]}.json").read_text())
    assert depth["metrics"] == {"depth/mean_error_px": 1.0} and depth["git_commit"] == "fake"
    assert depth["seed"] == 0 and depth["preset"] == "mini" and depth["identity"] == ids["depth-only", 0]
    assert depth["curves"] == {"step": [1, 2], "sigma2/depth": [2.0, 2.5], "weight/depth": [0.25, 0.2]}
    assert not any("checkpoint" in p.name or p.suffix == ".pt" for p in kept.iterdir())  # never weights

    # Again: nothing to train. Then a run kept only as a record (its run dir is gone, e.g. trained on another
    # machine) and a run finished but not yet recorded: neither is retrained, the second is recorded.
    summary = go(paths, script)
    assert summary["trained"] == [] and len(summary["skipped"]) == 7
    shutil.rmtree(paths.runs / "mini" / ids["semantic-only", 1])
    (kept / f"{ids['depth-only', 1]}.json").unlink()
    summary = go(paths, script)
    assert summary["trained"] == [] and [j.run.identity for j in summary["exported"]] == [ids["depth-only", 1]]
    assert (kept / f"{ids['depth-only', 1]}.json").exists()
    assert launches(paths) == {i: 1 for k, i in ids.items() if k != ("semantic-only", 1)}

    # The tables: reproduce.py aggregates what the records hold.
    assert reproduce.main(["aggregate", "--preset", "mini", "--configs-dir", str(paths.configs), "--runs-dir",
                           str(paths.runs), "--results-dir", str(paths.results)]) == 0
    t = json.loads((paths.results / "mini" / "table1.json").read_text())
    assert t["results"] == 6 and (paths.results / "mini" / "figure2a.png").exists()


def test_reproduce_per_gpu_runs_n_per_fake_gpu(fake, monkeypatch, capsys):
    paths, script = fake
    monkeypatch.setattr(runner, "visible_gpus", lambda: ["3", "5"])
    monkeypatch.setattr(reproduce, "visible_gpus", lambda: ["3", "5"])
    monkeypatch.setattr(runner, "cpu_count", lambda: 8)
    monkeypatch.setattr(reproduce, "reproduce", functools.partial(runner.reproduce, train_script=script))
    dirs = ["--configs-dir", str(paths.configs), "--runs-dir", str(paths.runs), "--results-dir", str(paths.results)]
    assert reproduce.main(["table1", "--preset", "mini", "--per-gpu", "2", "--seeds", "0", "--skip-overheads",
                           *dirs]) == 0  # one seed: 3 runs (suite time)
    used = [p.read_text() for p in paths.runs.rglob("gpu.txt")]
    assert len(used) == 3 and set(used) == {"3", "5"}
    assert {t for p in paths.runs.rglob("launches.txt") for t in p.read_text().split()} == {"2"}  # 8 cores / 4
    log_path = paths.results / "mini" / "reproduce-log.jsonl"
    log = json.loads(log_path.read_text().splitlines()[-1])
    assert log["jobs"] == 4 and log["per_gpu"] == 2
    before = log_path.read_text()  # an invocation that trains nothing only regenerates tables: no log line,
    assert reproduce.main(["table1", "--preset", "mini", "--per-gpu", "2", "--seeds", "0", "--skip-overheads",
                           *dirs]) == 0  # so regenerating on a fresh clone leaves `git status` clean
    assert log_path.read_text() == before
    monkeypatch.setattr(reproduce, "visible_gpus", lambda: [])
    assert reproduce.main(["table1", "--preset", "mini", "--per-gpu", "2", *dirs]) == 2
    assert "no GPU is visible" in capsys.readouterr().err


def test_runner_reports_failures_and_shards(fake, monkeypatch):
    paths, script = fake
    monkeypatch.setattr(runner, "visible_gpus", lambda: [])
    monkeypatch.setenv("FAKE_FAIL", "depth")
    first = go(paths, script, n_parallel=1, shard_of=(1, 2))
    second = go(paths, script, n_parallel=1, shard_of=(2, 2))
    failed = [(j.run.config.tasks, j.run.seed) for j, _ in first["failed"] + second["failed"]]
    assert sorted(failed) == [(("depth",), 0), (("depth",), 1)]  # depth only: a Table 1 row and sweep endpoints
    assert all("exited with status 3" in why for _, why in first["failed"] + second["failed"])
    done = [(j.run.row.name, j.run.seed) for j in first["trained"] + second["trained"]]
    assert len(done) == len(set(done)) == 5  # the two shards are disjoint and cover the other runs
    assert len(list(paths.records("mini").glob("*.json"))) == 5


def test_a_new_manifest_needs_no_code(fake, monkeypatch, capsys):
    """A new benchmark table: one YAML file, run and aggregated by the same commands."""
    paths, script = fake
    monkeypatch.setattr(runner, "visible_gpus", lambda: [])
    (paths.manifests / "bench.yaml").write_text(textwrap.dedent("""\
        title: Methods on depth + semantics
        seeds: [0]
        columns: [semantic/miou, depth/mean_error_px]
        rows:
          - {name: dwa, config: {tasks: [semantic, depth], method: {name: dwa, dwa: {temperature: 2.0}}}}
          - {name: pcgrad, config: {tasks: [semantic, depth], method: {name: pcgrad}}}
          - {name: sum, config: {tasks: [semantic, depth], method: {name: fixed}}}
    """))
    known_commands(paths, script)
    bench = find_manifests(paths.manifests, ["bench"])
    summary = runner.reproduce("mini", bench, None, 2, paths=paths, train_script=script)
    assert len(summary["trained"]) == 3
    assert reproduce.main(["aggregate", "bench", "--preset", "mini", "--configs-dir", str(paths.configs),
                           "--results-dir", str(paths.results)]) == 0
    md = (paths.results / "mini" / "bench.md").read_text()
    assert "| dwa | dwa | 10.00 | 1.000 | 0 |" in md and "| pcgrad | pcgrad | 10.00 | 1.000 | 0 |" in md
    assert "| sum | fixed 1 / 1 | 10.00 | 1.000 | 0 |" in md
    assert reproduce.main(["list", "--configs-dir", str(paths.configs)]) == 0
    listed = capsys.readouterr().out
    assert "bench" in listed and re.search(r"pcgrad +gradient-space +space='parameters'", listed)


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
    (configs / "experiments").mkdir(parents=True)
    data = yaml.safe_load((ROOT / "configs" / "experiments" / "table1.yaml").read_text())
    data["rows"] = [r for r in data["rows"] if r["name"] == "depth-only"]
    (configs / "experiments" / "depth.yaml").write_text(yaml.safe_dump(data))
    (configs / "tiny.yaml").write_text(TINY_PRESET)
    paths = Paths(configs, tmp_path / "runs", tmp_path / "results")
    job = plan("tiny", find_manifests(paths.manifests, ["depth"]), (0,), paths)[0]
    run_dir = tmp_path / "runs" / "tiny" / job.run.identity
    # One thread: two-thread torch crawls when another process holds the second core.
    args = ["depth", "--preset", "tiny", "--seeds", "0", "--jobs", "1", "--threads", "1",
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

    kept = json.loads((paths.records("tiny") / f"{job.run.identity}.json").read_text())
    assert kept["metrics"] == final["metrics"] and kept["identity"] == final["identity"] == job.run.identity
    assert yaml.safe_load((run_dir / "config.yaml").read_text())["seed"] == 0
    table = json.loads((tmp_path / "results" / "tiny" / "depth.json").read_text())
    assert table["rows"][0]["ours"]["depth/mean_error_px"]["values"] == [final["metrics"]["depth/mean_error_px"]]

    again = runner.reproduce("tiny", find_manifests(paths.manifests, ["depth"]), (0,), paths=paths,
                             data_root=str(synthetic_root))
    assert (len(again["skipped"]), again["trained"], again["failed"]) == (1, [], [])
    assert (run_dir / "train.log").read_text().count("launch: ") == 2  # not launched again
