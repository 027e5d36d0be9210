"""Data generators: pure functions of a PRNG key and a config."""
from .clusters import ClusterData, make_centres, sample_clusters, make_cluster_data, superclass_of

__all__ = ["ClusterData", "make_centres", "sample_clusters", "make_cluster_data", "superclass_of"]
