"""The torch.autograd.Function that runs a generated forward and backward kernel."""
import dataclasses
import functools
from dataclasses import dataclass, field
from typing import Dict, Tuple

import torch

from . import memory, runtime
from .codegen import (KernelConfig, build_ir, cpu_layout_of, derivation, kernel_args,
                      render_ir)
from .spec.model import NeuronModel

TORCH_DTYPES = {torch.float32: "float32", torch.float64: "float64",
                torch.float16: "float16", torch.bfloat16: "bfloat16"}


@functools.lru_cache(maxsize=512)
def kernel_source(model: NeuronModel, target: str, kind: str, dtype: str, cfg: KernelConfig):
    ir = build_ir(model, target, kind, dtype, cfg)
    return ir.name, render_ir(ir)


@functools.lru_cache(maxsize=512)
def _emulated_kernel(model, kind, dtype, cfg):
    from .emulation import compile_emulated
    return compile_emulated(build_ir(model, "cuda", kind, dtype, cfg), model, cfg)


def get_kernel(model, backend, kind, dtype, cfg, device):
    if backend == "cuda-emulated":
        return _emulated_kernel(model, kind, dtype, cfg)
    target = "cpp" if backend == "cpu" else "cuda"
    name, source = kernel_source(model, target, kind, dtype, cfg)
    if backend == "cpu":
        fn = runtime.compile_kernel(source, name, fma=dtype != "float64")
        fn.ng_max_block, arrays = cpu_layout_of(source)
        # bytes of block arrays per neuron of a block (compute values: double or float)
        fn.ng_array_bytes = arrays * (8 if dtype == "float64" else 4)
        return fn
    return runtime.cuda_function(source, name, device)


@dataclass(frozen=True)
class Plan:
    """What stays fixed during one multi-step call."""
    model: NeuronModel
    backend: str                       # "cpu", "cuda" or "cuda-emulated"
    dtype: str                         # kernel I/O dtype name
    cfg: KernelConfig                  # forward config (save, learnable, param kinds...)
    scalars: Tuple[Tuple[str, float], ...]   # by-value arguments (p_*, sg_*)
    tensor_params: Tuple[str, ...]     # parameters passed as tensors, in order

    def backward_info(self):
        bw = self._memo.get("bw")
        if bw is None:
            bw = self._memo["bw"] = derivation(self.model, self.cfg.surrogate,
                                               self.cfg.detach_reset, self.cfg.learnable)[1]
        return bw

    @property
    def compute(self) -> str:
        return "double" if self.dtype == "float64" else "float"

    # (kind, grad_v_seq, device) -> (kernel, its argument packer); not part of the plan's value
    _kernels: dict = field(default_factory=dict, init=False, compare=False, hash=False,
                           repr=False)
    # what run_forward / run_backward look up once per plan: the derived backward, the
    # backward's configuration with and without a v_seq gradient
    _memo: dict = field(default_factory=dict, init=False, compare=False, hash=False,
                        repr=False)

    def backward_cfg(self, grad_v_seq: bool) -> KernelConfig:
        cfg = self._memo.get(grad_v_seq)
        if cfg is None:
            cfg = self._memo[grad_v_seq] = dataclasses.replace(self.cfg, grad_v_seq=grad_v_seq)
        return cfg

    def launch(self, kind, cfg, values: Dict[str, object], n: int, device):
        """Run one kernel. ``cfg`` is ``self.cfg``, for the backward with ``grad_v_seq``
        set per call; the kernel and its argument packer are made once per plan."""
        if n == 0:
            return  # zero neurons: nothing to compute (and no empty CUDA grid)
        key = (kind, cfg.grad_v_seq, device)
        entry = self._kernels.get(key)
        if entry is None or entry[2] != runtime.generation:
            entry = self._kernels[key] = (
                get_kernel(self.model, self.backend, kind, self.dtype, cfg, device),
                runtime.ArgPacker(kernel_args(self.model, kind, cfg), dict(self.scalars),
                                  self.compute),
                runtime.generation)
        fn, packer, _ = entry
        packed = packer(values)
        if self.backend == "cpu":
            runtime.launch_cpu(fn, packed, n, fn.ng_max_block, values["ng_T"], fn.ng_openmp)
        elif self.backend == "cuda-emulated":
            runtime.launch_emulated(fn, packed, n)
        else:
            runtime.launch_cuda(fn, packed, n, device)


def run_forward(plan: Plan, x_seq, tensors):
    """Run the forward kernel. ``tensors``: initial states [N] then parameter tensors.

    Returns ``(outputs, saved)``: ``[spike_seq, v_seq (or empty), *final states]`` and the
    per-step values the backward reads (empty when ``plan.cfg.save`` is off)."""
    model, cfg = plan.model, plan.cfg
    states = model.state_names
    inits = dict(zip(states, tensors[:len(states)]))
    params = dict(zip(plan.tensor_params, tensors[len(states):]))
    bw = plan.backward_info()
    T, N = x_seq.shape
    values = {"x_seq": x_seq, "ng_T": T, "ng_N": N}
    values.update({f"init_{s}": t for s, t in inits.items()})
    values.update({f"p_{k}": t for k, t in params.items()})
    spike_seq = memory.empty_like(x_seq)
    v_seq = memory.empty_like(x_seq) if cfg.store_v_seq else x_seq.new_empty(0)
    finals = [torch.empty_like(inits[s]) for s in states]
    saved = [memory.empty_like(x_seq) for _ in bw.saved] if cfg.save else []
    values.update(spike_seq=spike_seq, v_seq=v_seq)
    values.update({f"final_{s}": f for s, f in zip(states, finals)})
    values.update({f"saved_{s}": t for s, t in zip(bw.saved, saved)})
    plan.launch("forward", cfg, values, N, x_seq.device)
    return [spike_seq, v_seq, *finals], saved


def run_backward(plan: Plan, x_seq, tensors, saved, g_spike, g_vseq, g_finals):
    """Run the backward kernel; ``None`` gradients count as zeros.

    Returns ``(grad_x, [grad of each initial state], [grad of each parameter tensor or None])``."""
    model, bw = plan.model, plan.backward_info()
    states = model.state_names
    inits = dict(zip(states, tensors[:len(states)]))
    params = dict(zip(plan.tensor_params, tensors[len(states):]))
    T, N = x_seq.shape
    io = dict(dtype=x_seq.dtype, device=x_seq.device)
    use_vseq = plan.cfg.store_v_seq and g_vseq is not None
    cfg = plan.backward_cfg(use_vseq)
    zeros_n = memory.constant((N,), 0.0, io["dtype"], io["device"])
    values = {"ng_T": T, "ng_N": N,
              "grad_spike_seq": (g_spike.contiguous() if g_spike is not None
                                 else torch.zeros(T, N, **io))}
    if use_vseq:
        values["grad_v_seq"] = g_vseq.contiguous()
    values.update({f"grad_final_{s}": (g.contiguous() if g is not None else zeros_n)
                   for s, g in zip(states, g_finals)})
    values.update({f"saved_{s}": t for s, t in zip(bw.saved, saved)})
    values["x_seq"] = x_seq
    values.update({f"init_{s}": inits[s] for s in bw.needs_init})
    values.update({f"p_{k}": t for k, t in params.items()})
    grad_x = memory.empty((T, N), **io)
    grad_init = {s: torch.empty(N, **io) for s in states}
    compute_dtype = torch.float64 if plan.compute == "double" else torch.float32
    grad_p = {k: torch.empty(N, dtype=compute_dtype, device=io["device"]) for k in cfg.learnable}
    values["grad_x_seq"] = grad_x
    values.update({f"grad_init_{s}": g for s, g in grad_init.items()})
    values.update({f"grad_p_{k}": g for k, g in grad_p.items()})
    plan.launch("backward", cfg, values, N, io["device"])
    param_grads = []
    for k in plan.tensor_params:
        if k not in grad_p:
            param_grads.append(None)
        elif plan.cfg.kind_of(k) == "shared":
            param_grads.append(grad_p[k].sum().reshape(params[k].shape))
        else:
            param_grads.append(grad_p[k])
    return grad_x, [grad_init[s] for s in states], param_grads


class MultiStep(torch.autograd.Function):
    """``forward(plan, x_seq [T, N], *inits [N], *param tensors)``."""

    @staticmethod
    def forward(ctx, plan: Plan, x_seq, *tensors):
        # outputs the loss does not use (final states, v_seq) get None, not zero tensors
        # autograd would fill per call; run_backward reads None as zeros
        ctx.set_materialize_grads(False)
        outputs, saved = run_forward(plan, x_seq, tensors)
        if plan.cfg.save:
            ctx.save_for_backward(x_seq, *tensors, *saved)
            ctx.plan, ctx.n_tensors = plan, len(tensors)
        if not plan.cfg.store_v_seq:
            ctx.mark_non_differentiable(outputs[1])
        return tuple(outputs)

    @staticmethod
    def backward(ctx, g_spike, g_vseq, *g_finals):
        x_seq, *rest = ctx.saved_tensors
        tensors, saved = rest[:ctx.n_tensors], rest[ctx.n_tensors:]
        grad_x, grad_inits, param_grads = run_backward(ctx.plan, x_seq, tensors, saved,
                                                       g_spike, g_vseq, g_finals)
        return (None, grad_x, *grad_inits, *param_grads)
