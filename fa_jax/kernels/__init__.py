"""Kernel machines: RFM and Deep RFM with closed-form AGOPs (``rfm``)."""
from . import rfm
from .rfm import check_kernel_memory, deep_rfm, kernel_agop, kernel_matrix, krr_solve, random_features

__all__ = ["check_kernel_memory", "deep_rfm", "kernel_agop", "kernel_matrix", "krr_solve", "random_features", "rfm"]
