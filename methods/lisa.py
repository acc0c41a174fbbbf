"""LISA (Yao et al. 2022, "Improving Out-of-Distribution Robustness via Selective
Augmentation"), as SubpopBench: with probability `p_sel` a batch is mixed within labels
(pairs with the same label and different attributes: intra-label LISA), otherwise within
attributes (pairs with the same attribute and different labels: intra-domain LISA). Mixup
coefficients are drawn per pair from Beta(alpha, alpha) and the one-hot labels are mixed
with the same coefficient; mixing repeats until the batch is full, then the mixed examples
are shuffled and cut to the batch size. A batch where no such pair exists is used as it is.

The attribute is read from the benchmark's groups (label × attribute, e.g. coloured_digits'
label × colour): group ids are the sorted group keys, so within one label the groups come in
the order of the attribute's values, and a group's rank among its label's groups is its
attribute. That needs every label to have the same number of groups in the training split
(checked). Only SubpopBench's `mixup` form is implemented (not its `cutmix` option). The
random draws come from torch's generator, which the runner seeds per epoch."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from harness.method import Method


def attributes_from_groups(groups: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """group id -> attribute id: the group's rank among the groups of its label (-1 for ids
    absent from the training split); a ValueError unless groups are label × attribute."""
    groups, labels = np.asarray(groups, dtype=np.int64), np.asarray(labels, dtype=np.int64)
    out = np.full(int(groups.max()) + 1 if len(groups) else 0, -1, dtype=np.int64)
    per_label = {}
    for g in np.unique(groups):
        label = np.unique(labels[groups == g])
        if len(label) != 1:
            raise ValueError(
                "method=lisa: a group holds several labels; LISA needs groups of label × "
                "attribute (dataset.group_cols with the label and the spurious attribute)"
            )
        per_label.setdefault(int(label[0]), []).append(int(g))
    sizes = {len(v) for v in per_label.values()}
    if len(sizes) != 1:
        raise ValueError(
            f"method=lisa: labels have different numbers of groups in the training split "
            f"({ {k: len(v) for k, v in per_label.items()} }); LISA reads the attribute as the "
            "group's rank within its label, which needs every label × attribute group present"
        )
    for members in per_label.values():
        out[sorted(members)] = np.arange(len(members))
    return out


def _mix(alpha: float, x1, x2, y1, y2):
    n = min(len(x1), len(x2))
    lam = torch.distributions.Beta(alpha, alpha).sample((n,)).to(x1.device, x1.dtype)
    lx = lam.view(-1, *([1] * (x1.dim() - 1)))
    return lx * x1[:n] + (1 - lx) * x2[:n], lam[:, None] * y1[:n] + (1 - lam[:, None]) * y2[:n]


def _pick_two(values: torch.Tensor) -> torch.Tensor:
    return values[torch.randperm(len(values))[:2].to(values.device)]


def lisa_mix(
    x: torch.Tensor,
    y_onehot: torch.Tensor,
    labels: torch.Tensor,
    attrs: torch.Tensor,
    intra_label: bool,
    alpha: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """SubpopBench's selective mixup of one batch: (mixed inputs, mixed soft labels)."""
    bs, xs, ys, total = len(x), [], [], 0
    if intra_label and len(torch.unique(attrs)) < 2:
        return x, y_onehot
    if not intra_label and len(torch.unique(labels)) < 2:
        return x, y_onehot
    while total < bs:
        start = total
        outer, inner = (labels, attrs) if intra_label else (attrs, labels)
        for v in torch.unique(outer):
            mask = outer == v
            values = torch.unique(inner[mask])
            if len(values) < 2:
                continue
            first, second = _pick_two(values)
            m1, m2 = mask & (inner == first), mask & (inner == second)
            mx, my = _mix(alpha, x[m1], x[m2], y_onehot[m1], y_onehot[m2])
            xs.append(mx)
            ys.append(my)
            total += len(mx)
        if total == start:  # no pair anywhere (each attribute has one label, or the reverse)
            return x, y_onehot
    mixed_x, mixed_y = torch.cat(xs), torch.cat(ys)
    order = torch.randperm(len(mixed_x)).to(mixed_x.device)
    return mixed_x[order][:bs], mixed_y[order][:bs]


class LISA(Method):
    def __init__(self, model, num_classes, num_groups=1, alpha: float = 2.0, p_sel: float = 0.5):
        super().__init__(model, num_classes, num_groups, alpha=alpha, p_sel=p_sel)
        if not alpha > 0:
            raise ValueError(f"method.alpha must be > 0, got {alpha}")
        if not 0 <= p_sel <= 1:
            raise ValueError(f"method.p_sel must be in [0, 1], got {p_sel}")
        self.alpha, self.p_sel = float(alpha), float(p_sel)
        self.attribute_of_group: torch.Tensor | None = None

    def prepare(self, groups, labels):
        self.attribute_of_group = torch.as_tensor(attributes_from_groups(groups, labels))

    def update(self, batch):
        if self.attribute_of_group is None:
            raise RuntimeError("LISA needs the training groups (prepare) first")
        x, y = batch["x"], batch["y"]
        attrs = self.attribute_of_group.to(y.device)[batch["group"]]
        intra_label = bool(torch.rand(()) < self.p_sel)
        onehot = F.one_hot(y, self.num_classes).to(x.dtype)
        mixed_x, mixed_y = lisa_mix(x, onehot, y, attrs, intra_label, self.alpha)
        logits, _ = self.predict(mixed_x)
        loss = F.cross_entropy(logits, mixed_y.to(logits.dtype))
        self.step(loss)
        return {"loss": loss.item()}
