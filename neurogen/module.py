"""`NeuronModule`: the torch module that runs a `NeuronModel` (SpikingJelly-style)."""
import inspect
import math
from typing import Optional

import torch
from torch import nn

from . import buffers, fastpath, reference, targets
from . import surrogate as sg
from .autograd import compiling, constant_result
from .config import check_record
from .spec.model import NeuronModel


_COUNTER_LIMIT = {torch.bfloat16: 256, torch.float16: 2048}


class NeuronModule(nn.Module):
    """Runs ``model`` on ``[*shape]`` (``step_mode='s'``) or ``[T, *shape]`` (``'m'``) input.

    Keyword arguments named like the model's parameters override them: a float
    (fixed), a tensor broadcastable to the neuron shape (per-neuron, fixed) or
    an ``nn.Parameter`` (learnable). States are attributes (``node.v``) and
    persist across calls until :meth:`reset`. ``record=("v", "w")`` keeps each named
    state's values after every step as ``node.v_seq``, ``node.w_seq`` (``[T, *shape]``,
    differentiable); ``store_v_seq=True`` records the firing state. The module returns
    the model's output (the spikes unless the model declares ``output=``).

    >>> import neurogen as ng, torch
    >>> lif = ng.NeuronModel("lif", states={"v": 0.0}, params={"tau": 2.0},
    ...                      charge={"v": "v + (x - v) / tau"}, fire="v - 1",
    ...                      reset={"v": "(1 - spike_d) * v"})
    >>> node = lif.module(step_mode="m", backend="torch")
    >>> node(torch.full((3, 2), 1.5)).tolist()
    [[0.0, 0.0], [1.0, 1.0], [0.0, 0.0]]
    """

    def __init__(self, model: NeuronModel, surrogate_function: Optional[sg.Surrogate] = None,
                 detach_reset: bool = False, step_mode: str = "s", backend: str = "auto",
                 store_v_seq: bool = False, record=(), **params):
        super().__init__()
        if not isinstance(model, NeuronModel):
            raise TypeError(f"model must be a NeuronModel, got {type(model).__name__}")
        self.__dict__["_memories"] = {}
        self.__dict__["_gen"] = 0  # the configuration's generation (neurogen.fastpath)
        self.model = model
        self.surrogate_function = surrogate_function if surrogate_function is not None else sg.Sigmoid()
        if not isinstance(self.surrogate_function, sg.Surrogate):
            raise TypeError("surrogate_function must be a neurogen.surrogate.Surrogate such as "
                            f"ng.surrogate.Sigmoid(), got {type(self.surrogate_function).__name__}")
        self.detach_reset = bool(detach_reset)
        self.step_mode = step_mode
        self.backend = backend
        self.__dict__["_record"] = check_record(model, record, store_v_seq)
        unknown = set(params) - set(model.param_names)
        if unknown:
            raise TypeError(f"{model.name} has no parameter(s) {sorted(unknown)}; "
                            f"its parameters are {list(model.param_names)}")
        taken = set(MODULE_OPTIONS) | {"model", "v_seq", "training"} | {
            f"{s}_seq" for s in model.state_names}
        for k in model.param_names + model.state_names:
            if hasattr(type(self), k) or k in taken:
                what = "parameter" if k in model.param_names else "state"
                raise ValueError(f"{what} name {k!r} clashes with a module attribute or "
                                 "option; rename it in the model")
        for k in model.param_names:
            self.set_param(k, params.get(k, model.defaults[k]))
        self.reset()

    # ---- configuration ---------------------------------------------------------------
    @property
    def step_mode(self):
        return self._step_mode

    @step_mode.setter
    def step_mode(self, mode):
        if mode not in ("s", "m"):
            raise ValueError(f"step_mode must be 's' (single step) or 'm' (multi step), not {mode!r}")
        self.__dict__["_step_mode"] = mode

    @property
    def backend(self):
        return self._backend

    @backend.setter
    def backend(self, name):
        if not isinstance(name, str):
            raise TypeError(f"backend must be a target name such as 'cpu', got "
                            f"{type(name).__name__}")
        self.__dict__["_backend"] = targets.canonical(name)

    @property
    def record(self):
        """The recorded states (``node.<state>_seq`` after a multi-step call)."""
        return self._record

    @record.setter
    def record(self, names):
        self.__dict__["_record"] = check_record(self.model, names)
        self.reset_records()

    @property
    def store_v_seq(self):
        """Whether the firing state is recorded (``node.v_seq``)."""
        return self.model.v_name in self._record

    @store_v_seq.setter
    def store_v_seq(self, on):
        rest = tuple(s for s in self._record if s != self.model.v_name)
        self.record = rest + ((self.model.v_name,) if on else ())

    def set_param(self, name: str, value):
        """Set parameter ``name`` to a float, a tensor, or an ``nn.Parameter``."""
        if name not in self.model.param_names:
            raise KeyError(f"{self.model.name} has no parameter {name!r}")
        # every check before the old value goes: a refused value leaves the old one
        if isinstance(value, torch.Tensor) and not isinstance(value, nn.Parameter):
            if value.is_complex() or not value.is_floating_point():
                raise TypeError(f"parameter {name!r} must be a floating tensor, got {value.dtype}")
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            if not math.isfinite(value):
                raise ValueError(f"parameter {name!r} must be finite, got {value}")
        elif not isinstance(value, nn.Parameter):
            raise TypeError(f"parameter {name!r} must be a float, a tensor or an nn.Parameter, "
                            f"got {type(value).__name__}")
        if name == self.model.refractory:
            self._check_refractory(name, value)
        self._changed()
        for store in (self._parameters, self._buffers, self.__dict__):
            store.pop(name, None)
        if isinstance(value, nn.Parameter):
            self.register_parameter(name, value)
        elif isinstance(value, torch.Tensor):
            self.register_buffer(name, value)
        else:
            self.__dict__[name] = float(value)

    def _check_refractory(self, name, value):
        """The parameter holding the refractory period: whole steps >= 0, not learnable."""
        if isinstance(value, nn.Parameter) and value.requires_grad:
            raise ValueError(f"parameter {name!r} is the refractory period (whole steps) and "
                             "cannot be learnable; pass a float or a tensor")
        v = value.detach() if isinstance(value, torch.Tensor) else torch.tensor(value)
        if not bool(((v == v.round()) & (v >= 0)).all()):
            raise ValueError(f"parameter {name!r} is the refractory period and must be a whole "
                             f"number of steps >= 0, got {value}")
        self.__dict__["_refractory_max"] = float(v.max()) if v.numel() else 0.0

    def _check_counter(self, dtype):
        """The refractory counter is a state of the input's dtype: a half type counts whole
        steps exactly up to 2^(mantissa bits + 1) only (bfloat16 256, float16 2048)."""
        k = self.model.refractory
        k = self.__dict__.get("_refractory_max", 0.0) if isinstance(k, str) else k
        limit = _COUNTER_LIMIT.get(dtype)
        if limit is not None and k > limit:
            raise ValueError(f"a refractory period of {k:g} steps cannot be counted in {dtype} "
                             f"(whole numbers are exact up to {limit}); run float32 input or "
                             "a shorter period")

    def param_values(self):
        return {k: getattr(self, k) for k in self.model.param_names}

    # ---- states ---------------------------------------------------------------------
    def __getattr__(self, name):
        memories = self.__dict__.get("_memories", {})
        if name in memories:
            return memories[name]
        return super().__getattr__(name)

    def _changed(self):
        """The configuration changed: the fast path's runner no longer applies."""
        self.__dict__["_gen"] = self.__dict__.get("_gen", 0) + 1
        self.__dict__.pop("_runner", None)

    def __setattr__(self, name, value):
        self._changed()
        if name in self.__dict__.get("_memories", {}):
            self._memories[name] = value
        elif name in getattr(self.__dict__.get("model"), "param_names", ()):
            self.set_param(name, value)  # node.tau = ...: as tau=... at construction
        else:
            super().__setattr__(name, value)

    def reset(self):
        """Return every state to its initial value and forget the recorded values."""
        for s in self.model.state_names:
            self._memories[s] = None
        self.reset_records()

    def reset_records(self):
        """Forget the recorded values."""
        for name in self.__dict__.get("_seq_attrs", ()):
            if name not in self.model.state_names:
                self._memories.pop(name, None)
        self.__dict__["_seq_attrs"] = self._seq_names()
        for name in self._seq_names():
            self._memories[name] = None
        self.__dict__["_seq_lists"] = {s: [] for s in self.record}

    def _seq_names(self):
        """The attributes of the recorded values (``v_seq`` always exists)."""
        return ["v_seq"] + [f"{s}_seq" for s in self.record if f"{s}_seq" != "v_seq"]

    def detach(self):
        """Cut the states from the autograd graph (truncated BPTT; SJ's ``detach_net``)."""
        self._changed()
        self._memories.update(_detached(self._memories))
        self.__dict__["_seq_lists"] = {s: [v.detach() for v in lst]
                                       for s, lst in self._seq_lists.items()}

    def _apply(self, fn, *args, **kwargs):
        # .to() / .double() / .cuda() move the states too, as they do in SpikingJelly
        self._changed()
        for k, v in self._memories.items():
            if isinstance(v, torch.Tensor):
                self._memories[k] = fn(v)
        self.__dict__["_seq_lists"] = {s: [fn(v) for v in lst]
                                       for s, lst in self._seq_lists.items()}
        return super()._apply(fn, *args, **kwargs)

    def __setstate__(self, state):
        # a module pickled before record= existed (issue 19): store_v_seq and one list
        if "_record" not in state:
            v_name = state["model"].v_name
            state["_record"] = (v_name,) if state.pop("store_v_seq", False) else ()
            v_list = state.pop("_v_list", [])
            state["_seq_lists"] = {s: (v_list if s == v_name else [])
                                   for s in state["_record"]}
            state["_seq_attrs"] = ["v_seq"]
        state.setdefault("_gen", 0)
        super().__setstate__(state)

    def __getstate__(self):
        # deepcopy/pickle: states carry no autograd graph (torch cannot copy a non-leaf tensor)
        state = super().__getstate__()
        state.pop("_runner", None)  # (kernel handles: made again after loading)
        state["_memories"] = _detached(state["_memories"], graph_only=True)
        state["_seq_lists"] = {s: [v if v.grad_fn is None else v.detach() for v in lst]
                               for s, lst in state["_seq_lists"].items()}
        return state

    def _initial_states(self, like: torch.Tensor, shape, params):
        # the initial values of a float-only parameter set, evaluated once per module and
        # parameter values rather than on every call after reset() (PERF_NOTES.md 21)
        # (the signs keep 0.0 and -0.0 apart)
        key = None
        if all(type(v) is float for v in params.values()):
            key = tuple(params.values()) + tuple(math.copysign(1.0, v) for v in params.values())
            memo = self.__dict__.get("_initial_memo")
            if memo is not None and memo[0] == key:
                return {s: _full(shape, v, like) for s, v in memo[1].items()}
        params = {k: (v.to(like.dtype) if isinstance(v, torch.Tensor) else v)
                  for k, v in params.items()}
        values = {s: reference.evaluate(self.model.initial[s], params, like)
                  for s in self.model.state_names}
        if key is not None and all(type(v) in (float, int) for v in values.values()):
            self.__dict__["_initial_memo"] = (key, values)
        out = {}
        for s, value in values.items():
            if isinstance(value, torch.Tensor):
                out[s] = torch.zeros(shape, dtype=like.dtype, device=like.device) + value
            else:
                out[s] = _full(shape, value, like)
        return out

    def _states_for(self, x_seq, params):
        shape = x_seq.shape[1:]
        current = {s: self._memories[s] for s in self.model.state_names}
        if any(v is None for v in current.values()):
            init = self._initial_states(x_seq, shape, params)
            current = {s: (init[s] if v is None else v) for s, v in current.items()}
        for s, v in current.items():
            current[s] = (_full(shape, v, x_seq) if not isinstance(v, torch.Tensor)
                          else carried(v, f"state {s!r}", shape, x_seq, "module"))
        return current

    # ---- running --------------------------------------------------------------------
    def forward(self, x: torch.Tensor):
        if "_runner" in self.__dict__ and not compiling():
            out = fastpath.try_call(self, x)  # the same configuration as the last call
            if out is not None:
                return out
        if self.step_mode == "s":
            return self.single_step_forward(x)
        return self.multi_step_forward(x)

    def single_step_forward(self, x: torch.Tensor):
        _check_input(x, min_dim=0)
        spike = self.multi_step_forward(x.unsqueeze(0), _single=True)
        return spike[0]

    def multi_step_forward(self, x_seq: torch.Tensor, _single: bool = False):
        _check_input(x_seq, min_dim=1)
        params = self.param_values()
        self._check_param_devices(x_seq, params)
        if self.model.refractory is not None:
            self._check_counter(x_seq.dtype)
        before = [self._memories[s] for s in self.model.state_names]
        states = self._states_for(x_seq, params)
        if x_seq.shape[0] == 0:
            raise ValueError("x_seq has T = 0 time steps; give at least one step")
        if compiling():
            target = targets.get(_target_when_compiling(self, x_seq))
        else:
            target = targets.resolve(self.backend, x_seq)
        out_seq, seqs, finals = target.run(self, x_seq, states, params)
        last = self.__dict__.pop("_last_plan", None)
        self.__dict__.pop("_runner", None)  # (a runner holds for the states its calls made)
        if last is not None and not compiling() and _single == (self.step_mode == "s"):
            # the next call's fast path (for calls through forward() in this step mode)
            runner = fastpath.build(self, x_seq[0] if _single else x_seq, target, last,
                                    x_seq.shape[1:], before, params)
            if runner is not None:
                self.__dict__["_runner"] = runner
        for s in self.model.state_names:
            self._memories[s] = finals[s]
        for s in self.record:
            if _single:
                self._seq_lists[s].append(seqs[s][0])
                seq = torch.stack(self._seq_lists[s])
            else:
                seq = seqs[s]
            self._memories[f"{s}_seq"] = seq
            if s == self.model.v_name:
                self._memories["v_seq"] = seq
        return out_seq

    def _check_param_devices(self, x, params):
        for k, value in params.items():
            if isinstance(value, torch.Tensor) and value.device != x.device:
                raise ValueError(f"parameter {k!r} is on {value.device} but the input is on "
                                 f"{x.device}; move the module with .to(device)")

    def extra_repr(self):
        parts = [f"{k}={v if not isinstance(v, torch.Tensor) else tuple(v.shape)}"
                 for k, v in self.param_values().items()]
        parts += [f"detach_reset={self.detach_reset}", f"step_mode={self.step_mode}",
                  f"backend={self.backend}", f"record={self.record}",
                  f"surrogate_function={self.surrogate_function!r}"]
        return ", ".join(parts)



# the module's options and their defaults, read from its signature (help(model.module)
# shows them; a model parameter may not take one of these names)
MODULE_OPTIONS = {n: p.default for n, p in inspect.signature(NeuronModule.__init__).parameters
                  .items() if n not in ("self", "model") and p.kind is p.POSITIONAL_OR_KEYWORD}

def carried(value, what, shape, x, owner):
    """A tensor carried from the previous call (a state, a recurrent layer's last output)
    for a call on ``x``: of the neuron shape ``shape`` and on ``x``'s device (else a
    ValueError naming ``what`` and the fix), converted to ``x``'s dtype."""
    if value.shape != shape:
        raise ValueError(f"{what} has shape {tuple(value.shape)} but the input's neuron shape "
                         f"is {tuple(shape)}; call reset() before changing the batch or neuron "
                         "shape")
    if value.device != x.device:
        raise ValueError(f"{what} is on {value.device} but the input is on {x.device}; call "
                         f"reset() or move the {owner}")
    if not compiling() and value.is_inference() and not torch.is_inference_mode_enabled():
        # carried out of a torch.inference_mode() call into an ordinary one: its values,
        # as a normal tensor (autograd cannot save an inference tensor; the torch backend's
        # ops read it without saving it)
        value = value.clone()
    return value if value.dtype == x.dtype else value.to(x.dtype)


def _detached(memories, graph_only=False):
    """``memories`` with tensors detached (with ``graph_only``: only those inside a graph)."""
    return {k: (v.detach() if isinstance(v, torch.Tensor) and not (graph_only and v.grad_fn is None)
                else v) for k, v in memories.items()}


def _full(shape, value, like):
    """A constant initial state: shared between calls in eager mode (buffers.constant), a
    plain ``torch.full`` inside a torch.compile graph."""
    if compiling():
        return torch.full(shape, float(value), dtype=like.dtype, device=like.device)
    return buffers.constant(shape, value, like.dtype, like.device)


@constant_result
def _target_when_compiling(module, x):
    return targets.resolve(module.backend, x).name


def _check_input(x, min_dim):
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"input must be a torch.Tensor, got {type(x).__name__}")
    if x.is_complex() or not x.is_floating_point():
        raise TypeError(f"input must be a floating tensor (float32/float64/float16/bfloat16), "
                        f"got {x.dtype}; convert it with .float()")
    if x.dim() < min_dim:
        raise ValueError(f"multi-step input must be [T, *shape], got shape {tuple(x.shape)}")
