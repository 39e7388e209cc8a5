"""The autograd wiring of a multi-step call on kernels, one for eager mode and for
``torch.compile``.

:func:`run_forward` and :func:`run_backward` bind tensors to the kernels' arguments
(:mod:`neurogen.abi`) and launch them. Eager calls go through :class:`MultiStep` (an
``autograd.Function``); inside a ``torch.compile`` graph the same two functions run as
the custom ops ``neurogen::multistep`` and ``neurogen::multistep_backward`` (fake
implementations and registered autograd; torch >= 2.4), so a compiled graph holds a
neuron layer as one opaque node. Both paths hand the incoming gradients to
:func:`run_backward` unchanged, ``None`` for an output the loss did not use (read as
zeros), and return its results for the same inputs in the same order.
"""
import dataclasses
import functools
from typing import List, Optional

import torch

from . import abi, buffers, cache, dtypes
from .plan import PLANS, Plan, plan_for

AVAILABLE = hasattr(torch.library, "custom_op")  # torch >= 2.4


def run_forward(plan: Plan, x_seq, tensors, rec=None):
    """Run the forward kernel. ``tensors``: initial states [N] then parameter tensors.
    ``rec``: a recurrent plan's ``(H, transposed weight, previous output [N])``.

    Returns ``(outputs, saved)``: ``[output_seq, *recorded states' values, *final
    states]`` and the per-step values the backward reads (empty when ``plan.cfg.save`` is
    off; a recurrent plan's last one is the total input when the backward reads it)."""
    cfg, names = plan.cfg, plan.names
    n_states = len(names.init)
    inits = tensors[:n_states]
    T, N = x_seq.shape
    values = {names.x: x_seq, names.T: T, names.N: N}
    values.update(zip(names.init, inits))
    values.update(zip(names.param, tensors[n_states:]))
    spike_seq = buffers.empty_like(x_seq)
    seqs = [buffers.empty_like(x_seq) for _ in names.seq]
    finals = [torch.empty_like(t) for t in inits]
    saved = [buffers.empty_like(x_seq) for _ in names.saved_out] if cfg.save else []
    values[names.spike] = spike_seq
    values.update(zip(names.seq, seqs))
    values.update(zip(names.final, finals))
    values.update(zip(names.saved_out, saved))
    H = 0
    if rec is not None:
        H, values[abi.name("rec_weight_t")], values[abi.name("rec_out0")] = rec
        values[abi.name("H")] = H
        if cfg.save and plan.backward_info().needs_x:
            saved.append(buffers.empty_like(x_seq))
            values[abi.name("rec_input")] = saved[-1]
    plan.launch("forward", cfg, values, N, T, x_seq.device, H=H)
    return [spike_seq, *seqs, *finals], saved


# torch's "this backward frees the graph after it" flag (True outside a backward); the
# private accessor torch's own AOT autograd reads for the same purpose (torch >= 2.1)
_KEEP_GRAPH = getattr(torch._C._autograd, "_get_current_graph_task_keep_graph", lambda: True)


def saved_for_grad_x(saved, shape, dtype, device):
    """The saved array the backward may write ``grad_x`` over, or None. Only when the
    running backward frees the graph afterwards (torch's keep-graph flag is off: no
    ``retain_graph``, which ``create_graph`` implies by default): then no later backward
    reads the saved values (a saved tensor the user took out through
    ``grad_fn.saved_tensors`` or a saved-tensor hook then holds the gradient; documented
    in docs/performance.md), and the kernel reads
    each step's saved values before it writes that step's ``grad_x`` (abi.MAY_ALIAS). The
    gradient then takes no buffer of its own, and on the CPU its stores hit cache lines
    the kernel has just read instead of fresh ones (PERF_NOTES.md 32). ``saved`` as the
    backward received them: a saved-tensor hook may have given back another tensor, which
    must still be a dense ``shape`` array of ``dtype`` on ``device``."""
    if not saved or _KEEP_GRAPH():
        return None
    t = saved[0]
    if (t.dtype != dtype or t.device != device or tuple(t.shape) != tuple(shape)
            or not t.is_contiguous() or t.requires_grad):
        return None
    return t


_FIRST_ORDER = (b"neurogen's kernels give first-order gradients only: differentiating a "
                b"gradient (create_graph=True) through a neuron would miss the neuron's second "
                b"derivative. Use backend='torch' (the same equations in torch ops) for "
                b"higher-order gradients")


def first_order(backward):
    """Decorate a kernel ``backward``: with ``create_graph=True`` its gradients come with a
    node that raises when something differentiates them again. (torch's
    ``once_differentiable`` adds that node only when an incoming gradient requires grad, so
    a gradient penalty ``grad(y.sum(), x, create_graph=True)`` would silently lose the
    neuron's second-order terms.)"""
    @functools.wraps(backward)
    def wrapper(ctx, *grads):
        if not torch.is_grad_enabled():  # (the usual backward: nothing to mark)
            return backward(ctx, *grads)
        with torch.no_grad():
            outputs = backward(ctx, *grads)

        def marked(t):
            if t is None:
                return None
            t = t.detach()
            t.requires_grad_(True)
            return t
        return torch._C._functions.DelayedError(_FIRST_ORDER, len(outputs))(
            *[marked(t) for t in outputs])
    return wrapper


def saved_dense(ctx):
    """``ctx.saved_tensors``, each dense: the kernels read them by pointer, and a
    saved-tensor hook may hand back a tensor of other strides (same values)."""
    return [t if t is None or t.is_contiguous() else t.contiguous()
            for t in ctx.saved_tensors]


def placeholder(meta):
    """A stand-in for an input the backward kernel does not read (``meta``: its shape,
    dtype and device): the right metadata over one element of memory."""
    shape, dtype, device = meta
    return torch.empty((), dtype=dtype, device=device).expand(shape)


def run_backward(plan: Plan, x_seq, tensors, saved, g_spike, g_seqs, g_finals, rec=None,
                 grad_x=None):
    """Run the backward kernel; ``None`` gradients count as zeros (``g_seqs``: one per
    recorded state). ``rec``: a recurrent plan's ``(H, weight)``; its ``x_seq`` is the
    total input the forward stored. ``grad_x``: where to write the input's gradient
    (:func:`saved_for_grad_x`), else a new buffer.

    Returns ``(grad_x, [grad of each initial state], [grad of each parameter tensor or
    None])``."""
    names = plan.names
    n_states = len(names.init)
    params = dict(zip(plan.tensor_params, tensors[n_states:]))
    T, N = x_seq.shape
    io = dict(dtype=x_seq.dtype, device=x_seq.device)
    cfg = plan.backward_cfg(tuple(s for s, g in zip(plan.cfg.record, g_seqs) if g is not None),
                            tuple(s for s, g in zip(plan.model.state_names, g_finals)
                                  if g is None))
    zeros_n = buffers.constant((N,), 0.0, io["dtype"], io["device"])
    values = {names.T: T, names.N: N, names.x: x_seq,
              names.grad_spike: (g_spike.contiguous() if g_spike is not None
                                 else torch.zeros(T, N, **io))}
    values.update((name, g.contiguous())
                  for name, g in zip(names.grad_seq, g_seqs) if g is not None)
    values.update((name, g.contiguous() if g is not None else zeros_n)
                  for name, g in zip(names.grad_final, g_finals))
    values.update(zip(names.saved, saved))
    values.update((name, tensors[i]) for i, name in names.needs_init)
    values.update(zip(names.param, tensors[n_states:]))
    if grad_x is None:
        grad_x = buffers.empty((T, N), **io)
    grad_init = [torch.empty(N, **io) for _ in range(n_states)]
    compute = dtypes.compute_dtype(plan.dtype)
    grad_p = {k: torch.empty(N, dtype=compute, device=io["device"]) for k in cfg.learnable}
    values[names.grad_x] = grad_x
    values.update(zip(names.grad_init, grad_init))
    values.update((names.grad_param[k], g) for k, g in grad_p.items())
    H = 0
    if rec is not None:
        H, values[abi.name("rec_weight")] = rec
        values[abi.name("H")] = H
    plan.launch("backward", cfg, values, N, T, io["device"], H=H)
    param_grads = []
    for k in plan.tensor_params:
        if k not in grad_p:
            param_grads.append(None)
        elif plan.cfg.kind_of(k) == "shared":
            param_grads.append(grad_p[k].sum().reshape(params[k].shape))
        else:
            param_grads.append(grad_p[k])
    return grad_x, grad_init, param_grads


class MultiStep(torch.autograd.Function):
    """``forward(plan, x_seq [T, N], *inits [N], *param tensors)`` (eager mode)."""

    @staticmethod
    def forward(ctx, plan: Plan, x_seq, *tensors):
        # outputs the loss does not use (final states, recorded ones) get None, not zeros
        # autograd would fill per call; run_backward reads None as zeros
        ctx.set_materialize_grads(False)
        outputs, saved = run_forward(plan, x_seq, tensors)
        if plan.cfg.save:
            # the input only when the backward reads it (else it would stay alive until the
            # backward, and an in-place change of it would stop the backward for nothing)
            needs_x = plan.backward_info().needs_x
            ctx.save_for_backward(x_seq if needs_x else None, *tensors, *saved)
            ctx.plan, ctx.n_tensors = plan, len(tensors)
            ctx.x_meta = None if needs_x else (x_seq.shape, x_seq.dtype, x_seq.device)
        return tuple(outputs)

    @staticmethod
    @first_order
    def backward(ctx, g_spike, *g_rest):
        x_seq, *rest = saved_dense(ctx)
        if x_seq is None:
            x_seq = placeholder(ctx.x_meta)
        tensors, saved = rest[:ctx.n_tensors], rest[ctx.n_tensors:]
        n_rec = len(ctx.plan.cfg.record)
        into = saved_for_grad_x(saved, x_seq.shape, x_seq.dtype, x_seq.device)
        grad_x, grad_inits, param_grads = run_backward(ctx.plan, x_seq, tensors, saved,
                                                       g_spike, g_rest[:n_rec], g_rest[n_rec:],
                                                       grad_x=into)
        return (None, grad_x, *grad_inits, *param_grads)


def multi_step(module, target, dtype, kinds, learnable, needs_grad, tensor_params, scalars,
               x2d, tensors):
    """``(outputs of one call, its plan)``: eagerly through :class:`MultiStep`, or, inside
    a ``torch.compile`` graph, as the custom op (its plan made outside the graph; None
    returned for it)."""
    if compiling():
        key, values = _compiled_plan(module, target.name, dtype, tuple(kinds.items()),
                                     tuple(learnable), needs_grad, tuple(tensor_params),
                                     tuple(scalars))
        return torch.ops.neurogen.multistep(key, x2d, list(tensors), list(values)), None
    plan = plan_for(module, target, dtype, kinds, learnable, needs_grad, tensor_params,
                    scalars)
    return MultiStep.apply(plan, x2d, *tensors), plan


# ---- torch.compile ------------------------------------------------------------------------
def compiling() -> bool:
    compiler = getattr(torch, "compiler", None)
    return bool(compiler is not None and hasattr(compiler, "is_compiling")
                and compiler.is_compiling())


def constant_result(fn):
    """What ``torch._dynamo.assume_constant_result`` does; set directly so that importing
    neurogen does not import dynamo (over a second)."""
    fn._dynamo_marked_constant = True
    return fn


@constant_result
def _compiled_plan(module, target_name, dtype, kinds, learnable, needs_grad, tensor_params,
                   scalars, recurrent=False):
    """(key of the plan, scalar argument values); run once while tracing."""
    from . import targets
    if not AVAILABLE:
        raise RuntimeError("torch.compile of neurogen neurons needs torch >= 2.4 (custom ops)")
    plan = plan_for(module, targets.get(target_name), dtype, dict(kinds), learnable,
                    needs_grad, tensor_params, scalars, recurrent)
    return plan.key, tuple(float(v) for _, v in plan.scalars)


@cache.memoize("compiled-call plans", maxsize=256)
def _plan_with(key, scalars):
    plan = PLANS.by_key(key)
    return dataclasses.replace(plan, scalars=tuple(zip([n for n, _ in plan.scalars], scalars)))


def _plan(key, scalars):
    """The plan of a compiled call: its structure by key, its scalar values as passed (a
    plan per distinct set of values, so its kernels and packers are made once)."""
    return _plan_with(key, tuple(scalars))


if AVAILABLE:
    @torch.library.custom_op("neurogen::multistep", mutates_args=())
    def _multistep(key: str, x_seq: torch.Tensor, tensors: List[torch.Tensor],
                   scalars: List[float]) -> List[torch.Tensor]:
        outputs, saved = run_forward(_plan(key, scalars), x_seq, tensors)
        return outputs + saved

    @_multistep.register_fake
    def _(key, x_seq, tensors, scalars):
        plan = PLANS.by_key(key)
        n_states = len(plan.model.state_names)
        out = [torch.empty_like(x_seq) for _ in range(1 + len(plan.cfg.record))]
        out += [torch.empty_like(t) for t in tensors[:n_states]]
        if plan.cfg.save:
            out += [torch.empty_like(x_seq) for _ in plan.backward_info().saved]
        return out

    @torch.library.custom_op("neurogen::multistep_backward", mutates_args=())
    def _multistep_backward(key: str, scalars: List[float], x_seq: torch.Tensor,
                            tensors: List[torch.Tensor], saved: List[torch.Tensor],
                            grads: List[Optional[torch.Tensor]]) -> List[torch.Tensor]:
        plan = _plan(key, scalars)
        n_states = len(plan.model.state_names)
        n_rec = len(plan.cfg.record)
        grad_x, grad_inits, param_grads = run_backward(plan, x_seq, tensors, saved, grads[0],
                                                       grads[1:1 + n_rec],
                                                       grads[1 + n_rec:1 + n_rec + n_states])
        # a custom op returns tensors only: zeros for parameters that are not learnable
        # (_backward turns them back into None)
        params = tensors[n_states:]
        return [grad_x, *grad_inits] + [torch.zeros_like(p) if g is None else g
                                        for g, p in zip(param_grads, params)]

    @_multistep_backward.register_fake
    def _(key, scalars, x_seq, tensors, saved, grads):
        return [torch.empty_like(x_seq)] + [torch.empty_like(t) for t in tensors]

    def _setup_context(ctx, inputs, output):
        key, x_seq, tensors, scalars = inputs
        plan = PLANS.by_key(key)
        n_out = 1 + len(plan.cfg.record) + len(plan.model.state_names)
        ctx.key, ctx.scalars, ctx.n_tensors = key, scalars, len(tensors)
        ctx.save_for_backward(x_seq, *tensors, *output[n_out:])

    def _backward(ctx, grads):
        x_seq, *rest = saved_dense(ctx)
        tensors, saved = rest[:ctx.n_tensors], rest[ctx.n_tensors:]
        plan = PLANS.by_key(ctx.key)
        n_states = len(plan.model.state_names)
        n_grads = 1 + len(plan.cfg.record) + n_states
        out = _multistep_backward(ctx.key, ctx.scalars, x_seq, list(tensors), list(saved),
                                  list(grads[:n_grads]))
        learnable = set(plan.cfg.learnable)
        param_grads = [g if k in learnable else None
                       for k, g in zip(plan.tensor_params, out[1 + n_states:])]
        return None, out[0], list(out[1:1 + n_states]) + param_grads, None

    torch.library.register_autograd("neurogen::multistep", _backward,
                                    setup_context=_setup_context)


__all__ = ["run_forward", "run_backward", "MultiStep", "multi_step", "compiling",
           "constant_result", "AVAILABLE"]
