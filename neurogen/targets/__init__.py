"""Where kernels run: one :class:`~neurogen.targets.base.Target` object per place, in a
registry that replaces string comparisons of backend names.

``cpu`` (generated C++, the host compiler), ``cuda`` (generated CUDA, NVRTC through CuPy;
alias ``cupy``), ``cuda-emulated`` (the exact CUDA text run on the CPU) and ``torch``
(the equations as torch operations, autograd for the backward). A module's
``backend="auto"`` picks the first target, by ``auto_rank``, that takes the input.

>>> import neurogen as ng
>>> "cpu" in ng.targets.names() and "torch" in ng.targets.available()
True
"""
from typing import Dict, List

from .. import cache
from ..errors import BackendUnavailableError, warn_once
from .base import Kernel, KernelTarget, Target

_TARGETS: Dict[str, Target] = {}
_ALIASES: Dict[str, str] = {}
_RANKED: List[Target] = []  # the targets "auto" tries, in order
_LISTENERS: List = []
_AUTO: Dict[tuple, Target] = {}  # what "auto" chose, by device type, dtype and auto keys


class _AutoChoices:
    def forget(self):
        _AUTO.clear()


cache.register(_AutoChoices())


def register(target: Target) -> Target:
    """Make ``target`` usable as ``backend=target.name`` (and its aliases)."""
    if not isinstance(target, Target):
        raise TypeError(f"register takes a neurogen.targets.Target, got {type(target).__name__}")
    if target.name == "auto" or target.name in _ALIASES:
        raise ValueError(f"the target name {target.name!r} is taken")
    _TARGETS[target.name] = target
    for alias in target.aliases:
        _ALIASES[alias] = target.name
    _changed(target.name)
    return target


def unregister(name: str):
    target = _TARGETS.pop(name)
    for alias in target.aliases:
        _ALIASES.pop(alias, None)
    _changed(name)


def on_change(listener):
    """Call ``listener(name)`` whenever the target ``name`` is (re)registered or removed
    (the plan cache drops the plans bound to the old object)."""
    _LISTENERS.append(listener)


_GENERATION = [0]


def generation() -> int:
    """A counter bumped whenever a target is registered or removed."""
    return _GENERATION[0]


def _changed(name):
    _GENERATION[0] += 1
    _AUTO.clear()
    _RANKED[:] = sorted((t for t in _TARGETS.values() if t.auto_rank is not None),
                        key=lambda t: t.auto_rank)
    for listener in _LISTENERS:
        listener(name)


def names() -> List[str]:
    """Every registered target's name (``"auto"`` chooses among them)."""
    return list(_TARGETS)


def canonical(name: str) -> str:
    """``name`` with aliases resolved; ValueError for an unknown name."""
    if name == "auto" or name in _TARGETS:
        return name
    if name in _ALIASES:
        return _ALIASES[name]
    raise ValueError(f"backend must be one of {['auto'] + names() + sorted(_ALIASES)}, "
                     f"not {name!r}")


def get(name: str) -> Target:
    return _TARGETS[canonical(name)]


def available() -> List[str]:
    """The targets usable on this machine (their packages, compilers and devices)."""
    return [name for name, t in _TARGETS.items() if t.unavailable() is None]


def resolve(name: str, x) -> Target:
    """The target a call with input ``x`` runs on: the named one (checked against ``x``,
    with a typed error), or for ``"auto"`` the first by ``auto_rank`` that takes ``x``. A
    target passed over for a reason the user may want to fix (no CuPy for a CUDA tensor,
    no compiler, a dtype its kernels lack) is named in a one-time warning. "auto" decides
    again whenever a target's :meth:`~Target.auto_key` changes (a compiler that appears
    later is used)."""
    if name != "auto":
        target = get(name)
        target.check(x)
        return target
    key = (x.device.type, x.dtype, *[t.auto_key() for t in _RANKED])
    target = _AUTO.get(key)
    if target is None:
        target = _AUTO[key] = _auto(x)
        if len(_AUTO) > 64:
            _AUTO.clear()
    return target


def _auto(x):
    for target in _RANKED:
        why = target.auto_refusal(x)
        if why is None:
            return target
        if why:
            warn_once(why)
    raise BackendUnavailableError(f"no backend runs a tensor on {x.device} with {x.dtype}")


def render(model, target: str = "cuda", kind: str = "forward", dtype: str = "float32",
           **options) -> str:
    """The source text of one kernel of ``model`` as ``target`` renders it (``"cuda"``,
    ``"cuda-emulated"``: the same CUDA text, which it compiles between a shim and a
    launcher; ``"cpu"`` or its language's name ``"cpp"``); ``options`` are
    :class:`neurogen.config.KernelConfig` fields."""
    from ..config import make_config
    cfg = make_config(model, **options)
    target = get("cpu" if target == "cpp" else target)
    if not isinstance(target, KernelTarget):
        raise ValueError(f"the {target.name!r} target runs no generated kernels")
    return target.source(model, kind, dtype, cfg)[1]


def lowered(model, kind: str = "forward", dtype: str = "float32", **options):
    """The :class:`neurogen.ir.KernelIR` of one kernel (what every target renders)."""
    from ..config import make_config
    from ..lower import lower
    return lower(model, kind, dtype, make_config(model, **options))


def _register_builtin():
    from .cpu import CpuTarget
    from .cuda import CudaTarget
    from .emulated import EmulatedTarget
    from .torch_loop import TorchTarget
    for target in (CpuTarget(), CudaTarget(), EmulatedTarget(), TorchTarget()):
        register(target)


_register_builtin()

__all__ = ["Target", "KernelTarget", "Kernel", "register", "unregister", "names",
           "available", "get", "resolve", "canonical", "render", "lowered"]
