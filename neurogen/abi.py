"""The argument list of a kernel, built once from the model, the kernel kind and the
configuration: the only place where argument names are spelled.

Each :class:`Arg` has a ``group`` (what it is: the input, an initial state, a
parameter...) and a ``key`` (which state, parameter or saved value). Lowering names
arrays through :func:`name`, launchers bind tensors by ``(group, key)``, and every
target prints the same list, so the CUDA launch, the C++ call and the emulated call
cannot disagree.
"""
from dataclasses import dataclass
from typing import Tuple

# group: (role, dtype) -- role in/out: a pointer; scalar: a compute value by value;
# int32/int64: an index. dtype io: the tensors' type; compute: float/double.
GROUPS = {
    "x": ("in", "io"), "init": ("in", "io"), "param": ("in", "compute"),
    "param_value": ("scalar", "compute"), "surrogate": ("scalar", "compute"),
    "spike": ("out", "io"), "seq": ("out", "io"), "final": ("out", "io"),
    "saved_out": ("out", "io"), "grad_spike": ("in", "io"), "grad_seq": ("in", "io"),
    "grad_final": ("in", "io"), "saved": ("in", "io"), "grad_x": ("out", "io"),
    "grad_init": ("out", "io"), "grad_param": ("out", "compute"),
    "T": ("int32", "index"), "N": ("int64", "index"),
    # recurrent kernels (RecurrentLayer): the weight [H, H] (the forward reads it
    # transposed), the previous call's last output, the total input the backward reads
    "rec_weight": ("in", "compute"), "rec_weight_t": ("in", "compute"),
    "rec_out0": ("in", "io"), "rec_input": ("out", "io"), "H": ("int64", "index"),
}
# Pointer groups a caller may bind to the same array: the backward may write ``grad_x``
# over one of its saved arrays (autograd.saved_for_grad_x: the graph is freed after the
# backward, so nothing reads them again). Safe because a backward reads the saved values
# of step t (at t, or at t + 1 one step ahead) before it writes grad_x[t], and never reads
# a later step's; these pointers are declared without ``__restrict__``.
MAY_ALIAS = ("grad_x", "saved")
_PREFIX = {"x": "x_seq", "init": "init_", "param": "p_", "param_value": "p_",
           "surrogate": "", "spike": "spike_seq", "seq": "ng_seq_", "final": "final_",
           "saved_out": "saved_", "saved": "saved_", "grad_spike": "grad_spike_seq",
           "grad_seq": "ng_grad_seq_", "grad_final": "grad_final_", "grad_x": "grad_x_seq",
           "grad_init": "grad_init_", "grad_param": "grad_p_", "T": "ng_T", "N": "ng_N",
           "rec_weight": "ng_W", "rec_weight_t": "ng_WT", "rec_out0": "ng_out0",
           "rec_input": "ng_xrec", "H": "ng_H"}


@dataclass(frozen=True)
class Arg:
    """One kernel argument. ``role``: in/out (pointer), scalar, int32, int64; ``dtype``:
    io (the tensors' dtype), compute (float/double) or index."""
    name: str
    role: str
    dtype: str
    group: str
    key: str = ""


def name(group: str, key: str = "") -> str:
    """The argument name of ``(group, key)``: ``("init", "v")`` is ``init_v``."""
    prefix = _PREFIX[group]
    return prefix + key if prefix.endswith("_") or not prefix else prefix


def saved_key(symbol) -> str:
    """The key of a saved value: its symbol's name (``ng_h_v``: ``v`` after charge; a
    state's value before the step: the state's name). Distinct for every value, since no
    model name may start with ``ng_``."""
    return symbol.name


def arg(group: str, key: str = "") -> Arg:
    role, dtype = GROUPS[group]
    return Arg(name(group, key), role, dtype, group, key)


def kernel_args(model, kind: str, cfg, bw) -> Tuple[Arg, ...]:
    """The ordered arguments of the ``forward`` or ``backward`` kernel of ``model`` with
    configuration ``cfg`` and derived backward ``bw``."""
    states = model.state_names
    saved = [saved_key(y) for y in bw.saved]
    params = [arg("param_value" if cfg.kind_of(k) == "scalar" else "param", k)
              for k in model.param_names]
    rec = getattr(cfg, "recurrent", False)
    if kind == "forward":
        out = [arg("x")] + [arg("init", s) for s in states] + params + [arg("spike")]
        out += [arg("seq", s) for s in cfg.record]
        out += [arg("final", s) for s in states]
        out += [arg("saved_out", k) for k in saved] if cfg.save else []
        if rec:
            out += [arg("rec_weight_t"), arg("rec_out0")]
            out += [arg("rec_input")] if cfg.save and bw.needs_x else []
    elif kind == "backward":
        params += [arg("surrogate", k) for k in cfg.surrogate.kernel_values()]
        out = [arg("grad_spike")] + [arg("grad_seq", s) for s in cfg.grad_record]
        out += [arg("grad_final", s) for s in states] + [arg("saved", k) for k in saved]
        out += [arg("x")] if bw.needs_x else []
        out += [arg("init", s) for s in bw.needs_init]
        out += params + [arg("grad_x")] + [arg("grad_init", s) for s in states]
        out += [arg("grad_param", k) for k in cfg.learnable]
        out += [arg("rec_weight")] if rec else []
    else:
        raise ValueError(f"kernel kind must be 'forward' or 'backward', not {kind!r}")
    return tuple(out + [arg("T"), arg("N")] + ([arg("H")] if rec else []))


__all__ = ["Arg", "GROUPS", "MAY_ALIAS", "arg", "name", "saved_key", "kernel_args"]
