"""The backward of one step: reverse-mode differentiation over the stage list
(:class:`neurogen.stages.Step`) with ``sympy.diff``, and the plan of which per-step
values the backward reads and where it gets each of them.

Symbols the derivation adds (all start with ``ng_``):

- ``ng_g_v``: gradient of the loss w.r.t. state ``v`` after the step (an input of the
  backward step), ``ng_gspike`` w.r.t. the step's spike output;
- ``ng_g<tag>_v``: w.r.t. ``v``'s value entering a stage (``P`` charge: the previous
  state, ``B`` adaptation, ``V`` fire); ``ng_gsp`` w.r.t. the spike, ``ng_gu`` w.r.t.
  the fire value;
- ``ng_sg``: the surrogate derivative at ``ng_u`` (kept as one value: the C++ backward
  may compute it in a pass of its own);
- outputs ``ng_gP_<s>`` (w.r.t. the previous state), ``ng_gx``, ``ng_gp_<k>`` (this
  step's contribution to parameter ``k``).
"""
import itertools
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Tuple

import sympy as sp

from .spec.functions import surrogate_at
from .spec.model import spike, spike_d
from .stages import OUT, SPIKE, U, FireStage, P, Step

SG = sp.Symbol("ng_sg")
GSPIKE = sp.Symbol("ng_gspike")


GX = sp.Symbol("ng_gx")


def G(s):
    """The gradient w.r.t. state ``s`` after the step (an input of the backward step)."""
    return sp.Symbol(f"ng_g_{s}")


def G_PREV(s):
    """Output: the gradient w.r.t. state ``s`` before the step."""
    return sp.Symbol(f"ng_gP_{s}")


def G_PARAM(k):
    """Output: this step's contribution to the gradient of parameter ``k``."""
    return sp.Symbol(f"ng_gp_{k}")


@dataclass
class Backward:
    """The derived backward of one step and the plan of the values it reads.

    ``stages``: readable staged assignments (display). ``outputs``: the composed
    expressions of ``ng_gP_<s>``, ``ng_gx`` and ``ng_gp_<k>``. The value plan
    (:func:`plan_values`): ``saved`` (value symbols the forward stores per step),
    ``prev`` (states whose previous value is rebuilt from step t-1's saved values, the
    initial state at t = 0), ``recompute`` (values of step t rebuilt from what is there,
    in step order), ``constant`` (states no stage changes: the initial value at every
    step), ``needs_x`` (the input is re-read).
    """
    stages: List[Tuple[sp.Symbol, sp.Expr]]
    outputs: Dict[str, sp.Expr]
    saved: Tuple[sp.Symbol, ...]
    prev: Tuple[str, ...]
    recompute: Tuple[sp.Symbol, ...]
    constant: Tuple[str, ...]
    needs_x: bool
    learnable: Tuple[str, ...] = field(default=())
    surrogate: Optional[sp.Expr] = None  # ng_sg's value (a function of ng_u); None if unused

    @property
    def needs_init(self) -> Tuple[str, ...]:
        """The initial states the backward kernel reads (rebuilt previous values at t = 0,
        constant states)."""
        return tuple(s for s in self._order if s in self.prev or s in self.constant)

    _order: Tuple[str, ...] = field(default=(), repr=False)


def derive_backward(step: Step, surrogate_derivative: sp.Expr, detach_reset: bool,
                    learnable=()) -> Backward:
    """Reverse-mode differentiation of one step: the stages in reverse, each
    assignment's expression differentiated w.r.t. the values it reads. Nothing here
    names a stage; the stage objects give the symbols' names."""
    params = [P(k) for k in learnable]
    named: List[Tuple[sp.Symbol, sp.Expr]] = []

    def emit(name, expr):
        sym = sp.Symbol(name)
        named.append((sym, sp.sympify(expr)))  # (0 when nothing reads the spike's gradient)
        return sym

    def d_spike(expr):
        return sp.diff(expr, spike) + (0 if detach_reset else sp.diff(expr, spike_d))

    adj: Dict[sp.Symbol, sp.Expr] = {}
    for s in step.states:
        adj[step.final[s]] = adj.get(step.final[s], 0) + G(s)
    adj[step.output] = GSPIKE  # the gradient w.r.t. the step's output (the spike by default)
    gx = sp.Integer(0)
    gp = {k: sp.Integer(0) for k in params}

    def back(a, reads):
        nonlocal gx
        g = adj.pop(a.target, 0)
        if g == 0:
            return
        for q in step.states:
            d = sp.diff(a.expr, reads[q])
            if d != 0:
                adj[reads[q]] = adj.get(reads[q], 0) + g * d
        if a.expr.has(spike) or a.expr.has(spike_d):
            d = d_spike(a.expr)
            if d != 0:
                adj[SPIKE] = adj.get(SPIKE, 0) + g * d
        gx += g * sp.diff(a.expr, step.x)
        for p in params:
            gp[p] += g * sp.diff(a.expr, p)

    for k in reversed(range(len(step.stages))):
        stage, reads = step.stages[k], step.reads[k]
        assigns = step.stage_assignments(k)
        if isinstance(stage, FireStage):
            # in reverse order: the output (reads the spike), the spike, the fire value
            for a in assigns:
                if a.target == OUT:
                    back(a, reads)
            gsp = emit("ng_gsp", adj.pop(SPIKE, 0))
            surrogate_at_u = surrogate_derivative.xreplace({sp.Symbol("u"): U})
            emit(SG.name, surrogate_at_u)
            adj[U] = emit("ng_gu", gsp * SG)
            assigns = [a for a in assigns if a.target == U]
        for a in assigns:
            back(a, reads)
        if stage.grad_tag is not None:
            for q in step.states:
                e = adj.get(reads[q], sp.Integer(0))
                if not e.is_Symbol:
                    adj[reads[q]] = emit(f"ng_g{stage.grad_tag}_{q}", e)
    out_syms = {}
    for q in step.states:  # (the first stage's gradient names may be these already)
        e, name = adj.get(P(q), sp.Integer(0)), G_PREV(q)
        out_syms[name.name] = e if e == name else emit(name.name, e)
    out_syms[GX.name] = emit(GX.name, gx)
    for p in params:
        out_syms[G_PARAM(p.name).name] = emit(G_PARAM(p.name).name, gp[p])
    # spike_d has the value of spike; after differentiation they are the same symbol; an
    # sg_heaviside's derivative is the surrogate's at its argument
    u_sym = sp.Symbol("u")

    def finish(e):
        e = e.xreplace({spike_d: spike})
        if e.has(surrogate_at):
            e = e.replace(surrogate_at, lambda a: surrogate_derivative.xreplace({u_sym: a}))
        return e
    named = [(sym, finish(e)) for sym, e in named]
    composed = {}
    for sym, e in named:
        if sym != SG:  # the outputs keep ng_sg as a symbol (Backward.surrogate defines it)
            composed[sym] = e.xreplace(composed)
    outputs = {name: composed[sym] for name, sym in out_syms.items()}
    surrogate = surrogate_derivative.xreplace({sp.Symbol("u"): U})
    used = set().union(*(e.free_symbols for e in outputs.values()))
    uses_sg = SG in used
    if uses_sg:
        used |= surrogate.free_symbols
    return Backward(stages=named, outputs=outputs, learnable=tuple(p.name for p in params),
                    surrogate=surrogate if uses_sg else None, _order=tuple(step.states),
                    **plan_values(step, used))


# ---- the value plan ----------------------------------------------------------------------
SEARCH_LIMIT = 20000  # saved sets tried exhaustively before the greedy search takes over


def plan_values(step: Step, used) -> dict:
    """Where the backward of step ``t`` gets each per-step value it reads (``used``: the
    symbols of the derived gradient expressions, with the surrogate's).

    Sources: the forward **saves** some value symbols at every step (a state's value
    before the step, or after any stage); a value of step t is **recomputed** from what
    is there (its assignment, once all it reads is available: the input ``x[t]``,
    parameters, saved values, other recomputed ones); a state's value before step t is
    step t-1's value after it, **rebuilt** from step t-1's saved values alone (no older
    step, no ``x[t-1]``), the initial state at t = 0; a state no stage changes is its
    initial value at every step (**constant**).

    The values the fire expression reads are always saved (or constant): the backward
    then computes each step's spike from the forward's own bits with the forward's own
    expression, so it takes the spike the forward took. (A recomputed or rebuilt value
    may differ from the forward's in the last bit: recomputing groups its arithmetic by
    what it needs, and a rebuilt reset is a select. That is harmless in a gradient, not
    in a threshold.)

    Beyond those, the saved set is the smallest with which every used value has a
    source: found by exhaustive search over the values the used ones depend on when at
    most :data:`SEARCH_LIMIT` sets need trying, else greedily (then not proven smallest).
    A tie goes to the set that does not re-read the input (a pass over [T, N] memory),
    then to the least recomputing arithmetic, then to the step's order. Within this
    scheme (the backward of step t reads step t's and step t-1's saved values and never
    re-runs older steps) that is the minimum. ``neurogen show`` prints the result per
    state; docs/performance.md describes it.
    """
    states = step.states
    constant_p = {P(s) for s in states if step.final[s] == P(s)}
    used = {spike if q == spike_d else q for q in used}
    values = set(step.defs) | {P(s) for s in states} | {step.x}
    wanted = used & values
    fire_reads = _reads(step.defs[U]) & values
    forced = fire_reads - constant_p - {step.x} if _needs_fire(step, wanted, constant_p) \
        else set()
    candidates = [y for y in _candidates(step, wanted, constant_p) if y not in forced]

    def cost(saved, result):
        return (len(saved), result["needs_x"], sum(sp.count_ops(step.defs[y].expr)
                                                  for y in result["recompute"]) + sum(
            sp.count_ops(compose(step, step.final[s], saved)) for s in result["prev"]))

    best, tried = None, 0
    for size in range(len(candidates) + 1):
        for extra in itertools.combinations(candidates, size):
            tried += 1
            saved = forced | set(extra)
            result, _ = _sources(step, saved, wanted, constant_p)
            if result is not None and (best is None or cost(saved, result) < best[0]):
                best = (cost(saved, result), result)
            if tried > SEARCH_LIMIT:
                break
        if best is not None or tried > SEARCH_LIMIT:
            break
    result = best[1] if best is not None else _greedy(step, forced, candidates, wanted,
                                                      constant_p)
    saved = result["saved"]
    # the constants the rebuilt values read (at step t-1, through its spike too)
    constant = set(result["constant"])
    for s in result["prev"]:
        e = compose(step, step.final[s], saved)
        reads = e.free_symbols | (compose(step, U, saved).free_symbols if e.has(spike) else set())
        constant |= {q.name for q in reads & constant_p}
    order = lambda names: tuple(s for s in states if s in names)  # noqa: E731
    ordered = _order_symbols(step)
    return dict(saved=tuple(y for y in ordered if y in saved),
                prev=order(result["prev"]), constant=order(constant),
                recompute=tuple(y for y in ordered if y in result["recompute"]),
                needs_x=result["needs_x"])


def _needs_fire(step, wanted, constant_p):
    """Whether the backward computes the spike (or the fire value) of step t or t-1."""
    def reads(y):
        if y in step.defs:
            return _reads(step.defs[y])
        return [step.final[y.name]] if y.name in step.states and y not in constant_p else []
    return U in _walk(wanted, reads)


def _greedy(step, forced, candidates, wanted, constant_p):
    """A small saved set found greedily (too many candidates to try every set): add the
    candidate that leaves the fewest values without a source until none is left, then
    drop those that turn out unnecessary."""
    saved = set(forced)
    while True:
        result, missing = _sources(step, saved, wanted, constant_p)
        if result is not None:
            break
        pick = min((y for y in candidates if y not in saved),
                   key=lambda y: _sources(step, saved | {y}, wanted, constant_p)[1])
        saved.add(pick)
    for y in reversed([c for c in candidates if c in saved]):
        trial, _ = _sources(step, saved - {y}, wanted, constant_p)
        if trial is not None:
            saved.discard(y)
            result = trial
    return result


def _order_symbols(step):
    """Value symbols in step order: previous values, then each assignment's target."""
    return [P(s) for s in step.states] + [a.target for a in step.assignments]


def _candidates(step, wanted, constant_p):
    """The state values the wanted ones depend on (through assignments and through the
    previous step), in step order: the only values worth saving."""
    def reads(y):
        if y in step.defs:
            return _reads(step.defs[y])
        return [step.final[y.name]] if y.name in step.states and y not in constant_p else []
    cone = _walk(wanted, reads)
    return [y for y in _order_symbols(step)
            if y in cone and y not in constant_p and step.state_of(y) is not None]


def _walk(start, successors):
    """Everything reachable from ``start`` through ``successors``."""
    seen, todo = set(), list(start)
    while todo:
        y = todo.pop()
        if y not in seen:
            seen.add(y)
            todo += list(successors(y))
    return seen


def _reads(a):
    """The values an assignment reads (``spike_d`` is the spike's value)."""
    if a.spike:
        return {a.expr}
    return {spike if q == spike_d else q for q in a.expr.free_symbols}


def _closure(step, base, allow_x):
    """Every value computable from ``base`` by the step's assignments."""
    have = set(base) | set(step.params)
    if allow_x:
        have.add(step.x)
    for a in step.assignments:
        free = _reads(a)
        if a.target not in have and free <= have:
            have.add(a.target)
    return have


def _sources(step, saved, wanted, constant_p):
    """``(sources of wanted, 0)`` when ``saved`` is saved, or ``(None, how many wanted
    values have no source)``."""
    prev_have = _closure(step, saved | constant_p, allow_x=False)
    rebuilt = {P(s) for s in step.states if P(s) not in constant_p and P(s) not in saved
               and step.final[s] in prev_have}
    now = _closure(step, saved | constant_p | rebuilt, allow_x=True)
    if not wanted <= now:
        return None, len(wanted - now)
    # what is actually needed: walk back from the wanted values
    need = _walk(wanted, lambda y: _reads(step.defs[y]) if y in step.defs and y not in saved
                 else ())
    return dict(saved=set(saved), prev={y.name for y in need & rebuilt},
                constant={y.name for y in need & constant_p},
                recompute={y for y in need if y in step.defs and y not in saved},
                needs_x=step.x in need), 0


def compose(step, expr, saved):
    """``expr`` with every value that is not saved replaced by its assignment, in step order:
    written in saved values, previous values, constants, parameters and ``spike``."""
    subs = {}
    for a in step.assignments:
        if a.spike or a.target in saved:
            continue
        subs[a.target] = a.expr.xreplace(subs)
    return expr.xreplace(subs).xreplace({spike_d: spike})


__all__ = ["Backward", "derive_backward", "plan_values", "compose", "SG", "GSPIKE", "GX", "G",
           "G_PREV", "G_PARAM"]
