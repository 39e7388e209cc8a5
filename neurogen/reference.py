"""The plain-PyTorch reference: the model's equations evaluated with torch
operations, stepped in a Python loop, differentiated by autograd. It shares
no code with the kernel generator's derivation, so tests use it as the
independent oracle."""

import copy
import sympy as sp
import torch

from .spec import functions
from .spec.functions import sigmoid, sigmoid_grad


def _sigmoid_grad(z):
    s = torch.sigmoid(z)
    return s * (1 - s)


_UNARY = {sp.exp: torch.exp, sp.log: torch.log, sp.tanh: torch.tanh, sp.sin: torch.sin,
          sp.cos: torch.cos, sp.atan: torch.atan, sigmoid: torch.sigmoid, sp.Abs: torch.abs,
          sigmoid_grad: _sigmoid_grad}


BRANCHES = functions.BRANCH_FUNCTIONS


def evaluate(expr, env, like: torch.Tensor):
    """Evaluate a sympy expression with torch ops; ``env`` maps names to tensors/floats."""
    if expr.is_Symbol:
        return env[expr.name]
    if expr.is_Number or expr.is_NumberSymbol:
        return float(expr)
    if isinstance(expr, sp.Piecewise):
        out = evaluate(expr.args[-1].expr, env, like)
        for branch, cond in reversed(expr.args[:-1]):
            c = evaluate(cond, env, like)
            if isinstance(c, bool):  # a condition on float parameters: pick the branch
                out = evaluate(branch, env, like) if c else out
            else:
                out = torch.where(c, _t(evaluate(branch, env, like), like), _t(out, like))
        return out
    if isinstance(expr, (sp.And, sp.Or)):
        parts = [evaluate(a, env, like) for a in expr.args]
        out = parts[0]
        for p in parts[1:]:
            if isinstance(out, bool) and isinstance(p, bool):
                out = (out and p) if isinstance(expr, sp.And) else (out or p)
            else:
                op = torch.logical_and if isinstance(expr, sp.And) else torch.logical_or
                out = op(_t(out, like).bool() if isinstance(out, bool) else out,
                         _t(p, like).bool() if isinstance(p, bool) else p)
        return out
    if isinstance(expr, sp.Not):
        c = evaluate(expr.args[0], env, like)
        return (not c) if isinstance(c, bool) else torch.logical_not(c)
    if isinstance(expr, BRANCHES):
        return _branch(expr, env, like)
    args = [evaluate(a, env, like) for a in expr.args]
    if isinstance(expr, sp.Add):
        out = args[0]
        for a in args[1:]:
            out = out + a
        return out
    if isinstance(expr, sp.Mul):
        out = args[0]
        for a in args[1:]:
            out = out * a
        return out
    if isinstance(expr, sp.Pow):
        base, e = args
        if isinstance(base, float) and isinstance(e, float):
            return base ** e
        if isinstance(e, float) and e == -1:
            return 1.0 / base
        return base ** e
    func = type(expr)
    if func in _UNARY:
        a = args[0]
        if not isinstance(a, torch.Tensor):
            a = torch.as_tensor(a, dtype=like.dtype, device=like.device)
        return _UNARY[func](a)
    if isinstance(expr, (sp.Max, sp.Min)):
        op = torch.maximum if isinstance(expr, sp.Max) else torch.minimum
        tensors = [a if isinstance(a, torch.Tensor) else torch.as_tensor(a, dtype=like.dtype, device=like.device)
                   for a in args]
        out = tensors[0]
        for a in tensors[1:]:
            out = op(out, a)
        return out
    if expr.is_Relational:
        lhs, rhs = args
        ops = {"<": lambda: lhs < rhs, "<=": lambda: lhs <= rhs, ">": lambda: lhs > rhs,
               ">=": lambda: lhs >= rhs, "==": lambda: lhs == rhs, "!=": lambda: lhs != rhs}
        return ops[expr.rel_op]()
    raise TypeError(f"the reference backend cannot evaluate {func.__name__}")


def _tensor(value, like):
    if isinstance(value, torch.Tensor):
        return value
    return torch.as_tensor(value, dtype=like.dtype, device=like.device)


def _branch(expr, env, like):
    """The branch and clamp functions with the torch ops whose autograd defines their
    gradients (docs/semantics.md 5); ``env["__surrogate__"]``: the module's surrogate."""
    args = [_tensor(evaluate(a, env, like), like) for a in expr.args]
    if isinstance(expr, functions.maximum):
        return torch.maximum(*args)
    if isinstance(expr, functions.minimum):
        return torch.minimum(*args)
    if isinstance(expr, functions.clamp):
        return torch.clamp(args[0], min=args[1], max=args[2] if len(args) == 3 else None)
    if isinstance(expr, functions.abs_):
        return torch.abs(args[0])
    if isinstance(expr, functions.sign):
        return torch.sign(args[0])
    if isinstance(expr, functions.floor):
        return torch.floor(args[0])
    if isinstance(expr, functions.heaviside):
        x, h0 = args
        # torch.heaviside has no derivative in autograd; its value with a zero gradient
        return torch.where(x > 0, torch.ones_like(x),
                           torch.where(x == 0, h0.expand_as(x), torch.zeros_like(x))).detach()
    if isinstance(expr, functions.sg_heaviside):
        return spike_fn(args[0], env["__surrogate__"])
    raise TypeError(f"the reference backend cannot evaluate {type(expr).__name__}")


def _t(value, like):
    if isinstance(value, torch.Tensor):
        return value
    return torch.full_like(like, value)


class SpikeFunction(torch.autograd.Function):
    """Heaviside forward (``u >= 0``; ``strict``: ``u > 0``), surrogate derivative
    backward."""

    @staticmethod
    def forward(ctx, u, surrogate, strict=False):
        ctx.save_for_backward(u)
        # the hyper-parameters of this call (a value set later does not reach its backward)
        ctx.surrogate = copy.copy(surrogate)
        return ((u > 0) if strict else (u >= 0)).to(u.dtype)

    @staticmethod
    def backward(ctx, grad):
        (u,) = ctx.saved_tensors
        d = evaluate(ctx.surrogate.derivative_expr(), {"u": u}, u)
        return grad * _t(d, u), None, None


def spike_fn(u, surrogate, strict=False):
    return SpikeFunction.apply(u, surrogate, strict)


def multi_step(model, x_seq, states, params, surrogate, detach_reset=False, record=()):
    """Run ``model`` over ``x_seq`` [T, ...] from ``states`` (name -> tensor).

    ``params`` maps each parameter name to a float or tensor. Returns
    ``(output_seq, {recorded state: its values after each step}, final_states)``;
    differentiable by autograd. The output is the spike unless the model declares an
    ``output``. Each step runs the model's stage list (``model.stages``) in order, every
    stage reading the states' current values; the fire stage thresholds with
    :class:`SpikeFunction`.
    """
    from .stages import FireStage
    outs, seqs = [], {s: [] for s in record}
    cur = dict(states)
    for t in range(x_seq.shape[0]):
        x = x_seq[t]
        spike = out = None
        for stage in model.stages:
            env = {**params, **cur, model.input_name: x, "__surrogate__": surrogate}
            if spike is not None:
                env["spike"] = spike
                env["spike_d"] = spike.detach() if detach_reset else spike
            if isinstance(stage, FireStage):
                spike = out = spike_fn(_t(evaluate(stage.fire(model), env, x), x), surrogate,
                                       model.fire_strict)
                if stage.output(model) is not None:
                    env["spike"] = spike
                    out = _t(evaluate(stage.output(model), env, x), x).expand_as(x)
                continue
            new = {s: _t(evaluate(e, env, x), x).expand_as(x)
                   for s, e in stage.equations(model).items()}
            cur = {**cur, **new}
        outs.append(out)
        for s in record:
            seqs[s].append(cur[s])
    if not outs:
        empty = x_seq.new_empty(x_seq.shape)
        return empty, {s: empty.clone() for s in record}, cur
    return torch.stack(outs), {s: torch.stack(v) for s, v in seqs.items()}, cur


__all__ = ["evaluate", "spike_fn", "multi_step", "SpikeFunction"]
