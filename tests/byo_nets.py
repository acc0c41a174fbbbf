"""Small modules for tests/test_byo.py: what a user brings with model=module."""

from __future__ import annotations

import torch
from torch import nn


class FeatureNet(nn.Module):
    """forward_features gives pooled (batch, width) features; `fc` is the linear head."""

    def __init__(self, width: int = 8, num_classes: int = 10) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, width, 3, padding=1)
        self.fc = nn.Linear(width, num_classes)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        return torch.relu(self.conv(x)).mean(dim=(2, 3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.forward_features(x))


class LogitsNet(nn.Module):
    """Logits only: no forward_features."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                 nn.Linear(4, num_classes))  # fmt: skip

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


class ScaledNet(FeatureNet):
    """Its forward divides by a temperature: not fc(forward_features(x))."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(x) / 2.0


def make_net(width: int = 8) -> nn.Module:
    return FeatureNet(width)
