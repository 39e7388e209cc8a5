"""Branches and clamps in every group (issue 19): where/Piecewise, max/min, clamp, abs,
sign, floor, heaviside, sg_heaviside, with conditions over states, the input, parameters
and spikes. Gradients are the almost-everywhere derivative as torch's autograd computes
it for the matching torch ops (the torch backend uses those ops), ties included."""
import pytest
import sympy as sp
import torch

import neurogen as ng
from neurogen.spec import functions as F

from conftest import assert_match, needs_cxx, run_and_grad

BACKENDS = ["cpu", "cuda-emulated"]
X = torch.rand(14, 11, dtype=torch.float64, generator=torch.Generator().manual_seed(0)) * 2.5 - 0.3

MODELS = {
    # a floor on the membrane (charge)
    "max_floor": dict(states={"v": 0.0}, params={"tau": 2.0, "v_min": -0.2},
                      charge={"v": "max(v + (x - v) / tau, v_min)"}, fire="v - 1",
                      reset={"v": "(1 - spike_d) * v"}),
    # a refractory counter written by hand: a branch on a state in charge and reset
    "where_counter": dict(states={"v": 0.0, "ref": 0.0}, params={"tau": 2.0},
                          charge={"v": "where(ref > 0, v, v + (x - v) / tau)",
                                  "ref": "clamp(ref - 1, 0, 5)"},
                          fire="v - 1", reset={"v": "(1 - spike_d) * v",
                                               "ref": "where(spike > 0, 2, ref)"}),
    # every construct, in adaptation, fire and reset too
    "everything": dict(states={"v": 0.0, "w": 0.1}, params={"tau": 2.0, "a": 0.3, "lo": -0.5},
                       charge={"v": "v + (x - abs(v) * sign(w) - w) / tau + 0.01 * floor(3 * x)"},
                       adaptation={"w": "w + a * heaviside(v - 0.5) - 0.1 * min(w, 0.4)"},
                       fire="v - 1 + 0.2 * sg_heaviside(w - 0.2)",
                       reset={"v": "clamp(v - spike_d, lo, 1)",
                              "w": "where(spike > 0 and w < 0.5 or not v > -1, w + 0.1, w)"}),
    # a clamp whose bounds are learnable parameters, and a lower bound alone
    "clamp_params": dict(states={"v": 0.0}, params={"tau": 2.0, "lo": -0.1, "hi": 1.4},
                         charge={"v": "clamp(v + (x - v) / tau, lo, hi)"}, fire="v - 1",
                         reset={"v": "clamp(v - spike, lo)"}),
    # a refractory period held in a parameter (v and w held), a graded output, a branch on
    # the spike in reset (issue 19: every construct goes through the same checks)
    "refractory_graded": dict(states={"v": 0.0, "w": 0.0},
                              params={"tau": 2.0, "t_ref": 2.0, "amp": 0.8},
                              charge={"v": "v + (x - v) / tau - w"},
                              adaptation={"w": "0.9 * w + 0.1 * clamp(v, 0, 1)"},
                              fire="v - 1", reset={"v": "where(spike > 0, 0, v)"},
                              refractory="t_ref", refractory_hold=("v", "w"),
                              output="amp * spike + 0.1 * spike * maximum(v, 0)"),
}


def model(name):
    return ng.NeuronModel(name, **MODELS[name])


@needs_cxx
@pytest.mark.parametrize("name", list(MODELS))
@pytest.mark.parametrize("detach", [False, True])
def test_branches_equal_the_torch_ops_on_every_backend(name, detach):
    m = model(name)
    learnable = tuple(k for k in m.param_names if k != m.refractory)
    kw = dict(params=dict(m.defaults), learnable=learnable, detach_reset=detach,
              init={s: torch.full((11,), 0.05, dtype=torch.float64) for s in m.state_names},
              record_all=True)
    ref = run_and_grad(m, "torch", X, **kw)
    assert (ref["spikes"] if "spikes" in ref else ref["output"] != 0).sum() > 5
    for backend in BACKENDS:
        assert_match(run_and_grad(m, backend, X, **kw), ref)


@needs_cxx
@pytest.mark.parametrize("backend", BACKENDS)
def test_ties_follow_torch(backend):
    # inputs exactly at the branch points: max splits the gradient, clamp passes it at its
    # bounds, abs has derivative 0 at 0, where's condition carries none
    m = ng.NeuronModel("ties", states={"v": 0.0}, params={"c": 0.5},
                       charge={"v": "max(x, c) + clamp(x, 0.25, 0.75) + abs(x - c) "
                                    "+ where(x >= c, x, 2 * x)"},
                       fire="v - 10", reset={"v": "v"})
    x = torch.tensor([[0.5, 0.25, 0.75, 0.6, 0.1]], dtype=torch.float64).repeat(3, 1)
    kw = dict(params={"c": 0.5}, learnable=("c",))
    ref = run_and_grad(m, "torch", x, **kw)
    assert_match(run_and_grad(m, backend, x, **kw), ref)


def test_the_derivatives_are_torchs_at_ties():
    a, b, u, lo, hi = sp.symbols("a b u lo hi")
    cases = [(F.maximum(a, b), torch.maximum, (1.0, 1.0)), (F.minimum(a, b), torch.minimum, (2.0, 2.0)),
             (F.maximum(a, b), torch.maximum, (3.0, 1.0))]
    for expr, op, point in cases:
        ta, tb = (torch.tensor(p, dtype=torch.float64, requires_grad=True) for p in point)
        op(ta, tb).backward()
        got = [float(sp.diff(expr, s).subs({a: point[0], b: point[1]})) for s in (a, b)]
        assert got == [ta.grad.item(), tb.grad.item()]
    for point in [(0.0, 0.0), (-1.0, 0.0), (1.0, 0.0)]:  # a lower bound alone
        t = [torch.tensor(p, dtype=torch.float64, requires_grad=True) for p in point]
        torch.clamp(t[0], min=t[1]).backward()
        got = [float(sp.diff(F.clamp(u, lo), s).subs({u: point[0], lo: point[1]})) for s in (u, lo)]
        assert got == [g.grad.item() for g in t], point
    for point in [(0.0, 0.0, 1.0), (1.0, 0.0, 1.0), (-1.0, 0.0, 1.0), (2.0, 0.0, 1.0),
                  (0.5, 1.0, 0.0), (-2.0, 1.0, 0.0)]:
        t = [torch.tensor(p, dtype=torch.float64, requires_grad=True) for p in point]
        torch.clamp(t[0], t[1], t[2]).backward()
        expr = F.clamp(u, lo, hi)
        got = [float(sp.diff(expr, s).subs(dict(zip((u, lo, hi), point)))) for s in (u, lo, hi)]
        assert got == [g.grad.item() for g in t], point
    assert sp.diff(F.abs_(u), u).subs(u, 0) == 0
    assert sp.diff(F.sign(u), u) == 0 and sp.diff(F.floor(u), u) == 0
    assert sp.diff(F.heaviside(u), u) == 0


@needs_cxx
def test_sg_heaviside_carries_the_modules_surrogate():
    m = ng.NeuronModel("second", states={"v": 0.0, "w": 0.0}, params={"tau": 2.0},
                       charge={"v": "v + (x - v) / tau", "w": "0.5 * w + sg_heaviside(v - 0.5)"},
                       fire="v - 1", reset={"v": "(1 - spike_d) * v"})
    for surrogate in (ng.surrogate.ATan(alpha=3.0), ng.surrogate.SuperSpike()):
        kw = dict(params={"tau": 2.0}, surrogate_function=surrogate, learnable=("tau",))
        ref = run_and_grad(m, "torch", X, **kw)
        assert ref["grad_tau"].abs().sum() > 0
        assert_match(run_and_grad(m, "cpu", X, **kw), ref)


def test_sympy_and_string_forms_are_one_model():
    v, x, tau, lo = sp.symbols("v x tau lo")
    from_sympy = ng.NeuronModel("m", states={v: 0.0}, params={tau: 2.0, lo: 0.0},
                                charge={v: sp.Max(v + (x - v) / tau, lo) + sp.Abs(x)
                                        + sp.Piecewise((x, v > 1), (0, True))},
                                fire=v - 1, reset={v: sp.Min(v, 0.5)})
    from_text = ng.NeuronModel("m", states={"v": 0.0}, params={"tau": 2.0, "lo": 0.0},
                               charge={"v": "max(v + (x - v) / tau, lo) + abs(x) "
                                            "+ where(v > 1, x, 0)"},
                               fire="v - 1", reset={"v": "min(v, 0.5)"})
    assert from_sympy == from_text
    again = ng.NeuronModel.from_json(from_text.to_json())
    assert again.spec_hash == from_text.spec_hash


def test_where_on_a_state_is_printed_as_a_select():
    src = model("where_counter").cuda_source("forward", "float32")
    assert "((ref > 0.0F) ? (v) : (" in src and " if (" not in src.split("for (int ng_t")[1]
