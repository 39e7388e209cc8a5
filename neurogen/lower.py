"""Lowering: a model's derived step and backward (:mod:`neurogen.derive`) and its kernel
configuration (:mod:`neurogen.config`) become a :class:`neurogen.ir.KernelIR`.

Language-free work happens here: common subexpressions (``ng_c<n>``), loop-invariant
parameter math hoisted into ``uniform`` or ``per_neuron`` constants (``ng_k<n>``), the
backward's linear gradient factors collected into multiply-adds and its rebuilt
spike-dependent resets turned into selects (:mod:`neurogen.rewrite`). The forward keeps
the equations' own arithmetic; the backward's spikes come from saved values through the
same fire statement (:func:`neurogen.derive.plan_values`), while its other recomputed
values may differ from the forward's in the last bit.
"""
import hashlib
from typing import List

import sympy as sp

from . import abi, dtypes
from .config import KernelConfig, derivation
from .derive import G_PARAM, G_PREV, GSPIKE, GX, SG, G, compose
from .ir import LAST, NEURON, PREV, STEP, ZERO, KernelIR, Let, Load, Set, Store
from .rewrite import Hoister, collect_linear, spike_select
from .spec.model import NeuronModel, spike, spike_d
from .stages import SPIKE, U, P

DTYPES = dtypes.ALL
PSPIKE, PU = sp.Symbol("ng_pspike"), sp.Symbol("ng_pu")


def select(u, strict=False) -> sp.Expr:
    """The spike as a select: 1 where ``u >= 0`` (``strict``: where ``u > 0``)."""
    cond = sp.Gt(u, 0) if strict else sp.Ge(u, 0)
    return sp.Piecewise((sp.Integer(1), cond), (sp.Integer(0), True))


class _Builder:
    """Lets with shared subterms and hoisted invariants, and the constants they need."""

    def __init__(self, model: NeuronModel, cfg: KernelConfig):
        self.model, self.cfg = model, cfg
        invariant = [P(k) for k in model.param_names] + [
            sp.Symbol(name) for name in cfg.surrogate.kernel_values()]
        self.hoister = Hoister(invariant)
        self.invariant = frozenset(invariant)
        self._cse_count = 0

    def lets(self, assignments, cse=True) -> List[Let]:
        syms = [s for s, _ in assignments]
        exprs = [self.hoister(e) for _, e in assignments]
        out = []
        if cse and exprs:
            gen = sp.numbered_symbols("ng_c", start=self._cse_count)
            temps, exprs = sp.cse(exprs, symbols=gen, order="canonical")
            self._cse_count += len(temps)  # (names used, kept or not)
            temps, exprs = _inline_conditions(temps, exprs)
            out += [Let(str(t), e) for t, e in temps]
        return out + [Let(str(s), e) for s, e in zip(syms, exprs)]

    def constants(self):
        """Parameter reads and hoisted invariants (made last, after every use), split into
        those the same for every neuron and those per neuron: ``(uniform, per_neuron,
        per-neuron names)``."""
        uniform, per_neuron, names, varying = [], [], [], set()
        for k in self.model.param_names:
            kind = self.cfg.kind_of(k)
            array = abi.name("param", k)
            if kind == "scalar":
                uniform.append(Let(k, sp.Symbol(abi.name("param_value", k))))
            elif kind == "shared":
                uniform.append(Load(k, array, ZERO))
            else:
                per_neuron.append(Load(k, array, NEURON))
                varying.add(P(k))
                names.append(k)
        for sym, expr in self.hoister.order:
            if expr.free_symbols & varying:
                varying.add(sym)
                per_neuron.append(Let(str(sym), expr))
                names.append(str(sym))
            else:
                uniform.append(Let(str(sym), expr))
        return uniform, per_neuron, names


def _inline_conditions(temps, exprs):
    """Common subexpressions that are conditions (a comparison, and/or/not) put back where
    they are used: a kernel's temporaries are numbers, a condition lives in a select."""
    keep, subs = [], {}
    for t, e in temps:
        e = e.xreplace(subs)
        if isinstance(e, sp.logic.boolalg.Boolean):
            subs[t] = e
        else:
            keep.append((t, e))
    if not subs:
        return temps, exprs
    return keep, [e.xreplace(subs) for e in exprs]


def _stage_lets(b: _Builder, step, assignments) -> list:
    """Lets of ``assignments`` (in step order), one CSE block per stage; the spike as a
    select on the fire value."""
    out, group, stage = [], [], None
    for a in assignments + [None]:
        if a is None or a.spike or a.stage != stage:
            out += b.lets(group) if group else []
            group = []
        if a is None:
            break
        stage = a.stage
        if a.spike:
            out.append(Let(str(SPIKE), select(a.expr, step.strict)))
        else:
            group.append((a.target, a.expr.xreplace({spike_d: spike})))
    return out


REC = sp.Symbol("ng_rec")  # a recurrent kernel's recurrent term of the step (its template's)


def _input(model, cfg, array):
    """The step's input: ``array[t]``, in a recurrent kernel plus the recurrent term."""
    if not cfg.recurrent:
        return [Load(model.input_name, array, STEP)]
    return [Load("ng_xin", array, STEP), Let(model.input_name, sp.Symbol("ng_xin") + REC)]


def _forward(model, step, bw, cfg, b):
    name = abi.name
    body = _input(model, cfg, name("x"))
    if cfg.recurrent and cfg.save and bw.needs_x:  # the backward reads the total input
        body.append(Store(name("rec_input"), STEP, sp.Symbol(model.input_name)))
    body += _stage_lets(b, step, list(step.assignments))
    if cfg.save:
        # stored before the state updates below, which overwrite a state's previous value
        body += [Store(name("saved_out", abi.saved_key(y)), STEP, y) for y in bw.saved]
    body += [Set(s, step.final[s]) for s in model.state_names if step.final[s] != P(s)]
    body.append(Store(name("spike"), STEP, step.output))
    body += [Store(name("seq", s), STEP, P(s)) for s in cfg.record]  # (after reset)
    before = [Load(s, name("init", s), NEURON, "var") for s in model.state_names]
    after = [Store(name("final", s), NEURON, P(s)) for s in model.state_names]
    return dict(before=before, step=body, after=after, carried=list(model.state_names))


def zero_gradients(model, bw, cfg):
    """The states whose gradient is zero at every step of this backward: their final
    gradient is given as zero (``cfg.zero_grads``), no recorded sequence adds to it, and
    their gradient before a step is zero whenever theirs after it is (e.g. a refractory
    counter, read only in conditions). Their gradient chains are left out of the kernel
    and their initial states' gradients are zeros."""
    zero = {s for s in cfg.zero_grads if s not in cfg.grad_record}
    while True:
        subs = {G(q): 0 for q in zero}
        keep = {s for s in zero if bw.outputs[G_PREV(s).name].xreplace(subs) == 0}
        if keep == zero:
            return tuple(s for s in model.state_names if s in zero)
        zero = keep


def _backward(model, step, bw, cfg, b):
    name = abi.name
    zero = zero_gradients(model, bw, cfg)
    zsubs = {G(q): sp.Integer(0) for q in zero}
    states = tuple(s for s in model.state_names if s not in zero)  # (gradients carried)
    sv = {y: sp.Symbol(f"ng_sv_{abi.saved_key(y)}") for y in bw.saved}
    before = [Load(str(G(s)), name("grad_final", s), NEURON, "var") for s in states]
    before += [Load(str(sv[y]), name("saved", abi.saved_key(y)), LAST, "var") for y in bw.saved]
    before += [Let(f"ng_acc_{k}", sp.Integer(0), var=True) for k in bw.learnable]
    saved = set(bw.saved)
    prev = {s: compose(step, step.final[s], saved).xreplace(sv) for s in bw.prev}
    u_prev = compose(step, U, saved).xreplace(sv) if any(e.has(spike) for e in prev.values()) \
        else None

    def body(first):
        out = [Load(c, name("init", c), NEURON) for c in bw.constant]
        out += [Let(str(y), sv[y]) for y in bw.saved]
        if first:
            out += [Load(s, name("init", s), NEURON) for s in bw.prev]
        else:
            # step t reads V[t] (carried in ng_sv_*) and loads step t-1's for the rebuild
            out += [Load(str(sv[y]), name("saved", abi.saved_key(y)), PREV, "set")
                    for y in bw.saved]
            rebuilt = dict(prev)
            if u_prev is not None:
                out += b.lets([(PU, u_prev)])
                rebuilt = {s: spike_select(e.xreplace({spike: PSPIKE}), PSPIKE, PU,
                                           b.invariant, step.strict) for s, e in prev.items()}
                if any(e.has(PSPIKE) for e in rebuilt.values()):
                    out.append(Let(str(PSPIKE), select(PU, step.strict)))
            out += b.lets([(P(s), e) for s, e in rebuilt.items()])
        if bw.needs_x:  # (a recurrent call binds x_seq to the total input its forward stored)
            out.append(Load(model.input_name, name("x"), STEP))
        out += _stage_lets(b, step, [step.defs[y] for y in bw.recompute])
        if bw.surrogate is not None:  # one statement (a target may compute it apart)
            out += b.lets([(SG, bw.surrogate)], cse=False)
        for s in cfg.grad_record:
            out.append(Load(f"ng_gseq_{s}", name("grad_seq", s), STEP))
            out.append(Set(str(G(s)), sp.Symbol(f"ng_gseq_{s}"), accumulate=True))
        if cfg.recurrent:  # the output's gradient adds what the next step's input gives it
            out += [Load("ng_gsin", name("grad_spike"), STEP),
                    Let(str(GSPIKE), sp.Symbol("ng_gsin") + REC)]
        else:
            out.append(Load(str(GSPIKE), name("grad_spike"), STEP))
        out += b.lets([(sp.Symbol(n), collect_linear(e.xreplace(zsubs), b.invariant))
                       for n, e in bw.outputs.items()
                       if n not in {G_PREV(q).name for q in zero}])
        out.append(Store(name("grad_x"), STEP, GX))
        out += [Set(f"ng_acc_{k}", G_PARAM(k), accumulate=True) for k in bw.learnable]
        out += [Set(str(G(s)), G_PREV(s)) for s in states]
        return out

    inner, first = body(False), body(True)
    after = [Store(name("grad_init", s), NEURON, G(s) if s in states else sp.Integer(0))
             for s in model.state_names]
    after += [Store(name("grad_param", k), NEURON, sp.Symbol(f"ng_acc_{k}"))
              for k in bw.learnable]
    carried = ([str(G(s)) for s in states] + [str(sv[y]) for y in bw.saved]
               + [f"ng_acc_{k}" for k in bw.learnable])
    return dict(before=before, step=inner, first=first, after=after, carried=carried)


def lower(model: NeuronModel, kind: str, dtype: str, cfg: KernelConfig) -> KernelIR:
    """The IR of ``model``'s ``forward`` or ``backward`` kernel for tensors of ``dtype``."""
    compute = dtypes.compute_type(dtype)
    step, bw = derivation(model, cfg.surrogate, cfg.detach_reset, cfg.learnable)
    args = abi.kernel_args(model, kind, cfg, bw)
    b = _Builder(model, cfg)
    if kind == "forward":
        parts = _forward(model, step, bw, cfg, b)
    elif kind == "backward":
        parts = _backward(model, step, bw, cfg, b)
    else:
        raise ValueError(f"kernel kind must be 'forward' or 'backward', not {kind!r}")
    uniform, per_neuron, names = b.constants()
    config_hash = hashlib.sha256(cfg.key().encode()).hexdigest()[:12]
    return KernelIR(name=f"ng_{model.name}_{kind}_{dtype}_{config_hash}", kind=kind,
                    model=model.name, spec_hash=model.spec_hash, config_hash=config_hash,
                    dtype=dtype, compute=compute, args=args, uniform=uniform,
                    per_neuron=per_neuron, constants=names, recurrent=cfg.recurrent, **parts)


__all__ = ["lower", "select", "DTYPES"]
