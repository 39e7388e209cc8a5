"""The fast path of a neuron call whose configuration has not changed since the last one.

A training loop in ``step_mode="s"`` calls a neuron once per time step with inputs of the
same shape, dtype and device, the same parameters and the same grad mode; the general
path (:meth:`NeuronModule.multi_step_forward` and :func:`neurogen.plan.run_kernels`)
re-derives everything each time: the target, the parameters' kinds, the plan, the
argument dictionaries, the launch layout, and autograd nodes for every reshape. On the
2-core CI machine that cost about five times the kernels' own time at 64 x 256 neurons.

A :class:`Runner` holds what the general path decided, resolved down to a list of kernel
arguments with pointer slots, and one ``autograd.Function`` (:class:`FastStep`) that takes
and returns tensors in their own shapes (no view nodes). It is used while a cheap key
still matches: the module's configuration generation (bumped by every attribute
assignment, ``set_param``, ``.to()``...), the input's shape, dtype and device, the grad
mode and which tensors require a gradient, the surrogate's values, the number of threads,
the kernel cache and the target registry. Anything else (recorded states, a first call,
``torch.compile``, a changed key) takes the general path, which builds a new runner.
"""
import math

import torch

from . import buffers, cache, dtypes, targets
from .autograd import first_order, saved_dense, saved_for_grad_x
from .targets.base import check_storage
from .targets import host_compiler
from .targets.cpu import LAUNCH_ARGS, cpu_layout, launch_cpu, scratch

_LAUNCH_KINDS = [a.kind for a in LAUNCH_ARGS]


class _Binding:
    """One kernel's argument list with the tensors' pointers left as slots: ``fill(flat)``
    puts ``flat[j].data_ptr()`` at each slot and returns the values in ABI order (their
    kinds: ``kinds``); sizes and by-value scalars are filled in once."""

    def __init__(self, packer, where, fixed):
        self.kinds = packer.kinds
        self.template = packer.template.copy()
        self.slots, self.names = [], {}
        for i, name, _ in packer.slots:
            if name in fixed:
                self.template[i] = fixed[name]
            else:
                self.slots.append((i, where[name]))
                self.names[i] = name

    def fill(self, flat):
        """The argument values (pointers filled in), in order."""
        vals = self.template.copy()
        try:
            for i, j in self.slots:
                vals[i] = flat[j].data_ptr()
        except RuntimeError:
            check_storage(self.names[i], flat[j])
            raise
        return vals


class Runner:
    """What calls of one module configuration need (see the module docstring)."""

    def __init__(self, plan, x, shape, params, prepared, key):
        self.key = key
        self.plan = plan
        self.module_states = plan.model.state_names
        self.N = math.prod(shape)
        self.T = x.numel() // self.N
        self.x_shape, self.shape = x.shape, tuple(shape)
        self.dtype, self.device = x.dtype, x.device
        self.save = plan.cfg.save
        self.needs_x = plan.backward_info().needs_x  # (else x is not saved: MultiStep)
        self.params = params          # the parameter tensors as the module holds them
        self.prepared = prepared      # per tensor parameter: None (passed as is) or a function
        self.n_states = len(self.module_states)
        self.n_tensors = self.n_states + len(params)
        names = plan.names
        self.n_saved = len(names.saved_out)
        fixed = {names.T: self.T, names.N: self.N}
        # forward: flat = [x, *inits, *params, out, *finals, *saved]
        where = {names.x: 0}
        where.update((n, 1 + j) for j, n in enumerate(names.init))
        where.update((n, 1 + self.n_states + j) for j, n in enumerate(names.param))
        base = 1 + self.n_tensors
        where[names.spike] = base
        where.update((n, base + 1 + j) for j, n in enumerate(names.final))
        where.update((n, base + 1 + self.n_states + j) for j, n in enumerate(names.saved_out))
        kernel, packer = plan.entry("forward", plan.cfg, x.device)
        self.forward_binding = _Binding(packer, where, fixed)
        self.forward_launch = self._launcher(kernel, packer.kinds)
        # small outputs straight from torch (the CPU block cache only takes large ones)
        big = x.numel() * x.element_size() >= buffers.MIN_BYTES
        self.empty_seq = buffers.empty if big else torch.empty
        self._backward = {}  # (grad_out given, zero-gradient states) -> (binding, launch, cfg)
        self.compute = dtypes.compute_dtype(plan.dtype)

    def _launcher(self, kernel, kinds):
        """A function running ``kernel`` on a filled argument list."""
        target, N, T, device = self.plan.target, self.N, self.T, self.device
        if target.name == "cpu":
            facts = kernel.launch
            size, blocks, workers = cpu_layout(kernel, N, T)
            if workers == 1 or facts["openmp"]:
                fn, nbytes = kernel.fn, workers * facts["array_bytes"] * size
                if fn.argtypes is None:
                    fn.argtypes = [host_compiler._CTYPES[k] for k in kinds + _LAUNCH_KINDS]
                    fn.restype = None

                def launch(vals):
                    fn(*vals, size, 0, blocks, workers, scratch(nbytes))
                return launch
            return lambda vals: launch_cpu(kernel, list(zip(kinds, vals)), N, T)
        return lambda vals: target.launch(kernel, list(zip(kinds, vals)), N, T, device)

    # ---- forward ------------------------------------------------------------------------
    def inputs(self, module, x, states):
        """``[x, *initial states, *parameter tensors]`` for this call, or None when a state
        is not what the kernel reads (written by something other than these calls)."""
        tensors = [x]
        for v in states:  # (what the kernel assumes of them; anything else: the general path)
            if v is not None and (not isinstance(v, torch.Tensor) or v.dtype != self.dtype
                                  or v.shape != self.shape or not v.is_contiguous()
                                  or v.device != self.device):
                return None
        if any(s is None for s in states):
            init = module._initial_states(x if x.dim() == len(self.shape) else x[0],
                                          self.shape, module.param_values())
            states = [init[s] if v is None else v
                      for s, v in zip(self.module_states, states)]
        tensors += states
        tensors += [p if prep is None else prep(p) for p, prep in zip(self.params, self.prepared)]
        return tensors

    def forward(self, flat_in):
        x = flat_in[0]
        empty, dtype, device = self.empty_seq, self.dtype, self.device
        out = empty(self.x_shape, dtype=dtype, device=device)
        finals = [torch.empty(self.shape, dtype=dtype, device=device)
                  for _ in range(self.n_states)]
        saved = [empty((self.T, self.N), dtype=dtype, device=device)
                 for _ in range(self.n_saved)] if self.save else []
        flat = list(flat_in) + [out] + finals + saved
        self.forward_launch(self.forward_binding.fill(flat))
        del x
        return out, finals, saved

    # ---- backward -----------------------------------------------------------------------
    def _backward_for(self, zero):
        entry = self._backward.get(zero)
        if entry is None:
            plan, names = self.plan, self.plan.names
            cfg = plan.backward_cfg((), zero)
            n_s = self.n_states
            # flat = [grad_out, *grad_finals, *saved, x, *inits, *params, grad_x,
            #         *grad_inits, *grad_params]
            where = {names.grad_spike: 0}
            where.update((n, 1 + j) for j, n in enumerate(names.grad_final))
            where.update((n, 1 + n_s + j) for j, n in enumerate(names.saved))
            at = 1 + n_s + self.n_saved
            where[names.x] = at
            where.update((n, at + 1 + j) for j, n in enumerate(names.init))
            where.update((n, at + 1 + n_s + j) for j, n in enumerate(names.param))
            at += 1 + self.n_tensors
            where[names.grad_x] = at
            where.update((n, at + 1 + j) for j, n in enumerate(names.grad_init))
            learnable = cfg.learnable
            where.update((names.grad_param[k], at + 1 + n_s + j) for j, k in enumerate(learnable))
            kernel, packer = plan.entry("backward", cfg, self.device)
            entry = self._backward[zero] = (_Binding(packer, where, {names.T: self.T,
                                                                      names.N: self.N}),
                                            self._launcher(kernel, packer.kinds), cfg)
        return entry

    def _zeros(self):
        """A zero final-state gradient (read only; made again if changed in place)."""
        z = self.__dict__.get("_zero")
        if z is None or z[0]._version != z[1]:
            t = torch.zeros(self.shape, dtype=self.dtype, device=self.device)
            z = self._zero = (t, t._version)
        return z[0]

    def backward(self, x, tensors, saved, g_out, g_finals, param_shapes):
        """``x``, ``tensors`` and ``saved`` as FastStep saved them; the gradients returned
        are shaped like the call's tensors (``param_shapes``: its parameter tensors')."""
        zero = tuple(s for s, g in zip(self.module_states, g_finals) if g is None)
        binding, launch, cfg = self._backward_for(zero)
        dtype, device = self.dtype, self.device
        if g_out is None:
            g_out = torch.zeros(self.x_shape, dtype=dtype, device=device)
        gf = [self._zeros() if g is None else g.contiguous() for g in g_finals]
        into = saved_for_grad_x(saved, (self.T, self.N), dtype, device)
        grad_x = (self.empty_seq(self.x_shape, dtype=dtype, device=device) if into is None
                  else into.view(self.x_shape))
        grad_init = [torch.empty(self.shape, dtype=dtype, device=device)
                     for _ in range(self.n_states)]
        grad_p = [torch.empty(self.N, dtype=self.compute, device=device)
                  for _ in cfg.learnable]
        flat = [g_out.contiguous(), *gf, *saved, x, *tensors, grad_x, *grad_init, *grad_p]
        launch(binding.fill(flat))
        param_grads = [None] * len(self.params)
        if grad_p:  # (learnt parameters: summed where shared, in the tensor's shape)
            plan = self.plan
            learned = dict(zip(cfg.learnable, grad_p))
            for i, (k, shape) in enumerate(zip(plan.tensor_params, param_shapes)):
                g = learned.get(k)
                if g is not None:
                    param_grads[i] = (g.sum().reshape(shape) if plan.cfg.kind_of(k) == "shared"
                                      else g.reshape(shape))
        return grad_x, grad_init, param_grads


class FastStep(torch.autograd.Function):
    """``forward(runner, x, *initial states, *parameter tensors)``: every tensor in its
    own shape; returns ``(output, *final states)``."""

    @staticmethod
    def forward(ctx, runner, x, *tensors):
        ctx.set_materialize_grads(False)
        out, finals, saved = runner.forward((x, *tensors))
        # saved in the general path's shapes (autograd.MultiStep: x [T, N], states [N],
        # parameters [1] or [N]): a non-reentrant checkpoint recomputes the forward in the
        # backward, where the other path may run, and requires equal saved metadata
        T, N, n = runner.T, runner.N, runner.n_states
        flat = [t.view(1 if t.numel() == 1 and i >= n else N) for i, t in enumerate(tensors)]
        ctx.save_for_backward(x.view(T, N) if runner.needs_x else None, *flat, *saved)
        ctx.runner, ctx.param_shapes = runner, [t.shape for t in tensors[n:]]
        return (out, *finals)

    @staticmethod
    @first_order
    def backward(ctx, g_out, *g_finals):
        x, *rest = saved_dense(ctx)
        runner = ctx.runner
        n = runner.n_tensors
        grad_x, grad_init, param_grads = runner.backward(x, rest[:n], rest[n:], g_out, g_finals,
                                                         ctx.param_shapes)
        return (None, grad_x, *grad_init, *param_grads)


# ---- the key ------------------------------------------------------------------------------
def _held(module, names):
    """The module's parameter tensors by name, read where torch keeps them (so a swap by
    ``torch.func.functional_call``, which writes those dicts directly, is seen)."""
    params, buffers_ = module._parameters, module._buffers
    return [params[k] if k in params else buffers_.get(k) for k in names]


def call_key(module, x, states, params):
    """What a runner is valid for, cheap to compute on every call: besides the module's
    configuration, the input's layout, the grad mode and, per parameter tensor, the very
    object with its dtype, shape, device and layout (``.data`` may be replaced)."""
    grad = torch.is_grad_enabled()
    req = ()
    if grad:  # (the plan depends on whether the call needs a backward, and what is learnt)
        req = (x.requires_grad or any(p.requires_grad for p in params if p is not None)
               or any(isinstance(s, torch.Tensor) and s.requires_grad for s in states))
    sig = tuple((id(p), p.dtype, p.shape, p.device, p.is_contiguous(), p.requires_grad)
                if p is not None else None for p in params)
    return (module.__dict__["_gen"], x.shape, x.dtype, x.device, x.is_contiguous(), grad, req,
            sig, tuple(module.surrogate_function.params.values()), torch.get_num_threads(),
            cache.generation, targets.generation())


def try_call(module, x):
    """The module's output for ``x`` through its runner, or None when the runner does not
    apply (the caller takes the general path)."""
    runner = module.__dict__.get("_runner")
    if runner is None or not isinstance(x, torch.Tensor):
        return None
    mem = module._memories
    states = [mem[s] for s in runner.module_states]
    params = _held(module, runner.plan.tensor_params)
    if call_key(module, x, states, params) != runner.key:
        return None
    flat = runner.inputs(module, x, states)
    if flat is None:
        return None
    if runner.save:
        outs = FastStep.apply(runner, *flat)
    else:
        out, finals, _ = runner.forward(flat)
        outs = (out, *finals)
    for s, f in zip(runner.module_states, outs[1:]):
        mem[s] = f
    return outs[0]


def build(module, x, target, plan, shape, states_before, param_values):
    """A runner for the call just made by the general path (``states_before``: the module's
    states before it, None after a reset), or None where there is no fast path (recorded
    states, no neurons). A parameter tensor the kernel cannot read as it is (another
    dtype, broadcast) is converted on every call, as the general path does."""
    if module.record or math.prod(shape) == 0 or plan is None or not x.is_contiguous():
        return None  # (the kernels read x as a dense array; the general path copies)
    from .targets.base import KernelTarget
    if type(target).packer is not KernelTarget.packer:
        return None  # (a target with its own argument packing: the general path only)
    compute = dtypes.compute_dtype(plan.dtype)
    params, prepared = _held(module, plan.tensor_params), []
    if any(p is None or p is not param_values[k] for p, k in zip(params, plan.tensor_params)):
        return None  # (a parameter held somewhere else than torch's dicts: no fast path)
    for value in params:
        if (value.dtype == compute and value.is_contiguous()
                and (value.numel() == 1 or tuple(value.shape) == tuple(shape))):
            prepared.append(None)  # (the kernel reads it as it is: one value or [N])
        elif value.numel() == 1:
            prepared.append(lambda v, c=compute: v.to(c).reshape(1))
        else:
            n = math.prod(shape)
            prepared.append(lambda v, c=compute, sh=tuple(shape), n=n:
                            v.to(c).expand(sh).reshape(n).contiguous())
    key = call_key(module, x, states_before, params)
    return Runner(plan, x, shape, params, prepared, key)


__all__ = ["Runner", "FastStep", "try_call", "build", "call_key"]
