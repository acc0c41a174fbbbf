"""An independent WideResNet forward for tests/test_robustbench.py: the pre-activation
WRN-d-k of Zagoruyko & Komodakis (2016) written functionally over a state dict whose tensor
names are RobustBench's (`block{b}.layer.{i}.bn1`, `conv1`, `convShortcut`, final `bn1`, `fc`).
Loading a checkpoint into methods/models/robustbench.py and running this on the same tensors
must agree: names, shapes, block order, strides and where the shortcut branches all have to
match the architecture. Written from the paper, not from RobustBench's code."""

from __future__ import annotations

import torch
import torch.nn.functional as F


def _bn_relu(x: torch.Tensor, s: dict[str, torch.Tensor], name: str) -> torch.Tensor:
    x = F.batch_norm(
        x,
        s[f"{name}.running_mean"],
        s[f"{name}.running_var"],
        s[f"{name}.weight"],
        s[f"{name}.bias"],
        training=False,
        eps=1e-5,
    )
    return F.relu(x)


def wrn_forward(s: dict[str, torch.Tensor], x: torch.Tensor, depth: int = 28) -> torch.Tensor:
    """Logits of WRN-`depth` with the weights in state dict `s` (eval mode, no dropout)."""
    n = (depth - 4) // 6
    x = F.conv2d(x, s["conv1.weight"], padding=1)
    for b in (1, 2, 3):
        for i in range(n):
            p = f"block{b}.layer.{i}"
            stride = 2 if (b > 1 and i == 0) else 1
            act = _bn_relu(x, s, f"{p}.bn1")
            # a projection shortcut sees the activated input; an identity one the raw input
            shortcut = (
                F.conv2d(act, s[f"{p}.convShortcut.weight"], stride=stride)
                if f"{p}.convShortcut.weight" in s
                else x
            )
            y = F.conv2d(act, s[f"{p}.conv1.weight"], stride=stride, padding=1)
            y = F.conv2d(_bn_relu(y, s, f"{p}.bn2"), s[f"{p}.conv2.weight"], padding=1)
            x = shortcut + y
    x = _bn_relu(x, s, "bn1").mean(dim=(2, 3))
    return F.linear(x, s["fc.weight"], s["fc.bias"])
