"""Aggregation of run results into Table 1 and Figure 2: mean/std by hand, paper columns, provenance, gaps."""

import json
import math
import shutil
from pathlib import Path

import pytest

import reproduce
from reproduce import Paths

ROOT = Path(__file__).resolve().parents[1]
PRESET = "mini"
SEEDS = {"table1": (0, 1, 2), "sweep": (0,)}


@pytest.fixture
def paths(tmp_path) -> Paths:
    """The repository's experiment files on a tiny preset, with runs and results in tmp_path."""
    configs = tmp_path / "configs"
    shutil.copytree(ROOT / "configs" / "table1", configs / "table1")
    shutil.copytree(ROOT / "configs" / "sweep", configs / "sweep")
    (configs / f"{PRESET}.yaml").write_text("model: {backbone: resnet18}\noptim: {iterations: 5}\n")
    return Paths(configs=configs, runs=tmp_path / "runs", results=tmp_path / "results")


def write_result(paths: Paths, experiment: str, seed: int, metrics: dict, part: str = "table1", **extra) -> dict:
    """A result JSON as the runner writes it, for the experiment's current config hash."""
    run = next(r for r in reproduce.runs_of(PRESET, part, [seed], paths) if r.experiment.name == experiment)
    result = {"metrics": metrics, "config": run.config.to_dict(), "config_hash": run.config_hash,
              "command": ["python", "train.py", "--config", f"configs/{PRESET}.yaml", f"seed={seed}"],
              "git_commit": f"abc{seed}", "step": 5, "iterations": 5, "preset": PRESET, "experiment": experiment,
              "seed": seed, **extra}
    out = paths.results / PRESET / "runs" / f"{experiment}-seed{seed}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result))
    return result


def rows_by_name(table: dict) -> dict:
    return {r["experiment"]: r for r in table["rows"]}


def test_summarize_is_mean_and_sample_std():
    s = reproduce.summarize([50.0, 52.0, 57.0])
    assert s["mean"] == pytest.approx(53.0)
    assert s["std"] == pytest.approx(math.sqrt(((50 - 53) ** 2 + (52 - 53) ** 2 + (57 - 53) ** 2) / 2))  # sqrt(13)
    assert s["n"] == 3 and s["values"] == [50.0, 52.0, 57.0]
    one = reproduce.summarize([4.2])
    assert one["mean"] == 4.2 and one["std"] is None and one["n"] == 1


def test_table1_mean_std_paper_columns_and_missing(paths):
    for seed, miou in zip((0, 1, 2), (50.0, 52.0, 57.0)):
        write_result(paths, "semantic-only", seed, {"semantic/miou": miou, "semantic/pixel_acc": 90.0})
    for seed, err in zip((0, 1), (4.0, 5.0)):  # seed 2 never ran
        write_result(paths, "instance-only", seed, {"instance/mean_error_px": err})
    write_result(paths, "unweighted-sum", 0, {"semantic/miou": 40.0, "instance/mean_error_px": 6.0,
                                              "depth/mean_error_px": 1.5})
    reproduce.aggregate(PRESET, SEEDS, paths)
    out = paths.results / PRESET
    table = json.loads((out / "table1.json").read_text())
    rows = rows_by_name(table)
    assert [r["paper_row"] for r in table["rows"]][:5] == [
        "Segmentation only", "Instance only", "Depth only", "Unweighted sum of losses", "Approx. optimal weights"]

    sem = rows["semantic-only"]
    assert sem["ours"]["semantic_miou_pct"]["mean"] == pytest.approx(53.0)
    assert sem["ours"]["semantic_miou_pct"]["std"] == pytest.approx(math.sqrt(13.0))
    assert sem["paper"] == {"semantic_miou_pct": 59.4}
    assert sem["seeds"] == [0, 1, 2] and sem["missing_seeds"] == []
    assert set(sem["ours"]) == {"semantic_miou_pct"}  # the other tasks were not trained

    inst = rows["instance-only"]
    assert inst["ours"]["instance_mean_error_px"]["mean"] == pytest.approx(4.5)
    assert inst["ours"]["instance_mean_error_px"]["std"] == pytest.approx(math.sqrt(0.5))
    assert inst["seeds"] == [0, 1] and inst["missing_seeds"] == [2]
    assert inst["paper"] == {"instance_mean_error_px": 4.61}

    depth = rows["depth-only"]
    assert depth["ours"] == {"depth_mean_error_px": None} and depth["seeds"] == []
    assert depth["missing_seeds"] == [0, 1, 2]

    uw = rows["unweighted-sum"]
    assert uw["paper"] == {"semantic_miou_pct": 50.1, "instance_mean_error_px": 3.79, "depth_mean_error_px": 0.592}
    assert uw["ours"]["depth_mean_error_px"] == {"mean": 1.5, "std": None, "n": 1, "values": [1.5]}
    assert rows["uncertainty-3task"]["paper"] == {"semantic_miou_pct": 63.4, "instance_mean_error_px": 3.5,
                                                  "depth_mean_error_px": 0.522}

    md = (out / "table1.md").read_text()
    lines = {ln.split(" | ")[0].lstrip("| "): ln for ln in md.splitlines() if ln.startswith("| ")}
    assert "| 53.00 ± 3.61 | 59.4 | — | — | — | — | 0,1,2 |" in lines["Segmentation only"]
    assert "| — | — | 4.500 ± 0.707 | 4.61 | — | — | 0,1 (missing 2) |" in lines["Instance only"]
    assert "| missing | 0.64 | none (missing 0,1,2) |" in lines["Depth only"]
    assert "| 40.00 | 50.1 | 6.000 | 3.79 | 1.500 | 0.592 |" in lines["Unweighted sum of losses"]
    assert "0.333 / 0.333 / 0.333" in lines["Unweighted sum of losses"]


def test_every_row_carries_provenance(paths):
    write_result(paths, "semantic-only", 0, {"semantic/miou": 50.0})
    write_result(paths, "semantic-only", 2, {"semantic/miou": 51.0})
    reproduce.aggregate(PRESET, SEEDS, paths)
    table = json.loads((paths.results / PRESET / "table1.json").read_text())
    runs = {(r.experiment.name, r.seed): r for r in reproduce.runs_of(PRESET, "table1", (0, 1, 2), paths)}
    for row in table["rows"]:
        for key in ("command", "config_hash", "seeds", "git_commit", "planned_command"):
            assert key in row, (row["experiment"], key)
        assert row["config_hash"] == {str(s): runs[row["experiment"], s].config_hash for s in (0, 1, 2)}
    sem = rows_by_name(table)["semantic-only"]
    assert sem["git_commit"] == {"0": "abc0", "2": "abc2"}
    assert sem["command"]["0"][-1] == "seed=0" and sem["seeds"] == [0, 2]
    md = (paths.results / PRESET / "table1.md").read_text()
    assert f"config hash seed0: {runs['semantic-only', 0].config_hash}" in md
    assert "git commit abc0, abc2" in md and "`python train.py --config configs/mini.yaml seed=0`" in md
    assert "(not run yet)" in md  # rows without any run still show the command that would make them


def test_stale_result_is_ignored_not_shown(paths):
    write_result(paths, "semantic-only", 0, {"semantic/miou": 50.0})
    stale = paths.results / PRESET / "runs" / "semantic-only-seed0.json"
    data = json.loads(stale.read_text())
    data["config_hash"] = "000000000000"  # trained under a config that no longer exists
    stale.write_text(json.dumps(data))
    reproduce.aggregate(PRESET, SEEDS, paths)
    sem = rows_by_name(json.loads((paths.results / PRESET / "table1.json").read_text()))["semantic-only"]
    assert sem["ours"]["semantic_miou_pct"] is None and sem["missing_seeds"] == [0, 1, 2]


def test_figure2_points_shared_runs_and_learned_point(paths):
    # The sweep's w_semantic = 1 endpoint is the same config as Table 1's semantic-only: no sweep file needed.
    write_result(paths, "semantic-only", 0, {"semantic/miou": 55.0})
    write_result(paths, "fig2a-semantic0.9-depth0.1", 0, {"semantic/miou": 57.0, "depth/mean_error_px": 0.7},
                 part="sweep")
    curves = {"step": [10, 20], "weight/semantic": [0.9, 0.6], "weight/depth": [0.5, 0.2],
              "sigma2/semantic": [1.1, 1.6], "sigma2/depth": [1.0, 2.5]}
    for seed, miou in zip((0, 1), (60.0, 62.0)):
        write_result(paths, "uncertainty-semantic-depth", seed, {"semantic/miou": miou, "depth/mean_error_px": 0.6},
                     curves=curves)
    written = reproduce.aggregate(PRESET, SEEDS, paths)
    out = paths.results / PRESET
    for name in ("figure2a.json", "figure2a.md", "figure2a.png", "figure2b.png", "table1.md",
                 "curves/uncertainty-semantic-depth.png"):
        assert out / name in written and (out / name).stat().st_size > 0, name

    fig = json.loads((out / "figure2a.json").read_text())
    assert [p["x"] for p in fig["points"]] == [0.0, 0.025, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 0.8, 0.9, 1.0]
    pts = {p["experiment"]: p for p in fig["points"]}
    end = pts["fig2a-semantic1-depth0"]
    assert end["ours"]["semantic_miou_pct"]["mean"] == 55.0 and end["ours"]["depth_mean_error_px"] is None
    assert end["paper"] == {"semantic_miou_pct": 59.4, "depth_mean_error_px": None}
    p09 = pts["fig2a-semantic0.9-depth0.1"]
    assert p09["x"] == 0.1 and p09["paper"] == {"semantic_miou_pct": 60.1, "depth_mean_error_px": 0.586}
    assert p09["ours"]["depth_mean_error_px"]["mean"] == 0.7
    assert pts["fig2a-semantic0.5-depth0.5"]["ours"] == {"semantic_miou_pct": None, "depth_mean_error_px": None}

    learned = fig["learned"]
    assert learned["experiment"] == "uncertainty-semantic-depth"
    assert learned["ours"]["semantic_miou_pct"]["mean"] == pytest.approx(61.0)
    assert learned["ours"]["semantic_miou_pct"]["std"] == pytest.approx(math.sqrt(2.0))
    assert learned["paper"] == {"semantic_miou_pct": 62.7, "depth_mean_error_px": 0.533}
    assert learned["x"] == pytest.approx(0.2 / (0.2 + 0.6))  # final effective weights, depth share
    assert learned["seeds"] == [0, 1] and learned["missing_seeds"] == [2]

    md = (out / "figure2a.md").read_text()
    assert f"![figure2a]({out / 'figure2a.png'})" in md
    assert f"[uncertainty-semantic-depth]({out / 'curves' / 'uncertainty-semantic-depth.png'})" in \
        (out / "table1.md").read_text()
    assert reproduce._link(ROOT / "results" / "x" / "figure2a.png") == "/results/x/figure2a.png"  # GitHub: repo root
    assert "| 0.5 | 0.5 | missing | 56.3 | missing | 0.602 | none (missing 0) |" in md
    assert "| 1 | 0 | 55.00 | 59.4 | — | — | 0 |" in md
    assert "| learned | learned 0.25 | 61.00 ± 1.41 | 62.7 | 0.600 ± 0.000 | 0.533 | 0,1 (missing 2) |" in md
    figb = json.loads((out / "figure2b.json").read_text())
    assert len(figb["points"]) == 10 and figb["learned"]["experiment"] == "uncertainty-instance-depth"
    assert figb["learned"]["x"] is None and figb["learned"]["seeds"] == []


def test_corrupt_result_names_the_file(paths):
    bad = paths.results / PRESET / "runs" / "semantic-only-seed0.json"
    bad.parent.mkdir(parents=True)
    bad.write_text("{not json")
    with pytest.raises(ValueError, match="semantic-only-seed0.json"):
        reproduce.aggregate(PRESET, SEEDS, paths)
