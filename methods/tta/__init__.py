"""Test-time adaptation plugins, chosen with `tta=NAME` (conf/tta/); harness/tta.py runs them."""
