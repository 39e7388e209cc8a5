"""How the kernel backends' backward meets autograd's features, against the torch backend
(float64): a gradient of a gradient raises instead of silently losing the neuron's second
derivative; saved-tensor hooks may hand back other strides; the input is saved only when
the backward reads it (so changing it in place afterwards is fine, as on the torch
backend). Each on the general path (first call), the fast path (later calls) and the
recurrent layer."""
import pytest
import torch
from torch import nn

import neurogen as ng

from conftest import needs_cxx

pytestmark = needs_cxx
DT = torch.float64
BACKENDS = ["cpu", "cuda-emulated"]


def data(seed=0, T=7, B=2, H=4):
    gen = torch.Generator().manual_seed(seed)
    return (torch.rand(T, B, H, generator=gen, dtype=DT) * 3,
            torch.rand(T, B, H, generator=gen, dtype=DT))


def layers(backend):
    """(name, factory of a module on inputs [T, 2, 4])"""
    return [("lif", lambda: ng.neuron.LIFNode(step_mode="m", backend=backend)),
            ("izhikevich", lambda: ng.neuron.IzhikevichNode(step_mode="m", backend=backend)),
            ("recurrent", lambda: ng.RecurrentLayer(ng.neuron.LIFNode(backend=backend), 4).to(DT))]


@pytest.mark.parametrize("backend", BACKENDS)
def test_gradient_of_a_gradient_raises(backend):
    x0, _ = data()
    for name, make in layers(backend):
        torch.manual_seed(0)
        node = make()
        for call in range(2):
            node.reset()
            x = x0.clone().requires_grad_()
            g, = torch.autograd.grad(node(x).sum(), x, create_graph=True)
            assert g.requires_grad  # (create_graph alone is fine)
            with pytest.raises(RuntimeError, match="first-order gradients only.*backend='torch'"):
                (g ** 2).sum().backward()


@pytest.mark.parametrize("backend", BACKENDS)
def test_saved_tensor_hooks_may_change_strides(backend):
    """A hook that stores 2-D tensors transposed and hands back the transposed view (same
    values, other strides) gives the same gradients."""
    def pack(t):
        return ("T", t.t().contiguous()) if t.dim() == 2 and min(t.shape) > 1 else ("N", t)

    def unpack(p):
        return p[1].t() if p[0] == "T" else p[1]
    x0, g = data(1)
    for (name, make), (_, make_ref) in zip(layers(backend), layers("torch")):
        torch.manual_seed(0)
        ref = make_ref()
        torch.manual_seed(0)
        node = make()
        xr = x0.clone().requires_grad_()
        ref(xr).backward(g)
        for call in range(2):
            node.reset()
            x = x0.clone().requires_grad_()
            with torch.autograd.graph.saved_tensors_hooks(pack, unpack):
                out = node(x)
            out.backward(g)
            torch.testing.assert_close(x.grad, xr.grad, rtol=0, atol=1e-8,
                                       msg=f"{name}, call {call}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_input_changed_in_place_after_the_forward(backend):
    """``h = lin(x); y = node(h); h.mul_(0)``: the kernels' backward of a LIF does not read
    its input, which is then not saved (it used to be, and autograd refused the backward);
    a neuron whose backward reads its input still saves it."""
    x0, g = data(2)
    grads = {}
    for b in ("torch", backend):
        torch.manual_seed(0)
        lin = nn.Linear(4, 4).double()
        node = ng.neuron.LIFNode(step_mode="m", backend=b)
        for call in range(2):
            node.reset()
            lin.zero_grad()
            h = lin(x0)
            y = node(h)
            h.mul_(0)
            y.backward(g)
            grads[(b, call)] = lin.weight.grad.clone()
    for call in range(2):
        torch.testing.assert_close(grads[(backend, call)], grads[("torch", call)], rtol=0,
                                   atol=1e-8)


@pytest.mark.parametrize("backend", BACKENDS)
def test_the_input_is_saved_only_when_the_backward_reads_it(backend):
    x0, _ = data(3)
    quadratic = ng.NeuronModel("quad_in", states={"v": 0.0}, params={"tau": 2.0},
                               charge={"v": "v + (x * x - v) / tau"}, fire="v - 1",
                               reset={"v": "(1 - spike_d) * v"})
    for model, saved_x in ((ng.neuron.LIFNode.spec, False), (quadratic, True)):
        node = model.module(step_mode="m", backend=backend)
        for call in range(2):
            node.reset()
            x = x0.clone().requires_grad_()
            ptrs = set()

            def pack(t):
                ptrs.add(t.data_ptr())
                return t
            with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
                node(x)
            assert (x.data_ptr() in ptrs) == saved_x, (model.name, call)
