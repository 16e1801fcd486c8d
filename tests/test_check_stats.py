"""`python -m data.check`: the train split's class pixel frequencies beside real Cityscapes' and the
distribution of valid disparities at full resolution, computed exactly on hand-made frames."""

import numpy as np
import pytest

from data import check
from data.check import REFERENCE_PCT, SplitStats, format_stats
from data.labels import NAME_TO_ID


def test_class_shares_instance_pixels_and_disparities_by_hand():
    road, car, unlabeled = NAME_TO_ID["road"], NAME_TO_ID["car"], NAME_TO_ID["unlabeled"]
    labels = np.full((4, 8), road, dtype=np.uint8)  # 32 pixels: 16 road, 8 car, 8 void
    labels[2, :] = car
    labels[3, :] = unlabeled
    instances = labels.astype(np.uint16)
    instances[2, :6] = car * 1000 + 1  # 6 pixels of one car; the other 2 car pixels are a group (plain id)
    # A frame 8 px wide: PNG value p is (p - 1) / 256 px there, x 2048 / 8 = p - 1 px at full resolution.
    disparity = np.zeros((4, 8), dtype=np.uint16)  # 0: invalid
    disparity[0, :4] = 3  # 2 px: below 5
    disparity[1, :] = 11  # 10 px: inside [5, 40)
    disparity[2, :4] = 41  # 40 px: above
    stats = SplitStats()
    stats.add(labels, instances, disparity)
    pct = stats.class_pct()
    assert pct["road"] == 50.0 and pct["car"] == 25.0 and pct["void"] == 25.0 and pct["sky"] == 0.0
    assert stats.instance_pixels == 6
    d = stats.disparity_summary()
    assert d["n"] == 16
    assert (d["below"], d["inside"], d["above"]) == pytest.approx((25.0, 50.0, 25.0))
    assert d["p50"] == pytest.approx(10.25)  # upper edge of the 0.25-px bin holding the median
    lines = "\n".join(format_stats("train", stats))
    assert "road" in lines and f"{REFERENCE_PCT['road']}" in lines
    assert "  road               50.00    33.0      1.52  outside 1.5x" in lines
    assert "instance pixels    18.75     9.0      2.08  outside 1.5x" in lines
    assert "50.0 % in 5-40 px" in lines


def test_check_prints_the_table_for_the_train_split_only(synthetic_root, capsys):
    assert check.main([str(synthetic_root)]) == 0
    out = capsys.readouterr().out
    assert out.count("class pixel frequencies") == 1 and "train: class pixel frequencies" in out
    for name in ("road", "building", "vegetation", "car", "truck", "instance pixels"):
        assert f"\n  {name} " in out, name
    assert "valid disparities scaled to a 2048-px-wide frame" in out and out.endswith("OK\n")
    assert check.main([str(synthetic_root), "--stats-split", ""]) == 0
    assert "class pixel frequencies" not in capsys.readouterr().out


def test_check_writes_the_table_and_its_provenance(synthetic_root, tmp_path, capsys):
    import json

    out = tmp_path / "data" / "stats.md"
    assert check.main([str(synthetic_root), "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    rec = json.loads(out.with_suffix(".json").read_text())
    assert rec["split"] == "train" and rec["command"][:3] == ["python", "-m", "data.check"]
    assert rec["synthetic"]["profile"] == "v1" and rec["git_commit"]
    road = rec["class_pct"]["road"]
    assert f"  road            {road:8.2f}" in printed  # the same figure as printed
    md = out.read_text()
    assert f"| road | {road:.2f} | 33.0 | {road / 33.0:.2f}" in md and "instance pixels" in md
