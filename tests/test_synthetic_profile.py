"""Synthetic generator profiles: v1 stays byte-identical, calibrated differs, the marker records it."""

import hashlib
import json
from pathlib import Path

import numpy as np
import pytest

from data.check import REFERENCE_PCT, TOLERANCE, SplitStats
from data.synthetic import generate, main, render_frame
from data.synthetic.profile import CALIBRATED, read_marker

# sha256 over (relative path, bytes) of every data file of generate(train=5, val=3, size=(128, 256),
# seed=0), computed on the generator before profiles existed: every committed result was trained on
# these bytes.
V1_DIGEST = "372c4d4d5c193c3f9429be055767a711f38a671bfea52990fc5a774194596e1c"


def _digest(root: Path) -> str:
    h = hashlib.sha256()
    for p in sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith(".")):
        h.update(str(p.relative_to(root)).encode())
        h.update(p.read_bytes())
    return h.hexdigest()


def test_v1_bytes_are_unchanged(tmp_path):
    root = generate(tmp_path / "v1", train=5, val=3, size=(128, 256), seed=0, workers=1)
    assert _digest(root) == V1_DIGEST


def test_marker_records_how_the_set_was_made(tmp_path):
    root = generate(tmp_path / "v1", train=2, val=1, size=(32, 64), seed=3, workers=1)
    info = json.loads((root / ".synthetic").read_text())
    assert info == {"profile": "v1", "seed": 3, "size": [32, 64], "train": 2, "val": 1}
    assert read_marker(root) == info
    (root / ".synthetic").write_text("")  # sets written before profiles existed: an empty marker
    assert read_marker(root) == {"profile": "v1"}
    assert read_marker(tmp_path) is None


def test_calibrated_profile_differs_and_says_so(tmp_path):
    v1 = generate(tmp_path / "v1", train=2, val=1, size=(64, 128), seed=0, workers=1)
    cal = generate(tmp_path / "cal", train=2, val=1, size=(64, 128), seed=0, workers=1, profile="calibrated")
    again = generate(tmp_path / "again", train=2, val=1, size=(64, 128), seed=0, workers=2, profile="calibrated")
    assert read_marker(cal)["profile"] == "calibrated"
    files = sorted(p.relative_to(cal) for p in cal.rglob("*_labelIds.png"))
    assert files and files == sorted(p.relative_to(v1) for p in v1.rglob("*_labelIds.png"))
    assert all((cal / f).read_bytes() != (v1 / f).read_bytes() for f in files)
    assert _digest(cal) == _digest(again)  # deterministic per (seed, split, index), whatever the workers


def test_cli_profile_choice(tmp_path):
    main(["--out", str(tmp_path / "s"), "--train", "1", "--val", "0", "--size", "32x64", "--workers", "1",
          "--profile", "calibrated"])  # fmt: skip
    assert read_marker(tmp_path / "s")["profile"] == "calibrated"
    with pytest.raises(SystemExit):
        main(["--out", str(tmp_path / "t"), "--profile", "v2"])
    with pytest.raises(ValueError, match="unknown synthetic profile"):
        generate(tmp_path / "u", train=1, val=0, size=(32, 64), profile="v2")
    assert not (tmp_path / "u").exists()


def test_calibrated_big_classes_near_cityscapes():
    """The calibrated profile's big classes lie within data.check's tolerance of the reference (fixed
    frames, so not flaky; the full measurement is `python -m data.check` on a generated set)."""
    stats = SplitStats()
    for i in range(40):
        frame = render_frame(np.random.default_rng([0, 0, i]), 128, 256, CALIBRATED)
        stats.add(frame["label_ids"], frame["instance_ids"], frame["disparity"])
    pct = stats.class_pct()
    for name, ref in REFERENCE_PCT.items():
        if ref > 1:
            assert 1 / TOLERANCE <= pct[name] / ref <= TOLERANCE, (name, pct[name], ref)
    assert 6 <= 100 * stats.instance_pixels / stats.pixels <= 13
