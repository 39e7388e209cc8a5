"""Continuous-time models (NeuronModel.from_ode): discretisations against analytical
solutions, the library's discrete LIF, scipy, and the torch reference for gradients."""
import numpy as np
import pytest
import torch

import neurogen as ng

from conftest import assert_match, needs_cxx, run_and_grad

scipy_linalg = pytest.importorskip("scipy.linalg")
scipy_integrate = pytest.importorskip("scipy.integrate")

NO_SPIKE = 1e9  # a threshold never reached: pure sub-threshold dynamics


def lif_ode(method, dt=0.5):
    return ng.NeuronModel.from_ode(
        "lif_ode", states={"v": "v_rest"}, params={"tau": 10.0, "v_rest": -0.2, "v_th": NO_SPIKE},
        ode={"v": "(-(v - v_rest) + x) / tau"}, fire="v - v_th", reset={"v": "(1 - spike_d) * v"},
        dt=dt, method=method)


def cuba_ode(tau_v=10.0, tau_c=4.0, method="exact"):
    return ng.NeuronModel.from_ode(
        "cuba_ode", states={"v": 0.0, "c": 0.0},
        params={"tau_v": tau_v, "tau_c": tau_c, "v_th": NO_SPIKE},
        ode={"v": "(c - v) / tau_v", "c": "(x - c) / tau_c"}, fire="v - v_th",
        reset={"v": "(1 - spike_d) * v"}, dt=0.7, method=method)


def run(model, x, backend="cpu"):
    node = model.module(step_mode="m", backend=backend, store_v_seq=True)
    with torch.no_grad():
        node(x)
    return node


@needs_cxx
@pytest.mark.parametrize("method", ["exact", "exponential_euler"])
def test_lif_exact_and_exponential_euler_equal_the_analytical_solution(method):
    model = lif_ode(method)
    T, x0 = 400, 0.8
    x = torch.full((T, 3), x0, dtype=torch.float64)
    node = run(model, x)
    t = 0.5 * torch.arange(1, T + 1, dtype=torch.float64)
    v_rest, tau = -0.2, 10.0
    analytic = (v_rest + x0) + (v_rest - (v_rest + x0)) * torch.exp(-t / tau)
    torch.testing.assert_close(node.v_seq[:, 0], analytic, rtol=1e-12, atol=1e-12)
    assert model.ode_method == method


def expm_solution(tau_v, tau_c, dt, x0, T):
    """Exact solution of the linear system by scipy's matrix exponential."""
    M = np.array([[-1 / tau_v, 1 / tau_v, 0.0], [0.0, -1 / tau_c, x0 / tau_c], [0, 0, 0]])
    E = scipy_linalg.expm(M * dt)
    s, out = np.array([0.0, 0.0, 1.0]), []
    for _ in range(T):
        s = E @ s
        out.append(s[0])
    return torch.tensor(out)


@needs_cxx
@pytest.mark.parametrize("tau_c", [4.0, 10.0, 10.0 * (1 + 1e-6)])   # distinct, singular, near it
def test_two_state_exact_propagator_including_equal_time_constants(tau_c):
    model = cuba_ode(10.0, tau_c)
    assert model.charge["v"].has(ng.spec.model.sp.Piecewise)   # the singular branch exists
    T = 300
    x = torch.full((T, 2), 0.9, dtype=torch.float64)
    node = run(model.replace(params=dict(model.defaults, tau_c=tau_c)), x)
    ref = expm_solution(10.0, tau_c, 0.7, 0.9, T)
    # near the singular point the general form cancels digits: a looser bound there
    tol = 1e-12 if tau_c in (4.0, 10.0) else 1e-6
    torch.testing.assert_close(node.v_seq[:, 0], ref.to(torch.float64), rtol=tol, atol=tol)


@needs_cxx
def test_euler_equals_the_library_lif():
    model = ng.NeuronModel.from_ode(
        "lif_euler", states={"v": "v_reset"}, params={"tau": 2.5, "v_threshold": 1.0, "v_reset": 0.0},
        ode={"v": "(x - (v - v_reset)) / tau"}, fire="v - v_threshold",
        reset={"v": "(1 - spike_d) * v + spike_d * v_reset"}, dt=1.0, method="euler")
    x = torch.randn(30, 40, generator=torch.Generator().manual_seed(0), dtype=torch.float64) + 0.7
    params = {"tau": 2.5, "v_threshold": 1.0, "v_reset": 0.0, "dt": 1.0}
    ours = run_and_grad(model, "cpu", x, params=params)
    lib = ng.neuron.LIFNode.spec
    ref = run_and_grad(lib, "cpu", x, params={k: params[k] for k in lib.param_names})
    assert ours["spikes"].sum() > 0
    assert_match(ours, ref, fwd_tol=1e-12, grad_tol=1e-12)


@needs_cxx
@pytest.mark.parametrize("method", ["exact", "exponential_euler", "rk2"])
def test_time_constant_gradients_equal_the_torch_reference(method):
    model = cuba_ode(method=method).replace(params={"tau_v": 3.0, "tau_c": 2.0, "v_th": 0.6, "dt": 0.7})
    x = torch.rand(25, 30, generator=torch.Generator().manual_seed(1), dtype=torch.float64) * 1.5
    kw = dict(params=dict(model.defaults), learnable=("tau_v", "tau_c", "dt"))
    got = run_and_grad(model, "cpu", x, **kw)
    ref = run_and_grad(model, "torch", x, **kw)
    assert got["spikes"].sum() > 0 and got["grad_tau_v"].abs() > 0
    assert_match(got, ref)


@needs_cxx
def test_rk2_matches_scipy_for_a_nonlinear_model_at_small_dt():
    dt, T, x0 = 1e-3, 2000, 0.6
    model = ng.NeuronModel.from_ode(
        "nonlinear", states={"v": 0.1}, params={"tau": 0.5, "v_th": NO_SPIKE},
        ode={"v": "(-v + 0.8 * tanh(2 * v) + x) / tau"}, fire="v - v_th",
        reset={"v": "(1 - spike_d) * v"}, dt=dt, method="rk2")
    node = run(model, torch.full((T, 1), x0, dtype=torch.float64))
    sol = scipy_integrate.solve_ivp(lambda t, v: (-v + 0.8 * np.tanh(2 * v) + x0) / 0.5,
                                    (0, T * dt), [0.1], rtol=1e-12, atol=1e-12,
                                    t_eval=dt * np.arange(1, T + 1))
    err = (node.v_seq[:, 0].numpy() - sol.y[0]).max()
    assert abs(err) < 1e-6      # midpoint rule: global error O(dt^2)
    euler = run(model.replace(charge={"v": "v + dt * (-v + 0.8 * tanh(2 * v) + x) / tau"}),
                torch.full((T, 1), x0, dtype=torch.float64))
    assert abs(euler.v_seq[:, 0].numpy() - sol.y[0]).max() > 10 * abs(err)


def test_method_that_does_not_apply_says_why():
    kw = dict(states={"v": 0.0}, params={"tau": 2.0}, ode={"v": "(v * v + x) / tau"},
              fire="v - 1", reset={"v": "(1 - spike_d) * v"})
    with pytest.raises(ng.SpecError, match="exact.*not linear"):
        ng.NeuronModel.from_ode("q", method="exact", **kw)
    with pytest.raises(ng.SpecError, match="not linear in v"):
        ng.NeuronModel.from_ode("q", method="exponential_euler", **kw)
    auto = ng.NeuronModel.from_ode("q", method="auto", **kw)
    assert auto.ode_method == "euler" and len(auto.ode_tried) == 2
    with pytest.raises(ng.SpecError, match="method must be one of"):
        ng.NeuronModel.from_ode("q", method="magic", **kw)


def test_auto_prefers_exact_and_ode_models_show_in_the_cli(tmp_path):
    import subprocess
    import sys
    model = lif_ode("auto")
    assert model.ode_method == "exact" and "exp" in str(model.charge["v"])
    f = tmp_path / "m.py"
    f.write_text("import neurogen as ng\nm = ng.NeuronModel.from_ode('lif_ode', states={'v': 0.0},"
                 " params={'tau': 10.0}, ode={'v': '(x - v) / tau'}, fire='v - 1',"
                 " reset={'v': '(1 - spike_d) * v'}, dt=0.5)\n")
    out = subprocess.run([sys.executable, "-m", "neurogen", "show", f"{f}:m"],
                         capture_output=True, text=True, check=True).stdout
    assert "exp(-dt/tau)" in out and "dt=0.5" in out


def test_models_with_a_singular_branch_round_trip_through_model_files():
    model = cuba_ode()
    for text, load in ((model.to_json(), ng.NeuronModel.from_json),
                       (model.to_toml(), ng.NeuronModel.from_toml)):
        again = load(text)
        assert again.spec_hash == model.spec_hash
        for kind in ("forward", "backward"):
            assert again.cuda_source(kind) == model.cuda_source(kind)


def test_where_branches_parse():
    expr = ng.parse_expr("where(tau_c == tau_v and a > 0, x, 2 * x)")
    assert isinstance(expr, ng.spec.model.sp.Piecewise)
    for bad in ("v + (x > 1)", "where(v, 1, 2)", "where(v > 1, 1)", "where(v > 1, 1, 2, 3)"):
        with pytest.raises(ng.SpecError):
            ng.parse_expr(bad)
    # a branch on a state (language part 2): the branch taken is differentiated
    ng.NeuronModel("ok", states={"v": 0.0}, params={"t": 1.0},
                   charge={"v": "where(v > 1, x, 0)"}, fire="v - 1")
