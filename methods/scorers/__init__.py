"""Post-hoc scorers: one file each, configured in conf/eval/ (see docs/scorers.md)."""
