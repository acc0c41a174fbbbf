"""A training run's method against the rest of its config and the benchmark, before anything
is written (harness/run.py calls check_method_run after building the dataset adapter): the
training augmentation's and the method's unlabeled views' refused effects, and the
optimisation options a method's own steps cannot honour."""

from __future__ import annotations

from typing import Any

from harness import augment, registry
from harness.unlabeled import check_views


def check_method_steps(cls: Any, method: str, trainer: dict[str, Any]) -> None:
    """trainer.accumulate_steps > 1 with a method whose steps cannot be accumulated (Fish's
    inner loop, SagNet's two runner steps per update): a ValueError naming both and why.
    trainer.precision=fp16 is honoured by every method (Method.owned_step)."""
    k = trainer.get("accumulate_steps", 1)
    if k != 1 and not getattr(cls, "accumulates", True):
        raise ValueError(
            f"trainer.accumulate_steps={k} is refused by method={method}: "
            f"{getattr(cls, 'no_accumulation', '') or 'its steps cannot be accumulated'}. "
            "Use trainer.accumulate_steps=1 (a larger trainer.batch_size instead)"
        )


def check_method_run(c: dict[str, Any], adapter: Any) -> None:
    """Every check above for the run config `c` and its dataset adapter."""
    augment.check_refusals(c.get("augment"), adapter)
    t = c["trainer"]
    if t["epochs"] == 0 or not c["method"].get("_target_"):
        return
    cls = registry.resolve_target("method", c["method"])
    check_method_steps(cls, c["method"].get("name", "?"), t)
    if t.get("unlabeled_split") is not None:
        options = {k: v for k, v in c["method"].items() if k not in ("name", "search_space")}
        check_views(getattr(cls, "unlabeled_views", lambda _o: {})(options), adapter)
