"""Method plugins: one small file per method, chosen with `method=NAME` (conf/method/)."""
