"""Statistics every report uses, callable from a notebook: paired method comparisons with
intervals that keep their error rate (see docs/statistics.md)."""

from harness.stats.paired import PairedDifference, adjust_p_values, paired_difference

__all__ = ["PairedDifference", "adjust_p_values", "paired_difference"]
