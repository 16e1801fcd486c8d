"""Shared fixtures: a tiny synthetic Cityscapes set and a builder for hand-made Cityscapes trees."""

import os
from pathlib import Path

import cv2
import numpy as np
import pytest

os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
os.environ.setdefault("WANDB_MODE", "disabled")


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory) -> Path:
    """4 train + 3 val synthetic frames at 64x128, generated once per test session."""
    from data.synthetic import generate

    root = tmp_path_factory.mktemp("synthetic-cityscapes")
    return generate(root, train=4, val=3, size=(64, 128), seed=0, workers=1)


class CityscapesTree:
    """Writes hand-built frames into a temporary tree with the official layout and file types."""

    def __init__(self, root: Path):
        self.root = root

    def paths(self, split: str, name: str) -> dict[str, Path]:
        """Where the files of frame `name` (e.g. "aachen_000000_000019") live."""
        city = name.split("_")[0]
        gt = self.root / "gtFine" / split / city / f"{name}_gtFine"
        return {
            "image": self.root / "leftImg8bit" / split / city / f"{name}_leftImg8bit.png",
            "label_ids": Path(f"{gt}_labelIds.png"),
            "instance_ids": Path(f"{gt}_instanceIds.png"),
            "disparity": self.root / "disparity" / split / city / f"{name}_disparity.png",
        }

    def add(
        self,
        label_ids: np.ndarray,
        instance_ids: np.ndarray | None = None,
        disparity: np.ndarray | None = None,
        image: np.ndarray | None = None,
        split: str = "train",
        name: str = "aachen_000000_000019",
    ) -> dict[str, Path]:
        """Write one frame; instanceIds default to the label ids, disparity to 0, image to a ramp."""
        h, w = label_ids.shape
        if instance_ids is None:
            instance_ids = label_ids
        if disparity is None:
            disparity = np.zeros((h, w), np.uint16)
        if image is None:  # RGB, a different value on each pixel and channel
            image = (np.arange(h * w * 3).reshape(h, w, 3) % 251).astype(np.uint8)
        paths = self.paths(split, name)
        for path in paths.values():
            path.parent.mkdir(parents=True, exist_ok=True)
        arrays = {
            "image": np.ascontiguousarray(image[..., ::-1]),
            "label_ids": np.asarray(label_ids, np.uint8),
            "instance_ids": np.asarray(instance_ids, np.uint16),
            "disparity": np.asarray(disparity, np.uint16),
        }
        for key, array in arrays.items():
            assert cv2.imwrite(str(paths[key]), array)
        return paths


@pytest.fixture
def cityscapes_tree(tmp_path) -> CityscapesTree:
    """An empty Cityscapes tree under the test's temporary directory."""
    return CityscapesTree(tmp_path / "cityscapes")


@pytest.fixture(autouse=True)
def _default_torch_determinism():
    """Every test starts with torch's deterministic algorithms off, the default: a training run in a test
    process (deterministic=true) switches them on for the whole process, and a later test in the same worker
    (SegNet's max-unpooling has no deterministic kernel) must not depend on the order the tests ran in."""
    import torch

    torch.use_deterministic_algorithms(False)
    yield
    torch.use_deterministic_algorithms(False)


# The longest tests (about a minute or more each on two loaded cores) start first, so that neither pytest-xdist
# worker begins one of them when the other has run out of work. Matched against the test's node id.
SLOW_FIRST = (
    "test_launch.py::test_fault_",
    "test_method_zoo.py::test_every_method_keeps_identical_replicas_under_two_process_ddp",
    "test_speed_switches.py::test_two_process_ddp_switches_train_like_the_default",
    "test_reproduce.py::test_killed_run_resumes_and_finished_runs_are_not_retrained",
    "test_identity.py::test_resume_after_sigkill_gives_identical_weights",
    "test_aggregate.py::test_committed_tables_regenerate_byte_for_byte",
    "test_layout.py::test_each_package_imports_first",
)


def pytest_collection_modifyitems(items):
    """Stable reorder: the SLOW_FIRST tests (in that order) before all others. With `--dist loadgroup` the
    xdist_group groups (several tests that share one expensive fixture) are sent out first, largest first."""
    def rank(item) -> int:
        return next((i for i, key in enumerate(SLOW_FIRST) if key in item.nodeid), len(SLOW_FIRST))

    items.sort(key=rank)
