"""A multi-step call on a kernel target: how its parameters are passed (a by-value scalar,
one shared value, one per neuron; learnable or not), the :class:`Plan` that fixes
everything a call's kernels depend on, and the plan cache.

A plan is made once per model, target, dtype and parameter setting and reused while
none of them changes; it holds its kernels and argument packers, so a call reads only
the tensors' pointers and sizes (PERF_NOTES.md 21).
"""
import dataclasses
import math
import threading
from dataclasses import dataclass, field
from typing import Dict, Tuple

import torch

from . import abi, cache, dtypes, targets
from .config import KernelConfig, backward_of, make_config
from .spec.model import NeuronModel
from .targets.base import KernelTarget



@dataclass(frozen=True)
class Plan:
    """What stays fixed during one multi-step call."""
    model: NeuronModel
    target: KernelTarget
    dtype: str                         # kernel I/O dtype name
    cfg: KernelConfig                  # forward config (save, learnable, param kinds...)
    scalars: Tuple[Tuple[str, float], ...]   # by-value arguments (p_*, sg_*)
    tensor_params: Tuple[str, ...]     # parameters passed as tensors, in order

    # (kind, grad_record, zero_grads, device) -> (kernel, packer, cache generation); not part
    # of the value
    _kernels: dict = field(default_factory=dict, init=False, compare=False, hash=False,
                           repr=False)
    # the derived backward, the backward's configuration per set of recorded gradients
    _memo: dict = field(default_factory=dict, init=False, compare=False, hash=False,
                        repr=False)

    @property
    def compute(self) -> str:
        return dtypes.compute_type(self.dtype)

    @property
    def key(self) -> str:
        """Text identifying the plan's structure (its scalar values are passed per call):
        the torch.compile custom op finds the plan by it."""
        return "|".join([self.model.name, self.model.spec_hash, self.target.name, self.dtype,
                         self.cfg.key(), ",".join(self.tensor_params),
                         ",".join(name for name, _ in self.scalars)])

    def backward_info(self):
        bw = self._memo.get("bw")
        if bw is None:
            bw = self._memo["bw"] = backward_of(self.model, self.cfg)
        return bw

    def backward_cfg(self, grad_record: Tuple[str, ...],
                     zero_grads: Tuple[str, ...] = ()) -> KernelConfig:
        """The backward's configuration when the recorded states ``grad_record`` have a
        gradient (the others read as zeros) and the final states ``zero_grads`` have none."""
        key = ("grad_record", grad_record, zero_grads)
        cfg = self._memo.get(key)
        if cfg is None:
            from .lower import zero_gradients
            cfg = dataclasses.replace(self.cfg, grad_record=grad_record, zero_grads=zero_grads)
            # keyed by the states whose gradients really stay zero: the same kernel for
            # every pattern of None gradients that leaves the same set
            cfg = dataclasses.replace(cfg, zero_grads=zero_gradients(
                self.model, self.backward_info(), cfg))
            self._memo[key] = cfg
        return cfg

    @property
    def names(self) -> "Names":
        """The argument names a call binds, spelled once per plan (abi.name)."""
        names = self._memo.get("names")
        if names is None:
            names = self._memo["names"] = Names(self)
        return names

    def launch(self, kind, cfg, values: Dict[str, object], n: int, T: int, device,
               H: int = 0):
        """Run one kernel. ``cfg`` is ``self.cfg``, for the backward with ``grad_record``
        set per call; the kernel and its argument packer are made once per plan. ``H``: a
        recurrent kernel's sequence length in neurons (``n // H`` sequences)."""
        if n == 0:
            return  # zero neurons: nothing to compute (and no empty CUDA grid)
        kernel, packer = self.entry(kind, cfg, device)
        if H:
            self.target.launch_recurrent(kernel, packer(values), n, T, H, device)
        else:
            self.target.launch(kernel, packer(values), n, T, device)


    def entry(self, kind, cfg, device):
        """``(kernel, packer)`` of one kernel of this plan, made once (and again after
        :func:`neurogen.forget_kernels`)."""
        key = (kind, cfg.grad_record, cfg.zero_grads, device)
        entry = self._kernels.get(key)
        if entry is None or entry[2] != cache.generation:
            generation = cache.generation  # read first: a forget during the build wins
            kernel = self.target.kernel(self.model, kind, self.dtype, cfg, device)
            packer = self.target.packer(kernel.ir.args, dict(self.scalars), self.compute)
            entry = self._kernels[key] = (kernel, packer, generation)
        return entry[0], entry[1]


class Names:
    """A plan's argument names by role (what run_forward and run_backward bind)."""

    def __init__(self, plan: Plan):
        n = abi.name
        states, bw = plan.model.state_names, plan.backward_info()
        saved = [abi.saved_key(y) for y in bw.saved]
        self.x, self.T, self.N = n("x"), n("T"), n("N")
        self.spike = n("spike")
        self.seq = [n("seq", s) for s in plan.cfg.record]
        self.init = [n("init", s) for s in states]
        self.final = [n("final", s) for s in states]
        self.param = [n("param", k) for k in plan.tensor_params]
        self.saved_out = [n("saved_out", k) for k in saved]
        self.saved = [n("saved", k) for k in saved]
        self.needs_init = [(states.index(s), n("init", s)) for s in bw.needs_init]
        self.grad_spike, self.grad_x = n("grad_spike"), n("grad_x")
        self.grad_seq = [n("grad_seq", s) for s in plan.cfg.record]
        self.grad_final = [n("grad_final", s) for s in states]
        self.grad_init = [n("grad_init", s) for s in states]
        self.grad_param = {k: n("grad_param", k) for k in plan.cfg.learnable}


class _Plans:
    """The plan cache: at most ``limit`` plans by their full key (emptied when full), and
    every plan ever made by :attr:`Plan.key` for the torch.compile custom op (a compiled
    graph keeps calling with its key)."""

    def __init__(self, limit=256):
        self.limit = limit
        self._plans, self._by_key = {}, {}
        self._lock = threading.Lock()
        cache.register(self)

    def get(self, key, build):
        try:
            plan = self._plans.get(key)
        except TypeError:  # an unhashable parameter value set by hand: no reuse
            return self.index(build())
        if plan is None:
            with self._lock:
                if len(self._plans) >= self.limit:
                    self._plans.clear()
                plan = self._plans[key] = self.index(build())
        return plan

    def index(self, plan):
        self._by_key.setdefault(plan.key, plan)
        return plan

    def by_key(self, key: str) -> Plan:
        return self._by_key[key]

    def forget(self):
        self._plans.clear()  # _by_key stays: compiled graphs name their plans by key

    def drop_target(self, name: str):
        """Forget every plan of the target ``name`` (re-registered or removed)."""
        with self._lock:
            self._plans = {k: p for k, p in self._plans.items() if p.target.name != name}
            self._by_key = {k: p for k, p in self._by_key.items() if p.target.name != name}

    def __len__(self):
        return len(self._plans)


PLANS = _Plans()
targets.on_change(PLANS.drop_target)


_SCALAR_NAMES = {}  # parameter -> its by-value argument's name


def classify(params, shape, compute):
    """How each parameter value reaches the kernels: ``(scalars, tensor_params, kinds,
    tensors, learnable)``. A float is a by-value argument (``p_<k>``); a one-element
    tensor is read as one shared value, a larger one per neuron (broadcast to the neuron
    shape); a tensor that requires a gradient is learnable."""
    N = math.prod(shape)
    scalars, tensor_params, kinds, tensors, learnable = [], [], {}, [], []
    for k, value in params.items():
        if not isinstance(value, torch.Tensor):
            name = _SCALAR_NAMES.get(k)
            if name is None:
                name = _SCALAR_NAMES[k] = abi.name("param_value", k)
            scalars.append((name, value))
            continue
        try:
            full = torch.broadcast_shapes(value.shape, shape)
        except RuntimeError:
            raise ValueError(f"parameter {k!r} has shape {tuple(value.shape)}, which does not "
                             f"broadcast to the neuron shape {tuple(shape)}") from None
        if len(full) > len(shape):
            raise ValueError(f"parameter {k!r} has more dimensions than the neuron shape "
                             f"{tuple(shape)}")
        value = value.to(compute)
        if value.numel() == 1:
            kinds[k] = "shared"
            tensors.append(value.reshape(1))
        else:
            kinds[k] = "neuron"
            tensors.append(value.expand(shape).reshape(N).contiguous())
        tensor_params.append(k)
        if value.requires_grad:
            learnable.append(k)
    return scalars, tensor_params, kinds, tensors, learnable


def plan_for(module, target, dtype, kinds, learnable, needs_grad, tensor_params, scalars,
             recurrent=False):
    """The plan of a call of ``module`` (from the cache while nothing it depends on
    changes); ``recurrent``: a recurrent layer's kernels."""
    key = (module.model, module.surrogate_function.key(), module.detach_reset,
           module.record, target.name, dtype, tuple(dict(kinds).items()),
           tuple(learnable), needs_grad, tuple(tensor_params), tuple(scalars), recurrent)

    def build():
        cfg = make_config(module.model, surrogate=module.surrogate_function,
                          detach_reset=module.detach_reset, record=module.record,
                          save=needs_grad, learnable=tuple(learnable) if needs_grad else (),
                          param_kinds=tuple(dict(kinds).items()), recurrent=recurrent)
        values = list(scalars) + list(module.surrogate_function.kernel_values().items())
        return Plan(model=module.model, target=target, dtype=dtype, cfg=cfg,
                    scalars=tuple(values), tensor_params=tuple(tensor_params))
    return PLANS.get(key, build)


@dataclass
class CallInputs:
    """A kernel call's inputs, flattened: what :func:`run_kernels` and a recurrent layer's
    call (:mod:`neurogen.recurrent`) both pass to their plans."""
    T: int
    N: int
    dtype: str                  # the tensors' dtype name
    compute: torch.dtype        # the parameters' (compute) dtype
    scalars: list
    tensor_params: list
    kinds: dict
    tensors: list               # the parameter tensors, as the kernels read them
    learnable: list             # (empty unless the call needs a backward)
    needs_grad: bool
    inits: list                 # the initial states [N], contiguous
    x2d: torch.Tensor           # [T, N], contiguous


def call_inputs(model, x_seq, states, params, others_need_grad=False) -> CallInputs:
    """The flattened inputs of a call of ``model`` on ``x_seq`` ``[T, *shape]``;
    ``others_need_grad``: a tensor besides these (a recurrent weight) wants a gradient."""
    T, shape = x_seq.shape[0], x_seq.shape[1:]
    N = math.prod(shape)
    dtype = dtypes.NAMES[x_seq.dtype]
    compute = dtypes.compute_dtype(dtype)
    scalars, tensor_params, kinds, tensors, learnable = classify(params, shape, compute)
    needs_grad = torch.is_grad_enabled() and (
        x_seq.requires_grad or bool(learnable) or others_need_grad
        or any(s.requires_grad for s in states.values()))
    inits = [as_shape(states[s], (N,)).contiguous() for s in model.state_names]
    return CallInputs(T, N, dtype, compute, scalars, tensor_params, kinds, tensors,
                      learnable if needs_grad else [], needs_grad, inits,
                      as_shape(x_seq, (T, N)).contiguous())


def call_outputs(model, record, out, x_shape):
    """``(output_seq, {recorded state: its values}, {state: final})`` shaped like the
    input, from a kernel call's flat outputs ``[output, *recorded, *finals]``."""
    n_rec = len(record)
    seqs = {s: as_shape(q, x_shape) for s, q in zip(record, out[1:1 + n_rec])}
    finals = out[1 + n_rec:1 + n_rec + len(model.state_names)]
    finals = {s: as_shape(f, x_shape[1:]) for s, f in zip(model.state_names, finals)}
    return as_shape(out[0], x_shape), seqs, finals


def run_kernels(target, module, x_seq, states, params):
    """A multi-step call of ``module`` on ``target``'s kernels: ``(output_seq, {recorded
    state: its values}, {state: final})`` shaped like the input."""
    c = call_inputs(module.model, x_seq, states, params)
    out, plan = autograd.multi_step(module, target, c.dtype, c.kinds, c.learnable,
                                    c.needs_grad, c.tensor_params, c.scalars, c.x2d,
                                    c.inits + c.tensors)
    if plan is not None:  # (the module's fast path for its next call starts from it)
        module.__dict__["_last_plan"] = plan
    return call_outputs(module.model, module.record, out, x_seq.shape)


def as_shape(t, shape):
    """``t.reshape(shape)``, or ``t`` itself when it has that shape already: a reshape to
    the same shape still adds a view node that autograd runs in every backward."""
    return t if t.shape == tuple(shape) else t.reshape(shape)


__all__ = ["Plan", "PLANS", "classify", "plan_for", "run_kernels", "call_inputs",
           "call_outputs", "CallInputs", "as_shape"]

from . import autograd  # noqa: E402  (it imports this module's plan cache)
