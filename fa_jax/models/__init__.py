"""Models as pure functions on parameter pytrees."""
from .image_nets import (
    ConvNet,
    ImageMLP,
    ImageNet,
    apply_image_net,
    binary_logit,
    build_image_net,
    init_image_net,
    penultimate,
)
from .mlp import MLP, apply_mlp, end_to_end, init_mlp, input_gradients, per_sample_grad_sq_norm
from .two_layer import TwoLayerNet, apply_two_layer, head, hidden, init_two_layer, neuron_mask, readout_matrix

__all__ = [
    "MLP", "ConvNet", "ImageMLP", "ImageNet", "TwoLayerNet", "apply_image_net", "apply_mlp", "apply_two_layer",
    "binary_logit", "build_image_net", "end_to_end", "head", "hidden", "init_image_net", "init_mlp",
    "init_two_layer", "input_gradients", "neuron_mask", "penultimate", "per_sample_grad_sq_norm", "readout_matrix",
]
