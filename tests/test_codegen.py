"""Generator output: golden printing, determinism, hoisting, minimal saved values, the IR."""
import os
import random
import subprocess
import sys

import pytest
import sympy as sp

import neurogen as ng
from neurogen import abi
from neurogen.config import derivation, make_config
from neurogen.rewrite import ZeroTimes, collect_linear, spike_select
from neurogen.neuron import izhikevich_spec, lif_spec
from neurogen.printer import print_expr

v, x, tau = sp.symbols("v x tau")


@pytest.mark.parametrize("expr,float_text,double_text", [
    (v + (x - v) / tau, "v + (-v + x)/tau", "v + (-v + x)/tau"),
    (sp.exp(v / 2), "expf((0.5F)*v)", "exp((0.5)*v)"),
    (v ** 2, "(v*v)", "(v*v)"),
    (v ** -1, "(1.0F/v)", "(1.0/v)"),
    (sp.sqrt(v), "sqrtf(v)", "sqrt(v)"),
    (v ** sp.Rational(3, 2), "powf(v, (3.0F/2.0F))", "pow(v, (3.0/2.0))"),
    (sp.pi * v, "3.141592653589793F*v", "3.141592653589793*v"),
    (ng.sigmoid(v), "ng_sigmoid(v)", "ng_sigmoid(v)"),
    (sp.Max(0, v), "ng_fmax(0.0F, v)", "ng_fmax(0.0, v)"),
    (sp.Min(v, 1, x), "ng_fmin(1.0F, ng_fmin(v, x))", "ng_fmin(1.0, ng_fmin(v, x))"),
    (ng.spec.functions.sigmoid_grad(2 * v), "ng_sigmoid_grad(2.0F*v)", "ng_sigmoid_grad(2.0*v)"),
    (sp.Piecewise((v, v < 1), (0, True)), "((v < 1.0F) ? (v) : (0.0F))",
     "((v < 1.0) ? (v) : (0.0))"),
    (ZeroTimes(v), "(v*0.0F)", "(v*0.0)"),
])
def test_printer_golden(expr, float_text, double_text):
    assert print_expr(expr, "float") == float_text
    assert print_expr(expr, "double") == double_text


def test_printer_rejects_unknown_functions():
    with pytest.raises(Exception):
        print_expr(sp.Function("mystery")(v))


SCRIPT = ("import neurogen as ng; from neurogen.neuron import izhikevich_spec as s;"
          "print(s().cuda_source('backward', 'float16', learnable=('a',)) + "
          "s().cpp_source('forward', 'float64'))")


def test_sources_are_byte_identical_across_processes():
    outs = []
    for seed in ("1", "2"):
        env = dict(os.environ, PYTHONHASHSEED=seed)
        outs.append(subprocess.run([sys.executable, "-c", SCRIPT], env=env, check=True,
                                   capture_output=True, text=True).stdout)
    assert outs[0] == outs[1] and "ng_izhikevich_node_backward_float16" in outs[0]


def test_header_names_model_template_and_spec():
    src = izhikevich_spec().cuda_source("forward")
    first = src.splitlines()[0]
    assert first.startswith("// neurogen: model izhikevich_node, template cuda_kernel.cu.j2")
    assert izhikevich_spec().spec_hash in first


def test_izhikevich_saves_only_the_charged_v():
    model = izhikevich_spec()
    cfg = make_config(model)
    _, bw = derivation(model, cfg.surrogate, False, ())
    assert bw.saved == (sp.Symbol("ng_h_v"),)   # h alone; v[t-1] is rebuilt from h[t-1]
    assert bw.prev == ("v",) and not bw.needs_x
    names = [a.name for a in abi.kernel_args(model, "forward", cfg, bw) if a.role == "out"]
    assert names == ["spike_seq", "final_v", "final_w", "saved_ng_h_v"]


def test_learnable_tau_needs_more_saved_values(adex):
    cfg = make_config(adex, learnable=("tau",))
    _, bw = derivation(adex, cfg.surrogate, False, cfg.learnable)
    # dH/dtau reads x and w: w is saved as it was before the step, h rebuilds v[t-1]
    assert bw.saved == (sp.Symbol("w"), sp.Symbol("ng_h_v")) and bw.needs_x


def test_time_steps_are_a_runtime_argument():
    for kind in ("forward", "backward"):
        for src in (lif_spec().cuda_source(kind), lif_spec().cpp_source(kind)):
            assert "const int ng_T" in src


def test_parameter_math_is_hoisted_out_of_the_time_loop():
    src = lif_spec().cuda_source("forward", "float32")
    before, loop = src.split("for (int ng_t", 1)
    assert "1.0F/tau" in before.replace("(1.0F/tau)", "1.0F/tau")
    assert "/tau" not in loop


def test_surrogate_alpha_is_an_argument_not_code():
    a = izhikevich_spec().cuda_source("backward", surrogate=ng.surrogate.Sigmoid(alpha=2.0))
    b = izhikevich_spec().cuda_source("backward", surrogate=ng.surrogate.Sigmoid(alpha=7.0))
    assert a == b and "sg_alpha" in a


# ---- backward algebra (PERF_NOTES.md 22) ----------------------------------------------------
a0, v_c, v_rest, g, h, r, s_, u = sp.symbols("a0 v_c v_rest g h r s u")
INVARIANT = frozenset({a0, v_c, v_rest, tau, r})


def _same(e1, e2, symbols, n=20):
    rng = random.Random(0)
    for _ in range(n):
        point = {q: rng.uniform(-3, 3) for q in symbols}
        assert abs(float(e1.subs(point)) - float(e2.subs(point))) < 1e-12


def test_linear_gradient_factor_is_collected_into_one_multiply_add():
    factor = 1 + (a0 * (v - v_c) + a0 * (v - v_rest)) / tau
    expr = g * factor
    new = collect_linear(expr, INVARIANT)
    assert new != expr
    _same(new, expr, [a0, v_c, v_rest, tau, g, v])
    # the factor's parameter math is a constant of the kernel: one product and one sum
    src = izhikevich_spec().cpp_source("backward", "float32")
    assert "ng_gP_v = ng_c0*(ng_k1*v + ng_k2);" in src


@pytest.mark.parametrize("expr", [
    g * v,                                 # degree 2 in the per-step symbols
    (v - v_c) * (v - v_rest) / tau,        # expanding would trade accuracy for nothing
    sp.exp(v) / tau + v,                   # not a polynomial
    v / tau + x,                           # linear, but already as cheap
])
def test_collection_leaves_other_expressions_alone(expr):
    assert collect_linear(expr, INVARIANT) == expr


def test_hard_reset_becomes_a_select_that_keeps_nan():
    reset = h * (1 - s_) + s_ * r
    new = spike_select(reset, s_, u, INVARIANT)
    assert new == sp.Piecewise((r + ZeroTimes(h), sp.Ge(u, 0)), (h, True))
    # equal to the product form for finite values
    for sv in (0, 1):
        _same(new.args[1 - sv].expr.replace(ZeroTimes, lambda q: 0), reset.subs(s_, sv), [h, r])
    src = izhikevich_spec().cpp_source("backward", "float32")
    assert "((ng_pu >= 0.0F) ? (v_reset + (ng_sv_ng_h_v*0.0F)) : (ng_sv_ng_h_v))" in src
    assert "ng_pspike" not in src   # the 0/1 weight is no longer made


def test_spike_jump_stays_a_product():
    jump = r * s_ + h   # w + b * spike: one multiply-add, cheaper than a select
    assert spike_select(jump, s_, u, INVARIANT) == jump


# ---- the value plan: rules found by review (issue 18) ---------------------------------------
def _plan(model, detach=False, learnable=()):
    return derivation(model, ng.surrogate.Sigmoid(), detach, tuple(learnable))[1]


def test_what_fire_reads_is_saved_never_recomputed():
    # v's and c's charged values could be rebuilt from x alone, but the spike must come
    # from the forward's own bits: both are saved
    m = ng.NeuronModel("two", states={"v": 0.0, "c": 0.0}, params={"a": 0.5, "b": 0.3},
                       charge={"v": "v*b + x*a + x*x - 1", "c": "x*a + x*x + b"},
                       fire="v + c - 1", reset={"v": "(1 - spike_d) * v"})
    bw = _plan(m)
    assert set(bw.saved) == {sp.Symbol("ng_h_v"), sp.Symbol("ng_h_c")}
    assert sp.Symbol("ng_h_c") not in bw.recompute


def test_a_constant_read_only_by_a_rebuild_is_loaded():
    m = ng.NeuronModel("rebuild_c", states={"v": 0.0, "c": 0.5}, params={"tau": 2.0},
                       charge={"v": "v + (v*v + x)/tau"}, fire="v - 1",
                       reset={"v": "(1 - spike_d)*v + spike_d*c"})
    bw = _plan(m, detach=True)
    assert bw.prev == ("v",) and bw.constant == ("c",) and bw.needs_init == ("v", "c")
    assert "init_c" in m.cuda_source("backward", detach_reset=True)


def test_saved_names_cannot_collide():
    # a state named h_v beside v's charged value ng_h_v
    m = ng.NeuronModel("clash_h", states={"v": 0.0, "h_v": 0.5}, params={"tau": 2.0},
                       charge={"v": "v + (x - v * h_v) / tau"}, fire="v - 1",
                       reset={"v": "(1 - spike_d) * v", "h_v": "h_v * (1 + 0.1 * spike)"})
    bw = _plan(m, learnable=("tau",))
    names = [a.name for a in abi.kernel_args(m, "backward", make_config(m, learnable=("tau",)), bw)]
    assert len(names) == len(set(names))
    assert {"saved_ng_h_v", "saved_h_v"} <= set(names)


def test_many_states_use_the_greedy_search_and_stay_small():
    import time
    sts = ["v", "a", "b", "c", "d"]
    m = ng.NeuronModel(
        "five", states={s: 0.0 for s in sts}, params={"k": 0.5},
        charge={s: f"{s}*k + tanh({sts[(i + 1) % 5]}) + x" for i, s in enumerate(sts)},
        adaptation={s: f"{s}*k + 0.1*tanh({sts[(i + 2) % 5]})" for i, s in enumerate(sts)},
        fire=" + ".join(sts) + " - 1",
        reset={s: f"{s}*(1 - spike_d) + 0.1*spike*{s}" for s in sts})
    t0 = time.perf_counter()
    bw = _plan(m)
    assert time.perf_counter() - t0 < 30
    assert len(bw.saved) == 5  # one per state (fire reads every adapted value)


def test_the_greedy_search_finds_the_small_plans_too(monkeypatch, adex):
    from neurogen import derive
    from neurogen.neuron import LIBRARY
    models = [cls.spec for cls in LIBRARY.values()] + [adex]
    exhaustive = {m.name: _plan(m, learnable=m.param_names[:3]) for m in models}
    monkeypatch.setattr(derive, "SEARCH_LIMIT", 0)
    derivation.cache_clear()
    try:
        for m in models:
            greedy = _plan(m, learnable=m.param_names[:3])
            assert len(greedy.saved) == len(exhaustive[m.name].saved), m.name
    finally:
        derivation.cache_clear()
