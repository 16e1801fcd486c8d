"""The multi-task DeepLabV3 network: dilated ResNet encoder, ASPP, one decoder per task.

`build_model(cfg)` returns a `MultiTaskDeepLab` built for `cfg.tasks` only. It holds no
loss-weighting parameter: those belong to the method module (losses.build_weighting).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from models.aspp import ASPP, aspp_rates
from models.heads import build_head
from models.pretrained import initialise_backbone
from models.resnet import BACKBONES, build_backbone

__all__ = ["ARCHITECTURES", "BACKBONES", "MultiTaskDeepLab", "autocast_forward", "build_model"]


class MultiTaskDeepLab(nn.Module):
    """Shared encoder (backbone + ASPP) and one head per task; outputs at input resolution."""

    def __init__(self, backbone: nn.Module, aspp: nn.Module, heads: dict[str, nn.Module]) -> None:
        super().__init__()
        self.backbone = backbone
        self.aspp = aspp
        self.heads = nn.ModuleDict(heads)
        self.tasks: tuple[str, ...] = tuple(heads)

    def forward(self, image: Tensor, with_features: bool = False):
        """(B, 3, H, W) -> {task: (B, C_task, H, W)}; with `with_features`, (outputs, shared features)."""
        size = image.shape[-2:]
        features = self.aspp(self.backbone(image))  # (B, 1280 or 256, H/os, W/os): what every head reads
        outputs = {task: F.interpolate(head(features), size=size, mode="bilinear", align_corners=False)
                   for task, head in self.heads.items()}
        return (outputs, features) if with_features else outputs

    def shared_parameters(self) -> list[nn.Parameter]:
        """Parameters every task's loss depends on (encoder + ASPP), for gradient-space methods."""
        return list(self.backbone.parameters()) + list(self.aspp.parameters())

    def last_shared_parameters(self) -> list[nn.Parameter]:
        """The last shared layer: the ASPP's projection, or without one its parallel branches, whose
        outputs are concatenated into the features the heads read (GradNorm's W)."""
        project = list(self.aspp.project.parameters())
        return project or list(self.aspp.branches.parameters())

    def task_parameters(self, task: str) -> list[nn.Parameter]:
        """Parameters only `task`'s loss depends on (its head)."""
        return list(self.heads[task].parameters())


def build_model(cfg, pretrained: bool = True) -> nn.Module:
    """Build the network `cfg.model.arch` (ARCHITECTURES) with one head per task in `cfg.tasks`."""
    arch = getattr(cfg.model, "arch", "deeplabv3")
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown model.arch {arch!r}; valid architectures are {sorted(ARCHITECTURES)}")
    return ARCHITECTURES[arch](cfg, pretrained)


def build_deeplab(cfg, pretrained: bool = True) -> MultiTaskDeepLab:
    """The paper's network described by `cfg.model` with one head per task in `cfg.tasks`.

    With `pretrained` (a fresh training), the backbone starts from the configured weights
    (`model.backbone_weights` or `model.pretrained: imagenet`, models/pretrained.py); without (the
    weights come from a checkpoint next), it keeps its random initialisation and reads no file."""
    m = cfg.model
    backbone = build_backbone(m.backbone, m.output_stride)
    if pretrained:
        initialise_backbone(backbone, m)
    aspp = ASPP(backbone.out_channels, m.aspp_channels, aspp_rates(m.aspp_rates, m.output_stride), m.aspp_projection)
    heads = {task: build_head(task, aspp.out_channels, m.head_channels, m.head_kernel) for task in cfg.tasks}
    return MultiTaskDeepLab(backbone, aspp, heads)


def autocast_forward(net: nn.Module, image: Tensor, dtype: torch.dtype | None, **kwargs):
    """`net(image, **kwargs)` under autocast to `dtype` on the image's device; None: full precision. The one
    forward of training, evaluation and figures."""
    with torch.autocast(image.device.type, dtype=dtype, enabled=dtype is not None):
        return net(image, **kwargs)


def build_segnet_mtan(cfg, pretrained: bool = True) -> nn.Module:
    """SegNet-MTAN (models/segnet.py): from scratch, as nash-mtl and FAMO train it."""
    from models.segnet import SegNetMTAN

    return SegNetMTAN(tuple(cfg.tasks), cfg.model.segnet_channels)


def build_segnet_split(cfg, pretrained: bool = True) -> nn.Module:
    """SegNet with task heads only (models/segnet.py); with one task, the single-task SegNet."""
    from models.segnet import SegNetSplit

    return SegNetSplit(tuple(cfg.tasks), cfg.model.segnet_channels)


def build_deeplab_hps(cfg, pretrained: bool = True) -> nn.Module:
    """LibMTL's DeepLabV3+ R50 with hard parameter sharing (models/hps.py): `model.backbone` dilated to
    `model.output_stride`, initialised like the paper's backbone (model.pretrained / backbone_weights)."""
    from models.hps import HardSharingDeepLab

    m = cfg.model
    backbone = build_backbone(m.backbone, m.output_stride)
    if pretrained:
        initialise_backbone(backbone, m)
    return HardSharingDeepLab(backbone, tuple(cfg.tasks), aspp_rates(m.aspp_rates, m.output_stride))


# model.arch -> builder(cfg, pretrained): the paper's network and the 2-task protocols' models.
ARCHITECTURES = {"deeplabv3": build_deeplab, "segnet-mtan": build_segnet_mtan, "segnet-split": build_segnet_split,
                 "deeplabv3plus-hps": build_deeplab_hps}
