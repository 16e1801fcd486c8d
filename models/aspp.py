"""Atrous spatial pyramid pooling as in the paper's Appendix A (DeepLabV3, Chen et al. 2017).

Five parallel branches on the encoder's feature map, each `channels` wide with BatchNorm and
ReLU: a 1x1 conv, three 3x3 convs at rates (12, 24, 36) at output stride 8 (halved at 16), and
image pooling (global average pool, 1x1 conv, upsampled back). They are concatenated to
5 * 256 = 1280 channels with no projection; a 1x1 projection back to `channels` is optional.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class PooledBatchNorm(nn.BatchNorm2d):
    """BatchNorm for the image-pooling branch that also trains on a batch of one image.

    After global pooling each channel holds one value per image, so with one image per device
    the batch variance is undefined: plain BatchNorm raises "Expected more than 1 value per
    channel when training" (torchvision's DeepLabV3 fails there), and if it did not, it would
    map every input to beta and pass no gradient back. When a training batch has a single value
    per channel we therefore normalise with the running statistics, as in evaluation, and leave
    them unchanged: train and test then apply the same normalisation, the affine parameters
    and the layers before still learn, and with more than one image the layer is exactly
    nn.BatchNorm2d (batch statistics, running averages updated).
    """

    def forward(self, x: Tensor) -> Tensor:  # (B, C, 1, 1)
        if self.training and x.numel() // x.shape[1] == 1:
            return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                                training=False, momentum=0.0, eps=self.eps)
        return super().forward(x)


def _conv_bn_relu(cin: int, cout: int, kernel: int, dilation: int = 1) -> nn.Sequential:
    pad = dilation * (kernel // 2)
    return nn.Sequential(nn.Conv2d(cin, cout, kernel, padding=pad, dilation=dilation, bias=False),
                         nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class ImagePooling(nn.Module):
    """Global average pool -> 1x1 conv -> BN -> ReLU, broadcast back to the feature map size."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 1, bias=False)
        self.bn = PooledBatchNorm(cout)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:  # (B, Cin, h, w) -> (B, Cout, h, w)
        h, w = x.shape[-2:]
        y = self.relu(self.bn(self.conv(x.mean(dim=(2, 3), keepdim=True))))  # (B, Cout, 1, 1)
        # Bilinear upsampling of a 1x1 map is the same value everywhere: a broadcast.
        return y.expand(-1, -1, h, w)


class ASPP(nn.Module):
    """The paper's ASPP head: 1x1 + three dilated 3x3 + image pooling, concatenated."""

    def __init__(self, in_channels: int, channels: int = 256, rates: tuple[int, ...] = (12, 24, 36),
                 projection: bool = False) -> None:
        super().__init__()
        self.rates = tuple(rates)
        self.branches = nn.ModuleList(
            [_conv_bn_relu(in_channels, channels, 1)]
            + [_conv_bn_relu(in_channels, channels, 3, r) for r in self.rates]
            + [ImagePooling(in_channels, channels)])
        concat = channels * len(self.branches)
        self.project = _conv_bn_relu(concat, channels, 1) if projection else nn.Identity()
        self.out_channels: int = channels if projection else concat

    def forward(self, x: Tensor) -> Tensor:  # (B, Cin, h, w) -> (B, out_channels, h, w)
        y = torch.cat([branch(x) for branch in self.branches], dim=1)  # (B, 5*C, h, w)
        return self.project(y)


def aspp_rates(rates_at_os8: tuple[int, ...], output_stride: int) -> tuple[int, ...]:
    """The atrous rates at `output_stride`, given for output stride 8 (halved at 16)."""
    # The rates are in feature-map pixels: the same image-space field of view needs rate * 8 / os.
    return tuple(max(1, r * 8 // output_stride) for r in rates_at_os8)
