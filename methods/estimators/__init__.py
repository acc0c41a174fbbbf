"""Accuracy estimators: one file each, configured under `estimators:` in conf/eval/."""
