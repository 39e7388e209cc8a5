"""neurogen: a kernel compiler for spiking neurons declared as sympy equations."""
from . import memory, neuron, surrogate, targets
from .cache import forget_kernels
from .errors import BackendUnavailableError, CompileError, SpecError
from .spec import NeuronModel, parse_expr, sigmoid, spike, spike_d

__version__ = "0.1.0"
__all__ = ["NeuronModel", "spike", "spike_d", "sigmoid", "parse_expr", "surrogate", "neuron",
           "memory", "targets", "forget_kernels", "SpecError", "CompileError",
           "BackendUnavailableError"]
