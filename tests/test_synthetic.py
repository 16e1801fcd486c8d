"""The synthetic Cityscapes generator: official format, geometry, determinism."""

import json
import math
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
import torchvision
from PIL import Image

from data.labels import ID_TO_COLOR, INSTANCE_IDS, KNOWN_IDS, NAME_TO_ID
from data.synthetic import BASELINE, generate, main

ROOT = Path(__file__).resolve().parents[1]
SKY, EGO = NAME_TO_ID["sky"], NAME_TO_ID["ego vehicle"]


def _files(root):
    return sorted(p for p in root.rglob("*") if p.is_file())


def _frames(root, split):
    for image in sorted((root / "leftImg8bit" / split).glob("*/*_leftImg8bit.png")):
        name, city = image.name[: -len("_leftImg8bit.png")], image.parent.name
        gt = root / "gtFine" / split / city / f"{name}_gtFine"
        yield {
            "image": image,
            "labelIds": gt.with_name(gt.name + "_labelIds.png"),
            "instanceIds": gt.with_name(gt.name + "_instanceIds.png"),
            "color": gt.with_name(gt.name + "_color.png"),
            "polygons": gt.with_name(gt.name + "_polygons.json"),
            "disparity": root / "disparity" / split / city / f"{name}_disparity.png",
            "camera": root / "camera" / split / city / f"{name}_camera.json",
        }


def test_layout_names_and_file_types(synthetic_root):
    assert (synthetic_root / ".complete").is_file()
    for split, n, cities in (("train", 4, {"aachen", "bochum", "bremen", "cologne"}), ("val", 3, None)):
        frames = list(_frames(synthetic_root, split))
        assert len(frames) == n
        if cities:
            assert {f["image"].parent.name for f in frames} == cities
        for f in frames:
            assert all(p.is_file() for p in f.values()), f
            assert Image.open(f["image"]).mode == "RGB"
            assert Image.open(f["labelIds"]).mode == "L"
            assert Image.open(f["instanceIds"]).mode == "I;16"
            assert Image.open(f["color"]).mode == "RGBA"
            assert Image.open(f["disparity"]).mode == "I;16"
            assert Image.open(f["image"]).size == (128, 64)
    val = [f["image"].name for f in _frames(synthetic_root, "val")]
    assert val == ["frankfurt_000000_000019_leftImg8bit.png", "lindau_000000_000019_leftImg8bit.png",
                   "munster_000000_000019_leftImg8bit.png"]  # fmt: skip


def test_torchvision_cityscapes_loads_it(synthetic_root):
    for split, n in (("train", 4), ("val", 3)):
        data = torchvision.datasets.Cityscapes(
            str(synthetic_root), split=split, mode="fine", target_type=["semantic", "instance", "color", "polygon"]
        )
        assert len(data) == n
        image, (semantic, instance, color, polygon) = data[0]
        assert image.size == semantic.size == instance.size == color.size == (128, 64)
        assert polygon["imgWidth"] == 128 and polygon["imgHeight"] == 64 and polygon["objects"]


def test_labels_instances_colours_and_polygons_agree(synthetic_root):
    from cityscapesscripts.helpers.annotation import Annotation
    from cityscapesscripts.preparation.json2instanceImg import createInstanceImage
    from cityscapesscripts.preparation.json2labelImg import createLabelImage

    for f in _frames(synthetic_root, "train"):
        labels = cv2.imread(str(f["labelIds"]), cv2.IMREAD_UNCHANGED)
        inst = cv2.imread(str(f["instanceIds"]), cv2.IMREAD_UNCHANGED).astype(np.int32)
        assert set(np.unique(labels).tolist()) <= KNOWN_IDS
        objects = inst >= 1000
        np.testing.assert_array_equal(np.where(objects, inst // 1000, inst), labels)
        assert set(np.unique(inst[objects] // 1000).tolist()) <= INSTANCE_IDS | {NAME_TO_ID["caravan"],
                                                                                 NAME_TO_ID["trailer"]}
        color = cv2.cvtColor(cv2.imread(str(f["color"]), cv2.IMREAD_UNCHANGED), cv2.COLOR_BGRA2RGBA)
        lut = np.zeros((256, 4), np.uint8)
        for i, rgb in ID_TO_COLOR.items():
            lut[i] = (*rgb, 255)
        np.testing.assert_array_equal(color, lut[labels])
        # The official json -> png tools redraw (almost) the same images from the polygons.
        annotation = Annotation()
        annotation.fromJsonFile(str(f["polygons"]))
        redrawn = np.array(createLabelImage(annotation, "ids"))
        assert (redrawn == labels).mean() > 0.97
        assert (np.array(createInstanceImage(annotation, "ids")) == inst).mean() > 0.97


def test_disparity_follows_the_camera_geometry(synthetic_root):
    for f in _frames(synthetic_root, "val"):
        camera = json.loads(f["camera"].read_text())
        ext, intr = camera["extrinsic"], camera["intrinsic"]
        assert set(ext) == {"baseline", "pitch", "roll", "x", "y", "yaw", "z"} and ext["baseline"] == BASELINE
        assert set(intr) == {"fx", "fy", "u0", "v0"} and intr["fx"] == pytest.approx(2262.52 * 128 / 2048)
        labels = cv2.imread(str(f["labelIds"]), cv2.IMREAD_UNCHANGED)
        inst = cv2.imread(str(f["instanceIds"]), cv2.IMREAD_UNCHANGED).astype(np.int32)
        p = cv2.imread(str(f["disparity"]), cv2.IMREAD_UNCHANGED).astype(np.int32)
        d = (p - 1) / 256.0
        assert not p[labels == SKY].any() and not p[labels == EGO].any()  # no stereo match there
        # Road pixels: the ground plane d = fx B (cos(pitch) (y - v0) / fy + sin(pitch)) / h.
        ys = np.arange(p.shape[0])[:, None] * np.ones_like(p)
        c, s = math.cos(ext["pitch"]), math.sin(ext["pitch"])
        plane = intr["fx"] * ext["baseline"] * (c * (ys - intr["v0"]) / intr["fy"] + s) / ext["z"]
        road = (labels == NAME_TO_ID["road"]) & (p > 0)
        assert road.sum() > 500
        assert np.median(np.abs(d[road] - plane[road])) < 0.1
        # Objects are fronto-parallel at depth Z = fx B / d, standing on the ground row of Z.
        checked = 0
        for iid in np.unique(inst[inst >= 1000]):
            mask = (inst == iid) & (p > 0)
            if iid // 1000 == NAME_TO_ID["rider"] or mask.sum() < 30:
                continue  # riders sit on their bikes, small objects are too noisy
            disparity = np.median(d[mask])
            z = intr["fx"] * ext["baseline"] / disparity
            ground = intr["v0"] + intr["fy"] * (ext["z"] / z - s) / c
            bottom = np.nonzero(inst == iid)[0].max()
            # Occluders or the image edge may hide the bottom: never below the ground row, mostly on it.
            assert bottom <= ground + 1.5
            checked += abs(bottom - ground) <= 1.5
        assert checked >= 1


def test_deterministic_for_a_seed_whatever_the_workers(tmp_path):
    one = generate(tmp_path / "a", train=2, val=1, size=(32, 64), seed=5, workers=1)
    two = generate(tmp_path / "b", train=2, val=1, size=(32, 64), seed=5, workers=2)
    other = generate(tmp_path / "c", train=2, val=1, size=(32, 64), seed=6, workers=1)
    files = [p.relative_to(one) for p in _files(one)]
    assert files == [p.relative_to(two) for p in _files(two)] == [p.relative_to(other) for p in _files(other)]
    assert all((one / f).read_bytes() == (two / f).read_bytes() for f in files)
    images = [f for f in files if f.name.endswith("_leftImg8bit.png")]
    assert all((one / f).read_bytes() != (other / f).read_bytes() for f in images)


def test_cli_writes_complete_marker_and_refuses_foreign_folders(tmp_path):
    out = tmp_path / "set"
    main(["--out", str(out), "--train", "1", "--val", "1", "--size", "32x64", "--workers", "1"])
    assert (out / ".complete").is_file() and len(list(out.glob("leftImg8bit/*/*/*.png"))) == 2
    main(["--out", str(out), "--train", "2", "--val", "0", "--size", "32x64", "--workers", "1"])  # regenerate
    assert len(list(out.glob("leftImg8bit/*/*/*.png"))) == 2 and not (out / "leftImg8bit" / "val").exists()
    foreign = tmp_path / "real"
    foreign.mkdir()
    (foreign / "keep.txt").write_text("mine")
    with pytest.raises(SystemExit, match="refusing to overwrite"):
        main(["--out", str(foreign), "--train", "1", "--val", "0"])
    with pytest.raises(SystemExit):
        main(["--out", str(out), "--size", "64"])


def test_runs_as_a_module_from_the_repository_root():
    command = [sys.executable, "-m", "data.synthetic", "--help"]
    result = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert "--out" in result.stdout
