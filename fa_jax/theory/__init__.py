"""Closed forms per paper; every function carries its provenance (``paper`` / ``derived``)."""
from . import feature_averaging

__all__ = ["feature_averaging"]
