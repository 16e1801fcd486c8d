"""One decoder per task (docs/design.md decision 3); its output channels come from the task's TaskSpec."""

from __future__ import annotations

from torch import Tensor, nn

from tasks import TASK_SPECS


class TaskHead(nn.Module):
    """conv k x k to `channels` + BN + ReLU, then a 1x1 conv to the task's outputs (Sec. 4).

    kernel=3 is the paper's Sec. 4 decoder; kernel=1 the 1x1-first variant of Appendix A.
    The output stays at feature resolution; the model upsamples it to the input size.
    """

    def __init__(self, in_channels: int, out_channels: int, channels: int = 256, kernel: int = 3) -> None:
        super().__init__()
        if kernel not in (1, 3):
            raise ValueError(f"head kernel must be 1 or 3, got {kernel}")
        self.conv = nn.Conv2d(in_channels, channels, kernel, padding=kernel // 2, bias=False)
        self.bn = nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)
        self.out = nn.Conv2d(channels, out_channels, 1)

    def forward(self, x: Tensor) -> Tensor:  # (B, Cin, h, w) -> (B, out_channels, h, w)
        return self.out(self.relu(self.bn(self.conv(x))))


def build_head(task: str, in_channels: int, channels: int = 256, kernel: int = 3) -> TaskHead:
    """The decoder of `task`, with that task's number of output channels."""
    if task not in TASK_SPECS:
        raise ValueError(f"no head for task {task!r}; valid tasks are {list(TASK_SPECS)}")
    return TaskHead(in_channels, TASK_SPECS[task].channels, channels, kernel)
