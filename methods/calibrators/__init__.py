"""Post-hoc calibrators: one file each, configured under `calibrators:` in conf/eval/."""
