"""Figures, one module per simulation family; every panel draws the theory beside the measurement."""
# No backend is forced here: a notebook keeps its inline display (the library draws with pyplot and saves files).
# The command line picks the file-only Agg backend before anything imports pyplot (fa_jax.cli.main).
from .feature_averaging import feature_averaging_figures

__all__ = ["feature_averaging_figures"]
