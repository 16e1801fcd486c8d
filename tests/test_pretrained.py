"""ImageNet initialisation (model.pretrained), without network: torchvision's file placed in a temporary
torch cache lands in our dilated backbone; a missing file stops training before anything is written,
with one line naming the file and its place; nothing is ever downloaded; identities are unchanged."""

from pathlib import Path

import pytest
import torch
import torchvision

import train
from engine.config import Config, ConfigError, ModelConfig, load_config
from models import build_model
from models.pretrained import IMAGENET_WEIGHTS, PretrainedWeightsMissing, cache_path

ROOT = Path(__file__).resolve().parents[1]
SMALL = dict(aspp_channels=8, head_channels=8)


@pytest.fixture
def torch_home(tmp_path, monkeypatch) -> Path:
    """An empty torch cache; any download attempt fails the test."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    monkeypatch.setattr(torch.hub, "_hub_dir", None)  # a set_dir() elsewhere would override TORCH_HOME

    def no_download(url, *args, **kwargs):
        pytest.fail(f"attempted to download {url}")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    return tmp_path / "torch"


def cfg(**model) -> Config:
    return Config(model=ModelConfig(**{"backbone": "resnet18", **SMALL, **model}))


def test_cache_path_is_where_torchvision_keeps_the_weights(torch_home):
    path = cache_path("resnet101")
    assert path == torch_home / "hub" / "checkpoints" / "resnet101-cd907fc2.pth"
    assert Path(torch.hub.get_dir()) / "checkpoints" / "resnet18-f37072fd.pth" == cache_path("resnet18")
    assert set(IMAGENET_WEIGHTS) == {"resnet18", "resnet34", "resnet50", "resnet101"}


def test_imagenet_weights_from_the_torch_cache_land_in_the_backbone(torch_home, caplog):
    torch.manual_seed(3)
    ref = torchvision.models.resnet18()  # random init stands in for the ImageNet weights (same keys)
    with torch.no_grad():
        ref.layer3[0].bn1.running_var.uniform_(0.5, 2.0)  # buffers travel too
    path = cache_path("resnet18")
    path.parent.mkdir(parents=True)
    torch.save(ref.state_dict(), path)
    with caplog.at_level("INFO", logger="models.resnet"):
        model = build_model(cfg(pretrained="imagenet"))
    ours = model.backbone.state_dict()
    loaded = {k: v for k, v in ref.state_dict().items() if not k.startswith("fc.")}
    assert set(ours) == set(loaded)  # the key mapping is exact: nothing missing, nothing unexpected
    for k, v in loaded.items():
        assert torch.equal(ours[k], v), k
    assert "resnet18-f37072fd.pth" in caplog.text and "missing" not in caplog.text
    # Without `pretrained` (a checkpoint follows) the file is not read; `none` keeps the random init.
    for other in (build_model(cfg(pretrained="imagenet"), pretrained=False), build_model(cfg())):
        assert not torch.equal(other.backbone.conv1.weight, ref.conv1.weight)

    # A file with a key too few and one too many: both reported.
    state = dict(ref.state_dict())
    del state["layer4.1.bn2.weight"]
    state["extra.weight"] = torch.zeros(1)
    torch.save(state, path)
    caplog.clear()
    with caplog.at_level("INFO", logger="models.resnet"):
        build_model(cfg(pretrained="imagenet"))
    assert "1 missing key(s)" in caplog.text and "layer4.1.bn2.weight" in caplog.text
    assert "1 unexpected key(s)" in caplog.text and "extra.weight" in caplog.text


def test_local_backbone_weights_take_precedence(torch_home, tmp_path):
    ref = torchvision.models.resnet18()
    local = tmp_path / "mine.pth"
    torch.save(ref.state_dict(), local)
    model = build_model(cfg(pretrained="imagenet", backbone_weights=str(local)))  # the cache is empty: not read
    assert torch.equal(model.backbone.conv1.weight, ref.conv1.weight)


def test_missing_weights_give_one_line_naming_file_and_place(torch_home):
    with pytest.raises(PretrainedWeightsMissing) as e:
        build_model(cfg(backbone="resnet101", pretrained="imagenet"))
    msg = str(e.value)
    assert "\n" not in msg
    expected = torch_home / "hub" / "checkpoints" / "resnet101-cd907fc2.pth"
    assert str(expected) in msg and "https://download.pytorch.org/models/resnet101-cd907fc2.pth" in msg
    assert "ResNet101_Weights.IMAGENET1K_V2" in msg and "model.pretrained=none" in msg


def test_training_stops_before_writing_anything(torch_home, tmp_path, capsys):
    run_dir = tmp_path / "run"
    with pytest.raises(SystemExit) as e:
        train.main(["model.backbone=resnet18", "model.pretrained=imagenet", "model.aspp_channels=8",
                    "model.head_channels=8", "device=cpu", f"run_dir={run_dir}", "data.root=/nonexistent"])
    msg = str(e.value.code)
    assert msg.startswith("error: model.pretrained=imagenet") and "resnet18-f37072fd.pth" in msg
    assert "\n" not in msg and not run_dir.exists()


def test_option_keeps_identities_and_presets_say_how_they_start():
    base = load_config([], [])
    assert base.model.pretrained == "none"
    assert load_config([], ["model.pretrained=none"]).identity() == base.identity()
    assert load_config([], ["model.pretrained=imagenet"]).identity() != base.identity()
    with pytest.raises(ConfigError, match="imagenet or none"):
        load_config([], ["model.pretrained=imagenet1k"])
    for preset, expected in (("paper_tiny", "imagenet"), ("paper_full", "imagenet"), ("synthetic-cpu", "none"),
                             ("demo", "none")):
        path = ROOT / "configs" / f"{preset}.yaml"
        assert load_config([path]).model.pretrained == expected, preset
        assert "pretrained:" in path.read_text() and "scratch" in path.read_text(), preset
