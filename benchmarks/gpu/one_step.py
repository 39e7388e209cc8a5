"""One training step of a library neuron on CUDA, for a profiler to look at (ncu).
Usage: ``python benchmarks/gpu/one_step.py [model] [T] [N] [dtype]``."""
import sys

import torch

from neurogen import neuron

name = sys.argv[1] if len(sys.argv) > 1 else "IzhikevichNode"
T = int(sys.argv[2]) if len(sys.argv) > 2 else 64
N = int(sys.argv[3]) if len(sys.argv) > 3 else 1 << 22
dtype = getattr(torch, sys.argv[4] if len(sys.argv) > 4 else "float32")
node = neuron.LIBRARY[name](step_mode="m", backend="cuda")
x = (torch.rand(T, N, device="cuda") * 2).to(dtype).requires_grad_()
for _ in range(2):  # the second step runs with everything compiled and allocated
    node.reset()
    node(x).backward(torch.rand(T, N, device="cuda").to(dtype))
torch.cuda.synchronize()
