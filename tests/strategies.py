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


def surrogates():
    """A library surrogate with hyper-parameters drawn around their defaults."""
    return st.sampled_from(SURROGATES).flatmap(lambda cls: st.builds(
        cls, **{k: st.floats(0.5 * v, 2.0 * v) for k, v in cls.defaults.items()}))


# ---- structure: which groups each state is in, and where each state is read --------------------
# (issue 17: a wrong gradient hid while every generated model gave each state a charge or
# adaptation equation)
EXTRA_STATES = ("w", "c", "r")
# a bounded function of one state (keeps random models finite over a few steps); {o} is a
# second state
READ_FORMS = ("{q}", "tanh({q})", "sigmoid(2 * {q}) - 0.5", "{q} * {q} / (1 + {q} * {q})",
              "exp(-{q} * {q})", "0.5 * {q} * tanh({o})")
# branches and clamps (issue 19): each with its gradient convention, conditions over states
BRANCH_FORMS = ("where({q} > {o}, tanh({q}), 0.5 * {o})", "clamp({q}, -0.4, 0.6)",
                "clamp({q}, -0.3)", "maximum(tanh({q}), 0.5 * {o})", "minimum({q}, 0.3)",
                "abs(tanh({q})) - 0.3", "0.3 * sign({q} - 0.2)", "0.2 * floor(2 * tanh({q}))",
                "0.4 * heaviside({q} - 0.3)", "0.4 * sg_heaviside({q} - 0.3)",
                "where({q} > 0.1 and not {o} > 0.5, tanh({q}), 0)",
                "where({q} < -0.2 or {o} >= 0.4, 0.3 * {o}, {q})",
                # a branch inside a condition (sympy makes it an if-then-else condition)
                "where({q} - where({o} > 0.2, 0.3, 0) > 0, tanh({q}), 0.2 * {o})")
OUTPUT_FORMS = (None, "read", "amp", "where", "branch")
REFRACTORY_FORMS = (None, None, 1, 2, "param")
# every subset of the three groups with an equation per state
MEMBERSHIPS = (("charge", "reset"), ("reset",), (), ("charge",), ("adaptation",),
               ("charge", "adaptation"), ("adaptation", "reset"),
               ("charge", "adaptation", "reset"))
RESET_FORMS = ("hard", "soft", "jump", "last_spike", "mix", "other", "nonlinear", "where",
               "branch")


class _Builder:
    """Parameters and terms of one generated model."""

    def __init__(self, draw, states):
        self.draw, self.states = draw, states
        self.params = {}
        self.charge_states, self.adapt_states = set(), set()

    def param(self, lo, hi, prefix="p"):
        name = f"{prefix}{len(self.params)}"
        self.params[name] = self.draw(st.floats(lo, hi))
        return name

    def coef(self, lo=0.05, hi=0.4):
        """A literal, a parameter or a parameter expression (hoisted by the kernels)."""
        kind = self.draw(st.sampled_from(["literal", "param", "expr"]))
        if kind == "literal":
            return repr(round(self.draw(st.floats(lo, hi)), 3))
        if kind == "param":
            return self.param(lo, hi)
        return f"({self.param(lo, hi)} / (1 + {self.param(0.1, 1.0)}))"

    def decay(self, s):
        if self.draw(st.booleans()):
            return f"{self.param(0.3, 0.9)} * {s}"
        return f"(1 - 1 / {self.param(1.5, 4.0)}) * {s}"

    def read(self, readable):
        q = self.draw(st.sampled_from(readable))
        o = self.draw(st.sampled_from(readable))
        return self.draw(st.sampled_from(READ_FORMS + BRANCH_FORMS)).format(q=q, o=o)

    def terms(self, readable, most=2):
        n = self.draw(st.integers(0, most))
        return [f"{self.coef()} * {self.read(readable)}" for _ in range(n)]

    def reset(self, s):
        """A reset of ``s``: the library's forms, resets that read other states and
        spikes, and a reset nonlinear in the spike (no select in the backward)."""
        states, d = self.states, self.draw
        spk = d(st.sampled_from(["spike", "spike_d"]))
        # a reset-only state often copies the spike or another state (snnTorch's Leaky keeps
        # the last spike): the backward may then recompute it instead of saving it
        only = not any(s in g for g in (self.charge_states, self.adapt_states))
        form = d(st.sampled_from(("last_spike", "other") + RESET_FORMS if only else RESET_FORMS))
        if form == "hard":
            target = d(st.sampled_from(["param", "literal", "state"]))
            if target == "param":
                value = self.param(-0.2, 0.2, "v_reset")
            else:
                value = "0.1" if target == "literal" else self.read(states)
            return f"(1 - spike_d) * {s} + {spk} * {value}"
        if form == "soft":
            return f"{s} - spike_d * {self.coef(0.3, 1.0)}"
        if form == "jump":
            return f"{s} + {self.coef()} * spike"
        if form == "last_spike":
            return spk
        if form == "mix":
            return f"{self.decay(s)} + {self.coef()} * {self.read(states)} * {spk}"
        if form == "other":
            return f"{self.coef(0.3, 0.9)} * {self.read(states)}"
        if form == "where":  # a branch on the spike: no gradient through the condition
            return f"where({spk} > 0.5, {self.coef(-0.2, 0.2)}, {self.read(states)})"
        if form == "branch":  # a branch or clamp of the states, scaled by the spike
            q, o = d(st.sampled_from(states)), d(st.sampled_from(states))
            term = d(st.sampled_from(BRANCH_FORMS)).format(q=q, o=o)
            return f"{self.decay(s)} + 0.3 * {spk} * {term}"
        return f"{s} * (1 - {spk} * spike) + 0.2 * spike * spike"


READ_PLACES = ("charge", "adaptation", "fire", "other_reset", "own_reset")
SUBJECT = "w"


def subject_cases():
    """Every (groups of the subject state ``w``, place where it is read): eight memberships
    times the four places any state can be read in, and its own reset for the four
    memberships with a reset."""
    return [(groups, place) for groups in MEMBERSHIPS for place in READ_PLACES
            if place != "own_reset" or "reset" in groups]


@st.composite
def structures(draw, subject=None, surrogate=None):
    """``(model, surrogate, detach_reset, kinds)``: each state is in a random subset of
    {charge, adaptation, reset} (all eight: charge only, adaptation only, both, reset only,
    no equation, each with or without a reset) and every equation reads random states in
    random bounded forms: charge, adaptation, fire, its own reset and other states'
    resets, with ``spike``/``spike_d`` in resets. ``subject=(groups, place)`` forces a
    state ``w`` with those groups that is read in that place (``other_reset``: another
    state's reset, ``own_reset``: its own). ``kinds`` maps each parameter to ``float``,
    ``neuron`` (a per-neuron tensor), or ``learnable`` / ``learnable_neuron`` (the same as
    an ``nn.Parameter``). ``surrogate``: a surrogate class to use (default: drawn)."""
    extra = draw(st.lists(st.sampled_from(EXTRA_STATES[1:]), max_size=2, unique=True))
    if subject is not None or draw(st.booleans()):
        extra = [SUBJECT] + extra
    states = ["v"] + extra
    groups = {s: set(draw(st.sampled_from(MEMBERSHIPS))) for s in states}
    if subject is not None:
        groups[SUBJECT] = set(subject[0])
    candidates = [s for s in states if "charge" in groups[s]] or [
        s for s in states if s != SUBJECT or subject is None]
    driven = draw(st.sampled_from(candidates))
    groups[driven].add("charge")
    place = subject[1] if subject is not None else None
    if place == "adaptation" and not any("adaptation" in groups[s] for s in states):
        groups[draw(st.sampled_from([s for s in states if s != SUBJECT] ))].add("adaptation")
    if place == "other_reset" and not any("reset" in groups[s] for s in states if s != SUBJECT):
        groups["v"].add("reset")
    b = _Builder(draw, states)
    charge, adaptation, reset = {}, {}, {}
    for s in states:
        if "charge" in groups[s]:
            parts = ([b.decay(s)] if draw(st.booleans()) or s == driven else [])
            parts += b.terms(states)
            if s == driven or draw(st.booleans()):
                parts.append(f"{b.coef(0.3, 1.0)} * x")
            charge[s] = parts
        if "adaptation" in groups[s]:
            adaptation[s] = [b.decay(s)] + b.terms(states)
    b.charge_states, b.adapt_states = set(charge), set(adaptation)
    for s in states:
        if "reset" in groups[s]:
            reset[s] = [b.reset(s)]
    fire = [driven] + b.terms(states)
    if place is not None:  # the subject read where asked, in a random bounded form
        term = f"{b.coef()} * {b.read([SUBJECT])}"
        if place == "charge":
            charge[driven].append(term)
        elif place == "adaptation":
            adaptation[draw(st.sampled_from(sorted(adaptation)))].append(term)
        elif place == "fire":
            fire.append(term)
        else:
            owners = [SUBJECT] if place == "own_reset" else sorted(set(reset) - {SUBJECT})
            owner = draw(st.sampled_from(owners))
            spk = draw(st.sampled_from(["", " * spike", " * spike_d"]))
            reset[owner].append(term + spk)
    fire = " + ".join(fire) + f" - {b.param(0.4, 0.9, 'th')}"
    # graded output (issue 19): spike times a state, a learnable amplitude, or a branch
    output = draw(st.sampled_from(OUTPUT_FORMS))
    if output == "read":
        output = f"spike * ({b.read(states)})"
    elif output == "amp":
        output = f"spike * {b.param(0.5, 1.5, 'amp')} + 0.1 * spike * {b.read(states)}"
    elif output == "where":
        output = f"where(spike > 0, {b.read(states)}, 0.1 * {b.read(states)})"
    elif output == "branch":
        q, o = draw(st.sampled_from(states)), draw(st.sampled_from(states))
        output = f"spike * (1 + {draw(st.sampled_from(BRANCH_FORMS)).format(q=q, o=o)})"
    refractory = draw(st.sampled_from(REFRACTORY_FORMS))
    hold = None
    if refractory is not None:
        if refractory == "param":
            refractory = "t_ref"
            b.params["t_ref"] = float(draw(st.integers(1, 3)))
        if draw(st.booleans()):
            hold = draw(st.lists(st.sampled_from(states), min_size=1, unique=True))
    model = ng.NeuronModel(
        "structure", states={s: 0.0 for s in states}, params=b.params,
        charge={s: " + ".join(p) or "0.5 * x" for s, p in charge.items()},
        adaptation={s: " + ".join(p) for s, p in adaptation.items()},
        fire=fire, reset={s: " + ".join(p) for s, p in reset.items()}, output=output,
        refractory=refractory, refractory_hold=hold, fire_strict=draw(st.booleans()))
    kinds = {k: draw(st.sampled_from(["float", "neuron", "learnable", "learnable_neuron"]))
             for k in model.param_names}
    if "t_ref" in kinds:  # whole steps: a plain or a per-neuron integer, never learnable
        kinds["t_ref"] = draw(st.sampled_from(["float", "steps_neuron"]))
    if surrogate is None:
        sg = draw(surrogates())
    else:
        sg = draw(st.builds(surrogate, **{k: st.floats(0.5 * v, 2.0 * v)
                                          for k, v in surrogate.defaults.items()}))
    return model, sg, draw(st.booleans()), kinds


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
