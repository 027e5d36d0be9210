"""Figures, one module per simulation family; every panel draws the theory beside the measurement."""
import matplotlib

matplotlib.use("Agg")  # before any pyplot import: figures are files, never windows

from .feature_averaging import feature_averaging_figures

__all__ = ["feature_averaging_figures"]
