"""The engine of the shift-evaluation harness. It knows no particular dataset or method:
plugins are named in conf/ and imported only when selected (see harness.registry)."""
