"""Paper units: Table 1 and Figure 2 show pixel errors in pixels at 128x256 (the paper's Tiny CityScapes),
converted from the resolution each row was trained at (x paper width / our width), keep the measured
values in the JSON, and say which conversion they applied."""

import json
import shutil
from pathlib import Path

import pytest

from experiments.aggregate import in_paper_units, summarize, unit_factor
from experiments.layout import Paths
from experiments.manifest import find_manifests
from experiments.plan import resolve
from experiments.report import write_report

ROOT = Path(__file__).resolve().parents[1]


def test_unit_factor_is_paper_width_over_ours():
    assert unit_factor((64, 128), (128, 256)) == 2.0
    assert unit_factor([128, 256], [128, 256]) == 1.0
    assert unit_factor((256, 512), (128, 256)) == 0.5
    assert unit_factor(None, (128, 256)) is None  # the files' own resolution: width unknown to the records
    assert unit_factor((64, 128), None) is None  # no paper resolution (e.g. the benchmark): as measured


def test_only_pixel_metrics_are_converted():
    ours = {"semantic/miou": summarize([20.0, 22.0]), "instance/mean_error_px": summarize([4.0, 5.0]),
            "depth/mean_error_px": None}
    out = in_paper_units(ours, 2.0)
    assert out["semantic/miou"] == ours["semantic/miou"] and out["depth/mean_error_px"] is None
    assert out["instance/mean_error_px"]["values"] == [8.0, 10.0] and out["instance/mean_error_px"]["mean"] == 9.0
    assert out["instance/mean_error_px"]["std"] == pytest.approx(2 * ours["instance/mean_error_px"]["std"])
    assert in_paper_units(ours, None) == ours


def table(tmp_path: Path, size, name: str = "table1") -> tuple[dict, str]:
    """`name` on a preset trained at `size` with one instance-only record of 4.0 px (seed 0)."""
    configs = tmp_path / "configs"
    shutil.copytree(ROOT / "configs" / "experiments", configs / "experiments")
    (configs / "mini.yaml").write_text(f"model: {{backbone: resnet18}}\ndata: {{size: {json.dumps(size)}}}\n")
    paths = Paths(configs=configs, runs=tmp_path / "runs", results=tmp_path / "results")
    m = find_manifests(paths.manifests, [name])[0]
    run = resolve(m, next(r for r in m.rows if r.name == "instance-only"), 0, "mini", paths)
    out = paths.records("mini") / f"{run.identity}.json"
    out.parent.mkdir(parents=True)
    out.write_text(json.dumps({"metrics": {"instance/mean_error_px": 4.0}, "config": run.config.to_dict(),
                               "identity": run.identity, "seed": 0, "command": ["python", "train.py"]}))
    write_report(m, "mini", paths)
    t = json.loads((paths.results / "mini" / f"{name}.json").read_text())
    return t, (paths.results / "mini" / f"{name}.md").read_text()


def test_table1_at_64x128_shows_pixels_at_128x256_and_says_so(tmp_path):
    t, md = table(tmp_path, [64, 128])
    row = next(r for r in t["rows"] if r["name"] == "instance-only")
    assert row["ours"]["instance/mean_error_px"]["values"] == [4.0]  # the JSON keeps what was measured
    assert row["ours_paper_units"]["instance/mean_error_px"]["values"] == [8.0]
    assert row["units"] == {"size": [64, 128], "factor": 2.0}
    assert t["units"]["paper_size"] == [128, 256]
    assert "| Instance only | fixed 1 | — | — | 8.000 | 4.61 |" in md
    assert "instance mean error (px at 128x256) ours" in md
    assert "in pixels at 128x256" in md and "measured at 64x128 and multiplied by 256 / 128 = 2" in md
    assert "sky" in md.lower()


def test_full_resolution_rows_are_shown_as_measured_and_marked(tmp_path):
    t, md = table(tmp_path, None)
    assert next(r for r in t["rows"] if r["name"] == "instance-only")["units"] == {"size": None, "factor": None}
    assert "| 4.000 † |" in md and "shown as measured" in md


def test_tables_without_a_paper_resolution_say_they_are_as_measured(tmp_path):
    t, md = table(tmp_path, [64, 128], "benchmark")
    assert t["units"]["paper_size"] is None
    assert "in pixels at the training resolution (64x128), as measured (not converted)" in md


@pytest.mark.parametrize("name", ["table1", "figure2a", "figure2b"])
def test_committed_tables_state_their_conversion(name):
    path = ROOT / "results" / "synthetic-cpu" / f"{name}.md"
    if not path.exists():
        pytest.skip("no committed table")
    md = path.read_text()
    assert "pixels at 128x256" in md and "measured at 64x128 and multiplied by 256 / 128 = 2" in md
    t = json.loads(path.with_suffix(".json").read_text())
    for row in t["rows"]:
        for metric, s in row["ours"].items():
            if s and metric.endswith("_px"):
                assert row["ours_paper_units"][metric]["values"] == [2 * v for v in s["values"]]
