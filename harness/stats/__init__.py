"""Statistics every report uses, callable from a notebook: paired method comparisons with
intervals that keep their error rate, and of scorers' AUROCs (DeLong) (see docs/statistics.md)."""

from harness.stats.auroc import (
    AurocDifference,
    delong_difference,
    paired_auroc_difference,
    structural_components,
)
from harness.stats.paired import PairedDifference, adjust_p_values, paired_difference
from harness.stats.power import SeedsNeeded, seeds_for_power, seeds_needed, t_test_power

__all__ = [
    "AurocDifference",
    "PairedDifference",
    "SeedsNeeded",
    "adjust_p_values",
    "delong_difference",
    "paired_auroc_difference",
    "paired_difference",
    "seeds_for_power",
    "seeds_needed",
    "structural_components",
    "t_test_power",
]
