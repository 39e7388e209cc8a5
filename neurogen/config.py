"""What besides the model and the dtype changes a kernel's code (:class:`KernelConfig`),
validated once (:func:`make_config`), and the derivation each configuration needs
(:func:`derivation`, memoised: the sympy work is done once per model and setting)."""
from dataclasses import dataclass, field
from typing import Tuple

from . import cache
from . import surrogate as sg
from .derive import Backward, derive_backward
from .spec.model import NeuronModel
from .stages import Step

PARAM_KINDS = ("scalar", "neuron", "shared")


@dataclass(frozen=True)
class KernelConfig:
    """Everything besides the model and dtype that changes a kernel's code.

    ``param_kinds`` maps each parameter to ``scalar`` (a by-value argument),
    ``neuron`` (a pointer indexed per neuron) or ``shared`` (a pointer to one
    value, e.g. a learnable scalar, read without a host sync).
    """
    surrogate: sg.Surrogate = field(default_factory=sg.Sigmoid)
    detach_reset: bool = False
    record: Tuple[str, ...] = ()        # states whose per-step values the forward stores
    save: bool = True
    learnable: Tuple[str, ...] = ()
    param_kinds: Tuple[Tuple[str, str], ...] = ()
    grad_record: Tuple[str, ...] = ()   # recorded states the backward gets a gradient of
    # states whose final gradient the backward is given as None (zero): with the states
    # whose gradient then stays zero at every step, their gradient chains are left out
    zero_grads: Tuple[str, ...] = ()
    # a recurrent layer's kernels (RecurrentLayer): the input of each step adds the
    # recurrent product of the previous step's outputs (ng_rec, computed by the template)
    recurrent: bool = False

    def key(self) -> str:
        return (f"surrogate={self.surrogate.structure()};detach={self.detach_reset};"
                f"record={','.join(self.record)};save={self.save};"
                f"learn={','.join(self.learnable)};params={self.param_kinds};"
                f"grecord={','.join(self.grad_record)}"
                + (f";zero={','.join(self.zero_grads)}" if self.zero_grads else "")
                + (";recurrent" if self.recurrent else ""))

    @property
    def store_v_seq(self) -> bool:
        """Whether any state is recorded (the first one with ``store_v_seq=True``)."""
        return bool(self.record)

    def kind_of(self, param: str) -> str:
        return dict(self.param_kinds).get(param, "scalar")


def make_config(model: NeuronModel, **options) -> KernelConfig:
    """Build and check a :class:`KernelConfig` for ``model`` from keyword options."""
    kinds = dict(options.pop("param_kinds", ()) or ())
    learnable = tuple(options.pop("learnable", ()) or ())
    for k, kind in kinds.items():
        if k not in model.param_names:
            raise ValueError(f"param_kinds names unknown parameter {k!r}; "
                             f"parameters: {list(model.param_names)}")
        if kind not in PARAM_KINDS:
            raise ValueError(f"parameter kind {kind!r} must be one of {PARAM_KINDS}")
    for k in learnable:
        if k not in model.param_names:
            raise ValueError(f"learnable names unknown parameter {k!r}")
        if kinds.get(k, "scalar") == "scalar":
            kinds[k] = "shared"  # a learnable value lives in a tensor
    record = check_record(model, options.pop("record", ()), options.pop("store_v_seq", False))
    # (the backward's own setting: the gradients it reads; a plan sets it per call)
    grad_record = check_record(model, options.pop("grad_record", ()),
                               options.pop("grad_v_seq", False))
    zero_grads = check_record(model, options.pop("zero_grads", ()))
    surrogate = options.pop("surrogate", None) or options.pop("surrogate_function", None)
    if surrogate is None:
        surrogate = sg.Sigmoid()
    if not isinstance(surrogate, sg.Surrogate):
        raise TypeError(f"surrogate must be a neurogen.surrogate.Surrogate, "
                        f"got {type(surrogate).__name__}")
    # hyper-parameters are kernel arguments, not code: one configuration for every value
    surrogate = surrogate.canonical() if isinstance(surrogate, sg.Custom) else type(surrogate)()
    cfg = KernelConfig(surrogate=surrogate,
                       param_kinds=tuple((k, kinds[k]) for k in model.param_names if k in kinds),
                       learnable=tuple(k for k in model.param_names if k in learnable),
                       record=record, grad_record=grad_record, zero_grads=zero_grads,
                       **options)
    return cfg


def check_record(model: NeuronModel, record, store_v_seq=False) -> Tuple[str, ...]:
    """The states to record, in the model's order, checked (``store_v_seq=True`` adds the
    first state)."""
    from .errors import SpecError
    if isinstance(record, str):
        record = (record,)
    try:
        names = list(record or ())
    except TypeError:
        raise SpecError(f"record must be a tuple of state names such as ('v', 'w'), got "
                        f"{type(record).__name__}") from None
    for s in names:
        if not isinstance(s, str) or s not in model.state_names:
            raise SpecError(f"record names {s!r}, which is not a state of {model.name!r}; its "
                            f"states are {list(model.state_names)}")
    if store_v_seq:
        names.append(model.v_name)
    if "v" in names and model.v_name != "v":
        raise SpecError(f"state 'v' of {model.name!r} is not its firing state "
                        f"({model.v_name!r}), whose values node.v_seq holds: recording 'v' "
                        "would need the same attribute; rename the state")
    return tuple(s for s in model.state_names if s in names)



@cache.memoize("derivations", maxsize=256)
def derivation(model: NeuronModel, surrogate: sg.Surrogate, detach_reset: bool,
               learnable: Tuple[str, ...]) -> Tuple[Step, Backward]:
    """The step and its derived backward (done once per model and setting)."""
    step = Step(model)
    return step, derive_backward(step, surrogate.kernel_derivative(), detach_reset, learnable)


def backward_of(model: NeuronModel, cfg: KernelConfig) -> Backward:
    return derivation(model, cfg.surrogate, cfg.detach_reset, cfg.learnable)[1]


__all__ = ["KernelConfig", "make_config", "check_record", "derivation", "backward_of",
           "PARAM_KINDS"]
