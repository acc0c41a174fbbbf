"""Training-class counts for the class-imbalance losses (balanced softmax, LDAM): read once
from the training labels the runner hands to `Method.prepare`. Kept as plain tensors, not
buffers, so checkpoints hold the same keys as ERM's (the counts are a function of the data)."""

import numpy as np
import torch


def class_counts(labels: np.ndarray, num_classes: int) -> torch.Tensor:
    """Examples per class, float64, for classes 0..num_classes-1 (absent classes: 0)."""
    labels = np.asarray(labels, dtype=np.int64)
    return torch.as_tensor(
        np.bincount(labels, minlength=num_classes)[:num_classes], dtype=torch.float64
    )
