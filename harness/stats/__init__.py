"""Statistics every report uses, callable from a notebook: paired method comparisons with
intervals that keep their error rate (see docs/statistics.md)."""

from harness.stats.paired import PairedDifference, adjust_p_values, paired_difference
from harness.stats.power import SeedsNeeded, seeds_for_power, seeds_needed, t_test_power

__all__ = [
    "PairedDifference",
    "SeedsNeeded",
    "adjust_p_values",
    "paired_difference",
    "seeds_for_power",
    "seeds_needed",
    "t_test_power",
]
