"""Dilated ResNet backbones (docs/design.md decision 2) built from torchvision's ResNet.

ResNet-50/101 use torchvision's own `replace_stride_with_dilation`. torchvision's BasicBlock
refuses dilation, so ResNet-18/34 use `DilatedBasicBlock`, which only sets the dilation and
padding of the two 3x3 convolutions; the weights keep their shapes, so parameter names and
counts are exactly torchvision's and its state dicts load unchanged. Nothing is downloaded:
`load_backbone_weights` reads a local torchvision state dict (models/pretrained.py finds torchvision's
ImageNet weights in torch's cache).
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from torch import Tensor, nn
from torchvision.models.resnet import BasicBlock, Bottleneck, ResNet

log = logging.getLogger(__name__)

# Which of layer2/3/4 trade their stride 2 for dilation, per output stride. 32 is the plain
# classification network (no dilation); it is kept so tests can compare with torchvision exactly.
_DILATE: dict[int, list[bool]] = {8: [False, True, True], 16: [False, False, True], 32: [False, False, False]}


class DilatedBasicBlock(BasicBlock):
    """torchvision's BasicBlock with both 3x3 convolutions dilated by `dilation`.

    torchvision's `_make_layer` passes the previous stage's dilation to the first block of a
    dilated stage and the new dilation to the others, exactly as for Bottleneck (whose single 3x3
    conv gets it); here both 3x3 convs of a block share the block's dilation.
    """

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 groups: int = 1, base_width: int = 64, dilation: int = 1, norm_layer=None) -> None:
        super().__init__(inplanes, planes, stride, downsample, groups, base_width, 1, norm_layer)
        for conv in (self.conv1, self.conv2):
            # A 3x3 kernel keeps the spatial size with padding == dilation (stride aside).
            conv.dilation = (dilation, dilation)
            conv.padding = (dilation, dilation)


class DilatedResNet(ResNet):
    """A torchvision ResNet without avgpool/fc whose forward returns the layer4 feature map."""

    def __init__(self, block: type[nn.Module], layers: list[int], output_stride: int = 8) -> None:
        if output_stride not in _DILATE:
            raise ValueError(f"output_stride must be one of {sorted(_DILATE)}, got {output_stride}")
        super().__init__(block, layers, replace_stride_with_dilation=_DILATE[output_stride])
        del self.avgpool, self.fc  # a dense-prediction encoder: no classifier
        self.output_stride = output_stride
        self.out_channels: int = 512 * block.expansion

    def forward(self, x: Tensor) -> Tensor:  # (B, 3, H, W) -> (B, C, H/os, W/os)
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))  # (B, 64, H/4, W/4)
        x = self.layer1(x)
        x = self.layer2(x)  # (B, 128*e, H/8, W/8)
        x = self.layer3(x)  # (B, 256*e, H/8 or H/16, ...)
        return self.layer4(x)  # (B, 512*e, H/os, W/os)


def resnet18(output_stride: int = 8) -> DilatedResNet:
    """Dilated ResNet-18 (BasicBlock, [2, 2, 2, 2])."""
    return DilatedResNet(DilatedBasicBlock, [2, 2, 2, 2], output_stride)


def resnet34(output_stride: int = 8) -> DilatedResNet:
    """Dilated ResNet-34 (BasicBlock, [3, 4, 6, 3])."""
    return DilatedResNet(DilatedBasicBlock, [3, 4, 6, 3], output_stride)


def resnet50(output_stride: int = 8) -> DilatedResNet:
    """Dilated ResNet-50 (Bottleneck, [3, 4, 6, 3])."""
    return DilatedResNet(Bottleneck, [3, 4, 6, 3], output_stride)


def resnet101(output_stride: int = 8) -> DilatedResNet:
    """Dilated ResNet-101 (Bottleneck, [3, 4, 23, 3])."""
    return DilatedResNet(Bottleneck, [3, 4, 23, 3], output_stride)


BACKBONES = {"resnet18": resnet18, "resnet34": resnet34, "resnet50": resnet50, "resnet101": resnet101}


def build_backbone(name: str, output_stride: int = 8) -> DilatedResNet:
    """Build the registered backbone `name` at `output_stride` (8 or 16; 32 = no dilation)."""
    if name not in BACKBONES:
        raise ValueError(f"unknown backbone {name!r}; valid backbones are {sorted(BACKBONES)}")
    return BACKBONES[name](output_stride)


def load_backbone_weights(backbone: nn.Module, path: str | Path,
                          what: str = "model.backbone_weights") -> tuple[list[str], list[str]]:
    """Load a local torchvision ResNet state dict (fc.* ignored); return (missing, unexpected) keys.
    `what` names the setting the file comes from in messages."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{what}: no such file {path}")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt file, pickle with non-tensor objects, ...
        raise ValueError(f"{what}: cannot read {path} as a state dict ({e})") from e
    if not isinstance(state, dict):
        raise ValueError(f"{what}: {path} holds a {type(state).__name__}, not a state dict")
    state = {k: v for k, v in state.items() if not k.startswith("fc.")}  # the ImageNet classifier

    own = backbone.state_dict()
    matched = [k for k in state if k in own]
    if not matched:
        raise ValueError(
            f"{what}: no key of {path} matches the backbone (e.g. file has "
            f"{list(state)[:3]}, backbone expects {list(own)[:3]}); is it a torchvision ResNet state dict?")
    wrong = [f"{k}: file {tuple(state[k].shape)} vs backbone {tuple(own[k].shape)}"
             for k in matched if state[k].shape != own[k].shape]
    if wrong:
        raise ValueError(f"{what}: {path} does not fit this backbone (another depth?); "
                         f"shape mismatch for {len(wrong)} key(s), first: {wrong[:3]}")

    result = backbone.load_state_dict(state, strict=False)
    missing, unexpected = list(result.missing_keys), list(result.unexpected_keys)
    log.info("%s: loaded %d tensors into the backbone from %s", what, len(matched), path)
    if missing:
        log.warning("%s: %d missing key(s) left at initialisation: %s", what, len(missing), missing)
    if unexpected:
        log.warning("%s: %d unexpected key(s) ignored: %s", what, len(unexpected), unexpected)
    return missing, unexpected
