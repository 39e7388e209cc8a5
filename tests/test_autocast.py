"""bfloat16 on the CPU (the dtype torch.autocast picks there): generated C++ kernels
with float arithmetic inside, matching the emulated CUDA bfloat16 kernels."""
import warnings

import pytest
import torch
from torch import nn

import neurogen as ng

from conftest import needs_cxx

pytestmark = needs_cxx


@pytest.mark.parametrize("name", ["LIFNode", "IzhikevichNode", "CUBALIFNode"])
def test_bf16_cpu_kernels_equal_emulated_cuda_bf16(name):
    x = (torch.randn(16, 2, 150, generator=torch.Generator().manual_seed(0)) + 1).bfloat16()
    outs = []
    for backend in ("cpu", "cuda-emulated"):
        node = ng.neuron.LIBRARY[name](step_mode="m", backend=backend, store_v_seq=True)
        xx = x.clone().requires_grad_()
        s = node(xx)
        (s.float() * torch.linspace(-1, 1, 150)).sum().backward()
        outs.append((s, node.v_seq, node.v, xx.grad))
    (s1, vs1, v1, g1), (s2, vs2, v2, g2) = outs
    assert s1.dtype == torch.bfloat16 and v1.dtype == torch.bfloat16
    assert torch.equal(s1, s2) and torch.equal(vs1, vs2) and torch.equal(v1, v2)
    # the backward adds in a different order on the two targets: a bfloat16 unit at most
    torch.testing.assert_close(g1.float(), g2.float(), rtol=1e-2, atol=1e-2)


def test_autocast_cpu_runs_the_bf16_kernel_and_learns():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(20, 64), ng.neuron.LIFNode(step_mode="m"),
                        nn.Linear(64, 4), ng.neuron.LIFNode(step_mode="m"))
    x = torch.rand(8, 16, 20) * 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no fallback to the torch backend
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = net(x)
    assert out.dtype == torch.bfloat16 and net[1].v.dtype == torch.bfloat16
    out.float().sum().backward()
    assert net[0].weight.grad is not None and net[0].weight.grad.abs().sum() > 0
    ref = nn.Sequential(*[m for m in net])
    for m in ref:
        if hasattr(m, "reset"):
            m.reset()
    with torch.no_grad():
        full = ref(x)  # float32 run of the same weights
    assert (full != out.float()).float().mean() < 0.05  # bf16 rounding may flip a few spikes


def test_learnable_parameter_gradient_stays_float32_under_bf16():
    tau = nn.Parameter(torch.tensor(2.0))
    node = ng.neuron.LIFNode.spec.module(step_mode="m", backend="cpu", tau=tau)
    s = node((torch.rand(10, 300) * 2).bfloat16())
    s.float().sum().backward()
    assert tau.grad.dtype == torch.float32 and torch.isfinite(tau.grad)
