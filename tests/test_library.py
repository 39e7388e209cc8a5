"""Library neurons and surrogates: learnable parameters of every neuron, surrogate algebra."""
import pytest
import sympy as sp
import torch

import neurogen as ng
from neurogen.neuron import LIBRARY

from conftest import assert_match, needs_cxx, run_and_grad


@pytest.mark.parametrize("cls", [ng.surrogate.Sigmoid, ng.surrogate.ATan])
def test_surrogate_derivative_is_derivative_of_primitive(cls):
    s = cls(alpha=1.7)
    u = ng.surrogate.u
    for value in (-3.0, -0.4, 0.0, 0.2, 2.5):
        d = float(s.derivative_expr().subs(u, value))
        p = float(sp.diff(s.primitive_expr(), u).subs(u, value))
        assert d == pytest.approx(p, rel=1e-12, abs=1e-15)


@pytest.mark.parametrize("cls", ng.surrogate.LIBRARY)
def test_surrogate_derivative_matches_finite_difference_of_primitive_or_formula(cls):
    s = cls()
    f = sp.lambdify(ng.surrogate.u, s.derivative_expr().rewrite(sp.exp), "math")
    # a few points away from kinks; every formula is finite and non-negative
    for value in (-2.3, -0.31, 0.07, 0.9):
        assert f(value) >= 0 and f(value) < 10
    if s.primitive_expr() is not None:
        g = sp.lambdify(ng.surrogate.u, s.primitive_expr().rewrite(sp.exp), "math")
        h = 1e-6
        assert f(0.3) == pytest.approx((g(0.3 + h) - g(0.3 - h)) / (2 * h), rel=1e-6)


def test_sigmoid_derivative_is_finite_far_from_threshold():
    s = ng.surrogate.Sigmoid()
    f = sp.lambdify(ng.surrogate.u, s.derivative_expr().rewrite(sp.exp), "numpy")
    import numpy as np
    with np.errstate(over="ignore"):
        assert np.isfinite(f(np.array([-400.0, 400.0]))).all()


def per_neuron(value, shape, gen):
    return value * (1 + 0.1 * torch.rand(shape, generator=gen, dtype=torch.float64))


@needs_cxx
@pytest.mark.parametrize("name", sorted(LIBRARY))
@pytest.mark.parametrize("per_neuron_params", [False, True])
def test_every_parameter_learnable(name, per_neuron_params):
    model = LIBRARY[name].spec
    shape = (3, 41)
    gen = torch.Generator().manual_seed(len(name))
    params = dict(model.defaults)
    if name == "ParametricLIFNode":
        params["w"] = 0.2
    if per_neuron_params:
        params = {k: per_neuron(v if v else 0.05, shape, gen) for k, v in params.items()}
    x = torch.randn(12, *shape, generator=gen, dtype=torch.float64) * 0.7 + 0.8
    kw = dict(params=params, learnable=model.param_names)
    got = run_and_grad(model, "cpu", x, **kw)
    ref = run_and_grad(model, "torch", x, **kw)
    assert ref["spikes"].sum() > 0
    assert_match(got, ref)
    assert any(got[f"grad_{k}"].abs().sum() > 0 for k in model.param_names)


@needs_cxx
def test_custom_surrogate_on_every_cpu_backend(adex):
    custom = ng.surrogate.Custom(derivative="1 / (1 + (3 * u)**2)", name="cauchy")
    x = torch.randn(9, 50, generator=torch.Generator().manual_seed(9), dtype=torch.float64) + 1
    kw = dict(params=dict(adex.defaults), surrogate_function=custom, learnable=("tau",))
    ref = run_and_grad(adex, "torch", x, **kw)
    for backend in ("cpu", "cuda-emulated"):
        assert_match(run_and_grad(adex, backend, x, **kw), ref)


def test_custom_surrogate_from_primitive():
    c = ng.surrogate.Custom(primitive=ng.sigmoid(2 * ng.surrogate.u))
    expected = 2 * ng.sigmoid(2 * ng.surrogate.u) * (1 - ng.sigmoid(2 * ng.surrogate.u))
    assert sp.simplify(c.derivative_expr() - expected) == 0


def test_library_specs_are_readable_and_modifiable():
    spec = ng.neuron.LIFNode.spec
    assert "tau" in spec.param_names and spec.charge["v"].has(sp.Symbol("tau"))
    faster = spec.replace(params=dict(spec.defaults, tau=1.5))
    assert faster.defaults["tau"] == 1.5 and spec.defaults["tau"] == 2.0
    assert isinstance(faster.module(step_mode="m"), ng.module.NeuronModule)


def test_library_constraints_raise_spec_error():
    with pytest.raises(ng.SpecError, match="tau > 1"):
        ng.neuron.LIFNode(tau=0.9)
    with pytest.raises(ng.SpecError, match="init_tau > 1"):
        ng.neuron.ParametricLIFNode(init_tau=1.0)
    with pytest.raises(ng.SpecError, match="a0 > 0"):
        ng.neuron.IzhikevichNode(a0=0.0)
    with pytest.raises(NotImplementedError, match="charge"):
        ng.neuron.AdaptBaseNode()


def test_adapt_base_node_with_a_charge():
    node = ng.neuron.AdaptBaseNode(charge="v + (x - w - v) / tau", extra_params={"tau": 2.0},
                                   a=0.2, b=0.1, step_mode="m", backend="torch")
    out = node(torch.ones(5, 3) * 2.5)
    assert out.sum() > 0 and (node.w > 0).all()
