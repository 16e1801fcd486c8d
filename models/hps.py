"""DeepLabV3+ R50 with hard parameter sharing: LibMTL's Cityscapes setting (docs/protocols.md).

LibMTL's examples/cityscapes/main.py builds a dilated ResNet-50 encoder (ImageNet weights, output stride 8)
shared by the tasks and, per task, a `DeepLabHead(2048, channels)` decoder (ASPP with rates 12/24/36,
3x3 conv-BN-ReLU, 1x1 conv); predictions are upsampled bilinearly (align_corners=True) to the input size.
LibMTL calls it DeepLabV3+; its head has no low-level skip connection (DeepLabV3's ASPP head). Here the
encoder is models/resnet.py's dilated ResNet-50 (torchvision's, `replace_stride_with_dilation`) and each
decoder torchvision's `DeepLabHead`; nothing is downloaded (model.pretrained: imagenet reads torch's cache).
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn
from torchvision.models.segmentation.deeplabv3 import DeepLabHead

from tasks import TASK_SPECS


class HardSharingDeepLab(nn.Module):
    """A shared encoder (B, 3, H, W) -> (B, C, H/os, W/os) and one DeepLabHead per task."""

    def __init__(self, backbone: nn.Module, tasks: tuple[str, ...], rates: tuple[int, int, int] = (12, 24, 36)):
        super().__init__()
        self.backbone = backbone
        self.heads = nn.ModuleDict({t: DeepLabHead(backbone.out_channels, TASK_SPECS[t].channels, rates)
                                    for t in tasks})
        self.tasks = tuple(tasks)

    def forward(self, image: Tensor, with_features: bool = False):
        """(B, 3, H, W) -> {task: (B, C_task, H, W)}; with `with_features`, (outputs, encoder features)."""
        features = self.backbone(image)  # (B, 2048, H/8, W/8)
        outputs = {t: F.interpolate(head(features), size=image.shape[-2:], mode="bilinear", align_corners=True)
                   for t, head in self.heads.items()}
        return (outputs, features) if with_features else outputs

    def shared_parameters(self) -> list[nn.Parameter]:
        return list(self.backbone.parameters())

    def last_shared_parameters(self) -> list[nn.Parameter]:
        return list(self.backbone.layer4[-1].parameters())

    def task_parameters(self, task: str) -> list[nn.Parameter]:
        return list(self.heads[task].parameters())
