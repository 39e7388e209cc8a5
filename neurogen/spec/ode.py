"""Continuous-time models: right-hand sides ``ds/dt`` discretised into a step.

:func:`from_ode` turns ``ode={"v": "(-(v - v_rest) + x) / tau"}`` plus ``dt``
into an ordinary :class:`NeuronModel` whose charge equations are the
discretised update over one step (input held constant over the step). The
result goes through the same kernels and gradients as any declared model, so
time constants can be learned through the exact propagator (``exp(-dt/tau)``).

Methods: ``exact`` (linear systems with coefficients constant over a step:
matrix exponential; a propagator that is singular for some parameter relation,
such as two equal time constants, gets a separate branch in its limit form),
``exponential_euler`` (each equation linear in its own state),
``euler``, ``rk2`` (midpoint), and ``auto`` (exact, then exponential Euler,
then Euler; the choice is in ``model.ode_method``).
"""
from typing import Mapping, Optional

import sympy as sp

from ..errors import SpecError
from .model import NeuronModel, _key_name, _to_expr

METHODS = ("exact", "exponential_euler", "euler", "rk2", "auto")


def from_ode(name: str, states: Mapping, ode: Mapping, params: Optional[Mapping] = None,
             fire=None, reset: Optional[Mapping] = None, dt: float = 1.0,
             method: str = "auto", input: str = "x", doc: str = "", **options) -> NeuronModel:
    """A :class:`NeuronModel` from ``ds/dt`` right-hand sides; see the module docstring.
    ``options``: the model's other arguments (``output``, ``refractory``,
    ``refractory_hold``, ``fire_strict``).

    >>> m = from_ode("lif", states={"v": 0.0}, params={"tau": 10.0, "v_th": 1.0},
    ...              ode={"v": "(x - v) / tau"}, fire="v - v_th",
    ...              reset={"v": "(1 - spike_d) * v"}, dt=1.0, method="exact")
    >>> m.charge["v"]
    v*exp(-dt/tau) + x - x*exp(-dt/tau)
    """
    if method not in METHODS:
        raise SpecError(f"method must be one of {METHODS}, not {method!r}")
    params = dict(params or {})
    if "dt" in params and dt != 1.0 and params["dt"] != dt:
        raise SpecError("give dt either as dt= or in params, not both with different values")
    params.setdefault("dt", float(dt))
    if not isinstance(ode, Mapping) or not ode:
        raise SpecError("ode must be a non-empty dict {state: right-hand side of d(state)/dt}")
    state_names = [_key_name(k, "states") for k in states]
    rhs = {}
    for key, value in ode.items():
        n = _key_name(key, "ode")
        if n not in state_names:
            raise SpecError(f"ode for unknown state {n!r}; states are {state_names}")
        rhs[n] = _to_expr(value, f"ode of {n!r}")
    # A model built from the right-hand sides alone validates symbols and functions first.
    NeuronModel(name, states, params, charge=rhs, fire=fire, reset=reset, input=input,
                **options)
    order = [s for s in state_names if s in rhs]
    tried = []
    for m in (("exact", "exponential_euler", "euler") if method == "auto" else (method,)):
        try:
            charge = _DISCRETISE[m](order, rhs, sp.Symbol("dt"), sp.Symbol(input))
        except _NotApplicable as exc:
            tried.append(f"{m}: {exc}")
            if method != "auto":
                raise SpecError(f"method {m!r} does not apply: {exc}") from None
            continue
        model = NeuronModel(name, states, params, charge=charge, fire=fire, reset=reset,
                            input=input, doc=doc, **options)
        model.ode = dict(rhs)
        model.ode_method = m
        model.ode_tried = tried
        return model
    raise SpecError("no method applies: " + "; ".join(tried))  # pragma: no cover (euler always does)


class _NotApplicable(Exception):
    pass


def _euler(order, rhs, dt, x):
    return {s: sp.Symbol(s) + dt * rhs[s] for s in order}


def _rk2(order, rhs, dt, x):
    mid = {sp.Symbol(s): sp.Symbol(s) + dt / 2 * rhs[s] for s in order}
    return {s: sp.Symbol(s) + dt * rhs[s].xreplace(mid) for s in order}


def _exponential_euler(order, rhs, dt, x):
    out = {}
    for s in order:
        sym = sp.Symbol(s)
        f = sp.expand(rhs[s])
        a = sp.simplify(sp.diff(f, sym))
        if sym in a.free_symbols:
            raise _NotApplicable(f"d{s}/dt is not linear in {s} (d/d{s} = {a})")
        b = sp.simplify(f - a * sym)
        if a == 0:
            out[s] = sym + dt * b
            continue
        decay = sp.exp(a * dt)
        out[s] = sp.powsimp(sp.expand(sym * decay + b / a * (decay - 1)), combine="exp")
    return out


def _exact(order, rhs, dt, x):
    syms = [sp.Symbol(s) for s in order]
    n = len(syms)
    M = sp.zeros(n, n)
    c = sp.zeros(n, 1)
    for i, s in enumerate(order):
        f = sp.expand(rhs[s])
        for j, q in enumerate(syms):
            coeff = sp.diff(f, q)
            if coeff.free_symbols & set(syms):
                raise _NotApplicable(f"d{s}/dt is not linear in the states with constant "
                                     f"coefficients (d/d{q} = {coeff})")
            M[i, j] = coeff
        c[i] = sp.simplify(f - sum(M[i, j] * syms[j] for j in range(n)))
    if any(sp.Symbol(s) in c.free_symbols for s in order):
        raise _NotApplicable("the constant part depends on a state")
    general = [_conditioned(e, syms + [x]) for e in _propagate(M, c, dt, syms)]
    singular = _singular_relations(general)
    if not singular:
        return {s: general[i] for i, s in enumerate(order)}
    # Each parameter relation that zeroes a denominator gets its own limit-form branch.
    out = {}
    for i, s in enumerate(order):
        expr = general[i]
        for relation in singular:
            limit_form = _propagate(M.xreplace(relation), c.xreplace(relation), dt, syms)[i]
            cond = sp.And(*[sp.Eq(k, v) for k, v in relation.items()])
            expr = sp.Piecewise((limit_form, cond), (expr, True))
        out[s] = expr
    return out


def _propagate(M, c, dt, syms):
    """S(t + dt) for dS/dt = M S + c with c held constant: exp of the augmented matrix."""
    n = M.shape[0]
    aug = sp.zeros(n + 1, n + 1)
    aug[:n, :n] = M
    aug[:n, n] = c
    E = (aug * dt).exp()
    state = sp.Matrix(list(syms) + [1])
    # expand + powsimp merges exp(a) * exp(-a): no overflowing intermediate like exp(dt/tau)
    return [sp.powsimp(sp.expand((E * state)[i]), combine="exp") for i in range(n)]


def _conditioned(expr, variables):
    """``sum_k K_k * variable_k + K_0`` with each parameter-only coefficient K over one
    common denominator: near a singular point (tau_c ~ tau_v) the numerator's difference
    of exponentials keeps its relative accuracy, where the expanded sum of huge terms
    does not cancel cleanly in floating point."""
    rest = expr
    terms = []
    for v in variables:
        coeff = sp.diff(expr, v)
        if coeff.free_symbols & set(variables):
            return expr  # not linear in the variables: leave as is
        rest = rest - coeff * v
        terms.append(_one_fraction(coeff) * v)
    return sp.Add(*terms, _one_fraction(sp.expand(rest)))


def _one_fraction(coeff):
    """``numerator / denominator`` with the exponentials moved into the numerator and
    merged, so every exponent is <= 0 for positive time constants (no overflow)."""
    num, den = sp.fraction(sp.factor(sp.together(sp.powsimp(coeff, combine="exp"))))
    exps = [f for f in sp.Mul.make_args(den) if isinstance(f, sp.exp) or
            (f.is_Pow and isinstance(f.base, sp.exp))]
    rest = sp.Mul(*[f for f in sp.Mul.make_args(den) if f not in exps])
    num = sp.powsimp(sp.expand(num / sp.Mul(*exps)), combine="exp")
    return sp.factor_terms(num) / rest


def _singular_relations(exprs):
    """Parameter relations (e.g. tau_c = tau_v) at which a denominator vanishes."""
    relations = []
    for e in exprs:
        _, den = sp.fraction(sp.together(e))
        for factor in sp.Mul.make_args(sp.factor(den)):
            base = factor.base if factor.is_Pow else factor
            if not isinstance(base, sp.Add) or base.has(sp.exp):
                continue
            target = sorted(base.free_symbols, key=lambda s: s.name)[0]
            for value in sp.solve(base, target):
                rel = {target: value}
                if rel not in relations:
                    relations.append(rel)
    return relations


_DISCRETISE = {"exact": _exact, "exponential_euler": _exponential_euler, "euler": _euler,
               "rk2": _rk2}
