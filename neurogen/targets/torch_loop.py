"""The ``torch`` target: the model's equations as torch operations stepped in a Python
loop, differentiated by autograd (:mod:`neurogen.reference`). Runs wherever torch runs,
in every dtype; slow, and the independent oracle the tests compare the kernels with."""
import torch

from .base import Target


class TorchTarget(Target):
    """The torch reference loop."""

    name = "torch"
    auto_rank = 99  # the last resort of backend="auto"

    def run(self, module, x_seq, states, params):
        from ..reference import multi_step
        params = {k: (v.to(x_seq.dtype) if isinstance(v, torch.Tensor) else v)
                  for k, v in params.items()}
        return multi_step(module.model, x_seq, states, params, module.surrogate_function,
                          module.detach_reset, module.record)


__all__ = ["TorchTarget"]
