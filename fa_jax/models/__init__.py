"""Models as pure functions on parameter pytrees."""
from .two_layer import TwoLayerNet, init_two_layer, readout_matrix, neuron_mask, apply_two_layer, head, hidden

__all__ = ["TwoLayerNet", "init_two_layer", "readout_matrix", "neuron_mask", "apply_two_layer", "head", "hidden"]
