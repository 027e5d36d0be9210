"""Models as pure functions on parameter pytrees."""
from .mlp import MLP, apply_mlp, end_to_end, init_mlp, input_gradients, per_sample_grad_sq_norm
from .two_layer import TwoLayerNet, apply_two_layer, head, hidden, init_two_layer, neuron_mask, readout_matrix

__all__ = [
    "MLP", "TwoLayerNet", "apply_mlp", "apply_two_layer", "end_to_end", "head", "hidden", "init_mlp",
    "init_two_layer", "input_gradients", "neuron_mask", "per_sample_grad_sq_norm", "readout_matrix",
]
