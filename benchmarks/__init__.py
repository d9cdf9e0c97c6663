"""Measured comparisons against naive baselines, run by ``nox -s bench``."""
