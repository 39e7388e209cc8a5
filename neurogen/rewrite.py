"""Algebraic rewrites of the step's expressions before they are printed: hoisting
loop-invariant parameter math, collecting gradient factors that are linear in the
per-step values into multiply-adds, and turning terms linear in a 0/1 spike into
selects. Each is a pure function of sympy expressions; tests/test_backward_algebra.py
checks each on random expressions."""
import functools
from typing import Dict, List, Tuple

import sympy as sp
from sympy.functions.elementary.piecewise import ExprCondPair


class ZeroTimes(sp.Function):
    """``0 * x`` that sympy does not simplify away: 0 for finite ``x``, NaN for an infinite
    or NaN ``x``. Kernels add it where a select replaces a product by a 0/1 weight, so the
    weighted-away value still propagates NaN and inf as the product would."""

    nargs = 1


class Hoister:
    """Replaces loop-invariant subexpressions (of parameters only) by ``ng_k<n>`` symbols."""

    def __init__(self, invariant, prefix="ng_k"):
        self.invariant = set(invariant)
        self.prefix = prefix
        self.defs: Dict[sp.Expr, sp.Symbol] = {}
        self.order: List[Tuple[sp.Symbol, sp.Expr]] = []

    def _name(self, expr):
        if expr not in self.defs:
            sym = sp.Symbol(f"{self.prefix}{len(self.order)}")
            self.defs[expr] = sym
            self.order.append((sym, expr))
        return self.defs[expr]

    def _is_inv(self, expr):
        return expr.free_symbols <= self.invariant

    def __call__(self, expr):
        if expr.is_Atom:
            return expr
        if self._is_inv(expr):
            hoistable = isinstance(expr, sp.Expr) and not isinstance(expr, ExprCondPair)
            if expr.is_Number or not hoistable:
                return expr
            return self._name(expr)
        if isinstance(expr, (sp.Add, sp.Mul)):
            inv = [a for a in expr.args if self._is_inv(a)]
            var = [self(a) for a in expr.args if not self._is_inv(a)]
            inv_non_num = [a for a in inv if not a.is_Number]
            if len(inv_non_num) >= 1 and not (len(inv) == 1 and inv[0].is_Atom):
                return expr.func(self._name(expr.func(*inv)), *var, evaluate=False)
            return expr.func(*inv, *var, evaluate=False)
        return expr.func(*[self(a) for a in expr.args])


def _cost(expr, invariant) -> int:
    """Operations per neuron-step of ``expr`` once its invariants are hoisted."""
    return sp.count_ops(Hoister(invariant)(expr))


def _linear_parts(expr, invariant):
    """``{x: coefficient, 1: constant}`` when ``expr`` is linear in its non-invariant
    symbols with invariant coefficients, else None (structural: no expansion)."""
    if expr.free_symbols <= invariant:
        return {1: expr}
    if expr.is_Symbol:
        return {expr: sp.Integer(1)}
    if isinstance(expr, sp.Add):
        out = {}
        for a in expr.args:
            part = _linear_parts(a, invariant)
            if part is None:
                return None
            for k, c in part.items():
                out[k] = out.get(k, 0) + c
        return out
    if isinstance(expr, sp.Mul):
        var = [a for a in expr.args if not a.free_symbols <= invariant]
        if len(var) != 1:
            return None
        part = _linear_parts(var[0], invariant)
        if part is None:
            return None
        factor = sp.Mul(*[a for a in expr.args if a.free_symbols <= invariant])
        return {k: factor * c for k, c in part.items()}
    return None


def _weighted_away(expr, s, value, invariant):
    """``ZeroTimes`` terms for what the product form multiplies by a zero weight at ``s =
    value``: the per-step factors of each product that vanishes (``2 s v`` at s = 0 gives
    ``0 * v``, NaN for an infinite ``v``, even where ``v`` stays in the branch), and each
    per-step value the branch loses otherwise (``h - s h`` at s = 1: ``inf - inf``)."""
    out, covered = set(), set()
    for node in sp.preorder_traversal(expr):
        if isinstance(node, sp.Mul) and node.has(s) and node.xreplace({s: value}) == 0:
            factors = [a for a in node.args if not a.has(s) and not a.free_symbols <= invariant]
            if factors:
                out.add(ZeroTimes(sp.Mul(*factors)))
                covered |= set().union(*(a.free_symbols for a in factors))
    lost = expr.free_symbols - expr.xreplace({s: value}).free_symbols - {s} - invariant
    out |= {ZeroTimes(x) for x in lost - covered}
    return sorted(out, key=sp.default_sort_key)


@functools.lru_cache(maxsize=4096)
def _spike_select(expr, s, u, invariant, strict=False):
    if not expr.has(s) or sp.diff(expr, s, 2) != 0:
        return expr
    branches = []
    for value in (1, 0):
        e = expr.xreplace({s: sp.Integer(value)})
        branches.append(e + sp.Add(*_weighted_away(expr, s, sp.Integer(value), invariant)))
    # beside these counts the select needs one blend and the product form one operation
    # turning s into 0/1 (the compare is the same), which cancel; count_ops counts a
    # multiply-add as two, so ask for a saving of two: w + b * spike (one multiply-add)
    # stays a product
    if sum(_cost(b, invariant) for b in branches) > _cost(expr, invariant) - 2:
        return expr
    return sp.Piecewise((branches[0], sp.Gt(u, 0) if strict else sp.Ge(u, 0)),
                        (branches[1], True))


@functools.lru_cache(maxsize=4096)
def _collect_linear(expr, invariant):
    if expr.is_Atom or not isinstance(expr, sp.Expr):
        return expr
    args = [_collect_linear(a, invariant) for a in expr.args]
    if any(a is not b for a, b in zip(args, expr.args)):
        expr = expr.func(*args)
    if not isinstance(expr, (sp.Add, sp.Mul)) or expr.free_symbols <= invariant:
        return expr
    parts = _linear_parts(expr, invariant)
    if parts is None:
        return expr
    new = sp.Add(*[c if k == 1 else c * k for k, c in parts.items()])
    return new if _cost(new, invariant) < _cost(expr, invariant) else expr



def collect_linear(expr, invariant):
    """``expr`` with each sub-expression that is linear in the per-step symbols written as
    ``c0 + c1 x1 + ...`` (the coefficients hoisted) where that takes fewer operations per
    step. A derivative factor such as ``1 + (a0 (v - v_c) + a0 (v - v_rest)) / tau``
    becomes one multiply-add (PERF_NOTES.md 22). Only for gradient expressions: it
    changes their rounding, and recomputed forward values must stay bit-equal to the
    forward's. ``invariant``: a frozenset of the loop-invariant symbols."""
    return _collect_linear(expr, invariant)


def spike_select(expr, s, u, invariant, strict=False):
    """``expr``, linear in the 0/1 spike ``s`` (``s = u >= 0``; ``strict``: ``u > 0``), as
    ``u >= 0 ? expr|s=1 :
    expr|s=0`` where that takes fewer operations: a hard reset ``h (1 - s) + s r`` becomes
    one select instead of a subtraction, two products and a sum (PERF_NOTES.md 22). What
    the zero weight multiplies away stays as ``ZeroTimes`` (:func:`_weighted_away`), so an
    infinite or NaN value gives NaN as the product does; a parameter the weight 0 removes
    is dropped (a non-finite parameter makes every state NaN anyway). Equal to the product
    form for finite values, up to the sign of a zero."""
    return _spike_select(expr, s, u, invariant, strict)


__all__ = ["ZeroTimes", "Hoister", "collect_linear", "spike_select"]
