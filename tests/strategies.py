"""Hypothesis strategies: random valid neuron models with safe parameter ranges."""
from hypothesis import strategies as st

import neurogen as ng

V_TERMS = ["0", "a0 * (v - v_rest) * (v - v_c)", "-v", "0.2 * exp((v - 0.9) / 0.5)",
           "sigmoid(4 * v) - 0.5", "0.3 * tanh(v)", "v * v / (1 + v * v)"]
W_ADAPT = ["w + (a * (v - v_rest) - w) / tau_w", "w + (a * v * v - w) / tau_w",
           "w * decay + a * sigmoid(v)"]
SURROGATES = [ng.surrogate.Sigmoid, ng.surrogate.ATan, ng.surrogate.PiecewiseQuadratic,
              ng.surrogate.PiecewiseExp, ng.surrogate.SoftSign, ng.surrogate.SuperSpike,
              ng.surrogate.Erf, ng.surrogate.PiecewiseLeakyReLU, ng.surrogate.Rect]


@st.composite
def models(draw):
    """(model, surrogate, detach_reset, learnable parameter names)."""
    params = {"tau": draw(st.floats(1.5, 4.0)), "v_threshold": draw(st.floats(0.6, 1.2))}
    states = {"v": 0.0}
    term = draw(st.sampled_from(V_TERMS))
    if "a0" in term:
        params.update(a0=draw(st.floats(0.3, 1.2)), v_c=0.8)
    if "v_rest" in term:
        params["v_rest"] = draw(st.floats(-0.2, 0.1))
    has_w, has_c = draw(st.booleans()), draw(st.booleans())
    adaptation, charge, reset = {}, {}, {}
    if has_w:
        states["w"] = 0.0
        adapt = draw(st.sampled_from(W_ADAPT))
        adaptation["w"] = adapt
        params.update(a=draw(st.floats(0.05, 0.5)), tau_w=draw(st.floats(1.5, 5.0)))
        if "v_rest" in adapt:
            params.setdefault("v_rest", draw(st.floats(-0.2, 0.1)))
        if "decay" in adapt:
            params["decay"] = draw(st.floats(0.3, 0.9))
        if draw(st.booleans()):
            params["b"] = draw(st.floats(0.0, 0.3))
            reset["w"] = "w + b * spike"
    if has_c:
        states["c"] = 0.0
        params["c_decay"] = draw(st.floats(0.2, 0.8))
        charge["c"] = "c_decay * c + x"
    terms = ["x"] + ([term] if term != "0" else []) + (["-w"] if has_w else []) + (
        ["c_decay * c"] if has_c else [])
    charge["v"] = f"v + ({' + '.join(terms)}) / tau"
    kind = draw(st.sampled_from(["hard", "hard_spike", "soft"]))
    if kind == "soft":
        reset["v"] = "v - spike_d * v_threshold"
    else:
        params["v_reset"] = draw(st.floats(-0.2, 0.1))
        jump = "spike" if kind == "hard_spike" else "spike_d"
        reset["v"] = f"(1 - spike_d) * v + {jump} * v_reset"
        states["v"] = "v_reset"
    model = ng.NeuronModel("fuzz", states=states, params=params, charge=charge,
                           adaptation=adaptation, fire="v - v_threshold", reset=reset)
    surrogate = draw(st.sampled_from(SURROGATES))()
    learnable = tuple(k for k in model.param_names if draw(st.booleans()))
    return model, surrogate, draw(st.booleans()), learnable
