"""The Target interface, and what every kernel target shares: sources made once per
model and configuration, compiled kernels held in one cache per target, arguments
packed in the ABI's order (:mod:`neurogen.abi`).

A :class:`Target` runs a multi-step call of a module. A :class:`KernelTarget` does so with
generated kernels: it renders a :class:`neurogen.ir.KernelIR` to source text with its
own printer and template (:meth:`~KernelTarget.render`), compiles it
(:meth:`~KernelTarget.compile`, returning a :class:`Kernel`) and launches it
(:meth:`~KernelTarget.launch`); :mod:`neurogen.autograd` wires the forward and backward
kernels into autograd for all of them. A new target is a subclass registered with
:func:`neurogen.targets.register`.
"""
from dataclasses import dataclass, field
from typing import Dict, Optional, Tuple

import torch

from .. import cache
from ..errors import no_storage
from ..ir import KernelIR


class Target:
    """A place where a module's multi-step call runs.

    ``name`` is the ``backend=`` value (``aliases`` too); ``auto_rank`` orders the
    targets ``backend="auto"`` tries (None: never chosen by "auto"); ``dtypes`` names
    the tensor dtypes it runs (``"float32"``...).
    """

    name = ""
    aliases: Tuple[str, ...] = ()
    auto_rank: Optional[int] = None
    dtypes: Tuple[str, ...] = ("float32", "float64", "float16", "bfloat16")

    def unavailable(self) -> Optional[str]:
        """Why this target cannot run on this machine (a missing package, compiler or
        device), or None when it can."""
        return None

    def check(self, x) -> None:
        """Raise a typed error naming the problem when ``x`` cannot run here (its device
        or dtype), for a module that asked for this target by name."""

    def auto_refusal(self, x) -> Optional[str]:
        """For ``backend="auto"``: None to take ``x``; ``""`` to pass it on silently (not
        this target's device); a warning text to pass it on loudly."""
        return None

    def auto_key(self):
        """What :meth:`auto_refusal` depends on besides the tensor's device type and dtype
        (e.g. ``$CXX``), cheap to read: "auto" decides again when it changes."""
        return None

    def run(self, module, x_seq, states, params):
        """``(output_seq, {recorded state: its values}, {state: final value})`` of
        ``module`` on ``x_seq`` ``[T, *shape]`` from ``states`` with parameter values
        ``params``."""
        raise NotImplementedError

    def __repr__(self):
        return f"<neurogen target {self.name!r}>"


@dataclass(frozen=True)
class Kernel:
    """A compiled kernel: the callable, its IR, its source text and what its target's
    launcher needs to know about it (``launch``: e.g. the C++ kernels' block layout)."""
    fn: object
    ir: KernelIR
    source: str
    launch: Dict[str, object] = field(default_factory=dict)


class KernelTarget(Target):
    """A target that runs generated forward and backward kernels."""

    def __init__(self):
        self._sources = cache.Memory(f"{self.name} sources", weak=True)
        self._kernels = cache.Memory(f"{self.name} kernels", weak=True)

    # ---- what a subclass provides --------------------------------------------------
    def render(self, ir: KernelIR) -> str:
        """The source text of ``ir`` in this target's language (deterministic)."""
        raise NotImplementedError

    def compile(self, ir: KernelIR, source: str, device) -> Kernel:
        """Compile ``source`` (through this target's cache) into a :class:`Kernel`."""
        raise NotImplementedError

    def launch(self, kernel: Kernel, packed, n: int, T: int, device) -> None:
        """Run ``kernel`` over ``n`` neurons and ``T`` steps; ``packed`` is the ABI's
        argument list as ``[(kind, value)]`` (:class:`ArgPacker`)."""
        raise NotImplementedError

    def launch_recurrent(self, kernel: Kernel, packed, n: int, T: int, H: int, device) -> None:
        """Run a recurrent layer's kernel (``kernel.ir.recurrent``) over ``n // H``
        sequences of ``H`` neurons that exchange values every step."""
        raise NotImplementedError(f"the {self.name!r} target has no recurrent kernels; run "
                                  "the layer with backend='cpu', 'cuda' or 'torch'")

    def kernel_key(self, device):
        """What besides the source distinguishes compiled kernels: the device, the
        compiler... (None: nothing)."""
        return None

    def packer(self, args, fixed: Dict[str, float], compute: str):
        """What turns a call's named values into :meth:`launch`'s argument list (default:
        an :class:`ArgPacker`, pointers and converted scalars in ABI order)."""
        return ArgPacker(args, fixed, compute)

    # ---- shared ---------------------------------------------------------------------
    def source(self, model, kind: str, dtype: str, cfg) -> Tuple[KernelIR, str]:
        """``(ir, source text)`` of one kernel, made once per model and configuration."""
        def build():
            from ..lower import lower
            ir = lower(model, kind, dtype, cfg)
            return ir, self.render(ir)
        return self._sources.get((model, kind, dtype, cfg), build)

    def kernel(self, model, kind: str, dtype: str, cfg, device) -> Kernel:
        """The compiled kernel, from this process's cache or compiled now."""
        def build():
            ir, text = self.source(model, kind, dtype, cfg)
            return self.compile(ir, text, device)
        return self._kernels.get((model, kind, dtype, cfg, self.kernel_key(device)), build)

    def run(self, module, x_seq, states, params):
        from ..plan import run_kernels
        return run_kernels(self, module, x_seq, states, params)


class ArgPacker:
    """Turns named values into a kernel's argument list, ``[(kind, value)]`` in ABI order
    with kind one of ptr, f32, f64, i32, i64: the single place that does so; every
    launcher converts these pairs. Built once per kernel and plan: the values in
    ``fixed`` (a plan's scalar parameters) are converted here, so a call only reads the
    tensors' pointers and the sizes (PERF_NOTES.md 21)."""

    def __init__(self, args, fixed: Dict[str, float], compute: str):
        scalar = "f32" if compute == "float" else "f64"
        kinds = {"in": "ptr", "out": "ptr", "scalar": scalar, "int32": "i32"}
        self.kinds = [kinds.get(a.role, "i64") for a in args]
        self.template = [None] * len(args)
        self.slots = []  # (position, name, conversion) of the values given per call
        for i, (a, kind) in enumerate(zip(args, self.kinds)):
            convert = {"ptr": None, scalar: float}.get(kind, int)
            if kind == scalar and a.name in fixed:
                self.template[i] = float(fixed[a.name])
            else:
                self.slots.append((i, a.name, convert))

    def __call__(self, values):
        vals = self.template.copy()
        try:
            for i, name, convert in self.slots:
                v = values[name]
                vals[i] = v.data_ptr() if convert is None else convert(v)
        except RuntimeError:
            check_storage(name, v)
            raise
        return list(zip(self.kinds, vals))


def check_storage(name: str, t):
    """After a failed ``data_ptr()``: raise :class:`neurogen.errors.UnsupportedTransformError`
    when ``t`` is a tensor without storage of its own (a functorch wrapper), naming the
    kernel argument ``name``; return otherwise (the caller re-raises the original error)."""
    if not torch.is_tensor(t):
        return
    try:
        t.untyped_storage()
    except (RuntimeError, NotImplementedError):
        raise no_storage(name, t) from None


__all__ = ["Target", "KernelTarget", "Kernel", "ArgPacker", "check_storage"]
