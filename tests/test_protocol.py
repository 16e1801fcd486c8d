"""The comparison protocol through the planner with in-process stand-in trainings: every row tries the lr grid and
trains its other seeds at the value chosen on val, the step-size control rows take rescaled copies of the
learned weights, the schedule pilot applies the doubling rule, and the claims table has the claims.json
schema (protocol object; seeds, p_holm, verdict, tost per comparison), scored on test. Also checks the
committed protocol manifests against the preset."""

import json
import math

import pytest

from engine.config import ConfigError
from experiments.layout import Paths
from experiments.manifest import find_manifests, load_manifest
from experiments.plan import Pending, plan, resolve, scale_weights, waiting_runs
from experiments.protocol import select_lr
from experiments.records import load_records, write_record
from experiments.report import write_report
from experiments.statistics import VERDICTS


# Stands in for training (in-process, records written directly: the runner's waiting for records is
# tested in test_claims.py). Learned weights end at 0.6 / 0.3 (sum 0.9). Validation mIoU peaks at lr 0.05 for
# uncertainty weighting and at 0.1 for every fixed-weight row; the test split reads 1 point higher.
# Uncertainty weighting gains 4 * (1 - 6 / iterations) mIoU over the rest, with a seed effect 0.8 * (seed - 2).
def fake_record(cfg) -> dict:
    s, n, lr = cfg.seed, cfg.optim.iterations, cfg.optim.lr
    learned = cfg.method.name == "uncertainty"
    w = {"semantic": 0.6, "instance": 0.3} if learned else dict(cfg.method.selected.weights)
    best = 0.05 if learned else 0.1
    miou = 20 - 5 * abs(math.log10(lr / best)) + (4 * (1 - 6 / n) + 0.8 * (s - 2) if learned else 0.0)
    val = {"semantic/miou": miou, "instance/mean_error_px": 5.0}
    test = {"semantic/miou": miou + 1, "instance/mean_error_px": 5.0}
    return {"identity": cfg.identity(), "seed": s, "iterations": n, "config": cfg.to_dict(), "git_commit": "fake",
            "command": ["python", "train.py"],
            "metrics": test, "val_metrics": val, "score_split": "test", "selection_split": "val",
            "curves": {"step": [1, n], **{f"weight/{t}": [w[t], w[t]] for t in cfg.tasks}}}


def train_all(paths: Paths, manifests) -> list:
    """Plan, 'train' every job, and plan again until nothing waits (as runner.reproduce does)."""
    trained = []
    while True:
        pending: list[str] = []
        records = load_records(paths, "mini")
        todo = [j for j in plan("mini", manifests, paths=paths, records=records, pending=pending)
                if j.run.identity not in records]
        if not todo:
            assert not pending
            return trained
        for job in todo:
            write_record(paths, "mini", fake_record(job.run.config))
            trained.append(job)


CLAIMS = """
title: C
seeds: [0, 1, 2, 3, 4]
lr_grid: {values: [0.02, 0.05, 0.1], seeds: [0]}
primary: [uw-beats-sum]
margin_pct: 3
settled_by: pilot
columns: [semantic/miou, instance/mean_error_px]
rows:
  - {name: sum, config: {method: {name: fixed, fixed: {weights: {semantic: 0.5, instance: 0.5}}}}}
  - {name: uw, config: {method: {name: uncertainty}}}
  - {name: uw-ratio, weights_from: uw, weights_scale: sum-to-one}
  - {name: sum-rescaled, weights_from: uw, weights_scale: uniform-same-total}
claims:
  - {name: uw-beats-sum, claim: UW beats the sum, better: uw, than: sum}
  - {name: uw-beats-rescaled, claim: UW beats the rescaled sum, better: uw, than: sum-rescaled}
"""

PILOT = """
title: P
seeds: [0, 1, 2, 3, 4]
schedule: {iterations: [6, 12, 24]}
primary: [uw-beats-sum]
columns: [semantic/miou, instance/mean_error_px]
rows:
  - {name: sum, config: {method: {name: fixed, fixed: {weights: {semantic: 0.5, instance: 0.5}}}, optim: {lr: 0.1}}}
  - {name: uw, config: {method: {name: uncertainty}, optim: {lr: 0.05}}}
claims:
  - {name: uw-beats-sum, claim: UW beats the sum, better: uw, than: sum}
"""


@pytest.fixture
def mini(tmp_path):
    configs = tmp_path / "configs"
    (configs / "experiments").mkdir(parents=True)
    (configs / "mini.yaml").write_text("tasks: [semantic, instance]\nmodel: {backbone: resnet18}\n"
                                       "optim: {iterations: 24}\n")
    (configs / "experiments" / "c.yaml").write_text(CLAIMS)
    (configs / "experiments" / "pilot.yaml").write_text(PILOT)
    return Paths(configs, tmp_path / "runs", tmp_path / "results")


def test_select_lr_by_hand():
    # two metrics; grid means: mIoU 20 (lr 0.1: 22, lr 0.05: 18), error 5 (4 at 0.1, 6 at 0.05): 0.1 wins
    scores = {0.05: [{"semantic/miou": 18.0, "instance/mean_error_px": 6.0}],
              0.1: [{"semantic/miou": 22.0, "instance/mean_error_px": 4.0}]}
    chosen = select_lr(scores, ["semantic/miou", "instance/mean_error_px"])
    assert chosen["lr"] == 0.1 and chosen["scores"]["0.1"] == pytest.approx((10.0 + 20.0) / 2)
    tie = {0.05: [{"semantic/miou": 20.0}], 0.1: [{"semantic/miou": 20.0}]}
    assert select_lr(tie, ["semantic/miou"])["lr"] == 0.05  # ties: the smaller lr


def test_a_diverged_grid_value_is_never_chosen_and_does_not_stop_the_selection():
    """A run that diverges records its NaN metrics as missing: its grid value failed. The selection raised
    'no metric is finite at every grid value' and stopped every table of the manifest."""
    metrics = ["semantic/miou", "instance/mean_error_px"]
    scores = {0.05: [{"semantic/miou": 18.0, "instance/mean_error_px": 6.0}],
              0.1: [{"semantic/miou": 22.0, "instance/mean_error_px": 4.0}],
              0.2: [{}]}  # diverged: both metrics NaN, so missing
    chosen = select_lr(scores, metrics)
    assert chosen["lr"] == 0.1 and chosen["failed"] == ["0.2"] and chosen["scores"]["0.2"] is None
    assert chosen["scores"]["0.1"] == pytest.approx((10.0 + 20.0) / 2)  # the failed value is not in the mean
    one_seed_nan = {**scores, 0.2: [{"semantic/miou": 30.0, "instance/mean_error_px": 1.0},
                                    {"semantic/miou": float("nan"), "instance/mean_error_px": 1.0}]}
    assert select_lr(one_seed_nan, metrics)["lr"] == 0.1  # one diverged seed fails the value
    with pytest.raises(ValueError, match="no grid value has a finite value"):
        select_lr({0.1: [{}], 0.2: [{}]}, metrics)


def test_grid_edges():
    from experiments.protocol import grid_edges, grid_edges_sentence

    grid = {"scores": {"0.02": 0.0, "0.05": 1.0, "0.1": 2.0}}
    rows = [{"name": "a", "lr": 0.1, "lr_selection": grid}, {"name": "b", "lr": 0.02, "lr_selection": grid},
            {"name": "c", "lr": 0.05, "lr_selection": grid}, {"name": "d", "lr": None, "lr_selection": None},
            {"name": "e", "lr": 0.05, "lr_selection": None}]
    assert grid_edges(rows) == {"top": ["a"], "bottom": ["b"], "rows": 3}
    assert grid_edges_sentence(rows).startswith("1 of 3 rows chose the largest lr of their grid (a), "
                                                "1 the smallest (b); a row at an end")
    assert grid_edges_sentence(rows[2:]) == "0 of 1 rows chose the largest lr of their grid, 0 the smallest."
    assert grid_edges_sentence(rows[3:]) == ""


def test_weight_scales():
    w = {"semantic": 0.6, "instance": 0.3}
    assert scale_weights(w, None) == w
    assert scale_weights(w, "sum-to-one") == pytest.approx({"semantic": 2 / 3, "instance": 1 / 3})
    assert scale_weights(w, "uniform-same-total") == pytest.approx({"semantic": 0.45, "instance": 0.45})


def test_grid_then_chosen_lr_then_controls_and_the_claims_schema(mini):
    paths = mini
    manifests = find_manifests(paths.manifests, ["c"])
    pending: list[str] = []
    jobs = plan("mini", manifests, paths=paths, pending=pending)
    assert len(jobs) == 6 and all(" lr " in j.run.name for j in jobs)  # sum and uw grids first
    assert any("waits for its lr grid" in p for p in pending)
    # each reason holds back the trainings it stands for (the plan's count was one per row): the sum and uw
    # rows 4 seeds each outside the grid; each control row its 3 grid values and 4 more seeds
    assert waiting_runs(pending) == 2 * 4 + 2 * (3 + 4)
    with pytest.raises(Pending):
        plan("mini", manifests, paths=paths)

    trained = train_all(paths, manifests)
    # 2 rows x 3 grid values + 4 more seeds each; 2 control rows x (3 grid values + 4 more seeds)
    assert len(trained) == 2 * (3 + 4) + 2 * (3 + 4)
    runs = {(j.run.row.name, j.run.seed): j.run for j in plan("mini", manifests, paths=paths)}
    assert runs[("uw", 3)].config.optim.lr == 0.05 and runs[("sum", 3)].config.optim.lr == 0.1  # chosen on val
    assert runs[("sum-rescaled", 2)].config.method.selected.weights == pytest.approx({"semantic": 0.45,
                                                                                       "instance": 0.45})
    assert runs[("uw-ratio", 1)].config.method.selected.weights == pytest.approx({"semantic": 2 / 3,
                                                                                   "instance": 1 / 3})

    train_all(paths, find_manifests(paths.manifests, ["pilot"]))
    write_report(manifests[0], "mini", paths)
    t = json.loads((paths.results / "mini" / "c.json").read_text())
    p = t["protocol"]
    assert {"iterations", "schedule_rule", "selection_split", "score_split", "lr_grid", "seeds"} <= set(p)
    assert (p["iterations"], p["selection_split"], p["score_split"]) == (24, "val", "test")
    assert p["lr_grid"] == {"values": [0.02, 0.05, 0.1], "seeds": [0]} and p["seeds"] == [0, 1, 2, 3, 4]
    assert p["settled"] is True and p["pilot"]["settled_iterations"] == 24
    comps = t["comparisons"]["primary"] + t["comparisons"]["secondary"]
    for c in comps:
        assert len(c["seeds"]) >= 5 and c["verdict"] in VERDICTS and "p_holm" in c
        assert c["tost"] is None or {"margin_pct", "p"} <= set(c["tost"])
    (primary,) = t["comparisons"]["primary"]
    # test mIoU: uw 21 + 3 + 0.8 (s - 2) at its lr vs the sum's 21: Delta_p = mean(100 * diff / 21, 0)
    expected = [100 * (3 + 0.8 * (s - 2)) / 21 / 2 for s in range(5)]
    assert primary["difference"]["values"] == pytest.approx(expected)
    assert primary["verdict"] == "supported" and primary["strength"] == "decisive"
    (inst,) = [c for c in t["comparisons"]["secondary"] if c["claim"] == "uw-beats-sum"
               and c["metric"] == "instance/mean_error_px"]
    assert inst["verdict"] == "not resolved" and inst["tost"]["p"] is None  # identical values: no test
    md = (paths.results / "mini" / "c.md").read_text()
    assert "### Step-size controls" in md and "### Schedule (doubling rule)" in md
    assert "contradicted" not in md and "decisive" in md
    # every fixed-weight row's val mIoU peaks at 0.1, the grid's top: said below the table and in the summary
    edges = "3 of 4 rows chose the largest lr of their grid (sum, uw-ratio, sum-rescaled), 0 the smallest; a row"
    assert "### Learning rates chosen on val" in md and edges in md
    assert "Learning rates: " + edges in (paths.results / "mini" / "c-summary.md").read_text()


def test_doubling_rule_on_the_pilot(mini):
    paths = mini
    (pilot,) = find_manifests(paths.manifests, ["pilot"])
    assert [r.name for r in pilot.rows][:2] == ["sum-6it", "uw-6it"] and len(pilot.rows) == 6
    train_all(paths, [pilot])
    write_report(pilot, "mini", paths)
    s = json.loads((paths.results / "mini" / "pilot.json").read_text())["schedule"]
    # val Delta_p = 100 * (4 (1 - 6/n) + 0.8 (s - 2)) / 20 / 2: means 0, 5, 7.5 %; seed sd 2 * sqrt(2.5) = 3.16 %
    sd = 2 * math.sqrt(2.5)
    assert s["delta_p_val"]["12"]["uw-beats-sum"]["mean"] == pytest.approx(5.0)
    assert s["delta_p_val"]["24"]["uw-beats-sum"]["std"] == pytest.approx(sd)
    assert [d["settled"] for d in s["doublings"]] == [False, True]  # +5 > 3.16, then +2.5 < 3.16
    assert s["settled_iterations"] == s["used_iterations"] == 24


@pytest.mark.parametrize("text, error", [
    ("lr_grid: {values: []}", "lr_grid.values"),
    ("schedule: {iterations: [10, 30]}", "each double"),
    ("primary: [nope]", "primary must list claim names"),
    ("margin_pct: -1", "margin_pct"),
])
def test_protocol_manifest_keys_are_checked(tmp_path, text, error):
    path = tmp_path / "m.yaml"
    path.write_text(f"title: M\nseeds: [0]\ncolumns: [semantic/miou]\nrows: [{{name: a}}]\n{text}\n")
    with pytest.raises(ConfigError, match=error):
        load_manifest(path)


PROTOCOL = ("protocol-pilot", "protocol-claims", "protocol-adam", "protocol-table1", "protocol-figure2a",
            "protocol-figure2b", "protocol-appendixb", "protocol-benchmark", "protocol-precision")


def test_the_committed_protocol_manifests_and_preset():
    from engine.config import load_config

    paths = Paths()
    cfg = load_config([paths.configs / "synthetic-protocol.yaml"])
    assert (cfg.amp, cfg.model.output_stride, cfg.data.test_split, cfg.data.synthetic_profile) == \
        ("bf16", 16, "test", "calibrated")
    manifests = {m.name: m for m in find_manifests(paths.manifests, PROTOCOL)}
    assert all(m.for_presets == ("synthetic-protocol",) for m in manifests.values())
    sgd_grid = manifests["protocol-claims"].lr_grid
    for name in ("protocol-claims", "protocol-table1", "protocol-figure2a", "protocol-figure2b", "protocol-benchmark"):
        assert manifests[name].lr_grid == sgd_grid  # the same grid for every row
    for name in ("protocol-pilot", "protocol-claims", "protocol-adam", "protocol-table1", "protocol-benchmark"):
        assert len(manifests[name].seeds) >= 5
    for name in ("protocol-figure2a", "protocol-figure2b", "protocol-appendixb"):
        m = manifests[name]
        assert all(len(r.seeds or m.seeds) >= 3 for r in m.rows)
    assert len(manifests["protocol-table1"].rows) == 9
    ls = next(r for r in manifests["protocol-benchmark"].rows if r.name == "ls")
    assert ls.config["method"]["fixed"]["weights"] == {"semantic": 1.0, "instance": 1.0, "depth": 1.0}
    s0 = sorted(r.config["method"].get("uncertainty", {}).get("init_log_var", 0.0)
                for r in manifests["protocol-appendixb"].rows)
    assert s0[0] == -2.0 and s0[-1] == 5.0
    # the precision check: its fast rows are the protocol's own configs; the slow ones change only precision
    # and output stride
    prec = {r.name: r for r in manifests["protocol-precision"].rows}
    for fast in ("unweighted-sum", "uncertainty-3task"):
        slow = prec[f"{fast}-fp32-os8"].config
        assert {k: v for k, v in slow.items() if k not in ("amp", "model")} == prec[fast].config
        assert (slow["amp"], slow["model"]) == ("off", {"output_stride": 8})
    assert len(manifests["protocol-precision"].seeds) >= 5 and manifests["protocol-precision"].primary
    for m in manifests.values():  # every row's overrides resolve on the preset (seed 0, its own lr)
        for row in m.rows:
            if not row.weights_from:
                resolve(m, row, 0, "synthetic-protocol", paths, lr=None)


def test_the_protocol_preset_trains_the_pilots_schedule_and_the_benchmark_says_smoke_test_until_settled():
    path = Paths().results / "synthetic-protocol" / "protocol-pilot.json"
    if not path.exists():
        pytest.skip("the protocol pilot is not recorded yet")
    from engine.config import load_config

    pilot = json.loads(path.read_text())
    if any(r["missing_seeds"] for r in pilot["rows"]):
        pytest.skip("the protocol pilot is not complete")
    schedule = pilot["schedule"]
    assert load_config([Paths().configs / "synthetic-protocol.yaml"]).optim.iterations == schedule["used_iterations"]
    (bench,) = find_manifests(Paths().manifests, ["protocol-benchmark"])
    assert ("smoke test" in bench.title.lower()) == (schedule["settled_iterations"] is None)


def test_pairwise_matrix_and_weight_diagnostic(tmp_path):
    from experiments import plots
    from experiments.protocol import pairwise, weight_diagnostic

    def row(name, values, weight):
        return {"name": name, "total_weight": weight,
                "delta_m": {"seeds": list(range(5)), "per_task": {"values": values, "mean": sum(values) / 5}}}

    rows = [row("a", [5.0, 5.2, 4.9, 5.1, 5.0], 1.0), row("b", [0.1, -0.1, 0.0, 0.2, -0.2], 2.0),
            row("c", [-5.0, -5.1, -4.8, -5.2, -4.9], 3.0), {"name": "single", "delta_m": None}]
    pw = pairwise(rows)
    assert [(p["a"], p["b"]) for p in pw["pairs"]] == [("a", "b"), ("a", "c"), ("b", "c")]
    assert pw["pairs"][1]["difference"]["mean"] == pytest.approx(10.04)
    assert all(p["p_holm"] >= p["p"] for p in pw["pairs"]) and pw["significant"] == 3
    d = weight_diagnostic(rows)
    assert d["spearman_rho"] == pytest.approx(-1.0)  # Delta_p falls as the total weight rises
    t = {"title": "B", "rows": rows, "pairwise": pw, "weight_diagnostic": d}
    assert plots.plot_pairwise(t, tmp_path / "p.png").stat().st_size > 0
    assert plots.plot_weight_diagnostic(t, tmp_path / "w.png").stat().st_size > 0
    import warnings  # before any two rows have a Delta_m: an empty matrix made a singular axis (UserWarning)

    empty = {"title": "B", "rows": rows[3:], "pairwise": pairwise(rows[3:])}
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert plots.plot_pairwise(empty, tmp_path / "e.png").stat().st_size > 0


def test_a_row_waiting_for_its_lr_grid_shows_no_values_from_runs_at_the_default_lr(mini):
    """Until its lr grid has chosen, a row has no values, even where runs of its config at the preset's lr exist
    (the schedule pilot's runs are such runs: Table 1's single-task rows showed them as 'seeds 0,1,2,3,4 (missing
    0,1,2,3,4)', values at an lr nobody chose)."""
    paths = mini
    (manifest,) = find_manifests(paths.manifests, ["c"])
    row = next(r for r in manifest.rows if r.name == "sum")
    for seed in manifest.seeds:
        cfg = resolve(manifest, row, seed, "mini", paths, records={}, lr=None).config  # the preset's lr
        write_record(paths, "mini", fake_record(cfg))
    write_report(manifest, "mini", paths)
    t = json.loads((paths.results / "mini" / "c.json").read_text())
    entry = next(r for r in t["rows"] if r["name"] == "sum")
    assert entry["seeds"] == [] and entry["missing_seeds"] == [0, 1, 2, 3, 4]
    assert all(v is None or v.get("n", 0) == 0 for v in entry["ours"].values())


def test_a_protocol_table_before_any_run_names_the_splits_and_no_none(mini):
    """Before its first record a protocol table printed 'Iterations: None (not settled); selection on `None`'."""
    (manifest,) = find_manifests(mini.manifests, ["c"])
    write_report(manifest, "mini", mini)
    md = (mini.results / "mini" / "c.md").read_text()
    assert "- Iterations: no run recorded yet; selection on `val`, every number below scored on `val`." in md
    assert "None" not in md
    assert "identity ;" not in md and "- **uw**: seeds none (missing 0,1,2,3,4); identity —;" in md


AGREE = """
title: A
seeds: [0, 1, 2, 3, 4]
primary: [uw-beats-sum-a, uw-beats-sum-b]
analyses: [agreement]
columns: [semantic/miou, instance/mean_error_px]
rows:
  - name: sum-a
    config: {method: {name: fixed, fixed: {weights: {semantic: 0.5, instance: 0.5}}}, optim: {iterations: 12}}
  - {name: uw-a, config: {method: {name: uncertainty}, optim: {iterations: 12}}}
  - {name: sum-b, config: {method: {name: fixed, fixed: {weights: {semantic: 0.5, instance: 0.5}}}}}
  - {name: uw-b, config: {method: {name: uncertainty}}}
claims:
  - {name: uw-beats-sum-a, claim: UW beats the sum at setting a, better: uw-a, than: sum-a}
  - {name: uw-beats-sum-b, claim: UW beats the sum at setting b, better: uw-b, than: sum-b}
"""


def test_agreement_of_two_settings_reports_verdicts_and_the_paired_change_of_each_difference(mini):
    """protocol-precision's question: the same verdict at both settings, and how much each difference changes."""
    from experiments.analyses.agreement import agreement

    paths = mini
    (paths.manifests / "a.yaml").write_text(AGREE)
    manifest = find_manifests(paths.manifests, ["a"])[0]
    # UW's mIoU gain is 1 + 0.1 s at setting a and 3 + 0.3 s at b (so the change is 2 + 0.2 s); its instance
    # error is 0.1 + 0.01 s px worse at a and 0.1 + 0.02 s at b
    miou = {"sum-a": lambda s: 20.0, "uw-a": lambda s: 21 + 0.1 * s, "sum-b": lambda s: 20.0,
            "uw-b": lambda s: 23 + 0.3 * s}
    inst = {"sum-a": lambda s: 5.0, "uw-a": lambda s: 5.1 + 0.01 * s, "sum-b": lambda s: 5.0,
            "uw-b": lambda s: 5.1 + 0.02 * s}
    for job in plan("mini", [manifest], paths=paths):
        cfg, row, s = job.run.config, job.run.row.name, job.run.seed
        metrics = {"semantic/miou": miou[row](s), "instance/mean_error_px": inst[row](s)}
        write_record(paths, "mini", {"identity": cfg.identity(), "seed": s, "iterations": cfg.optim.iterations,
                                     "config": cfg.to_dict(), "git_commit": "fake", "command": ["python"],
                                     "metrics": metrics, "val_metrics": metrics, "score_split": "test",
                                     "selection_split": "val"})
    write_report(manifest, "mini", paths)
    t = json.loads((paths.results / "mini" / "a.json").read_text())
    rows = {r["endpoint"]: r for r in t["agreement"]["rows"]}
    assert t["agreement"]["reference"] == "uw-beats-sum-a" and set(rows) == {"per-task Δp %", "semantic mIoU",
                                                                            "instance mean error"}

    def dp(gain, worse):  # per-task Delta_p against the sum (20 mIoU, 5.0 px)
        return (100 * gain / 20 - 100 * worse / 5.0) / 2

    expected = [dp(3 + 0.3 * s, 0.1 + 0.02 * s) - dp(1 + 0.1 * s, 0.1 + 0.01 * s) for s in range(5)]
    assert rows["per-task Δp %"]["change"]["values"] == pytest.approx(expected)
    assert rows["semantic mIoU"]["change"]["values"] == pytest.approx([2 + 0.2 * s for s in range(5)])
    assert rows["instance mean error"]["change"]["values"] == pytest.approx([-0.01 * s for s in range(5)])
    assert rows["semantic mIoU"]["size"] == "more favourable" and rows["semantic mIoU"]["p_holm"] < 0.05
    verdicts = {(e["claim"], e["metric"]): e["verdict"] for e in t["comparisons"]["secondary"]}
    assert verdicts[("uw-beats-sum-a", "semantic/miou")] == verdicts[("uw-beats-sum-b", "semantic/miou")] == \
        "supported"
    md = (paths.results / "mini" / "a.md").read_text()
    assert "### Same verdict at both settings?" in md and "Same verdict as `uw-beats-sum-a` on 3 of 3" in md
    summary = (paths.results / "mini" / "a-agreement.md").read_text()
    assert summary.startswith("**A, agreement of the settings**: Same verdict") and "semantic mIoU +" in summary

    one = find_manifests(paths.manifests, ["c"])[0]  # one primary claim: nothing to agree with
    with pytest.raises(ValueError, match="needs at least two"):
        agreement(one, {}, {})


def test_progress_counts_rows_runs_and_waiting_trainings_from_the_records(mini):
    from experiments.progress import markdown, progress

    paths = mini
    manifests = find_manifests(paths.manifests, ["c"])
    p = progress("mini", manifests, load_records(paths, "mini"), paths)
    c = p["manifests"][0]
    # nothing recorded: the two grids (2 rows x 3 values) can start; the rest waits (see the planner test)
    assert (c["rows"], c["rows_complete"], c["recorded"], c["to_start"], c["waiting"]) == (4, 0, 0, 6, 22)
    assert "0 of the tables' trainings recorded, 6 can start now and 22 more wait" in markdown(p)

    for job in plan("mini", manifests, paths=paths, pending=[]):  # the grids, with 1 h each
        write_record(paths, "mini", fake_record(job.run.config) | {"wall_time_s": 3600.0})
    c = progress("mini", manifests, load_records(paths, "mini"), paths)["manifests"][0]
    # seed 0 of sum and uw is the grid run at the chosen lr (recorded); their seeds 1-4 can start now, and the
    # control rows' grids (uw's seed 0 gives their weights); the controls' seeds 1-4 wait for uw's
    assert (c["rows_complete"], c["recorded"], c["to_start"], c["waiting"], c["hours"]) == (0, 6, 8 + 6, 8, 6.0)

    train_all(paths, manifests)
    p = progress("mini", manifests, load_records(paths, "mini"), paths)
    c = p["manifests"][0]
    assert (c["rows_complete"], c["recorded"], c["to_start"], c["waiting"]) == (4, 28, 0, 0)
    assert p["total"]["records"] == 28 and "complete: every row of every table" in markdown(p)


def test_aggregate_without_names_writes_the_progress_table_and_with_names_leaves_it(mini):
    import reproduce

    paths = mini
    common = ["--preset", "mini", "--configs-dir", str(paths.configs), "--runs-dir", str(paths.runs),
              "--results-dir", str(paths.results)]
    progress_md = paths.results / "mini" / "progress.md"
    assert reproduce.main(["aggregate", "c", *common]) == 0 and not progress_md.exists()  # a subset: no total
    assert reproduce.main(["aggregate", *common]) == 0
    assert "| c | 0 of 4 | 0 | 6 | 22 | 0.0 |" in progress_md.read_text()
    assert "| pilot | 0 of 6 | 0 | 30 | 0 | 0.0 |" in progress_md.read_text()  # 2 rows x 3 schedules
