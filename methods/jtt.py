"""Just Train Twice (Liu et al. 2021, "Just Train Twice: Improving Group Robustness without
Training Group Information"). Stage 1: a short ERM run (`stage1_epochs`, its last epoch),
declared by `prerequisites()` so the runner runs it as its own run and shares it between
stage-2 settings. Stage 2: ERM on the training set with every stage-1 error repeated `upweight`
times (the paper's upsampled error set), freshly shuffled each epoch. No group labels."""

import numpy as np
import torch
import torch.nn.functional as F

from harness.method import Method, Prerequisite
from harness.outputs import Outputs


class UpsampledSet(torch.utils.data.Sampler):
    """Each index repeated `repeats[i]` times, in a new random order every epoch."""

    def __init__(self, repeats: np.ndarray, generator: torch.Generator) -> None:
        self.indices = torch.as_tensor(np.repeat(np.arange(len(repeats)), repeats))
        self.generator = generator

    def __len__(self) -> int:
        return len(self.indices)

    def __iter__(self):
        order = torch.randperm(len(self.indices), generator=self.generator)
        return iter(self.indices[order].tolist())


class JTT(Method):
    def __init__(self, model, num_classes, num_groups=1, stage1_epochs: int = 1, upweight=20):
        super().__init__(
            model, num_classes, num_groups, stage1_epochs=stage1_epochs, upweight=upweight
        )
        _check_stage1_epochs(stage1_epochs)
        if not isinstance(upweight, int) or upweight < 1:
            raise ValueError(f"method.upweight must be a positive integer, got {upweight!r}")
        self.stage1_epochs, self.upweight = stage1_epochs, upweight
        self.errors: np.ndarray | None = None

    @classmethod
    def prerequisites(cls, options):
        epochs = options.get("stage1_epochs", 1)
        _check_stage1_epochs(epochs)
        # the stage's config is a function of this run's (stage1_epochs is in its key): its
        # run_id would add nothing to this run's key
        stage1 = {
            "method": {"name": "erm", "_target_": "methods.erm.ERM"},
            "trainer": {"epochs": epochs},
            "selection_rule": "last_epoch",
        }
        return {"identification": Prerequisite(stage1, in_key=False)}

    def use_prerequisites(self, runs):
        self.use_stage1(Outputs.load(runs["identification"].split_output("train")))

    def use_stage1(self, out: Outputs) -> None:
        """The stage-1 errors on the training split, from its Outputs."""
        errors = np.zeros(len(out.index), dtype=bool)
        errors[out.index] = out.logits.argmax(1) != out.labels
        self.errors = errors

    def train_sampler(self, groups, labels, epoch, epochs, generator):
        if self.errors is None:
            raise RuntimeError("JTT needs its stage-1 errors (use_prerequisites) before training")
        if len(self.errors) != len(labels):
            raise ValueError(
                f"JTT: stage 1 predicted {len(self.errors)} training examples, this run has "
                f"{len(labels)}"
            )
        return UpsampledSet(np.where(self.errors, self.upweight, 1), generator)

    def update(self, batch):
        logits, _ = self.predict(batch["x"])
        loss = F.cross_entropy(logits, batch["y"])
        self.step(loss)
        return {"loss": loss.item()}


def _check_stage1_epochs(epochs) -> None:
    if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 1:
        raise ValueError(f"method.stage1_epochs must be a positive integer, got {epochs}")
