"""The kernels as ``torch.library`` custom ops, for ``torch.compile``.

``neurogen::multistep`` (forward) and ``neurogen::multistep_backward`` have fake
(meta) implementations and registered autograd, so a compiled graph holds a
neuron layer as one opaque node. A plan (model, backend, dtype, kernel
configuration) is registered once under a string key; run-time scalars
(parameter values, surrogate hyper-parameters) are op arguments. Eager calls
take the equivalent ``autograd.Function`` path in :mod:`neurogen.function`.
"""
import dataclasses
from typing import List

import torch

from .function import Plan, run_backward, run_forward

AVAILABLE = hasattr(torch.library, "custom_op")  # torch >= 2.4
_PLANS = {}


def register(plan: Plan) -> str:
    """Register ``plan`` (its scalar values are passed per call) and return its key."""
    key = "|".join([plan.model.name, plan.model.spec_hash, plan.backend, plan.dtype,
                    plan.cfg.key(), ",".join(plan.tensor_params),
                    ",".join(name for name, _ in plan.scalars)])
    _PLANS.setdefault(key, plan)
    return key


def _plan(key, scalars):
    plan = _PLANS[key]
    return dataclasses.replace(plan, scalars=tuple(zip([n for n, _ in plan.scalars], scalars)))


if AVAILABLE:
    @torch.library.custom_op("neurogen::multistep", mutates_args=())
    def multistep(key: str, x_seq: torch.Tensor, tensors: List[torch.Tensor],
                  scalars: List[float]) -> List[torch.Tensor]:
        outputs, saved = run_forward(_plan(key, scalars), x_seq, tensors)
        if not _PLANS[key].cfg.store_v_seq:
            outputs[1] = x_seq.new_empty(0)
        return outputs + saved

    @multistep.register_fake
    def _(key, x_seq, tensors, scalars):
        plan = _PLANS[key]
        n_states = len(plan.model.state_names)
        out = [torch.empty_like(x_seq),
               torch.empty_like(x_seq) if plan.cfg.store_v_seq else x_seq.new_empty(0)]
        out += [torch.empty_like(t) for t in tensors[:n_states]]
        if plan.cfg.save:
            out += [torch.empty_like(x_seq) for _ in plan.backward_info().saved]
        return out

    @torch.library.custom_op("neurogen::multistep_backward", mutates_args=())
    def multistep_backward(key: str, scalars: List[float], x_seq: torch.Tensor,
                           tensors: List[torch.Tensor], saved: List[torch.Tensor],
                           grads: List[torch.Tensor], use_vseq: bool) -> List[torch.Tensor]:
        plan = _plan(key, scalars)
        n_states = len(plan.model.state_names)
        g_spike, g_vseq, g_finals = grads[0], grads[1] if use_vseq else None, grads[2:]
        grad_x, grad_inits, param_grads = run_backward(plan, x_seq, tensors, saved, g_spike,
                                                       g_vseq, g_finals)
        params = tensors[n_states:]
        return [grad_x, *grad_inits] + [torch.zeros_like(p) if g is None else g
                                        for g, p in zip(param_grads, params)]

    @multistep_backward.register_fake
    def _(key, scalars, x_seq, tensors, saved, grads, use_vseq):
        return [torch.empty_like(x_seq)] + [torch.empty_like(t) for t in tensors]

    def _setup_context(ctx, inputs, output):
        key, x_seq, tensors, scalars = inputs
        plan = _PLANS[key]
        n_out = 2 + len(plan.model.state_names)
        ctx.key, ctx.scalars, ctx.n_tensors = key, scalars, len(tensors)
        ctx.save_for_backward(x_seq, *tensors, *output[n_out:])

    def _backward(ctx, grads):
        x_seq, *rest = ctx.saved_tensors
        tensors, saved = rest[:ctx.n_tensors], rest[ctx.n_tensors:]
        plan = _PLANS[ctx.key]
        n_states = len(plan.model.state_names)
        use_vseq = plan.cfg.store_v_seq and grads[1] is not None
        g = [grads[0] if grads[0] is not None else torch.zeros_like(x_seq),
             grads[1] if use_vseq else x_seq.new_empty(0)]
        g += [gf if gf is not None else torch.zeros_like(t)
              for gf, t in zip(grads[2:2 + n_states], tensors[:n_states])]
        out = multistep_backward(ctx.key, ctx.scalars, x_seq, list(tensors), list(saved), g,
                                 use_vseq)
        learnable = set(plan.cfg.learnable)
        grad_tensors = out[1:1 + n_states] + [
            gp if k in learnable else None
            for k, gp in zip(plan.tensor_params, out[1 + n_states:])]
        return None, out[0], grad_tensors, None

    torch.library.register_autograd("neurogen::multistep", _backward,
                                    setup_context=_setup_context)
