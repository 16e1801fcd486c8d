"""The Tiny cache (data/cache.py): items equal the PNG path's on every key, augmentation included;
stale, corrupt and unusable caches are refused with one line; writing is atomic; the config switch."""

import os
import shutil

import numpy as np
import pytest
import torch

from data.cache import CacheError, main, split_dir, write_split
from data.cityscapes import CityscapesMultiTask
from data.transforms import Augment


@pytest.fixture(scope="module")
def cache_dir(synthetic_root, tmp_path_factory):
    """Caches of both splits of the synthetic fixture at 32x64 and at its own 64x128."""
    out = tmp_path_factory.mktemp("cache")
    for size in ((32, 64), (64, 128)):
        main([str(synthetic_root), "--size", f"{size[0]}x{size[1]}", "--out", str(out), "--workers", "1", "--quiet"])
    return out


def assert_same_items(a, b, seed: int = 0):
    assert len(a) == len(b)
    for i in range(len(a)):
        torch.manual_seed(seed + i)
        x = a[i]
        torch.manual_seed(seed + i)
        y = b[i]
        assert x.keys() == y.keys()
        for key in x:
            assert x[key].dtype == y[key].dtype and torch.equal(x[key], y[key]), (i, key)


@pytest.mark.parametrize("size", [(32, 64), (64, 128)])
@pytest.mark.parametrize("augment", [False, Augment(flip=True), Augment(flip=True, crop=(24, 40), jitter=True)],
                         ids=["none", "flip", "crop-jitter"])
@pytest.mark.parametrize("split", ["train", "val"])
def test_cache_items_equal_png_items(synthetic_root, cache_dir, size, augment, split):
    png = CityscapesMultiTask(synthetic_root, split, size=size, augment=augment, cache="off")
    cached = CityscapesMultiTask(synthetic_root, split, size=size, augment=augment, cache=cache_dir)
    assert png.cache is None and cached.cache is not None
    assert_same_items(png, cached)
    if augment:  # several draws of the same items: flips on some and not others
        assert_same_items(png, cached, seed=100)


def test_flip_draws_both_ways(synthetic_root, cache_dir):
    cached = CityscapesMultiTask(synthetic_root, "train", size=(32, 64), augment=True, cache=cache_dir)
    plain = CityscapesMultiTask(synthetic_root, "train", size=(32, 64), cache=cache_dir)
    flipped = 0
    for seed in range(8):
        torch.manual_seed(seed)
        flipped += not torch.equal(cached[0]["image"], plain[0]["image"])
    assert 0 < flipped < 8


def test_limit_and_workers(synthetic_root, cache_dir):
    png = CityscapesMultiTask(synthetic_root, "train", size=(32, 64), limit=2, cache="off")
    cached = CityscapesMultiTask(synthetic_root, "train", size=(32, 64), limit=2, cache=cache_dir)
    assert_same_items(png, cached)
    loader = torch.utils.data.DataLoader(cached, batch_size=2, num_workers=1)  # pickled into a worker
    batch = next(iter(loader))
    assert torch.equal(batch["image"][1], png[1]["image"])


@pytest.fixture
def own_root(synthetic_root, tmp_path):
    """A copy of the fixture (mtimes kept) that a test may build an auto cache in or modify."""
    root = tmp_path / "ds"
    shutil.copytree(synthetic_root, root)
    return root


def test_auto_uses_root_cache_when_built(own_root):
    assert CityscapesMultiTask(own_root, "val", size=(32, 64)).cache is None  # nothing built: the PNGs
    main([str(own_root), "--size", "32x64", "--splits", "val", "--workers", "1", "--quiet"])
    assert (own_root / "cache" / "32x64" / "val" / "index.json").is_file()
    assert CityscapesMultiTask(own_root, "val", size=(32, 64)).cache is not None
    assert CityscapesMultiTask(own_root, "val", size=(32, 64), cache="off").cache is None
    assert CityscapesMultiTask(own_root, "val", size=(16, 32)).cache is None  # no cache at that size
    assert CityscapesMultiTask(own_root, "val", size=None).cache is None
    assert CityscapesMultiTask(own_root, "val", size=(32, 64), augment=Augment(scale=(0.5, 1.0))).cache is None


def test_stale_cache_is_refused(own_root, tmp_path):
    out = tmp_path / "c"
    write_split(own_root, "val", (32, 64), out, progress=False)
    frame = CityscapesMultiTask(own_root, "val", cache="off").frames[1]
    os.utime(frame.disparity, ns=(1, 1))  # a source file changed since the cache was built
    with pytest.raises(CacheError, match=f"stale cache: {frame.disparity} changed"):
        CityscapesMultiTask(own_root, "val", size=(32, 64), cache=out)
    write_split(own_root, "val", (32, 64), out, progress=False)  # rebuilt: accepted again
    CityscapesMultiTask(own_root, "val", size=(32, 64), cache=out)
    frame.image.unlink()
    for p in frame.files.values():
        p.unlink(missing_ok=True)
    with pytest.raises(CacheError, match="stale cache: it holds 3 frames, the dataset has 2"):
        CityscapesMultiTask(own_root, "val", size=(32, 64), cache=out)


def test_corrupt_cache_is_refused(synthetic_root, tmp_path):
    out = tmp_path / "c"
    target = write_split(synthetic_root, "val", (32, 64), out, progress=False)
    image = target / "image.npy"
    image.write_bytes(image.read_bytes()[:1000])  # truncated
    with pytest.raises(CacheError, match="image.npy: corrupt cache file"):
        CityscapesMultiTask(synthetic_root, "val", size=(32, 64), cache=out)
    (target / "index.json").write_text("{not json")
    with pytest.raises(CacheError, match="corrupt cache index"):
        CityscapesMultiTask(synthetic_root, "val", size=(32, 64), cache=out)


def test_explicit_cache_that_cannot_serve_is_an_error(synthetic_root, cache_dir, tmp_path):
    with pytest.raises(CacheError, match="no cache of split 'val' at 16x32"):
        CityscapesMultiTask(synthetic_root, "val", size=(16, 32), cache=cache_dir)
    with pytest.raises(CacheError, match="random scaling"):
        CityscapesMultiTask(synthetic_root, "train", size=(32, 64), augment=Augment(scale=(0.5, 1.0)), cache=cache_dir)
    with pytest.raises(CacheError, match="size=None"):
        CityscapesMultiTask(synthetic_root, "val", size=None, cache=cache_dir)


def test_rewrite_is_atomic_and_leaves_no_temporaries(synthetic_root, tmp_path):
    out = tmp_path / "c"
    first = write_split(synthetic_root, "val", (32, 64), out, progress=False)
    before = np.load(first / "image.npy")
    second = write_split(synthetic_root, "val", (32, 64), out, progress=False)
    assert first == second == split_dir(out, (32, 64), "val")
    assert np.array_equal(np.load(second / "image.npy"), before)
    assert sorted(p.name for p in second.parent.iterdir()) == ["val"]


def test_cli_errors_are_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit) as e:
        main([str(tmp_path / "nowhere"), "--size", "32x64"])
    assert str(e.value).startswith("error: ") and "\n" not in str(e.value)
    with pytest.raises(SystemExit) as e:
        main([str(tmp_path), "--size", "32by64"])
    assert e.value.code == 2  # argparse: usage error


def test_config_switch_reaches_the_loaders(synthetic_root, cache_dir):
    from data.loaders import make_loaders
    from engine.config import Config, load_config

    base = [f"data.root={synthetic_root}", "data.size=[32, 64]", "data.num_workers=0", "optim.batch_size=2"]
    for setting, cached in ((str(cache_dir), True), ("off", False)):
        cfg = load_config(overrides=[*base, f"data.cache={setting}"])
        loader, val_loader, _ = make_loaders(cfg, synthetic_root, 0, 1, 0, pin=False)
        assert (loader.dataset.dataset.cache is not None) == cached
        assert (val_loader.dataset.dataset.cache is not None) == cached
        assert cfg.identity() == load_config(overrides=base).identity()  # same items: same experiment
        assert Config().data.cache == "auto"


def test_data_benchmark_writes_its_figures(synthetic_root, tmp_path):
    import json

    from bench.data import main as bench_data

    out = tmp_path / "perf.json"
    (result,) = bench_data(["--root", str(synthetic_root), "--items", "2", "--size", "32x64", "--json", str(out)])
    assert result["cache_equals_png"] and result["ms_per_item"]["cache"] > 0
    saved = json.loads(out.read_text())
    assert saved["command"].startswith("python -m bench.data --root") and saved["git_commit"]
    assert saved["results"][0]["dataloader_samples_per_s"].keys() == {
        "png_workers0", "cache_workers0", "png_workers2", "cache_workers2"}


def test_the_runner_notes_a_missing_cache_once_it_could_serve_the_trainings(synthetic_root, tmp_path):
    from engine.config import load_config
    from experiments.runner import cache_note

    root = tmp_path / "data"
    shutil.copytree(synthetic_root, root)
    cfg = load_config([], [f"data.root={root}", "data.size=[32,64]"])
    note = cache_note(cfg)
    assert note.startswith(f"note: no Tiny cache of {root} at 32x64") and \
        f"python -m data.cache {root} --size 32x64 --splits train val" in note
    assert cache_note(load_config([], [f"data.root={root}", "data.size=[32,64]", "data.cache=off"])) is None
    assert cache_note(load_config([], [f"data.root={root}", "data.size=null"])) is None  # file resolution
    assert cache_note(load_config([], [f"data.root={tmp_path / 'nowhere'}", "data.size=[32,64]"])) is None
    assert main([str(root), "--size", "32x64", "--splits", "train"]) in (None, 0)
    assert cache_note(cfg) is None
