"""The torch.autograd.Function that runs a generated forward and backward kernel."""
import dataclasses
import functools
from dataclasses import dataclass
from typing import Dict, Tuple

import torch

from . import runtime
from .codegen import CPU_BLOCK, KernelConfig, build_ir, derivation, kernel_args, render_ir
from .spec.model import NeuronModel

TORCH_DTYPES = {torch.float32: "float32", torch.float64: "float64",
                torch.float16: "float16", torch.bfloat16: "bfloat16"}


@functools.lru_cache(maxsize=512)
def kernel_source(model: NeuronModel, target: str, kind: str, dtype: str, cfg: KernelConfig):
    ir = build_ir(model, target, kind, dtype, cfg)
    return ir.name, render_ir(ir)


def get_kernel(model, backend, kind, dtype, cfg, device):
    if backend == "cuda-emulated":
        from .emulation import compile_emulated
        return compile_emulated(build_ir(model, "cuda", kind, dtype, cfg), model, cfg)
    target = "cpp" if backend == "cpu" else "cuda"
    name, source = kernel_source(model, target, kind, dtype, cfg)
    if backend == "cpu":
        return runtime.compile_cpp(source, name)
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

    @property
    def compute(self) -> str:
        return "double" if self.dtype == "float64" else "float"

    def launch(self, kind, cfg, values: Dict[str, object], n: int, device):
        if n == 0:
            return  # zero neurons: nothing to compute (and no empty CUDA grid)
        fn = get_kernel(self.model, self.backend, kind, self.dtype, cfg, device)
        packed = runtime.pack_args(kernel_args(self.model, kind, cfg),
                                   {**values, **dict(self.scalars)}, self.compute)
        if self.backend == "cpu":
            runtime.launch_cpu(fn, packed, n, CPU_BLOCK, values["ng_T"])
        elif self.backend == "cuda-emulated":
            runtime.launch_emulated(fn, packed, n)
        else:
            runtime.launch_cuda(fn, packed, n, device)


class MultiStep(torch.autograd.Function):
    """``forward(plan, x_seq [T, N], *inits [N], *param tensors)``."""

    @staticmethod
    def forward(ctx, plan: Plan, x_seq, *tensors):
        model, cfg = plan.model, plan.cfg
        states = model.state_names
        inits = dict(zip(states, tensors[:len(states)]))
        params = dict(zip(plan.tensor_params, tensors[len(states):]))
        _, bw = derivation(model, cfg.surrogate, cfg.detach_reset, cfg.learnable)
        T, N = x_seq.shape
        values = {"x_seq": x_seq, "ng_T": T, "ng_N": N}
        values.update({f"init_{s}": t for s, t in inits.items()})
        values.update({f"p_{k}": t for k, t in params.items()})
        spike_seq = torch.empty_like(x_seq)
        v_seq = torch.empty_like(x_seq) if cfg.store_v_seq else x_seq.new_empty(0)
        finals = [torch.empty_like(inits[s]) for s in states]
        saved = {s: torch.empty_like(x_seq) for s in bw.saved} if cfg.save else {}
        values.update(spike_seq=spike_seq, v_seq=v_seq)
        values.update({f"final_{s}": f for s, f in zip(states, finals)})
        values.update({f"saved_{s}": t for s, t in saved.items()})
        plan.launch("forward", cfg, values, N, x_seq.device)
        if cfg.save:
            keep = [x_seq if bw.needs_x else None] + [saved[s] for s in bw.saved]
            keep += [inits[s] for s in bw.needs_prev] + [params[k] for k in plan.tensor_params]
            ctx.save_for_backward(*[k for k in keep if k is not None])
            ctx.plan, ctx.bw = plan, bw
            ctx.shape, ctx.io = (T, N), (x_seq.dtype, x_seq.device)
        if not cfg.store_v_seq:
            ctx.mark_non_differentiable(v_seq)
        return (spike_seq, v_seq, *finals)

    @staticmethod
    def backward(ctx, g_spike, g_vseq, *g_finals):
        plan, bw = ctx.plan, ctx.bw
        model = plan.model
        states = model.state_names
        saved_tensors = list(ctx.saved_tensors)
        x_seq = saved_tensors.pop(0) if bw.needs_x else None
        saved = {s: saved_tensors.pop(0) for s in bw.saved}
        inits = {s: saved_tensors.pop(0) for s in bw.needs_prev}
        params = {k: saved_tensors.pop(0) for k in plan.tensor_params}
        T, N = ctx.shape
        io = dict(dtype=ctx.io[0], device=ctx.io[1])
        use_vseq = plan.cfg.store_v_seq and g_vseq is not None
        cfg = dataclasses.replace(plan.cfg, grad_v_seq=use_vseq)
        zeros_n = torch.zeros(N, **io)
        values = {"ng_T": T, "ng_N": N,
                  "grad_spike_seq": (g_spike.contiguous() if g_spike is not None
                                     else torch.zeros(T, N, **io))}
        if use_vseq:
            values["grad_v_seq"] = g_vseq.contiguous()
        values.update({f"grad_final_{s}": (g.contiguous() if g is not None else zeros_n)
                       for s, g in zip(states, g_finals)})
        values.update({f"saved_{s}": t for s, t in saved.items()})
        if x_seq is not None:
            values["x_seq"] = x_seq
        values.update({f"init_{s}": t for s, t in inits.items()})
        values.update({f"p_{k}": t for k, t in params.items()})
        grad_x = torch.empty(T, N, **io)
        grad_init = {s: torch.empty(N, **io) for s in states}
        compute_dtype = torch.float64 if plan.compute == "double" else torch.float32
        grad_p = {k: torch.empty(N, dtype=compute_dtype, device=io["device"])
                  for k in cfg.learnable}
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
        return (None, grad_x, *[grad_init[s] for s in states], *param_grads)
