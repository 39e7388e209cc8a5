"""neurogen: a kernel compiler for spiking neurons declared as sympy equations."""
import sys as _sys

from . import buffers, neuron, surrogate, targets
from .cache import forget_kernels
from .errors import BackendUnavailableError, CompileError, SpecError, UnsupportedTransformError
from .recurrent import RecurrentLayer
from .spec import NeuronModel, parse_expr, sigmoid, spike, spike_d

# the CPU buffer cache's name before issue 18: ng.memory and `import neurogen.memory` still work
memory = buffers
_sys.modules[__name__ + ".memory"] = buffers

__version__ = "0.1.0"
__all__ = ["NeuronModel", "spike", "spike_d", "sigmoid", "parse_expr", "surrogate", "neuron",
           "buffers", "targets", "forget_kernels", "RecurrentLayer", "SpecError", "CompileError",
           "BackendUnavailableError", "UnsupportedTransformError"]
