"""The published Cityscapes tables in results/paper/: every value sits beside its source, and the stored Delta
values agree with the metrics stored beside them (a check against transcription slips)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from experiments import paper_compare
from experiments.paper_compare import load_published

ROOT = Path(__file__).resolve().parents[1]
TABLES = sorted((ROOT / "results" / "paper").glob("*_cityscapes.json"))
HIGHER = {"seg7/miou": True, "seg7/pixel_acc": True, "depth_abs/abs_err": False, "depth_abs/rel_err": False}
TASK = {"seg7/miou": "seg7", "seg7/pixel_acc": "seg7", "depth_abs/abs_err": "depth", "depth_abs/rel_err": "depth"}


def _fixture(methods: dict, **extra) -> dict:
    return {"paper": "A paper", "table": "3", "protocol": "cityscapes2-mtan", "convention": "pooled",
            "metrics": list(HIGHER), "methods": methods, **extra}


SOURCE = {"where": "https://arxiv.org/abs/0000.00000", "table": "Table 3", "row": "UW"}


def test_every_stored_value_has_its_source():
    assert {p.name for p in TABLES} >= {"navon2022_cityscapes.json", "liu2023famo_cityscapes.json",
                                       "lin2023dbmtl_cityscapes.json"}
    for path in TABLES:
        paper = load_published(path, strict=True)
        assert paper["methods"] or paper.get("verification"), path  # an empty table says why
        for entry in paper["methods"].values():
            assert set(entry["metrics"]) <= set(paper["metrics"]), path


def test_a_value_separated_from_its_source_is_refused(tmp_path, capsys):
    good = _fixture({"uw": {"delta": 5.89, "source": SOURCE}})
    separated = _fixture({"uw": {"delta": 5.89}}, source=SOURCE)  # the source moved away from the value
    blank = _fixture({"uw": {"delta": 5.89, "source": {**SOURCE, "row": " "}}})
    for name, data in (("good", good), ("separated", separated), ("blank", blank)):
        (tmp_path / f"{name}.json").write_text(json.dumps(data))
    assert load_published(tmp_path / "good.json", strict=True)["methods"]["uw"]["delta"] == 5.89
    for name in ("separated", "blank"):
        with pytest.raises(ValueError, match="'uw' has no source beside its value"):
            load_published(tmp_path / f"{name}.json", strict=True)
        load_published(tmp_path / f"{name}.json")  # a user's own --paper file may omit sources
    # the tables under results/paper/ are always loaded strictly
    (tmp_path / "paper").mkdir()
    (tmp_path / "paper" / "x_cityscapes.json").write_text(json.dumps(separated))
    (tmp_path / "cityscapes2-mtan").mkdir()
    (tmp_path / "cityscapes2-mtan" / "cityscapes2-mtan.json").write_text(json.dumps(
        {"rows": [{"name": "uw", "label": "UW", "delta_m": {"pooled": {"mean": 6.0, "low": 5.0, "high": 7.0,
                                                                         "n": 3}}}], "baselines": {}}))
    args = ["--preset", "cityscapes2-mtan", "--manifest", "cityscapes2-mtan", "--results-dir", str(tmp_path)]
    assert paper_compare.main(args) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "no source beside its value" in err
    good["methods"]["uw"]["note"] = "printed twice in the paper"
    (tmp_path / "paper" / "x_cityscapes.json").write_text(json.dumps(good))
    assert paper_compare.main(args) == 0
    out = capsys.readouterr().out
    assert "Note on the published uw: printed twice in the paper" in out
    assert "| UW | +6.00 |" in out and "Table 3 of https://arxiv.org/abs/0000.00000: uw = row 'UW'" in out


def test_a_non_numeric_published_value_is_refused(tmp_path):
    (tmp_path / "p.json").write_text(json.dumps(_fixture({"uw": {"delta": "5.89", "source": SOURCE}})))
    with pytest.raises(ValueError, match="needs a numeric delta"):
        load_published(tmp_path / "p.json")


@pytest.mark.parametrize("path", [p for p in TABLES if json.loads(p.read_text())["methods"]], ids=lambda p: p.stem)
def test_stored_deltas_recompute_from_the_stored_metrics(path):
    """Delta from the row's printed metrics and the STL row, within 0.15: the printed metrics are rounded (abs. err.
    to 4 digits moves Delta_m by up to ~0.1) and a paper may average per-seed Deltas; a slipped digit usually shows."""
    paper = load_published(path, strict=True)
    base = paper["reference"]["metrics"]
    assert paper["reference"]["source"]["row"] == "STL"
    for name, entry in paper["methods"].items():
        rel = {m: (1 if HIGHER[m] else -1) * (entry["metrics"][m] - base[m]) / base[m] * 100 for m in HIGHER}
        if paper["convention"] == "pooled":  # Delta_m: mean over metrics, + = worse
            delta = -sum(rel.values()) / len(rel)
        else:  # Delta_p: mean over tasks of the task's mean, + = better
            tasks = {t: [rel[m] for m in rel if TASK[m] == t] for t in set(TASK.values())}
            delta = sum(sum(v) / len(v) for v in tasks.values()) / len(tasks)
        assert delta == pytest.approx(entry["delta"], abs=0.15), (path.name, name)
