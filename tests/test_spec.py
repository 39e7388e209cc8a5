"""NeuronModel validation: a table of invalid declarations (in the style of
NESTML's invalid-model fixtures), valid equivalences, and the safety of the
string-equation parser (it must never evaluate Python)."""
import math
import os
import re
import subprocess
import sys

import pytest
import sympy as sp

from neurogen.spec.functions import surrogate_at
from neurogen.errors import SpecError
from neurogen.spec import NeuronModel, parse_expr, sigmoid, spike, spike_d

v, w, x, tau, vth, a, b, tau_w = sp.symbols("v w x tau v_threshold a b tau_w")
f = sp.Function("f")

# An adaptive neuron written with strings only (also fed to a subprocess).
IZH = dict(name="izh", states={"v": 0.0, "w": 0.0},
           params={"tau": 2.0, "v_threshold": 1.0, "a": 0.1, "b": 0.05, "tau_w": 5.0},
           charge={"v": "v + (x - v - w) / tau"}, adaptation={"w": "w + (a * v - w) / tau_w"},
           fire="v - v_threshold", reset={"v": "(1 - spike_d) * v", "w": "w + b * spike"})


def lif(**changes):
    kw = dict(name="lif", states={"v": 0.0}, params={"tau": 2.0, "v_threshold": 1.0},
              charge={"v": "v + (x - v) / tau"}, fire="v - v_threshold",
              reset={"v": "(1 - spike_d) * v"})
    return {**kw, **changes}


def izh(**changes):
    """IZH written with sympy objects."""
    kw = dict(name="izh", states={v: 0.0, w: 0.0},
              params={tau: 2.0, vth: 1.0, a: 0.1, b: 0.05, tau_w: 5.0},
              charge={v: v + (x - v - w) / tau}, adaptation={w: w + (a * v - w) / tau_w},
              fire=v - vth, reset={v: (1 - spike_d) * v, w: w + b * spike})
    return {**kw, **changes}


P2 = {"tau": 2.0, "v_threshold": 1.0}


def bad_name(role, name):
    return rf"{role} name {re.escape(repr(name))} must be an identifier"


def reserved(name):
    return rf"parameter name {re.escape(repr(name))} is reserved"


INVALID = [
    # unknown / misspelled symbols
    (lif(charge={"v": "v + (x - v) / tua"}),
     r"charge equation of 'v' uses unknown symbol 'tua' .*Did you mean 'tau'\?"),
    (izh(adaptation={w: w + (a * v - w) / sp.Symbol("tauw")}),
     r"adaptation equation of 'w' uses unknown symbol 'tauw' .*Did you mean 'tau_w'\?"),
    (lif(fire="v - v_thresh"), r"fire expression uses unknown symbol 'v_thresh'.*Did you mean 'v_threshold'"),
    (lif(reset={"v": "v_rest"}), r"reset equation of 'v' uses unknown symbol 'v_rest'"),
    (izh(states={v: 0.0, w: "v"}), r"initial value of state 'w' uses unknown symbol 'v' "
                                   r"\(an initial value may use parameters only\)"),
    # states
    (lif(states={"v": None}), r"state 'v' has no initial value"),
    (lif(states={}), r"states must be a non-empty dict"),
    (lif(states={"v": float("inf")}), r"initial value of state 'v' contains the non-finite number oo"),
    (lif(states={"v": f(tau)}), r"initial value of state 'v' calls unsupported function f"),
    # fire
    (lif(fire=None), r"model 'lif' has no fire expression"),
    (lif(fire="1 - v_threshold"), r"fire expression .* does not depend on any state"),
    (lif(fire="v + x - v_threshold"), r"fire expression .* uses the input 'x'"),
    # functions without a gradient convention, conditions used as values
    (izh(charge={v: sp.ceiling(v) + x}), r"charge equation of 'v' uses ceiling, which neurogen "
                                         r"has no gradient convention for; write it with floor"),
    (izh(charge={v: sp.Mod(v, 2) + x}), r"charge equation of 'v' uses Mod"),
    (izh(adaptation={w: w + sp.DiracDelta(v)}), r"adaptation equation of 'w' uses DiracDelta"),
    (izh(charge={v: v + x + surrogate_at(v)}),
     r"charge equation of 'v' calls surrogate_at, neurogen's own name"),
    (lif(charge={"v": "v + x * (v > 1)"}), r"charge equation of 'v': the condition 'v > 1' used "
                                           r"as a value \(a condition chooses a branch: "
                                           r"where\(v > 1, value_if_true, value_if_false\)\)"),
    (lif(charge={"v": "where(0 < v < 1, v, x)"}), r"a chained comparison \(write 'a < b and b < c'\)"),
    (lif(charge={"v": "clamp(v + x)"}), r"calling 'clamp' with other than 2 or 3 positional "
                                       r"argument\(s\) \(clamp\(u, lo, hi\) or clamp\(u, lo\)\)"),
    (lif(fire="max(v) - 1"), r"calling 'max' with other than 2 positional argument\(s\)"),
    (izh(charge={v: v + sp.Derivative(v, x)}), r"charge equation of 'v' contains Derivative"),
    # undefined / unsupported functions, non-scalars, complex numbers
    (izh(charge={v: v + f(x)}), r"charge equation of 'v' calls unsupported function f"),
    (izh(reset={v: f(v)}), r"reset equation of 'v' calls unsupported function f"),
    (izh(charge={v: v + sp.I * x}), r"charge equation of 'v' contains the complex number I"),
    (izh(charge={v: sp.Tuple(v, x)}), r"charge equation of 'v': .* not a scalar expression"),
    (izh(charge={v: v > x}), r"charge equation of 'v': .* is a condition"),
    (lif(charge={"v": "v + x + 1e999"}), r"charge equation of 'v' contains the non-finite number oo"),
    # states vs parameters vs input
    (lif(params={**P2, "v": 0.5}), r"'v' is declared both as a state and as a parameter"),
    (lif(params={**P2, "x": 0.5}), r"'x' is the input symbol and cannot be a parameter"),
    (lif(states={"v": 0.0, "x": 0.0}, charge={"v": "v + x", "x": "x"}),
     r"'x' is the input symbol and cannot be a state"),
    (lif(charge={"v": "v - v / tau"}), r"no charge equation uses the input 'x'"),
    # equations for unknown states
    (lif(charge={"v": "v + x", "u": "u"}), r"charge equation for unknown state 'u'"),
    (lif(charge={"vv": "v + x"}), r"charge equation for unknown state 'vv'.*Did you mean 'v'\?"),
    (izh(adaptation={"ww": "w"}), r"adaptation equation for unknown state 'ww'.*Did you mean 'w'\?"),
    (lif(reset={"z": "0"}), r"reset equation for unknown state 'z'"),
    # spikes outside reset, input outside charge
    (lif(charge={"v": "v + x - spike"}), r"charge equation of 'v' uses 'spike': spikes may appear only in reset"),
    (izh(adaptation={w: w + spike_d}), r"adaptation equation of 'w' uses 'spike_d'"),
    (izh(fire=v - vth + spike), r"fire expression uses 'spike'"),
    (lif(states={"v": "spike_d"}), r"initial value of state 'v' uses 'spike_d'"),
    (izh(adaptation={w: w + x}), r"adaptation equation of 'w' uses the input 'x'"),
    (lif(reset={"v": "x"}), r"reset equation of 'v' uses the input 'x'"),
    # reserved names
    (lif(params={**P2, "int": 1.0}), reserved("int")),
    (lif(params={**P2, "spike": 1.0}), reserved("spike")),
    (lif(params={**P2, "spike_d": 1.0}), reserved("spike_d")),
    (lif(params={**P2, "ng_tau": 1.0}), reserved("ng_tau")),
    (lif(params={**P2, "a__b": 1.0}), reserved("a__b")),
    (lif(params={**P2, "exp": 1.0}), reserved("exp")),
    (lif(params={**P2, "pi": 1.0}), reserved("pi")),
    (lif(params={**P2, "lambda": 1.0}), reserved("lambda")),
    (lif(params={**P2, "None": 1.0}), reserved("None")),
    (lif(states={"float": 0.0}), r"state name 'float' is reserved"),
    (lif(input="spike"), r"input name 'spike' is reserved"),
    # non-identifier names
    (lif(params={**P2, "1tau": 1.0}), bad_name("parameter", "1tau")),
    (lif(params={**P2, "tau-w": 1.0}), bad_name("parameter", "tau-w")),
    (lif(params={**P2, "_tau": 1.0}), bad_name("parameter", "_tau")),
    (lif(params={**P2, "": 1.0}), bad_name("parameter", "")),
    (lif(params={**P2, sp.Symbol("tau w"): 1.0}), bad_name("parameter", "tau w")),
    (lif(params={**P2, sp.Symbol("tau2\n"): 1.0}), bad_name("parameter", "tau2\n")),
    (lif(params={**P2, "τ": 1.0}), bad_name("parameter", "τ")),
    (lif(name="my lif"), r"model name 'my lif' must be an identifier"),
    (lif(name="lif\n"), r"model name 'lif\\n' must be an identifier"),
    # parameter defaults
    (lif(params={"tau": float("nan"), "v_threshold": 1.0}), r"parameter 'tau' needs a finite number"),
    (lif(params={"tau": float("inf"), "v_threshold": 1.0}), r"parameter 'tau' needs a finite number"),
    (lif(params={"tau": -math.inf, "v_threshold": 1.0}), r"parameter 'tau' needs a finite number"),
    (lif(params={"tau": "2.0", "v_threshold": 1.0}), r"parameter 'tau' needs a finite number"),
    (lif(params={"tau": True, "v_threshold": 1.0}), r"parameter 'tau' needs a finite number"),
    # duplicates
    (lif(states={"v": 0.0, v: 0.0}), r"state 'v' is declared twice"),
    (lif(params={"tau": 2.0, tau: 3.0, "v_threshold": 1.0}), r"parameter 'tau' is declared twice"),
    (lif(charge={"v": "v + x", v: v + 2 * x}), r"charge equation of 'v' is given twice"),
    # wrong container types
    (lif(charge=["v + x"]), r"charge must be a dict"),
    (lif(params=[("tau", 2.0)]), r"params must be a dict"),
]


@pytest.mark.parametrize("kwargs, message", INVALID)
def test_invalid_model(kwargs, message):
    with pytest.raises(SpecError, match=message) as info:
        NeuronModel(**kwargs)
    assert isinstance(info.value, ValueError)


# ---- valid declarations ---------------------------------------------------------
def test_strings_and_sympy_give_the_same_spec():
    from_strings, from_sympy = NeuronModel(**IZH), NeuronModel(**izh())
    assert from_strings.canonical() == from_sympy.canonical()
    assert from_strings.spec_hash == from_sympy.spec_hash
    assert from_strings == from_sympy
    assert from_strings.state_names == ("v", "w")
    assert from_strings.param_names == ("tau", "v_threshold", "a", "b", "tau_w")


def test_symbols_with_assumptions_match_by_name():
    vr, xr, tr = sp.Symbol("v", real=True), sp.Symbol("x", positive=True), sp.Symbol("tau", positive=True)
    m = NeuronModel("lif", states={vr: 0.0}, params={tr: 2.0, "v_threshold": 1.0},
                    charge={vr: vr + (xr - v) / tau}, fire=vr - vth, reset={v: (1 - spike_d) * vr})
    assert m.spec_hash == NeuronModel(**lif()).spec_hash
    assert all(s.is_real is None for s in m.charge["v"].free_symbols)


def test_spec_hash_is_deterministic_across_processes():
    script = f"from neurogen.spec import NeuronModel\nprint(NeuronModel(**{IZH!r}).spec_hash)"
    hashes = set()
    for seed in ("0", "12345"):
        env = {**os.environ, "PYTHONHASHSEED": seed}
        out = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True,
                             text=True, check=True)
        hashes.add(out.stdout.strip())
    assert hashes == {NeuronModel(**IZH).spec_hash}
    assert re.fullmatch(r"[0-9a-f]{16}", hashes.pop())


def test_replace_returns_a_modified_copy():
    m = NeuronModel(**IZH)
    m2 = m.replace(params={**m.defaults, "tau": 4.0})
    assert m2 is not m and m2.defaults["tau"] == 4.0
    assert m.defaults["tau"] == 2.0
    assert m2.spec_hash != m.spec_hash
    assert (m2.charge, m2.adaptation, m2.reset, m2.fire) == (m.charge, m.adaptation, m.reset, m.fire)
    assert m.replace(params=dict(m.defaults)) == m
    with pytest.raises(SpecError, match=r"parameter 'tau' needs a finite number"):
        m.replace(params={**m.defaults, "tau": float("nan")})


# ---- the string parser --------------------------------------------------------------
UNSAFE = [
    "__import__('os').system('touch PWNED')", "().__class__", "x.real", "lambda: 1",
    "[i for i in range(3)]", "v if v else w", "open('f')", "open('created', 'w')", "v[0]",
    "__builtins__", "'abc'", "True", "exec('1')", "eval('1')", "getattr(v, 'x')",
    "exp.__globals__", "sigmoid(v).func", "import os", "v; w", "v == 1", "v and w", "not v",
    "v % 2", "v // 2", "v @ w", "1j", "None", "f'{v}'", "exp(v, w)", "exp(x=v)", "exp",
    "(x := 1)", "{1: 2}", "*v", "", "9**9**9", "-" * 3000 + "v", "exp(" * 250 + "v" + ")" * 250,
    "x" * 10_001,
]
SLOTS = {
    "charge": (lambda t: lif(charge={"v": t}), "charge equation of 'v'"),
    "fire": (lambda t: lif(fire=t), "fire"),
    "reset": (lambda t: lif(reset={"v": t}), "reset equation of 'v'"),
    "initial": (lambda t: lif(states={"v": t}), "initial value of state 'v'"),
}


@pytest.mark.parametrize("slot", list(SLOTS))
@pytest.mark.parametrize("text", UNSAFE, ids=lambda t: t[:30])
def test_parser_rejects_unsafe_text_without_running_it(text, slot, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    make, where = SLOTS[slot]
    with pytest.raises(SpecError, match="^" + re.escape(where) + ": "):
        NeuronModel(**make(text))
    with pytest.raises(SpecError):
        parse_expr(text)
    with pytest.raises(SpecError, match="expected a string"):
        parse_expr(text.encode())
    assert list(tmp_path.iterdir()) == []
    assert not os.path.exists("PWNED")


ALLOWED = [
    ("v + (x - v) / tau", v + (x - v) / tau),
    ("sigmoid(w) * x", sigmoid(w) * x),
    ("exp(-v/tau)", sp.exp(-v / tau)),
    ("v**2", v ** 2),
    ("-v", -v),
    ("+v", v),
    ("pi * v", sp.pi * v),
    ("E ** v", sp.exp(v)),
    ("1e-3 * x", sp.Float(1e-3) * x),
    (" sqrt(tau) * log(2) + tanh(v) + sin(v) + cos(v) + atan(v) ",
     sp.sqrt(tau) * sp.log(2) + sp.tanh(v) + sp.sin(v) + sp.cos(v) + sp.atan(v)),
    ("2**3**2", sp.Integer(512)),
]


@pytest.mark.parametrize("text, expected", ALLOWED, ids=[t for t, _ in ALLOWED])
def test_parser_accepts_arithmetic(text, expected):
    got = parse_expr(text)
    assert got == expected
    assert sp.srepr(got) == sp.srepr(expected)


def test_allowed_text_builds_a_model():
    m = NeuronModel(**lif(params={"tau": 2.0, "v_threshold": 1.0, "c": 0.5},
                          charge={"v": "v + (x - v) / tau + 1e-3 * x * sigmoid(c) * exp(-v/tau)"},
                          fire="v**2 - pi * v_threshold", reset={"v": "-v * spike_d + v"}))
    assert m.input_name == "x" and "x" in {s.name for s in m.charge["v"].free_symbols}
