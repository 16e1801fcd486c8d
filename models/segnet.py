"""SegNet with task attention (MTAN, Liu, Johns & Davison, CVPR 2019) and the plain SegNet "split" baseline:
the models of the 2-task Cityscapes protocol of nash-mtl and FAMO (docs/protocols.md).

The global network is SegNet: five encoder stages (conv-BN-ReLU blocks, 2x2 max-pooling with indices) and
five decoder stages (max-unpooling with those indices, conv-BN-ReLU blocks); channels (64, 128, 256, 512, 512)
by default (`model.segnet_channels`). MTAN adds, per task, one attention module per stage (1x1 conv-BN-ReLU,
1x1 conv-BN-sigmoid) whose soft mask multiplies the stage's last shared feature map (MTAN Sec. 3.1, Eq. 1 for
the encoder and Eq. 2 for the decoder); the 3x3 convs between the attention modules are shared by the tasks,
as in the authors' code. Each task's prediction head is a 3x3 conv then a 1x1 conv. SegNet-split ("Split,
Standard" in MTAN's Table) shares the whole SegNet and has only the task heads. Initialisation: Xavier-normal
conv weights, zero biases, BatchNorm (1, 0), as the authors' code.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tasks import TASK_SPECS

DEFAULT_CHANNELS = (64, 128, 256, 512, 512)


def _conv(cin: int, cout: int) -> nn.Sequential:
    """3x3 conv + BN + ReLU: the SegNet block."""
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


def _attention(cin: int, mid: int, cout: int) -> nn.Sequential:
    """The attention module: 1x1 conv-BN-ReLU, 1x1 conv-BN-sigmoid -> a soft mask in (0, 1)."""
    return nn.Sequential(nn.Conv2d(cin, mid, 1), nn.BatchNorm2d(mid), nn.ReLU(inplace=True),
                         nn.Conv2d(mid, cout, 1), nn.BatchNorm2d(cout), nn.Sigmoid())


def _head(cin: int, cout: int) -> nn.Sequential:
    """A task's prediction layer: 3x3 conv then 1x1 conv to the task's channels."""
    return nn.Sequential(nn.Conv2d(cin, cin, 3, padding=1), nn.Conv2d(cin, cout, 1))


def _init(module: nn.Module) -> None:
    for m in module.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.xavier_normal_(m.weight)
            nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)


class SegNet(nn.Module):
    """The shared SegNet; `forward` returns every stage's features (what the attention modules read)."""

    def __init__(self, channels: tuple[int, ...] = DEFAULT_CHANNELS) -> None:
        super().__init__()
        if len(channels) != 5 or any(c <= 0 for c in channels):
            raise ValueError(f"SegNet needs 5 positive channel counts, got {channels}")
        f = channels
        self.enc_first = nn.ModuleList([_conv(3 if i == 0 else f[i - 1], f[i]) for i in range(5)])
        self.enc_rest = nn.ModuleList([_conv(f[i], f[i]) if i < 2 else nn.Sequential(_conv(f[i], f[i]),
                                                                                       _conv(f[i], f[i]))
                                       for i in range(5)])
        # decoder stage i (run from 4 down to 0) maps f[i] channels to f[i - 1] (stage 0: f[0] to f[0])
        self.dec_first = nn.ModuleList([_conv(f[i], f[max(i - 1, 0)]) for i in range(5)])
        self.dec_rest = nn.ModuleList([_conv(f[max(i - 1, 0)], f[max(i - 1, 0)]) if i < 2 else
                                       nn.Sequential(_conv(f[i - 1], f[i - 1]), _conv(f[i - 1], f[i - 1]))
                                       for i in range(5)])
        self.channels = tuple(f)

    def forward(self, x: Tensor) -> dict[str, list[Tensor]]:
        """(B, 3, H, W), H and W divisible by 32 -> per stage: encoder first/last block outputs, unpooled
        decoder inputs and decoder last block outputs (decoder lists in run order, stage 4 first)."""
        enc_a, enc_b, indices = [], [], []
        for i in range(5):
            enc_a.append(self.enc_first[i](x))
            enc_b.append(self.enc_rest[i](enc_a[-1]))
            x, idx = F.max_pool2d(enc_b[-1], 2, 2, return_indices=True)
            indices.append(idx)
        dec_up, dec_b = [], []
        for i in reversed(range(5)):
            x = F.max_unpool2d(x, indices[i], 2, 2, output_size=enc_b[i].shape[-2:])
            dec_up.append(x)
            x = self.dec_rest[i](self.dec_first[i](x))
            dec_b.append(x)
        return {"enc_a": enc_a, "enc_b": enc_b, "dec_up": dec_up, "dec_b": dec_b, "bottom": enc_b[-1]}


def _check_size(image: Tensor) -> None:
    if image.shape[-2] % 32 or image.shape[-1] % 32:
        raise ValueError(f"SegNet pools 5 times: the input size must be divisible by 32, got {tuple(image.shape[-2:])}")


class SegNetSplit(nn.Module):
    """Shared SegNet, one prediction head per task (hard parameter sharing; MTAN's "Split, Standard")."""

    def __init__(self, tasks: tuple[str, ...], channels: tuple[int, ...] = DEFAULT_CHANNELS) -> None:
        super().__init__()
        self.segnet = SegNet(channels)
        self.heads = nn.ModuleDict({t: _head(channels[0], TASK_SPECS[t].channels) for t in tasks})
        self.tasks = tuple(tasks)
        _init(self)

    def forward(self, image: Tensor, with_features: bool = False):
        """(B, 3, H, W) -> {task: (B, C_task, H, W)}; with `with_features`, (outputs, shared features)."""
        _check_size(image)
        features = self.segnet(image)["dec_b"][-1]  # (B, f0, H, W): what every head reads
        outputs = {t: head(features) for t, head in self.heads.items()}
        return (outputs, features) if with_features else outputs

    def shared_parameters(self) -> list[nn.Parameter]:
        return list(self.segnet.parameters())

    def last_shared_parameters(self) -> list[nn.Parameter]:
        return list(self.segnet.dec_rest[0].parameters())

    def task_parameters(self, task: str) -> list[nn.Parameter]:
        return list(self.heads[task].parameters())


class SegNetMTAN(nn.Module):
    """SegNet-MTAN: the shared SegNet plus one attention network and head per task."""

    def __init__(self, tasks: tuple[str, ...], channels: tuple[int, ...] = DEFAULT_CHANNELS) -> None:
        super().__init__()
        f = channels
        self.segnet = SegNet(channels)
        # shared 3x3 convs of the attention path: encoder stage i f[i] -> f[i + 1] (stage 4: f[4] -> f[4]);
        # decoder stage i f[i] -> f[i - 1] (stage 0: f[0] -> f[0], stage 4: f[4] -> f[4])
        self.enc_att_conv = nn.ModuleList([_conv(f[i], f[min(i + 1, 4)]) for i in range(5)])
        self.dec_att_conv = nn.ModuleList([_conv(f[i], f[i] if i in (0, 4) else f[i - 1]) for i in range(5)])

        def encoder_masks() -> nn.ModuleList:  # stage i reads its first block's output (+ the previous stage's)
            return nn.ModuleList([_attention(f[0] if i == 0 else 2 * f[i], f[i], f[i]) for i in range(5)])

        def decoder_masks() -> nn.ModuleList:  # stage i reads the unpooled input and the attention path
            out = [f[max(i - 1, 0)] for i in range(5)]
            ins = [2 * f[0]] + [f[i] + f[i - 1] for i in range(1, 4)] + [2 * f[4]]
            return nn.ModuleList([_attention(ins[i], out[i], out[i]) for i in range(5)])

        self.enc_att = nn.ModuleDict({t: encoder_masks() for t in tasks})
        self.dec_att = nn.ModuleDict({t: decoder_masks() for t in tasks})
        self.heads = nn.ModuleDict({t: _head(f[0], TASK_SPECS[t].channels) for t in tasks})
        self.tasks = tuple(tasks)
        _init(self)

    def _branch(self, task: str, g: dict[str, list[Tensor]]) -> Tensor:
        """The task's attention path over the shared features: (B, f0, H, W) task features."""
        x = None
        for i in range(5):  # encoder: mask the stage's last block output, then shared conv + pooling
            inp = g["enc_a"][i] if i == 0 else torch.cat((g["enc_a"][i], x), dim=1)
            x = self.enc_att[task][i](inp) * g["enc_b"][i]
            x = F.max_pool2d(self.enc_att_conv[i](x), 2, 2)
        for j, i in enumerate(reversed(range(5))):  # decoder: upsample, shared conv, mask the stage output
            x = self.dec_att_conv[i](F.interpolate(x, scale_factor=2, mode="bilinear", align_corners=True))
            x = self.dec_att[task][i](torch.cat((g["dec_up"][j], x), dim=1)) * g["dec_b"][j]
        return x

    def forward(self, image: Tensor, with_features: bool = False):
        """(B, 3, H, W) -> {task: (B, C_task, H, W)}."""
        if with_features:
            raise ValueError("segnet-mtan has no single shared feature map (each task's attention reads every "
                             "stage): use a gradient method with space: parameters")
        _check_size(image)
        g = self.segnet(image)
        return {t: self.heads[t](self._branch(t, g)) for t in self.tasks}

    def shared_parameters(self) -> list[nn.Parameter]:
        """The global SegNet and the attention path's shared convs."""
        return [*self.segnet.parameters(), *self.enc_att_conv.parameters(), *self.dec_att_conv.parameters()]

    def last_shared_parameters(self) -> list[nn.Parameter]:
        return list(self.segnet.dec_rest[0].parameters())

    def task_parameters(self, task: str) -> list[nn.Parameter]:
        """The task's attention modules and head."""
        return [*self.enc_att[task].parameters(), *self.dec_att[task].parameters(), *self.heads[task].parameters()]
