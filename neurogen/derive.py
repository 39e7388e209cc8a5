"""The step algebra: one time step as staged sympy assignments, its backward
derived by ``sympy.diff`` (reverse mode over the stages), and the minimal set
of per-step values the backward must save.

Symbols used in the kernels (all model names are printed as they are; every
name neurogen adds starts with ``ng_``):

- ``v``: a state before the step (after the previous reset),
- ``ng_h_v``: its charged value, ``ng_a_v``: its adapted value,
- ``ng_u``: the fire expression, ``spike``: ``ng_u >= 0``,
- ``ng_sg``: the surrogate derivative at ``ng_u`` (kept as one value: the C++ backward
  may compute it in a pass of its own before the step's other arithmetic),
- ``ng_g_v``: gradient of the loss w.r.t. ``v`` after this step's reset.
"""
import itertools
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import sympy as sp
from sympy.functions.elementary.piecewise import ExprCondPair

from .spec.model import NeuronModel, spike, spike_d

U = sp.Symbol("ng_u")
SG = sp.Symbol("ng_sg")
GSPIKE = sp.Symbol("ng_gspike")


def P(s):
    return sp.Symbol(s)


def H(s):
    return sp.Symbol(f"ng_h_{s}")


def A(s):
    return sp.Symbol(f"ng_a_{s}")


def G(s):
    return sp.Symbol(f"ng_g_{s}")


def GP(k):
    return sp.Symbol(f"ng_gp_{k}")


class Step:
    """One forward step of ``model`` as staged expressions.

    ``B[s]`` is the value adaptation reads (charged value, or previous value
    if ``s`` has no charge); ``V[s]`` the value fire and reset read.
    """

    def __init__(self, model: NeuronModel):
        self.model = model
        self.states = model.state_names
        self.params = [P(k) for k in model.param_names]
        self.x = P(model.input_name)
        self.B = {s: H(s) if s in model.charge else P(s) for s in self.states}
        self.V = {s: A(s) if s in model.adaptation else self.B[s] for s in self.states}
        to_B = {P(s): self.B[s] for s in self.states}
        to_V = {P(s): self.V[s] for s in self.states}
        self.charge = {s: e for s, e in model.charge.items()}
        self.adapt = {s: e.xreplace(to_B) for s, e in model.adaptation.items()}
        self.fire = model.fire.xreplace(to_V)
        self.reset = {s: e.xreplace(to_V) for s, e in model.reset.items()}

    def forward_stages(self) -> List[Tuple[str, List[Tuple[sp.Symbol, sp.Expr]]]]:
        """[(stage, [(symbol, expression)])]: charge, adaptation, fire, reset."""
        return [
            ("charge", [(H(s), e) for s, e in self.charge.items()]),
            ("adaptation", [(A(s), e) for s, e in self.adapt.items()]),
            ("fire", [(U, self.fire)]),
            ("reset", [(sp.Symbol(f"ng_r_{s}"), e.xreplace({spike_d: spike}))
                       for s, e in self.reset.items()]),
        ]

    def new_state(self, s):
        """The expression (a symbol) holding state ``s`` after the step."""
        return sp.Symbol(f"ng_r_{s}") if s in self.reset else self.V[s]


@dataclass
class Backward:
    """The derived backward of one step.

    ``stages``: readable staged assignments (for display). ``outputs``: the
    composed expressions of ``ng_gP_<s>`` (gradient w.r.t. the previous state),
    ``ng_gx`` and ``ng_gp_<k>`` (this step's contribution to parameter ``k``).
    Which per-step values the backward reads and where each comes from (saved by
    the forward, recomputed, or the initial value) is :func:`plan_values`' decision;
    its docstring states the rules.
    """
    stages: List[Tuple[sp.Symbol, sp.Expr]]
    outputs: Dict[str, sp.Expr]
    saved: Tuple[str, ...]           # states whose value V[t] the forward stores per step
    needs_x: bool
    needs_prev: Tuple[str, ...]      # previous values recomputed from saved[t-1] (init at t=0)
    needs_h: Tuple[str, ...]         # adapted states whose charged value is recomputed
    needs_u: bool
    learnable: Tuple[str, ...] = field(default=())
    surrogate: Optional[sp.Expr] = None  # ng_sg's value (a function of ng_u); None if unused
    constant: Tuple[str, ...] = ()   # states without equations: the initial value at every step
    needs_init: Tuple[str, ...] = ()  # initial states the backward reads (prev and constant)


def derive_backward(step: Step, surrogate_derivative: sp.Expr, detach_reset: bool,
                    learnable=()) -> Backward:
    """Reverse-mode differentiation of one step, stage by stage."""
    states, V, B = step.states, step.V, step.B
    params = [P(k) for k in learnable]
    stages: List[Tuple[sp.Symbol, sp.Expr]] = []
    gp = {k: sp.Integer(0) for k in params}

    def emit(name, expr):
        sym = sp.Symbol(name)
        stages.append((sym, expr))
        return sym

    # reset: R_s = reset_s(V, spike, spike_d)
    gV = {q: sp.Integer(0) for q in states}
    gsp = GSPIKE
    for s in states:
        if s in step.reset:
            r = step.reset[s]
            for q in states:
                gV[q] += G(s) * sp.diff(r, V[q])
            dsp = sp.diff(r, spike) + (0 if detach_reset else sp.diff(r, spike_d))
            gsp += G(s) * dsp
            for k in params:
                gp[k] += G(s) * sp.diff(r, k)
        else:
            gV[s] += G(s)
    gsp_sym = emit("ng_gsp", gsp)
    surrogate_at_u = surrogate_derivative.xreplace({sp.Symbol("u"): U})
    emit(SG.name, surrogate_at_u)
    gu = emit("ng_gu", gsp_sym * SG)
    # fire: u = fire(V)
    for q in states:
        gV[q] += gu * sp.diff(step.fire, V[q])
    for k in params:
        gp[k] += gu * sp.diff(step.fire, k)
    gV = {q: emit(f"ng_gV_{q}", e) for q, e in gV.items()}
    # adaptation: A_s = adapt_s(B)
    gB = {q: (gV[q] if q not in step.adapt else sp.Integer(0)) for q in states}
    for s, a in step.adapt.items():
        for q in states:
            gB[q] += gV[s] * sp.diff(a, B[q])
        for k in params:
            gp[k] += gV[s] * sp.diff(a, k)
    gB = {q: emit(f"ng_gB_{q}", e) for q, e in gB.items()}
    # charge: H_s = charge_s(P, x)
    gP = {q: (gB[q] if q not in step.charge else sp.Integer(0)) for q in states}
    gx = sp.Integer(0)
    for s, c in step.charge.items():
        for q in states:
            gP[q] += gB[s] * sp.diff(c, P(q))
        gx += gB[s] * sp.diff(c, step.x)
        for k in params:
            gp[k] += gB[s] * sp.diff(c, k)
    out_syms = {f"ng_gP_{q}": emit(f"ng_gP_{q}", e) for q, e in gP.items()}
    out_syms["ng_gx"] = emit("ng_gx", gx)
    for k in params:
        out_syms[f"ng_gp_{k.name}"] = emit(f"ng_gp_{k.name}", gp[k])

    # spike_d has the value of spike; after differentiation they are the same symbol.
    stages = [(sym, e.xreplace({spike_d: spike})) for sym, e in stages]
    composed = {}
    for sym, e in stages:
        if sym != SG:  # the outputs keep ng_sg as a symbol (Backward.surrogate defines it)
            composed[sym] = e.xreplace(composed)
    outputs = {name: composed[sym] for name, sym in out_syms.items()}
    return _with_needs(step, stages, outputs, tuple(k.name for k in params), surrogate_at_u)


def state_kind(step: Step, s: str) -> str:
    """``"computed"`` (a charge or adaptation equation gives it a new value in the step),
    ``"reset-only"`` (only a reset changes it: during a step it keeps the value the
    previous step's reset gave it) or ``"constant"`` (no equation: the initial value)."""
    if s in step.charge or s in step.adapt:
        return "computed"
    return "reset-only" if s in step.reset else "constant"


def plan_values(step: Step, used) -> dict:
    """Where the backward of step ``t`` gets each per-step value it reads (``used``: the
    symbols of the derived gradient expressions).

    Every value is the one the forward computed in the same step; the rules:

    - ``V_s[t]``, the value after adaptation (what fire and reset read), of a
      *computed* state is **saved** by the forward. It is new in step t, and
      rebuilding it would mean re-running the step's charge from step t-1's values.
    - ``P_s[t]``, the value before the step, of a computed state is **recomputed** from
      step t-1's saved values: it is step t-1's reset (or ``V_s[t-1]`` without one), and
      the initial value at t = 0. Its reset's inputs are saved instead.
    - The charged value ``H_s[t]`` of a state with charge and adaptation is recomputed
      from ``P[t]`` and ``x[t]``.
    - The fire value ``u[t]`` (hence the spike and the surrogate derivative) is
      recomputed from the ``V[t]`` of the states fire reads.
    - A *constant* state (no equation) is its initial value at every step: read from the
      initial state, nothing saved.
    - A *reset-only* state has one value during step t (``P_s[t] = V_s[t]``: what step t-1's
      reset gave it). It is saved, **unless** recomputing it from step t-1 (as for a
      previous value) adds no saved array: every state its reset reads (and fire's, when
      the reset reads the spike) is saved anyway or constant, and none of them is itself
      recomputed (a recomputed value exists at step t only, not at t-1). Among the
      admissible choices the one with the fewest saved arrays is taken (exhaustively; on a
      tie the value is saved, which costs the backward no arithmetic).

    Within this scheme (the backward of step t reads step t's and step t-1's saved
    values, never re-runs older steps) the saved set is the minimum: each saved state is
    read at some step and has no other source. The one exception left: a computed state
    whose equations read no state (``c <- 2 x``) could be rebuilt from ``x[t]`` but is
    saved. docs/performance.md has the same rules as a table; ``neurogen show`` prints
    them for a model. Returns the fields of :class:`Backward` this decides.
    """
    states = step.states
    kind = {s: state_kind(step, s) for s in states}
    fire_reads = {q for q in states if step.V[q] in step.fire.free_symbols}
    need_h = {s for s in step.adapt if s in step.charge and H(s) in used}
    needs_x = step.x in used or any(step.x in step.charge[s].free_symbols for s in need_h)
    needs_u = U in used or spike in used
    now = {q for q in states if step.V[q] in used}       # V[t] read (after adaptation)
    before = {q for q in states if P(q) in used}         # P[t] read (before the step)
    for s in need_h:
        before |= {q for q in states if P(q) in step.charge[s].free_symbols}
    if needs_u:
        now |= fire_reads
    # for reset-only and constant states P[t] and V[t] are one value (and one symbol)
    read = now | before
    base_saved = {q for q in now if kind[q] == "computed"}
    base_prev = {q for q in before if kind[q] == "computed"}
    constant = {q for q in read if kind[q] == "constant"}
    choices = sorted(q for q in read if kind[q] == "reset-only")

    def closure(recomputed):
        """(saved, constant) when the reset-only states ``recomputed`` are rebuilt from
        step t-1, or None when that is impossible."""
        saved = base_saved | (set(choices) - recomputed)
        consts = set(constant)
        for s in base_prev | recomputed:
            expr = step.reset.get(s, step.V[s])
            reads = {q for q in states if step.V[q] in expr.free_symbols}
            if expr.has(spike) or expr.has(spike_d):
                reads |= fire_reads
            for q in reads:
                if q in recomputed:
                    return None
                (consts if kind[q] == "constant" else saved).add(q)
        return saved, consts

    best = None
    subsets = (itertools.chain.from_iterable(itertools.combinations(choices, k)
                                             for k in range(len(choices) + 1))
               if len(choices) <= 10 else [()])
    for subset in subsets:
        result = closure(set(subset))
        if result is not None and (best is None or len(result[0]) < len(best[1][0])):
            best = (set(subset), result)
    recomputed, (saved, constant) = best
    order = lambda names: tuple(s for s in states if s in names)  # noqa: E731
    prev = base_prev | recomputed
    return dict(saved=order(saved), needs_x=needs_x, needs_prev=order(prev),
                needs_h=order(need_h), needs_u=needs_u, constant=order(constant),
                needs_init=order(prev | constant))


def _with_needs(step: Step, stages, outputs, learnable, surrogate) -> Backward:
    used = set().union(*(e.free_symbols for e in outputs.values()))
    if SG in used:
        used |= surrogate.free_symbols
    return Backward(stages=stages, outputs=outputs, learnable=learnable,
                    surrogate=surrogate if SG in used else None, **plan_values(step, used))


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
