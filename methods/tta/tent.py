"""TENT (Wang et al. 2021, "Tent: Fully Test-time Adaptation by Entropy Minimization"):
online, batch by batch, the affine parameters of the normalisation layers take `steps`
gradient steps on the mean entropy of the predictions; batch norm normalises with the
statistics of the test batch. Every other weight is frozen. A batch is predicted by the
forward pass before its own update (as in the paper's code)."""

import torch
from torch import nn

from harness.tta import TTA

NORMS = (nn.modules.batchnorm._BatchNorm, nn.LayerNorm, nn.GroupNorm)


def entropy(logits: torch.Tensor) -> torch.Tensor:
    return torch.distributions.Categorical(logits=logits).entropy()


class Tent(TTA):
    def __init__(
        self, batch_size: int = 128, lr: float = 0.001, momentum: float = 0.9, steps: int = 1
    ):
        super().__init__(batch_size)
        if lr <= 0:
            raise ValueError(f"tta.lr must be > 0, got {lr}")
        if not isinstance(steps, int) or steps < 1:
            raise ValueError(f"tta.steps must be a positive integer, got {steps!r}")
        self.lr, self.momentum, self.steps = lr, momentum, steps

    def configure(self, net: nn.Module) -> list[nn.Parameter]:
        """Freezes everything but the normalisation layers' affine parameters (returned)."""
        net.eval()
        net.requires_grad_(False)
        params = []
        for m in net.modules():
            if isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.train()  # batch statistics, and the running ones are not updated
                m.track_running_stats = False
                m.running_mean, m.running_var = None, None
            if isinstance(m, NORMS) and m.weight is not None:
                for p in (m.weight, m.bias):
                    if p is not None:
                        p.requires_grad_(True)
                        params.append(p)
        if not params:
            raise ValueError("tta=tent: the model has no normalisation layer with affine weights")
        return params

    def adapt(self, net, batches):
        optimizer = torch.optim.SGD(self.configure(net), lr=self.lr, momentum=self.momentum)
        logits_all, features_all = [], []
        for x in batches():
            for step in range(self.steps):
                logits, features = net.predict(x)
                if step == 0:
                    logits_all.append(logits.detach())
                    features_all.append(features.detach())
                loss = entropy(logits).mean()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
        return torch.cat(logits_all), torch.cat(features_all)
