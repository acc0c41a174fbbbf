"""Conformal prediction sets' non-conformity scores: one file each, configured under
`conformal.methods:` in conf/eval/ (harness/conformal.py, docs/scorers.md)."""
