"""Very-large-dropout fine-tuning (Zhang & Bottou 2024, "Fine-tuning with Very Large
Dropout"): while fine-tuning (from `model.checkpoint` or `model.pretrained=true`), the
penultimate representation goes through dropout with a very high rate `p` (0.9) before the
linear classifier; everything else is ERM. At evaluation the dropout is off, so predictions
are the plain model's, deterministic."""

import torch.nn.functional as F
from torch import nn

from harness.method import Method


class LargeDropout(Method):
    def __init__(self, model, num_classes, num_groups=1, p: float = 0.9):
        super().__init__(model, num_classes, num_groups, p=p)
        if not 0 <= p < 1:
            raise ValueError(f"method.p must be in [0, 1), got {p}")
        if not isinstance(model.get_classifier(), nn.Linear):
            raise ValueError(
                f"method=large_dropout needs a model whose classifier is one linear layer, got "
                f"{type(model.get_classifier()).__name__}"
            )
        self.p = p

    def predict(self, x):
        feats = self.model.forward_features(x)
        pre = self.model.forward_head(feats, pre_logits=True).flatten(1)
        # the model's own mode decides (the runner evaluates with model.eval())
        dropped = F.dropout(pre, self.p, training=self.model.training)
        return self.model.get_classifier()(dropped), pre

    def update(self, batch):
        logits, _ = self.predict(batch["x"])
        loss = F.cross_entropy(logits, batch["y"])
        self.step(loss)
        return {"loss": loss.item()}
