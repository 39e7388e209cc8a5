"""Declaring neuron models: `NeuronModel`, safe string parsing, spike symbols."""
from .functions import sigmoid
from .model import NeuronModel, spike, spike_d
from .parse import parse_expr

__all__ = ["NeuronModel", "spike", "spike_d", "sigmoid", "parse_expr"]
