"""Benchmarks of vaedetect against simple baselines, on the data in ``../shared/data``."""
