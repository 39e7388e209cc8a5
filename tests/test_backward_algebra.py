"""Property tests of the derivation's shortcuts, each on the structures it assumes
(issue 17's audit; no compiler needed):

- ``Hoister``: parameter-only subexpressions become ``ng_k<n>`` constants;
- ``collect_linear``: gradient sub-expressions linear in the per-step values become
  hoisted-coefficient multiply-adds;
- ``spike_select``: an expression linear in the 0/1 spike becomes a select whose
  dropped per-step terms keep NaN and inf (``ZeroTimes``).

Random expression trees over per-step symbols (states, gradients, a spike) and
invariant symbols (parameters), evaluated in IEEE double with NumPy at random points.
"""
import math

import numpy as np
import sympy as sp
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from neurogen.rewrite import Hoister, collect_linear, spike_select
from neurogen.spec.functions import sigmoid

STEP = sp.symbols("v w g h")          # per-step values
PARAMS = sp.symbols("a b c tau")      # loop invariants
INVARIANT = frozenset(PARAMS)
S, U = sp.symbols("s u")              # the spike and the fire value
SETTINGS = dict(max_examples=300, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow])

_UNARY = [sp.tanh, sigmoid, sp.exp, lambda e: e ** 2, lambda e: 1 / (1 + e ** 2)]


@st.composite
def exprs(draw, leaves, depth=3):
    """A random expression tree: sums, products, quotients, powers, functions."""
    if depth == 0 or draw(st.integers(0, 3)) == 0:
        kind = draw(st.sampled_from(["symbol", "symbol", "number"]))
        if kind == "number":
            return sp.Float(draw(st.sampled_from([0.5, 2.0, -1.5, 3.0])))
        return draw(st.sampled_from(leaves))
    op = draw(st.sampled_from(["add", "mul", "div", "unary", "sub"]))
    a = draw(exprs(leaves, depth - 1))
    if op == "unary":
        return draw(st.sampled_from(_UNARY))(a)
    b = draw(exprs(leaves, depth - 1))
    return {"add": a + b, "sub": a - b, "mul": a * b, "div": a / (1 + b ** 2)}[op]


def _numpy(expr, symbols):
    mods = [{"sigmoid": lambda z: 1 / (1 + np.exp(-z)), "ZeroTimes": lambda z: z * 0.0},
            "numpy"]
    return sp.lambdify(symbols, expr, modules=mods)


def _points(seed, n=8):
    rng = np.random.default_rng(seed)
    return [rng.uniform(-1.5, 1.5, len(STEP) + len(PARAMS) + 2) for _ in range(n)]


def assert_same_values(e1, e2, seed, symbols=STEP + PARAMS + (S, U)):
    f1, f2 = _numpy(e1, symbols), _numpy(e2, symbols)
    with np.errstate(all="ignore"):
        for p in _points(seed):
            y1, y2 = float(f1(*p)), float(f2(*p))
            if math.isfinite(y1) and abs(y1) < 1e12:
                assert abs(y1 - y2) <= 1e-9 * (1 + abs(y1)), (e1, e2, p, y1, y2)


@settings(**SETTINGS)
@given(exprs(STEP + PARAMS), st.integers(0, 2**16))
def test_hoisted_expression_equals_the_original(expr, seed):
    hoister = Hoister(INVARIANT)
    out = hoister(expr)
    for sym, definition in hoister.order:
        assert definition.free_symbols <= INVARIANT, "a constant reads a per-step value"
    # substitute the constants back, innermost last (a later one may use an earlier one)
    back = out
    for sym, definition in reversed(hoister.order):
        back = back.xreplace({sym: definition})
    assert_same_values(back, expr, seed)
    assert not any(sym in back.free_symbols for sym, _ in hoister.order)


@st.composite
def linear_sums(draw):
    """Sums of invariant-coefficient multiples of per-step values and products, as the
    derivation's gradient factors are (``1 + (a0 (v - v_c) + a0 (v - v_rest)) / tau``)."""
    terms = []
    for _ in range(draw(st.integers(1, 4))):
        coef = draw(exprs(PARAMS, depth=2))
        var = draw(st.sampled_from(list(STEP) + [sp.Integer(1)]))
        terms.append(coef * var if draw(st.booleans()) else coef * (var + draw(exprs(PARAMS, 1))))
    factor = sp.Add(*terms)
    if draw(st.booleans()):
        factor = factor / draw(st.sampled_from(PARAMS))
    return draw(st.sampled_from(STEP)) * factor if draw(st.booleans()) else factor


@settings(**SETTINGS)
@given(st.one_of(linear_sums(), exprs(STEP + PARAMS)), st.integers(0, 2**16))
def test_collected_linear_form_equals_the_original(expr, seed):
    out = collect_linear(expr, INVARIANT)
    assert out.free_symbols <= expr.free_symbols
    assert_same_values(out, expr, seed)


@st.composite
def spike_linear(draw):
    """``A s + B`` with A, B random expressions of per-step values and parameters (the
    reset forms: hard, soft, jumps, resets to another state's value), or a product with a
    spike factor."""
    a = draw(exprs(STEP + PARAMS, depth=2))
    b = draw(exprs(STEP + PARAMS, depth=2))
    form = draw(st.sampled_from(["affine", "hard", "scaled"]))
    if form == "affine":
        return a * S + b
    if form == "hard":
        return (1 - S) * b + S * a
    return b * (1 - draw(st.sampled_from(PARAMS)) * S)


@settings(**SETTINGS)
@given(st.one_of(spike_linear(), exprs(STEP + PARAMS + (S,))), st.integers(0, 2**16))
def test_spike_select_equals_the_product_form(expr, seed):
    out = spike_select(expr, S, U, INVARIANT)
    if out == expr:
        return
    for value in (0, 1):  # (a select with equal branches is its branch)
        branch = out.args[1 - value].expr if isinstance(out, sp.Piecewise) else out
        assert_same_values(branch, expr.xreplace({S: value}), seed)


@settings(**SETTINGS)
@given(spike_linear(), st.sampled_from(STEP), st.sampled_from([math.inf, -math.inf, math.nan]),
       st.integers(0, 2**16))
def test_spike_select_keeps_nan_and_inf_of_dropped_values(expr, where, bad, seed):
    """Where the product form gives NaN because a per-step value is inf or NaN (``0 *
    inf``), the select gives NaN too: the weighted-away value stays as ``ZeroTimes``."""
    out = spike_select(expr, S, U, INVARIANT)
    if out == expr:
        return
    symbols = STEP + PARAMS + (S, U)
    f_product, f_select = _numpy(expr, symbols), _numpy(out, symbols)
    with np.errstate(all="ignore"):
        for p in _points(seed, 4):
            p[symbols.index(where)] = bad
            for value in (0.0, 1.0):
                p[symbols.index(S)] = value
                p[symbols.index(U)] = 1.0 if value else -1.0
                y_product, y_select = float(f_product(*p)), float(f_select(*p))
                if math.isnan(y_product):
                    assert math.isnan(y_select), (expr, out, where, bad, value)
                elif math.isfinite(y_product):
                    assert math.isfinite(y_select) and abs(y_product - y_select) <= 1e-9 * (
                        1 + abs(y_product)), (expr, out, where, bad, value)
