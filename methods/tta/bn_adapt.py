"""Batch-norm adaptation (Schneider et al. 2020, "Improving robustness against common
corruptions by covariate shift adaptation"; Nado et al. 2020): the batch-norm statistics are
re-estimated on the test split's inputs, then the split is predicted in eval mode. `prior`
is the weight of the training statistics in the mix (the paper's N / (N + n)); 0 uses the
test split's statistics alone. No weight is trained."""

import torch
from torch import nn

from harness.tta import TTA, predict_all


def batch_norms(net: nn.Module) -> list[nn.modules.batchnorm._BatchNorm]:
    return [m for m in net.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]


class BNAdapt(TTA):
    def __init__(self, batch_size: int = 128, prior: float = 0.0):
        super().__init__(batch_size)
        if not 0.0 <= prior <= 1.0:
            raise ValueError(f"tta.prior must be in [0, 1], got {prior}")
        self.prior = prior

    def adapt(self, net, batches):
        norms = batch_norms(net)
        if not norms:
            raise ValueError("tta=bn_adapt: the model has no batch-norm layer to adapt")
        source = [(m.running_mean.clone(), m.running_var.clone()) for m in norms]
        for m in norms:
            m.reset_running_stats()
            m.momentum = None  # a cumulative average over the split's batches
            m.train()
        with torch.no_grad():
            for x in batches():
                net.predict(x)
        for m, (mean, var) in zip(norms, source, strict=True):
            m.running_mean.mul_(1 - self.prior).add_(self.prior * mean)
            m.running_var.mul_(1 - self.prior).add_(self.prior * var)
            m.eval()
        return predict_all(net, batches)
