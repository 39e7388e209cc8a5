"""`RecurrentLayer`: a neuron layer whose input at step t adds ``W @ out[t-1]``, the whole
sequence in one forward and one backward kernel.

The model's input at step ``t`` is ``x[t] + W_eff @ out[t-1] (+ bias)`` with ``W_eff = W *
mask``; ``out`` is the model's output (its spikes, or its ``output=`` expression), and
``out[-1]`` is a carried state (zeros after :meth:`RecurrentLayer.reset`), so a sequence
run in chunks gives the same numbers as one call.

The kernels (``KernelConfig.recurrent``) are the neuron's own forward and backward with a
pass before each step that computes the recurrent term from the other neurons of the
same sequence: the forward adds the rows of ``W^T`` of the neurons whose output at t - 1
was not zero (event-driven), the backward adds ``W^T @ grad_x[t + 1]`` to the gradient of
the output at t. ``grad_W`` is one matrix product over all steps afterwards,
``sum_t grad_x[t]^T out[t-1]``; the gradient of the previous call's last output is
``grad_x[0] @ W``. On the CPU, threads take whole sequences; on the GPU one block runs one
sequence, one thread per neuron, with a barrier per step (docs/architecture.md).
"""
import math
from typing import List, Optional

import torch
from torch import nn

from . import buffers, reference, targets
from .autograd import (AVAILABLE, _compiled_plan, _plan, compiling, run_backward, run_forward,
                       first_order, placeholder, saved_dense, saved_for_grad_x)
from .module import NeuronModule, _check_input, _target_when_compiling, carried
from .plan import PLANS, as_shape, call_inputs, call_outputs, plan_for
from .spec.model import NeuronModel


class RecurrentLayer(nn.Module):
    """``neuron`` (a neuron module such as ``ng.neuron.LIFNode()``, or a
    :class:`~neurogen.NeuronModel`, run with default options) over ``[T, *batch, H]``
    input with a learnable recurrent weight ``W`` ``[H, H]``: the model's input at step t
    is ``x[t] + (W * mask) @ out[t-1] + bias``.

    ``mask``: an optional fixed ``[H, H]`` connectivity (0/1 or weights), e.g.
    ``1 - torch.eye(H)`` for no self-connections; the gradient of ``W`` is zero where it
    is zero. ``bias=True`` adds a learnable bias ``[H]``. The neuron's states stay on
    ``layer.neuron`` (``layer.neuron.v``), its options (backend, surrogate, records)
    apply; the last output is ``layer.out`` (carried, zeros after :meth:`reset`).

    >>> import neurogen as ng, torch
    >>> layer = ng.RecurrentLayer(ng.neuron.LIFNode(backend="torch"), 3)
    >>> layer(torch.ones(4, 2, 3)).shape
    torch.Size([4, 2, 3])
    """

    def __init__(self, neuron, hidden_size: int, mask: Optional[torch.Tensor] = None,
                 bias: bool = False, weight: Optional[torch.Tensor] = None):
        super().__init__()
        if isinstance(neuron, NeuronModel):
            neuron = NeuronModule(neuron, step_mode="m")
        if not isinstance(neuron, NeuronModule):
            raise TypeError("neuron must be a neurogen neuron module (e.g. ng.neuron.LIFNode()) "
                            f"or a NeuronModel, got {type(neuron).__name__}")
        if not isinstance(hidden_size, int) or isinstance(hidden_size, bool) or hidden_size < 1:
            raise ValueError(f"hidden_size must be a positive int, got {hidden_size!r}")
        H = hidden_size
        self.neuron = neuron
        self.hidden_size = H
        if weight is None:
            bound = 1.0 / math.sqrt(H)  # nn.Linear's default range
            weight = torch.empty(H, H).uniform_(-bound, bound)
        weight = _square(weight, H, "weight")
        self.weight = nn.Parameter(weight.detach().clone())
        if mask is not None:
            mask = _square(mask, H, "mask")
            self.register_buffer("mask", mask.detach().to(weight.dtype).clone())
        else:
            self.mask = None
        self.bias = nn.Parameter(torch.zeros(H, dtype=weight.dtype)) if bias else None
        self.reset()

    @property
    def out(self):
        """The last step's output ``[*batch, H]`` (the next call's ``out[-1]``), or None
        after :meth:`reset`. Settable (a tensor, or None for zeros)."""
        return self._carry["out"]

    @out.setter
    def out(self, value):
        if value is not None and (not isinstance(value, torch.Tensor)
                                  or not value.is_floating_point()):
            raise TypeError("layer.out must be a floating tensor [*batch, H] or None, got "
                            f"{value.dtype if isinstance(value, torch.Tensor) else type(value).__name__}")
        self._carry["out"] = value

    def reset(self):
        """Zero the carried output and reset the neuron's states."""
        self.__dict__["_carry"] = {"out": None}
        self.neuron.reset()

    def detach(self):
        """Cut the carried output and the neuron's states from the graph (truncated BPTT)."""
        if isinstance(self.out, torch.Tensor):
            self._carry["out"] = self.out.detach()
        self.neuron.detach()

    def _apply(self, fn, *args, **kwargs):
        if isinstance(self._carry.get("out"), torch.Tensor):
            self._carry["out"] = fn(self._carry["out"])
        return super()._apply(fn, *args, **kwargs)

    def __getstate__(self):
        state = super().__getstate__()
        out = state["_carry"]["out"]
        state["_carry"] = {"out": out.detach() if isinstance(out, torch.Tensor) else None}
        return state

    def effective_weight(self):
        """``W * mask`` (``W`` without a mask)."""
        return self.weight if self.mask is None else self.weight * self.mask

    def forward(self, x_seq: torch.Tensor):
        _check_input(x_seq, min_dim=0)
        H = self.hidden_size
        if x_seq.dim() < 2 or x_seq.shape[-1] != H:
            raise ValueError(f"RecurrentLayer input must be [T, *batch, {H}] (hidden size "
                             f"{H} last), got shape {tuple(x_seq.shape)}")
        if x_seq.shape[0] == 0:
            raise ValueError("x_seq has T = 0 time steps; give at least one step")
        W = self.effective_weight()
        if W.device != x_seq.device:
            raise ValueError(f"the recurrent weight is on {W.device} but the input is on "
                             f"{x_seq.device}; move the layer with .to(device)")
        half = x_seq.dtype in (torch.float16, torch.bfloat16)
        if W.dtype != x_seq.dtype and not (half and W.dtype == torch.float32):
            raise TypeError(f"the recurrent weight is {W.dtype} but the input is "
                            f"{x_seq.dtype}; convert the layer (layer.to({x_seq.dtype})) or "
                            "the input")
        if self.bias is not None:
            x_seq = x_seq + self.bias.to(x_seq.dtype)
        node = self.neuron
        params = node.param_values()
        node._check_param_devices(x_seq, params)
        if node.model.refractory is not None:
            node._check_counter(x_seq.dtype)
        states = node._states_for(x_seq, params)
        out0 = self.out
        shape = x_seq.shape[1:]
        if out0 is None:
            out0 = buffers.constant(shape, 0.0, x_seq.dtype, x_seq.device) if not compiling() \
                else torch.zeros(shape, dtype=x_seq.dtype, device=x_seq.device)
        else:  # (a chunk in another dtype: converted, as the states are)
            out0 = carried(out0, "the carried output (layer.out)", shape, x_seq, "layer")
        if compiling():
            target = targets.get(_target_when_compiling(node, x_seq))
        else:
            target = targets.resolve(node.backend, x_seq)
        if target.name == "torch":
            out_seq, seqs, finals = _torch_loop(node, x_seq, W, out0, states, params)
        else:
            out_seq, seqs, finals = _kernels(node, target, x_seq, W, out0, states, params)
        node._changed()  # (states written here: the neuron's own fast path must not assume)
        for s in node.model.state_names:
            node._memories[s] = finals[s]
        for s in node.record:
            node._memories[f"{s}_seq"] = seqs[s]
            if s == node.model.v_name:
                node._memories["v_seq"] = seqs[s]
        self._carry["out"] = out_seq[-1]
        return out_seq

    def extra_repr(self):
        return (f"hidden_size={self.hidden_size}, mask={self.mask is not None}, "
                f"bias={self.bias is not None}")


def _square(t, H, what):
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{what} must be a tensor of shape [{H}, {H}], got {type(t).__name__}")
    if tuple(t.shape) != (H, H):
        raise ValueError(f"{what} must have shape [{H}, {H}] (hidden size {H}), got "
                         f"{tuple(t.shape)}")
    if not t.is_floating_point() and t.dtype != torch.bool:
        raise TypeError(f"{what} must be a floating (or, for a mask, bool) tensor, got {t.dtype}")
    return t if t.is_floating_point() else t.float()


def _torch_loop(node, x_seq, W, out0, states, params):
    """The reference: the model's torch step in a loop, the recurrent product by
    ``torch.nn.functional.linear``; autograd differentiates it."""
    params = {k: (v.to(x_seq.dtype) if isinstance(v, torch.Tensor) else v)
              for k, v in params.items()}
    W = W.to(x_seq.dtype)
    prev, cur, outs = out0, dict(states), []
    seqs = {s: [] for s in node.record}
    for t in range(x_seq.shape[0]):
        inp = x_seq[t] + torch.nn.functional.linear(prev, W)
        o, rec, cur = reference.multi_step(node.model, inp.unsqueeze(0), cur, params,
                                           node.surrogate_function, node.detach_reset,
                                           node.record)
        prev = o[0]
        outs.append(prev)
        for s in node.record:
            seqs[s].append(rec[s][0])
    return torch.stack(outs), {s: torch.stack(v) for s, v in seqs.items()}, cur


def _kernels(node, target, x_seq, W, out0, states, params):
    model, H = node.model, x_seq.shape[-1]
    c = call_inputs(model, x_seq, states, params,
                    others_need_grad=W.requires_grad or out0.requires_grad)
    W, out0 = W.to(c.compute), as_shape(out0, (c.N,)).contiguous()
    if compiling():
        key, values = _compiled_plan(node, target.name, c.dtype, tuple(c.kinds.items()),
                                     tuple(c.learnable), c.needs_grad, tuple(c.tensor_params),
                                     tuple(c.scalars), True)
        out = torch.ops.neurogen.recurrent(key, H, c.x2d, W, out0, c.inits + c.tensors,
                                           list(values))
    else:
        plan = plan_for(node, target, c.dtype, c.kinds, c.learnable, c.needs_grad,
                        c.tensor_params, c.scalars, recurrent=True)
        out = Recurrent.apply(plan, H, c.x2d, W, out0, *c.inits, *c.tensors)
    return call_outputs(model, node.record, out, x_seq.shape)


class Recurrent(torch.autograd.Function):
    """``forward(plan, H, x_seq [T, N], W [H, H] (compute dtype), out0 [N], *inits [N],
    *param tensors)``."""

    @staticmethod
    def forward(ctx, plan, H, x_seq, W, out0, *tensors):
        ctx.set_materialize_grads(False)
        outputs, saved = run_forward(plan, x_seq, tensors, rec=(H, W.t().contiguous(), out0))
        if plan.cfg.save:
            # (the total input when the backward reads it; else not even x: MultiStep)
            xrec = saved.pop() if plan.backward_info().needs_x else None
            # grad_W reads the returned outputs themselves (a copy cost 5% of the LIF step at
            # T = 100, B = 64, H = 256): changed in place before the backward, autograd stops
            # it with its "modified by an inplace operation" error (docs/recurrent.md)
            ctx.save_for_backward(xrec, W, out0, outputs[0] if ctx.needs_input_grad[3] else None,
                                  *tensors, *saved)
            ctx.plan, ctx.H, ctx.n_tensors = plan, H, len(tensors)
            ctx.x_meta = (x_seq.shape, x_seq.dtype, x_seq.device)
        return tuple(outputs)

    @staticmethod
    @first_order
    def backward(ctx, g_out, *g_rest):
        xrec, W, out0, out_seq, *rest = saved_dense(ctx)
        if xrec is None:
            xrec = placeholder(ctx.x_meta)
        tensors, saved = rest[:ctx.n_tensors], rest[ctx.n_tensors:]
        n_rec = len(ctx.plan.cfg.record)
        grad_x, grad_W, grad_out0, grad_inits, param_grads = _backward(
            ctx.plan, ctx.H, xrec, W, out0, out_seq, tensors, saved, g_out, g_rest[:n_rec],
            g_rest[n_rec:], ctx.needs_input_grad[3], ctx.needs_input_grad[4],
            grad_x=saved_for_grad_x(saved, xrec.shape, xrec.dtype, xrec.device))
        return (None, None, grad_x, grad_W, grad_out0, *grad_inits, *param_grads)


def _backward(plan, H, xrec, W, out0, out_seq, tensors, saved, g_out, g_seqs, g_finals,
              want_W=True, want_out0=True, grad_x=None):
    """The backward kernel, then ``grad_W = sum_t grad_x[t]^T out[t-1]`` (one product over
    the steps after the first, one for the carried output) and ``grad_out0 = grad_x[0] @
    W``. ``grad_x``: as for :func:`neurogen.autograd.run_backward`."""
    grad_x, grad_inits, param_grads = run_backward(plan, xrec, tensors, saved, g_out, g_seqs,
                                                   g_finals, rec=(H, W), grad_x=grad_x)
    T, N = grad_x.shape
    B = N // H
    grad_W = grad_out0 = None
    g = grad_x.to(W.dtype).reshape(T * B, H)
    if want_W:
        grad_W = g[:B].t() @ out0.to(W.dtype).reshape(B, H)
        if T > 1:
            grad_W = grad_W.addmm_(g[B:].t(), out_seq[:-1].to(W.dtype).reshape(-1, H))
    if want_out0:
        grad_out0 = (g[:B] @ W).reshape(N).to(out0.dtype)
    return grad_x, grad_W, grad_out0, grad_inits, param_grads


# ---- torch.compile: the same functions as custom ops (autograd.py's pattern) ----------------
if AVAILABLE:
    @torch.library.custom_op("neurogen::recurrent", mutates_args=())
    def _recurrent_op(key: str, H: int, x_seq: torch.Tensor, W: torch.Tensor,
                      out0: torch.Tensor, tensors: List[torch.Tensor],
                      scalars: List[float]) -> List[torch.Tensor]:
        outputs, saved = run_forward(_plan(key, scalars), x_seq, tensors,
                                     rec=(H, W.t().contiguous(), out0))
        return outputs + saved

    @_recurrent_op.register_fake
    def _(key, H, x_seq, W, out0, tensors, scalars):
        plan = PLANS.by_key(key)
        n_states = len(plan.model.state_names)
        out = [torch.empty_like(x_seq) for _ in range(1 + len(plan.cfg.record))]
        out += [torch.empty_like(t) for t in tensors[:n_states]]
        if plan.cfg.save:
            bw = plan.backward_info()
            out += [torch.empty_like(x_seq) for _ in range(len(bw.saved) + bw.needs_x)]
        return out

    @torch.library.custom_op("neurogen::recurrent_backward", mutates_args=())
    def _recurrent_backward_op(key: str, scalars: List[float], H: int, xrec: torch.Tensor,
                               W: torch.Tensor, out0: torch.Tensor, out_seq: torch.Tensor,
                               tensors: List[torch.Tensor], saved: List[torch.Tensor],
                               grads: List[Optional[torch.Tensor]]) -> List[torch.Tensor]:
        plan = _plan(key, scalars)
        n_states, n_rec = len(plan.model.state_names), len(plan.cfg.record)
        grad_x, grad_W, grad_out0, grad_inits, param_grads = _backward(
            plan, H, xrec, W, out0, out_seq, tensors, saved, grads[0], grads[1:1 + n_rec],
            grads[1 + n_rec:1 + n_rec + n_states])
        params = tensors[n_states:]
        return [grad_x, grad_W, grad_out0, *grad_inits] + [
            torch.zeros_like(p) if g is None else g for g, p in zip(param_grads, params)]

    @_recurrent_backward_op.register_fake
    def _(key, scalars, H, xrec, W, out0, out_seq, tensors, saved, grads):
        return [torch.empty_like(xrec), torch.empty_like(W), torch.empty_like(out0)] + [
            torch.empty_like(t) for t in tensors]

    def _setup_context(ctx, inputs, output):
        key, H, x_seq, W, out0, tensors, scalars = inputs
        plan = PLANS.by_key(key)
        n_out = 1 + len(plan.cfg.record) + len(plan.model.state_names)
        saved = list(output[n_out:])
        xrec = saved.pop() if plan.cfg.save and plan.backward_info().needs_x else x_seq
        ctx.key, ctx.scalars, ctx.H, ctx.n_tensors = key, scalars, H, len(tensors)
        ctx.save_for_backward(xrec, W, out0, output[0], *tensors, *saved)

    def _backward_op(ctx, grads):
        xrec, W, out0, out_seq, *rest = saved_dense(ctx)
        tensors, saved = rest[:ctx.n_tensors], rest[ctx.n_tensors:]
        plan = PLANS.by_key(ctx.key)
        n_states = len(plan.model.state_names)
        n_grads = 1 + len(plan.cfg.record) + n_states
        out = _recurrent_backward_op(ctx.key, ctx.scalars, ctx.H, xrec, W, out0, out_seq,
                                     list(tensors), list(saved), list(grads[:n_grads]))
        learnable = set(plan.cfg.learnable)
        param_grads = [g if k in learnable else None
                       for k, g in zip(plan.tensor_params, out[3 + n_states:])]
        return (None, None, out[0], out[1], out[2], list(out[3:3 + n_states]) + param_grads,
                None)

    torch.library.register_autograd("neurogen::recurrent", _backward_op,
                                    setup_context=_setup_context)


__all__ = ["RecurrentLayer", "Recurrent"]
