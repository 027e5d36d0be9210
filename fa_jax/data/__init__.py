"""Data generators: pure functions of a PRNG key and a config."""
from .clusters import (
    ClusterData,
    make_centres,
    make_cluster_data,
    sample_clusters,
    superclass_of,
)
from .natural import NaturalSignal

__all__ = ["ClusterData", "NaturalSignal", "make_centres", "make_cluster_data", "sample_clusters", "superclass_of"]
