"""Generated C++ kernels against the torch-autograd reference (float64)."""
import pytest
import torch

import neurogen as ng
from neurogen.neuron import izhikevich_spec

from conftest import assert_match, needs_cxx, run_and_grad

pytestmark = needs_cxx


def izh_params(gen, soft):
    p = dict(tau=2.0 + torch.rand(1, generator=gen).item(), v_c=0.8, a0=0.6 + 0.5 * torch.rand(1, generator=gen).item(),
             v_threshold=1.0, v_rest=-0.1, w_rest=0.05, tau_w=3.0,
             a=0.2 + 0.3 * torch.rand(1, generator=gen).item(), b=0.1)
    if not soft:
        p["v_reset"] = -0.05
    return p


@pytest.mark.parametrize("soft", [False, True])
@pytest.mark.parametrize("detach", [False, True])
@pytest.mark.parametrize("T,shape", [(1, (7,)), (13, (33,)), (64, (2, 3, 4, 5))])
def test_izhikevich_cpu_equals_reference(soft, detach, T, shape):
    gen = torch.Generator().manual_seed(T * 31 + len(shape))
    model = izhikevich_spec(soft)
    params = izh_params(gen, soft)
    x = torch.randn(T, *shape, generator=gen, dtype=torch.float64) * 0.8 + 1.0
    init = {"v": torch.rand(shape, generator=gen, dtype=torch.float64) * 0.9,
            "w": torch.rand(shape, generator=gen, dtype=torch.float64) * 0.1}
    learn = ("tau", "a", "b", "v_threshold")
    kw = dict(params=params, init=init, learnable=learn,
              surrogate_function=ng.surrogate.Sigmoid(alpha=4.0), detach_reset=detach)
    ref = run_and_grad(model, "torch", x, **kw)
    got = run_and_grad(model, "cpu", x, **kw)
    assert ref["spikes"].sum() > 0, "test input should make neurons fire"
    assert_match(got, ref)


@pytest.mark.parametrize("detach", [False, True])
@pytest.mark.parametrize("T", [1, 5, 64])
def test_adex_example_cpu_equals_reference(adex, detach, T):
    gen = torch.Generator().manual_seed(T)
    shape = (3, 17)
    x = torch.randn(T, *shape, generator=gen, dtype=torch.float64) + 1.5
    params = dict(adex.defaults, tau=3.0, v_reset=-0.1)
    # per-neuron (not learnable) and per-channel (learnable) parameters too
    params["theta_rh"] = 0.7 + 0.2 * torch.rand(shape, generator=gen, dtype=torch.float64)
    params["a"] = 0.05 + 0.1 * torch.rand(3, 1, generator=gen, dtype=torch.float64)
    init = {"v": torch.rand(shape, generator=gen, dtype=torch.float64) * 0.9,
            "w": torch.rand(shape, generator=gen, dtype=torch.float64) * 0.1}
    kw = dict(params=params, init=init, learnable=("tau", "a", "b", "delta_T", "v_reset"),
              surrogate_function=ng.surrogate.ATan(), detach_reset=detach)
    ref = run_and_grad(adex, "torch", x, **kw)
    got = run_and_grad(adex, "cpu", x, **kw)
    assert ref["spikes"].sum() > 0
    assert got["grad_a"].shape == (3, 1)
    assert_match(got, ref)


def test_float32_cpu_close_to_reference(adex):
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(20, 50, generator=gen) * 0.8 + 0.7
    ref = run_and_grad(adex, "torch", x, params=adex.defaults)
    got = run_and_grad(adex, "cpu", x, params=adex.defaults)
    mismatch = (got["spikes"] != ref["spikes"]).float().mean().item()
    assert mismatch < 0.01  # float32 rounding may flip a spike exactly at threshold
    if mismatch == 0:
        torch.testing.assert_close(got["grad_x"], ref["grad_x"], rtol=1e-4, atol=1e-4)


def test_single_step_loop_equals_multi_step(adex):
    gen = torch.Generator().manual_seed(5)
    x = torch.randn(12, 4, 6, generator=gen, dtype=torch.float64) + 0.6
    multi = adex.module(step_mode="m", backend="cpu", store_v_seq=True)
    single = adex.module(step_mode="s", backend="cpu", store_v_seq=True)
    xm = x.clone().requires_grad_()
    xs = x.clone().requires_grad_()
    sm = multi(xm)
    ss = torch.stack([single(xs[t]) for t in range(x.shape[0])])
    assert torch.equal(sm, ss)
    torch.testing.assert_close(single.v_seq, multi.v_seq, rtol=0, atol=1e-12)
    w = torch.randn(sm.shape, generator=gen, dtype=torch.float64)
    loss_m = (sm * w).sum() + multi.w.sum() + multi.v_seq.sum()
    loss_s = (ss * w).sum() + single.w.sum() + single.v_seq.sum()
    gm, = torch.autograd.grad(loss_m, xm)
    gs, = torch.autograd.grad(loss_s, xs)
    torch.testing.assert_close(gm, gs, rtol=1e-10, atol=1e-10)


def test_chunked_run_equals_one_call(adex):
    gen = torch.Generator().manual_seed(6)
    x = torch.randn(30, 40, generator=gen, dtype=torch.float64) + 0.6
    tau = torch.nn.Parameter(torch.tensor(2.5, dtype=torch.float64))
    one = adex.module(step_mode="m", backend="cpu", tau=tau)
    xa = x.clone().requires_grad_()
    sa = one(xa)
    la = (sa * torch.arange(40.)).sum() + one.v.sum()
    ga = torch.autograd.grad(la, [xa, tau])
    chunked = adex.module(step_mode="m", backend="cpu", tau=tau)
    xb = x.clone().requires_grad_()
    sb = torch.cat([chunked(xb[i:i + 7]) for i in range(0, 30, 7)])
    lb = (sb * torch.arange(40.)).sum() + chunked.v.sum()
    gb = torch.autograd.grad(lb, [xb, tau])
    assert torch.equal(sa, sb)
    for a, b in zip(ga, gb):
        torch.testing.assert_close(a, b, rtol=1e-10, atol=1e-10)


def test_inference_without_grad_matches_training_forward(adex):
    x = torch.randn(10, 9, dtype=torch.float64) + 0.5
    node = adex.module(step_mode="m", backend="cpu")
    with torch.no_grad():
        s1 = node(x)
    node.reset()
    s2 = node(x.clone().requires_grad_())
    assert torch.equal(s1, s2.detach())


@pytest.mark.parametrize("surrogate", [cls() for cls in ng.surrogate.LIBRARY],
                         ids=lambda s: type(s).__name__)
def test_every_surrogate_cpu_equals_reference(surrogate):
    # 1300 neurons: several 512-neuron chunks of the surrogate pass (float64: Sigmoid, Erf,
    # PiecewiseExp) and a partial one; a per-neuron learnable threshold inside the fire
    # expression the pass evaluates
    from neurogen.targets.cpu import separate_surrogate as _separate_surrogate
    gen = torch.Generator().manual_seed(11)
    N, T = 1300, 9
    model = izhikevich_spec(False)
    params = izh_params(gen, False)
    params["v_threshold"] = 0.9 + 0.2 * torch.rand(N, generator=gen, dtype=torch.float64)
    x = torch.randn(T, N, generator=gen, dtype=torch.float64) * 0.8 + 1.0
    kw = dict(params=params, learnable=("v_threshold", "a"), surrogate_function=surrogate)
    ref = run_and_grad(model, "torch", x, **kw)
    got = run_and_grad(model, "cpu", x, **kw)
    assert ref["spikes"].sum() > 0
    assert_match(got, ref)
    source = ng.targets.render(model, "cpp", "backward", "float64", surrogate=surrogate)
    assert ("ng_sgbuf" in source) == _separate_surrogate(surrogate.kernel_derivative(), "double")


@pytest.mark.parametrize("surrogate", [ng.surrogate.Sigmoid(), ng.surrogate.Erf()],
                         ids=lambda s: type(s).__name__)
def test_float32_surrogates_close_to_float64(surrogate):
    # float kernels: Sigmoid through the inlined sigmoid' (polynomial exp), Erf through its
    # own pass over 512-neuron chunks (3000 neurons: partial chunks too)
    gen = torch.Generator().manual_seed(12)
    model = izhikevich_spec(False)
    params = izh_params(gen, False)
    x = torch.randn(16, 3000, generator=gen, dtype=torch.float64) * 0.8 + 1.0
    ref = run_and_grad(model, "torch", x, params=params, surrogate_function=surrogate)
    got = run_and_grad(model, "cpu", x.float(), params=params, surrogate_function=surrogate)
    assert torch.equal(got["spikes"].double(), ref["spikes"])
    torch.testing.assert_close(got["grad_x"].double(), ref["grad_x"], rtol=1e-4, atol=1e-5)


def test_surrogate_pass_only_where_the_derivative_calls_a_library_function():
    # float kernels inline sigmoid' (no pass); exp-based surrogates call libmvec's expf
    # (pass); double kernels call libm's exp for sigmoid' too (pass)
    model = izhikevich_spec(False)

    def has_pass(surrogate, dtype):
        return "ng_sgbuf" in ng.targets.render(model, "cpp", "backward", dtype,
                                               surrogate=surrogate)
    assert not has_pass(ng.surrogate.Sigmoid(), "float32")
    assert not has_pass(ng.surrogate.Sigmoid(), "bfloat16")
    assert has_pass(ng.surrogate.Sigmoid(), "float64")
    assert has_pass(ng.surrogate.Erf(), "float32") and has_pass(ng.surrogate.PiecewiseExp(), "float32")
    assert not has_pass(ng.surrogate.ATan(), "float32") and not has_pass(ng.surrogate.Rect(), "float64")
    assert "ng_sgbuf" not in ng.targets.render(model, "cuda", "backward", "float32",
                                               surrogate=ng.surrogate.Erf())
