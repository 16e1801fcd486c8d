"""Sweeps without YAML (--set, --grid), `reproduce.py plan`, the question before many trainings, training
curves per run and row, progress bars, metrics.csv / TensorBoard, and the benchmark figure's layout."""

import json
import math
import sys
import textwrap
import types

import pytest
import torch
import yaml
from matplotlib.backends.backend_agg import FigureCanvasAgg

import reproduce
from engine.config import ConfigError, load_config
from engine.scalarlogs import ScalarLogs
from evaluation.loop import evaluate_model
from experiments import curves, estimate, runner
from experiments.layout import Paths
from experiments.manifest import find_manifests
from experiments.plan import plan
from experiments.plots import delta_m_figure
from experiments.sweep import parse_grid, parse_set, split_values, sweep_manifests
from tests.test_reproduce import FAKE_TRAIN, ROOT

TINY = "model: {backbone: resnet18, aspp_channels: 8, head_channels: 8}\n" \
       "data: {size: [32, 64]}\noptim: {iterations: 4, batch_size: 2, lr: 0.01}\n"
ONE = textwrap.dedent("""\
    title: One row
    seeds: [0, 1]
    columns: [semantic/miou, depth/mean_error_px]
    rows:
      - {name: both, config: {tasks: [semantic, depth], method: {name: uncertainty}}}
""")
ROWS = textwrap.dedent("""\
    title: Small
    seeds: [0, 1]
    columns: [semantic/miou, depth/mean_error_px]
    rows:
      - {name: sem, config: {tasks: [semantic], method: {name: fixed, fixed: {weights: {semantic: 1.0}}}}}
      - {name: both, config: {tasks: [semantic, depth], method: {name: uncertainty}},
         presets: {tiny: {optim: {iterations: 3}}}}
""")


@pytest.fixture
def setup(tmp_path, monkeypatch):
    configs = tmp_path / "configs"
    (configs / "experiments").mkdir(parents=True)
    (configs / "tiny.yaml").write_text(TINY)
    (configs / "experiments" / "small.yaml").write_text(ROWS)
    (configs / "experiments" / "one.yaml").write_text(ONE)
    script = tmp_path / "fake_train.py"
    script.write_text(FAKE_TRAIN)
    monkeypatch.setattr(runner, "visible_gpus", lambda: [])
    monkeypatch.setattr(reproduce, "visible_gpus", lambda: [])
    monkeypatch.setattr(runner, "cpu_count", lambda: 2)
    original = runner.reproduce
    monkeypatch.setattr(reproduce, "reproduce", lambda *a, **k: original(*a, train_script=script, **k))
    paths = Paths(configs, tmp_path / "runs", tmp_path / "results")
    dirs = ["--configs-dir", str(configs), "--runs-dir", str(paths.runs), "--results-dir", str(paths.results)]
    return paths, dirs


def runs(paths, sets=(), grids=(), seeds=None):
    ms = sweep_manifests(find_manifests(paths.manifests, ["small"]), "tiny", sets, grids)
    return ms, [r for j in plan("tiny", ms, seeds, paths) for r in (j.run, *j.aliases)]


# ----------------------------------------------------------------------------- --set and --grid

def test_set_applies_to_every_row_after_its_own_overrides(setup):
    paths, _ = setup
    _, base = runs(paths)
    ms, swept = runs(paths, [parse_set("optim.lr=0.05"), parse_set("optim.iterations=7")])
    assert [r.row.name for r in swept] == [r.row.name for r in base]  # rows kept, names kept
    assert all(r.config.optim.lr == 0.05 and r.config.optim.iterations == 7 for r in swept)  # beats presets:
    assert {r.identity for r in swept}.isdisjoint({r.identity for r in base})
    assert ms[0].name.startswith("small--") and "--set optim.lr=0.05" in ms[0].title
    _, again = runs(paths, [parse_set("optim.lr=0.05"), parse_set("optim.iterations=7")])
    assert [r.identity for r in again] == [r.identity for r in swept]  # stable: reruns reuse them


def test_grid_multiplies_rows_and_a_point_equal_to_the_base_is_the_same_run(setup):
    paths, _ = setup
    _, base = runs(paths, seeds=(0,))
    grids = [parse_grid("method.name=uncertainty,dwa"), parse_grid("optim.lr=0.01,0.02")]
    ms, swept = runs(paths, grids=grids, seeds=(0,))
    names = [r.name for r in ms[0].rows]
    assert len(names) == 2 * 2 * 2 and "both.method.name-dwa.optim.lr-0.02" in names
    cfg = {r.row.name: r.config for r in swept}
    assert cfg["sem.method.name-dwa.optim.lr-0.02"].method.name == "dwa"
    assert cfg["sem.method.name-dwa.optim.lr-0.02"].optim.lr == 0.02
    # lr 0.01 is the preset's: the uncertainty point of row `both` is the manifest's own run
    same = {r.identity for r in base if r.row.name == "both"}
    assert {r.identity for r in swept if r.row.name == "both.method.name-uncertainty.optim.lr-0.01"} == same


def test_bad_set_and_grid_flags_are_one_line_errors(setup, capsys):
    paths, dirs = setup
    assert split_values("a,[b,c],{d: 1, e: 2}") == ["a", "[b,c]", "{d: 1, e: 2}"]
    for text in ("optim.lr", "=1", "optim lr=1"):
        with pytest.raises(Exception, match="--set"):
            parse_set(text)
    for text in ("optim.lr=", "optim.lr=1,,2", "optim.lr=1,1"):
        with pytest.raises(Exception, match="--grid"):
            parse_grid(text)
    with pytest.raises(ConfigError, match="both --set and --grid"):
        runs(paths, [parse_set("optim.lr=1")], [parse_grid("optim.lr=1,2")])
    assert reproduce.main(["plan", "small", "--preset", "tiny", "--set", "optim.nope=1", *dirs]) == 2
    assert "row sem" in capsys.readouterr().err


def test_a_grid_trains_once_writes_its_own_table_and_reruns_reuse_its_runs(setup, capsys):
    paths, dirs = setup
    args = ["one", "--preset", "tiny", "--seeds", "0", "--grid", "optim.lr=0.02,0.03", "--skip-overheads", *dirs]
    assert reproduce.main(args) == 0
    assert "trained 2, skipped 0" in capsys.readouterr().out
    tables = sorted(p.name for p in (paths.results / "tiny").glob("one*.md"))
    assert len(tables) == 1 and tables[0].startswith("one--")  # never the manifest's own table
    table = json.loads((paths.results / "tiny" / tables[0].replace(".md", ".json")).read_text())
    assert table["results"] == 2 and "--grid optim.lr=0.02,0.03" in table["title"]
    assert reproduce.main(args) == 0
    assert "trained 0, skipped 2" in capsys.readouterr().out


def test_the_2_task_protocols_are_priced_on_their_own_schedule(tmp_path, monkeypatch):
    """cityscapes2-mtan / -hps runs were priced as paper_tiny runs (50,000 iterations of batch 8 of a ResNet-101);
    they take their own schedule, and without a GPU measurement an estimate from their step's FLOPs that says so."""
    tiny = estimate.gflop_per_image(load_config([ROOT / "configs" / "paper_tiny.yaml"], ["model.pretrained=none"]))
    demo = estimate.gflop_per_image(load_config([ROOT / "configs" / "demo.yaml"]))
    assert demo == pytest.approx(10.1, abs=0.05)  # docs/speed.md: the demo model costs 10.1 GFLOP per image
    for preset, (iterations, batch) in {"cityscapes2-mtan": (74400, 8), "cityscapes2-hps": (9200, 64),
                                        "cityscapes2-cpu": (74400, 8)}.items():
        scale = estimate.paper_preset(preset)
        ours = estimate.gflop_per_image(load_config([ROOT / "configs" / f"{scale}.yaml"], ["model.pretrained=none"]))
        images_per_s, how = estimate.estimated_throughput(scale)  # without a GPU measurement
        assert images_per_s == pytest.approx(estimate.ASSUMED_GPU["paper_tiny"][0] * tiny / ours)
        assert "estimated, not measured" in how
        hours, how = estimate.gpu_hours(10, preset)  # the repository's results/perf: measured where it has a file
        measured = (ROOT / "results" / "perf" / f"gpu-{scale}.json").exists()
        images_per_s = estimate.gpu_throughput(scale)[0] if measured else images_per_s
        assert hours == pytest.approx(10 * iterations * batch / images_per_s / 3600)
        assert f"x {iterations:,} iterations x batch {batch} ({scale})" in how
        assert (f"measured: results/perf/gpu-{scale}.json" if measured else "estimated, not measured") in how
    # a measurement replaces the estimate
    perf = tmp_path / "results" / "perf"
    perf.mkdir(parents=True)
    (perf / "gpu-cityscapes2-hps.json").write_text(json.dumps({"device": "cuda (NVIDIA H200)",
                                                               "variants": {"config": {"images_per_s": 400.0}}}))
    assert estimate.gpu_throughput("cityscapes2-hps", Paths(tmp_path / "configs", tmp_path / "runs",
                                                            tmp_path / "results"))[0] == 400.0


# ----------------------------------------------------------------------------- plan and the question

def test_after_one_training_plan_aggregate_and_curves(setup, capsys):
    """One fake training of row `both`, seed 0 (manifest seeds 0, 1), then plan, aggregate and curves."""
    paths, dirs = setup
    assert reproduce.main(["one", "--preset", "tiny", "--seeds", "0", "--skip-overheads", *dirs]) == 0
    capsys.readouterr()
    # plan: the grid point at the preset's lr (0.01) of seed 0 is the run just trained: reused
    assert reproduce.main(["plan", "one", "--preset", "tiny", "--grid", "optim.lr=0.01,0.02", "--measure-steps",
                           "1", *dirs]) == 0
    out = capsys.readouterr().out
    assert "4 runs: 3 to start (3 new, 0 to resume), 1 to reuse (1 with a record" in out
    assert out.count("  new ") == 3 and out.count("  done ") == 1
    tiny = load_config([ROOT / "configs" / "paper_tiny.yaml"])
    images_per_s, source = estimate.gpu_throughput("paper_tiny")  # measured (results/perf) or the assumption
    hours = 3 * tiny.optim.iterations * tiny.optim.batch_size / images_per_s / 3600
    assert f"paper scale: {hours:.1f} GPU-hours" in out and f"({source})" in out  # where the figure comes from
    assert "s/step" in out and "wall time here: about" in out and "MiB of checkpoints" in out

    # aggregate without --seeds: the manifest's seeds (0 and 1), so seed 1 is reported missing
    assert reproduce.main(["aggregate", "one", "--preset", "tiny", *dirs]) == 0
    rows = json.loads((paths.results / "tiny" / "one.json").read_text())["rows"]
    assert [(r["seeds"], r["missing_seeds"]) for r in rows] == [([0], [1])]

    # curves: one figure per run and one per row
    for run_dir in (paths.runs / "tiny").iterdir():
        if run_dir.is_dir():
            write_log(run_dir / "metrics.jsonl", 0)
    capsys.readouterr()
    assert reproduce.main(["curves", "one", "--preset", "tiny", *dirs]) == 0
    written = capsys.readouterr().out.split()
    assert sum("/curves/runs/" in w for w in written) == 1
    assert [w.rsplit("/", 1)[1] for w in written if "/curves/one/" in w] == ["both.png"]


def test_many_trainings_are_asked_for_first(setup, capsys, monkeypatch):
    paths, dirs = setup
    monkeypatch.setattr(estimate, "CONFIRM_ABOVE", 3)
    monkeypatch.setattr(sys.stdin, "isatty", lambda: False, raising=False)
    assert reproduce.main(["small", "--preset", "tiny", "--skip-overheads", *dirs]) == 2
    captured = capsys.readouterr()
    assert "4 trainings to start" in captured.out and "GPU-hours" in captured.out and "--yes" in captured.err
    assert not paths.runs.exists() or not any(paths.runs.rglob("metrics.json"))  # nothing started
    ms = find_manifests(paths.manifests, ["small"])
    jobs = plan("tiny", ms, None, paths)
    with pytest.raises(ValueError, match="not started"):
        estimate.confirm_start("tiny", jobs, {}, False, ask=lambda _: "n", interactive=True, paths=paths)
    estimate.confirm_start("tiny", jobs, {}, False, ask=lambda _: "y", interactive=True, paths=paths)
    estimate.confirm_start("tiny", jobs, {}, True, ask=lambda _: pytest.fail("asked"), paths=paths)


# ----------------------------------------------------------------------------- curves

def write_log(path, seed):
    lines = [{"step": s, "loss/semantic": 3.0 - 0.1 * s + seed, "loss/total": 4.0 - 0.1 * s} for s in (2, 4, 6)]
    lines += [{"step": 6, "val/semantic/miou": 10.0 + seed, "val/semantic/iou/road": None}]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(x) + "\n" for x in lines) + '{"step": 8, "loss/sem')  # cut short


def test_mean_and_band_over_seeds_and_figures(tmp_path):
    for seed in (0, 1):
        write_log(tmp_path / f"r{seed}" / "metrics.jsonl", seed)
    logs = {f"seed {s}": curves.read_log(tmp_path / f"r{s}" / "metrics.jsonl") for s in (0, 1)}
    assert math.isnan(logs["seed 0"]["val/semantic/iou/road"][6])  # null: a gap, no error
    steps, mean, sd = curves.mean_band([logs["seed 0"]["loss/semantic"], logs["seed 1"]["loss/semantic"]])
    assert steps == [2, 4, 6] and mean == pytest.approx([3.3, 3.1, 2.9]) and sd == pytest.approx([0.7071] * 3, 1e-3)
    out = curves.plot_curves(logs, tmp_path / "row.png", "row", band=True)
    assert out.stat().st_size > 10_000
    assert curves.main([str(tmp_path / "r0"), "--out", str(tmp_path / "run.png")]) == 0
    (tmp_path / "bad.jsonl").write_text('{"step": 1}\nnot json\n{"step": 2}\n')
    assert curves.main([str(tmp_path / "bad.jsonl")]) == 1


# ----------------------------------------------------------------------------- progress and logs

def test_evaluation_and_the_runner_show_progress(setup, capsys, monkeypatch):
    class Depth(torch.nn.Module):
        def forward(self, image):
            return {"depth": torch.zeros(image.shape[0], 1, *image.shape[2:])}

    batch = {"image": torch.zeros(2, 3, 4, 4), "depth": torch.ones(2, 1, 4, 4),
             "depth_mask": torch.ones(2, 4, 4, dtype=torch.bool)}
    metrics = evaluate_model(Depth(), [batch, batch], "cpu", progress=True)
    assert metrics["depth/mean_error_px"] == 1.0
    err = capsys.readouterr().err
    assert "evaluate: 100%" in err and "2/2" in err
    evaluate_model(Depth(), [batch], "cpu")
    assert capsys.readouterr().err == ""  # training's validation passes no progress=True: no bar

    class Shown(runner.tqdm):
        def __init__(self, *a, **k):
            super().__init__(*a, **(k | {"disable": False}))

    monkeypatch.setattr(runner, "tqdm", Shown)
    paths, dirs = setup
    assert reproduce.main(["one", "--preset", "tiny", "--seeds", "0", "--skip-overheads", *dirs]) == 0
    err = capsys.readouterr().err
    assert "tiny runs" in err and "running=1" in err and "left=0" in err and "1/1" in err


def test_metrics_csv_follows_the_log_and_resume_and_tensorboard_when_installed(tmp_path, monkeypatch):
    calls = []

    class Writer:
        def __init__(self, log_dir, purge_step=None):
            calls.append(("open", purge_step))

        def add_scalar(self, key, value, step):
            calls.append((key, value, step))

        def close(self):
            calls.append(("close",))

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", types.SimpleNamespace(SummaryWriter=Writer))
    monkeypatch.setattr("importlib.util.find_spec", lambda name: object() if name == "tensorboard" else None)
    log = tmp_path / "metrics.jsonl"
    logs = ScalarLogs(log, enabled=True)
    for step, row in ((1, {"loss/total": 2.5, "lr": 0.01}), (2, {"loss/total": 2.0}), (2, {"val/x": None})):
        log.open("a").write(json.dumps({"step": step, **row}) + "\n")
        logs.write(step, row)
    logs.close()
    assert (tmp_path / "metrics.csv").read_text() == ("step,metric,value\n1,loss/total,2.5\n1,lr,0.01\n"
                                                      "2,loss/total,2.0\n2,val/x,\n")
    assert ("loss/total", 2.0, 2) in calls and calls[0] == ("open", None) and calls[-1] == ("close",)
    log.write_text(log.read_text().splitlines(keepends=True)[0])  # resumed at step 1: the log was cut back
    ScalarLogs(log, enabled=True, resume_step=1).close()
    assert (tmp_path / "metrics.csv").read_text() == "step,metric,value\n1,loss/total,2.5\n1,lr,0.01\n"
    assert ("open", 2) in calls  # TensorBoard drops its events after the checkpoint too


# ----------------------------------------------------------------------------- figures

def test_benchmark_figure_keeps_its_title_and_labels_inside_and_has_a_legend():
    rows = [{"label": f"method {i}", "kind": "loss" if i % 2 else "gradient",
             "delta_m": {"pooled": {"mean": float(i), "low": i - 1.0, "high": i + 1.0}}} for i in range(5)]
    fig = delta_m_figure({"rows": rows, "title": "Method benchmark with a long title", "preset": "synthetic-cpu"})
    canvas = FigureCanvasAgg(fig)
    canvas.draw()
    renderer = canvas.get_renderer()
    box = fig.bbox
    ax = fig.axes[0]
    for text in (ax.title, ax.xaxis.label, ax.yaxis.label):
        extent = text.get_window_extent(renderer)
        assert text.get_text() and box.x0 <= extent.x0 and extent.x1 <= box.x1 and extent.y1 <= box.y1, text
    assert fig.legends and len(fig.legends[0].get_texts()) == 3


def test_the_committed_manifests_accept_a_grid():
    ms = find_manifests(ROOT / "configs" / "experiments", ["table1"])
    swept = sweep_manifests(ms, "synthetic-cpu", grids=[parse_grid("optim.lr=0.01,0.02")])
    assert len(swept[0].rows) == 2 * len(ms[0].rows)
    assert yaml.safe_load((ROOT / "configs" / "experiments" / "table1.yaml").read_text())["seeds"] == [0, 1, 2]


def test_plan_prices_steps_at_what_recorded_runs_of_the_same_kind_took():
    """The measured step leaves out loading, validation and start-up (the protocol's runs took about twice the
    plan's figure); the recorded runs of the same kind give the whole-run time per iteration."""
    from experiments.records import Record

    base = load_config([ROOT / "configs" / "synthetic-protocol.yaml"])
    other = load_config([ROOT / "configs" / "synthetic-protocol.yaml"], ["method.name=fixed"])
    fp32 = load_config([ROOT / "configs" / "synthetic-protocol.yaml"], ["amp=off"])

    def record(cfg, wall, iterations=960, **extra):
        return Record(ROOT / "x.json", {"config": cfg.to_dict(), "wall_time_s": wall, "iterations": iterations,
                                        **extra})

    kind = estimate.step_kind(base)
    assert estimate.recorded_step_time([], kind, base.device) is None
    records = [record(base, 288.0), record(base, 960.0, 1920), record(base, 384.0), record(other, 9600.0),
               record(fp32, 9600.0), record(base, 9600.0, wall_time_complete=False), record(base, None)]
    # 0.3, 0.5 and 0.4 s per iteration: the median; the other method, the other precision and the incomplete
    # or missing wall times are left out
    assert estimate.recorded_step_time(records, kind, base.device) == (pytest.approx(0.4), 3)
    assert estimate.recorded_step_time(records, kind, "cuda") is None  # runs configured for another device
