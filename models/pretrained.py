"""ImageNet initialisation of the backbone, as the paper (docs/design.md decision 8).

`model.pretrained: imagenet` loads torchvision's ImageNet weights for the configured ResNet
(`IMAGENET_WEIGHTS`, torchvision's weights API) into our dilated backbone. Training reads them from
torch's cache only, where torchvision itself keeps them:

    torch.hub.get_dir()/checkpoints/<file name of the weights' url>   (e.g. resnet101-cd907fc2.pth)

and never downloads: a missing file stops the run before anything is trained or written, with a
one-line message naming the file, its place, and `model.pretrained=none` to train from scratch.
On a machine with internet, `python -m models.pretrained resnet101 [...]` fetches the files into
that cache through torchvision (`WeightsEnum.get_state_dict`); copy them to the same place on an
offline machine. Importing this module touches neither the network nor the cache.

Our dilated ResNets keep torchvision's module names and weight shapes (models/resnet.py), so the
key mapping is the identity minus the ImageNet classifier (`fc.*`); missing and unexpected keys are
reported by `load_backbone_weights`.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn

from models.resnet import load_backbone_weights

# The torchvision weights each backbone starts from: the newest ImageNet-1k recipe torchvision has
# for it (ResNet-18/34 have one; ResNet-50/101 have V2, 80.9 / 81.9 % top-1 against V1's 76.1 / 77.4).
IMAGENET_WEIGHTS = {
    "resnet18": "ResNet18_Weights.IMAGENET1K_V1",
    "resnet34": "ResNet34_Weights.IMAGENET1K_V1",
    "resnet50": "ResNet50_Weights.IMAGENET1K_V2",
    "resnet101": "ResNet101_Weights.IMAGENET1K_V2",
}
PRETRAINED = ("imagenet", "none")  # the values of model.pretrained


class PretrainedWeightsMissing(FileNotFoundError):
    """The ImageNet weights are not in torch's cache (and nothing is downloaded at run time)."""


def imagenet_weights(backbone: str):
    """torchvision's weights enum member for `backbone` (e.g. ResNet101_Weights.IMAGENET1K_V2)."""
    from torchvision.models import get_weight

    if backbone not in IMAGENET_WEIGHTS:
        raise ValueError(f"no ImageNet weights for backbone {backbone!r}; known: {sorted(IMAGENET_WEIGHTS)}")
    return get_weight(IMAGENET_WEIGHTS[backbone])


def cache_path(backbone: str) -> Path:
    """Where torchvision keeps (and this code reads) `backbone`'s ImageNet weights: the file name of the
    weights' url in torch.hub.get_dir()/checkpoints (as torch.hub.load_state_dict_from_url names it)."""
    url = imagenet_weights(backbone).url
    return Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(url).path)


def require_imagenet(backbone: str) -> Path:
    """The cached weights file of `backbone`, or PretrainedWeightsMissing with a one-line message."""
    path = cache_path(backbone)
    if not path.is_file():
        weights = imagenet_weights(backbone)
        raise PretrainedWeightsMissing(
            f"model.pretrained=imagenet: torchvision's {IMAGENET_WEIGHTS[backbone]} for {backbone} is not in "
            f"torch's cache and nothing is downloaded at run time: place {path.name} (from {weights.url}; "
            f"`python -m models.pretrained {backbone}` fetches it on a machine with internet) at {path}, "
            "or train from scratch with model.pretrained=none")
    return path


def check_initial_weights(model_cfg) -> None:
    """Raise before training when the configured initial weights are not on this machine."""
    if model_cfg.backbone_weights:
        if not Path(model_cfg.backbone_weights).is_file():
            raise PretrainedWeightsMissing(f"model.backbone_weights: no such file {model_cfg.backbone_weights}")
    elif model_cfg.pretrained == "imagenet":
        require_imagenet(model_cfg.backbone)


def initialise_backbone(backbone: nn.Module, model_cfg) -> tuple[list[str], list[str]] | None:
    """Load the configured initial weights into `backbone`: a local state dict (`backbone_weights`,
    which takes precedence) or torchvision's ImageNet weights from the cache (`pretrained: imagenet`).
    Returns (missing, unexpected) keys, or None when the backbone keeps its random initialisation."""
    if model_cfg.backbone_weights:
        return load_backbone_weights(backbone, model_cfg.backbone_weights)
    if model_cfg.pretrained == "imagenet":
        path = require_imagenet(model_cfg.backbone)
        return load_backbone_weights(backbone, path, what=f"model.pretrained=imagenet ({path.name})")
    return None


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description="Fetch torchvision's ImageNet weights of the backbones into torch's "
                                "cache (needs internet; training itself never downloads).")
    p.add_argument("backbones", nargs="+", choices=sorted(IMAGENET_WEIGHTS))
    args = p.parse_args(argv)
    for name in args.backbones:
        if not cache_path(name).is_file():
            imagenet_weights(name).get_state_dict(progress=True, check_hash=True)
        print(f"{name}: {cache_path(name)}")


if __name__ == "__main__":
    main()
