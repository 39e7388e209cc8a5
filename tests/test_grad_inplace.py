"""The backward writes ``grad_x`` over one of its own saved arrays when the graph is freed
after it (``neurogen.autograd.saved_for_grad_x``, PERF_NOTES.md 32), and only then: with
``retain_graph`` or ``create_graph`` a second backward must find the saved values intact.

Every other gradient test of the suite runs the in-place case (no test retains the graph
there); this file checks that it really happens, on every path that writes ``grad_x``
(the general path, the fast path of repeated calls, the recurrent layer), and that a
retained graph gives the same gradients twice."""
import pytest
import torch

import neurogen as ng
from neurogen import autograd as ng_autograd

from conftest import needs_cxx

pytestmark = needs_cxx
DT = torch.float64
BACKENDS = ["cpu", "cuda-emulated"]


def saved_pointers(fn):
    """Run ``fn`` under saved-tensor hooks; return its result and the data pointers of
    every tensor autograd saved."""
    ptrs = set()

    def pack(t):
        ptrs.add(t.data_ptr())
        return t
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        out = fn()
    return out, ptrs


def lif(backend, refractory=0):
    return ng.neuron.LIFNode(step_mode="m", backend=backend, refractory=refractory)


def reference_grad(x, g, refractory=0):
    node = lif("torch", refractory)
    xr = x.detach().clone().requires_grad_()
    node(xr).backward(g)
    return xr.grad


def inputs(T=7, N=(3, 5), seed=0):
    gen = torch.Generator().manual_seed(seed)
    x = (torch.rand(T, *N, generator=gen, dtype=DT) * 2.5).requires_grad_()
    g = torch.rand(T, *N, generator=gen, dtype=DT)
    return x, g


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("refractory", [0, 2])
def test_grad_x_is_written_over_a_saved_array(backend, refractory):
    x, g = inputs()
    node = lif(backend, refractory)
    for call in range(3):  # the first call takes the general path, later ones the runner
        node.reset()
        x.grad = None
        out, ptrs = saved_pointers(lambda: node(x))
        out.backward(g)
        assert x.grad.data_ptr() in ptrs - {x.data_ptr()}, f"call {call}"
        assert x.grad.data_ptr() != out.data_ptr()
        torch.testing.assert_close(x.grad, reference_grad(x, g, refractory),
                                   rtol=0, atol=1e-8)


@pytest.mark.parametrize("backend", BACKENDS)
def test_retained_graph_gives_the_same_gradient_twice(backend):
    x, g = inputs(seed=1)
    node = lif(backend, refractory=2)
    ref = reference_grad(x, g, refractory=2)
    for call in range(3):
        node.reset()
        out = node(x)
        x.grad = None
        out.backward(g, retain_graph=True)
        first = x.grad.clone()
        x.grad = None
        out.backward(g)  # the saved values must still be there
        torch.testing.assert_close(first, ref, rtol=0, atol=1e-8)
        torch.testing.assert_close(x.grad, ref, rtol=0, atol=1e-8, msg=f"call {call}")


@pytest.mark.parametrize("backend", BACKENDS)
def test_autograd_grad_with_retain_graph(backend):
    x, g = inputs(seed=2)
    node = lif(backend)
    ref = reference_grad(x, g)
    node(x)  # (the next calls may take the fast path)
    for call in range(2):
        node.reset()
        out = node(x)
        a, = torch.autograd.grad(out, x, g, retain_graph=True)
        b, = torch.autograd.grad(out, x, g)
        assert a.data_ptr() != b.data_ptr()
        torch.testing.assert_close(a, ref, rtol=0, atol=1e-8)
        torch.testing.assert_close(b, ref, rtol=0, atol=1e-8)


@pytest.mark.parametrize("backend", BACKENDS)
def test_hook_giving_back_copies(backend):
    """A saved-tensor hook that hands the backward copies: the gradient goes over a copy,
    the values are still right."""
    x, g = inputs(seed=3)
    node = lif(backend, refractory=2)
    for call in range(2):
        node.reset()
        x.grad = None
        with torch.autograd.graph.saved_tensors_hooks(lambda t: t.clone(), lambda t: t.clone()):
            out = node(x)
        out.backward(g)
        torch.testing.assert_close(x.grad, reference_grad(x, g, refractory=2), rtol=0,
                                   atol=1e-8)


@pytest.mark.parametrize("backend", BACKENDS)
def test_recurrent_layer(backend):
    torch.manual_seed(0)
    T, B, H = 6, 3, 8
    layer = ng.RecurrentLayer(ng.neuron.LIFNode(backend=backend), H).to(DT)
    ref_layer = ng.RecurrentLayer(ng.neuron.LIFNode(backend="torch"), H).to(DT)
    ref_layer.load_state_dict(layer.state_dict())
    x = (torch.rand(T, B, H, dtype=DT) * 2).requires_grad_()
    g = torch.rand(T, B, H, dtype=DT)
    xr = x.detach().clone().requires_grad_()
    ref_layer(xr).backward(g)
    for retain in (False, True):
        layer.reset()
        x.grad = None
        layer.weight.grad = None
        out, ptrs = saved_pointers(lambda: layer(x))
        out.backward(g, retain_graph=retain)
        assert (x.grad.data_ptr() in ptrs - {x.data_ptr()}) == (not retain)
        torch.testing.assert_close(x.grad, xr.grad, rtol=0, atol=1e-8)
        torch.testing.assert_close(layer.weight.grad, ref_layer.weight.grad, rtol=0, atol=1e-8)
        if retain:
            x.grad = None
            out.backward(g)
            torch.testing.assert_close(x.grad, xr.grad, rtol=0, atol=1e-8)


def test_outside_a_backward_nothing_is_reused():
    t = torch.zeros(4, 3)
    assert ng_autograd.saved_for_grad_x([t], (4, 3), t.dtype, t.device) is None


def test_a_saved_tensor_taken_out_holds_the_gradient_as_documented():
    """docs/performance.md: a saved tensor taken out through ``grad_fn.saved_tensors``
    holds the gradient after a freeing backward, and keeps its values with
    ``retain_graph=True``."""
    x, g = inputs(seed=4)
    node = lif("cpu")
    for retain in (False, True):
        node.reset()
        out = node(x)
        fn = out.grad_fn  # (the general path's output is a view of the Function's)
        while not hasattr(fn, "saved_tensors"):
            fn = fn.next_functions[0][0]
        taken = [t for t in fn.saved_tensors if t is not None]  # (x: not saved for a LIF)
        before = [t.clone() for t in taken]
        x.grad = None
        out.backward(g, retain_graph=retain)
        changed = [not torch.equal(t, b) for t, b in zip(taken, before)]
        assert changed.count(True) == (0 if retain else 1)
        if not retain:
            overwritten = taken[changed.index(True)]
            assert overwritten.data_ptr() == x.grad.data_ptr()


@pytest.mark.parametrize("backend", BACKENDS)
def test_batched_gradients_get_a_clear_error(backend):
    """``autograd.grad(..., is_grads_batched=True)`` hands the backward a functorch
    wrapper without memory: a typed error naming the way out, on both paths."""
    x, _ = inputs(T=4, N=(3,))
    node = lif(backend)
    for call in range(2):
        node.reset()
        out = node(x)
        eye = torch.eye(out.numel(), dtype=DT).reshape(-1, *out.shape)
        with pytest.raises(ng.errors.UnsupportedTransformError, match="backend='torch'"):
            torch.autograd.grad(out, x, eye, is_grads_batched=True)
