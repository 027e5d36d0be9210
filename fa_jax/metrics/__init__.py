"""Metrics, one module per family: ``features`` (cosines, alignment), ``robustness`` (flip radius, l2/linf PGD),
``lipschitz`` (layer spectral norms, product bounds, local estimates), ``margins`` (subspace DeepFool, censored
medians), ``agop`` (average gradient outer product, Neural Feature Ansatz), ``collapse`` (neural-collapse NC1/NC2)."""
from . import agop, collapse, features, lipschitz, margins, robustness

__all__ = ["agop", "collapse", "features", "lipschitz", "margins", "robustness"]
