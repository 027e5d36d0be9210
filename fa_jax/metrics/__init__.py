"""Metrics, one module per family: ``features`` (cosines, alignment), ``robustness`` (flip radius, PGD)."""
from . import features, robustness

__all__ = ["features", "robustness"]
