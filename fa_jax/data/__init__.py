"""Data generators (pure functions of a PRNG key and a config) and image dataset loaders."""
from .clusters import ClusterData, make_centres, make_cluster_data, sample_clusters, superclass_of
from .images import (
    DATASETS,
    PARTITIONS,
    BinaryPartition,
    CorruptDataError,
    ImageDataset,
    Standardizer,
    class_signs,
    fit_standardizer,
    flatten,
    load_dataset,
    load_mnist_5k,
    load_split,
    load_train_test,
    standardize,
    subset,
    to_binary,
    to_nhwc,
)
from .natural import NaturalSignal
from .support import TARGETS, SupportData, make_support_data, support_target

__all__ = [
    "DATASETS", "PARTITIONS", "TARGETS", "BinaryPartition", "ClusterData", "CorruptDataError", "ImageDataset",
    "NaturalSignal", "Standardizer", "SupportData", "class_signs", "fit_standardizer", "flatten", "load_dataset",
    "load_mnist_5k", "load_split", "load_train_test", "make_centres", "make_cluster_data", "make_support_data", "sample_clusters", "standardize",
    "subset", "superclass_of", "support_target", "to_binary", "to_nhwc",
]
