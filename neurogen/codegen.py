"""Code generation: spec -> derivation -> plain-data IR -> Jinja2 template -> source.

:func:`build_ir` returns a :class:`KernelIR` (strings and lists only) and
:func:`render` turns it into CUDA or C++ text. The argument list of every
kernel comes from :func:`kernel_args`, which launchers use too, so the CUDA
launch, the CPU call and the emulated CUDA call pass the same arguments.
"""
import functools
import hashlib
import re
from dataclasses import dataclass, field
from typing import Dict, List, Tuple

import jinja2
import sympy as sp

from . import surrogate as sg
from .derive import GSPIKE, SG, U, Backward, Hoister, P, Step, derive_backward
from .printer import KernelPrinter, ZeroTimes
from .spec.functions import sigmoid, sigmoid_grad
from .spec.model import NeuronModel, spike, spike_d

DTYPES = {  # name: (C type of tensors, compute type, load, store)
    "float32": ("float", "float", "value", "value"),
    "float64": ("double", "double", "value", "value"),
    "float16": ("__half", "float", "__half2float(value)", "__float2half_rn(value)"),
    "bfloat16": ("__nv_bfloat16", "float", "__bfloat162float(value)",
                 "__float2bfloat16_rn(value)"),
}
# The C++ kernels read bfloat16 as its 16 raw bits (torch's layout) and convert by hand.
CPP_DTYPES = {"float32": DTYPES["float32"], "float64": DTYPES["float64"],
              "bfloat16": ("uint16_t", "float", "ng_bf16_to_float(value)",
                           "ng_float_to_bf16(value)")}
TARGETS = ("cuda", "cpp")
KINDS = ("forward", "backward")
PARAM_KINDS = ("scalar", "neuron", "shared")
# C++ kernels: neurons per block at most, and the bytes a block's per-neuron arrays may
# take on each thread (in a scratch buffer the launcher allocates, not on the stack); the
# block size itself is chosen per call (runtime.cpu_blocks). Longer blocks mean longer
# contiguous runs per row for the prefetchers: 32768 (one block per thread at 2^16
# neurons on 2 threads) against 8192 took the Izhikevich training step from 6.47 to 6.02
# ms (PERF_NOTES.md 23). 512 KiB holds three float arrays of 32768 and stays within the
# 1-2 MiB of L2 per core of current x86 CPUs.
CPU_BLOCK = 32768
CPU_ARRAY_BUDGET = 512 << 10


def cpu_max_block(n_arrays: int, compute: str) -> int:
    """The largest block (a power of two from 256 to ``CPU_BLOCK``) whose ``n_arrays``
    per-neuron arrays of ``compute`` values fit in ``CPU_ARRAY_BUDGET``."""
    size = 8 if compute == "double" else 4
    block = CPU_BLOCK
    while block > 256 and block * size * max(n_arrays, 1) > CPU_ARRAY_BUDGET:
        block //= 2
    return block


def cpu_layout_of(source: str) -> Tuple[int, int]:
    """``(NG_BLOCK, NG_ARRAYS)`` of a C++ kernel's source: the largest block and how many
    per-neuron arrays of compute values each thread's block needs in the scratch buffer
    the launcher passes (runtime.launch_cpu)."""
    block = re.search(r"^#define NG_BLOCK (\d+)$", source, re.M)
    arrays = re.search(r"^#define NG_ARRAYS (\d+)$", source, re.M)
    if block is None or arrays is None:
        raise ValueError("not a neurogen C++ kernel source (no NG_BLOCK / NG_ARRAYS)")
    return int(block.group(1)), int(arrays.group(1))

# C math functions the C++ kernels declare (sympy's C99 printer can emit each of them;
# float kernels call the ``f`` variants)
MATH_UNARY = ("fabs", "exp", "exp2", "expm1", "log", "log10", "log2", "log1p", "sqrt",
              "cbrt", "sin", "cos", "tan", "asin", "acos", "atan", "sinh", "cosh", "tanh",
              "asinh", "acosh", "atanh", "erf", "erfc", "tgamma", "lgamma", "floor", "ceil",
              "trunc", "round")
MATH_BINARY = ("pow", "atan2", "fmod", "hypot", "fmax", "fmin", "copysign", "fdim")

_env = jinja2.Environment(
    loader=jinja2.PackageLoader("neurogen", "templates"),
    undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
    keep_trailing_newline=True)
_env.globals.update(math_unary=MATH_UNARY, math_binary=MATH_BINARY)


@dataclass(frozen=True)
class KernelConfig:
    """Everything besides the model and dtype that changes a kernel's code.

    ``param_kinds`` maps each parameter to ``scalar`` (a by-value argument),
    ``neuron`` (a pointer indexed per neuron) or ``shared`` (a pointer to one
    value, e.g. a learnable scalar, read without a host sync).
    """
    surrogate: sg.Surrogate = field(default_factory=sg.Sigmoid)
    detach_reset: bool = False
    store_v_seq: bool = False
    save: bool = True
    learnable: Tuple[str, ...] = ()
    param_kinds: Tuple[Tuple[str, str], ...] = ()
    grad_v_seq: bool = False

    def key(self) -> str:
        return (f"surrogate={self.surrogate.structure()};detach={self.detach_reset};"
                f"vseq={self.store_v_seq};save={self.save};learn={','.join(self.learnable)};"
                f"params={self.param_kinds};gvseq={self.grad_v_seq}")

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
    surrogate = options.pop("surrogate", None) or options.pop("surrogate_function", None)
    if surrogate is None:
        surrogate = sg.Sigmoid()
    if not isinstance(surrogate, sg.Surrogate):
        raise TypeError(f"surrogate must be a neurogen.surrogate.Surrogate, "
                        f"got {type(surrogate).__name__}")
    if not isinstance(surrogate, sg.Custom):
        surrogate = type(surrogate)()  # hyper-parameters are kernel arguments, not code
    cfg = KernelConfig(surrogate=surrogate,
                       param_kinds=tuple((k, kinds[k]) for k in model.param_names if k in kinds),
                       learnable=tuple(k for k in model.param_names if k in learnable),
                       **options)
    return cfg


@functools.lru_cache(maxsize=256)
def derivation(model: NeuronModel, surrogate: sg.Surrogate, detach_reset: bool,
               learnable: Tuple[str, ...]) -> Tuple[Step, Backward]:
    """The step and its derived backward (cached: sympy work is done once per config)."""
    step = Step(model)
    return step, derive_backward(step, surrogate.kernel_derivative(), detach_reset, learnable)


@dataclass(frozen=True)
class Arg:
    """One kernel argument: ``role`` is in/out (pointer), scalar, or index."""
    name: str
    role: str       # "in", "out", "scalar", "int32", "int64"
    dtype: str      # "io" (tensor dtype), "compute" (float/double) or "index"


def kernel_args(model: NeuronModel, kind: str, cfg: KernelConfig) -> List[Arg]:
    """The ordered argument list of a kernel (shared by every launcher)."""
    _, bw = derivation(model, cfg.surrogate, cfg.detach_reset, cfg.learnable)
    states = model.state_names
    params = [Arg(f"p_{k}", "scalar" if cfg.kind_of(k) == "scalar" else "in", "compute")
              for k in model.param_names]
    if kind == "backward":
        params += [Arg(name, "scalar", "compute") for name in cfg.surrogate.kernel_values()]
    if kind == "forward":
        args = [Arg("x_seq", "in", "io")] + [Arg(f"init_{s}", "in", "io") for s in states]
        args += params + [Arg("spike_seq", "out", "io")]
        args += [Arg("v_seq", "out", "io")] if cfg.store_v_seq else []
        args += [Arg(f"final_{s}", "out", "io") for s in states]
        args += [Arg(f"saved_{s}", "out", "io") for s in bw.saved] if cfg.save else []
    elif kind == "backward":
        args = [Arg("grad_spike_seq", "in", "io")]
        args += [Arg("grad_v_seq", "in", "io")] if cfg.grad_v_seq else []
        args += [Arg(f"grad_final_{s}", "in", "io") for s in states]
        args += [Arg(f"saved_{s}", "in", "io") for s in bw.saved]
        args += [Arg("x_seq", "in", "io")] if bw.needs_x else []
        args += [Arg(f"init_{s}", "in", "io") for s in bw.needs_init]
        args += params + [Arg("grad_x_seq", "out", "io")]
        args += [Arg(f"grad_init_{s}", "out", "io") for s in states]
        args += [Arg(f"grad_p_{k}", "out", "compute") for k in cfg.learnable]
    else:
        raise ValueError(f"kernel kind must be one of {KINDS}, not {kind!r}")
    return args + [Arg("ng_T", "int32", "index"), Arg("ng_N", "int64", "index")]


@dataclass
class KernelIR:
    """Plain data a template renders: names and printed lines only."""
    name: str
    target: str
    kind: str
    dtype: str
    template: str
    context: Dict[str, object]


class _Lines:
    """Prints assignments in one compute type, with CSE and hoisted invariants."""

    def __init__(self, model: NeuronModel, compute: str, cfg: KernelConfig):
        self.printer = KernelPrinter(compute)
        invariant = [P(k) for k in model.param_names] + [
            sp.Symbol(name) for name in cfg.surrogate.kernel_values()]
        self.hoister = Hoister(invariant)
        self.invariant = frozenset(invariant)  # the rewrites' cache key (lru_cache)
        self._cse_count = 0

    def p(self, expr) -> str:
        return self.printer.doprint(expr)

    def collect_linear(self, expr):
        """``expr`` with each sub-expression that is linear in the per-step symbols written
        as ``c0 + c1 x1 + ...`` (the coefficients hoisted) where that takes fewer
        operations per step. A derivative factor such as ``1 + (a0 (v - v_c) + a0 (v -
        v_rest)) / tau`` becomes one multiply-add (PERF_NOTES.md 22). Only for gradient
        expressions: it changes their rounding, and the recomputed forward values must stay
        bit-equal to the forward's."""
        return _collect_linear(expr, self.invariant)

    def spike_select(self, expr, s, u):
        """``expr``, linear in the 0/1 spike ``s`` (``s = u >= 0``), as ``u >= 0 ? expr|s=1 :
        expr|s=0`` where that takes fewer operations: a hard reset ``h (1 - s) + s r`` becomes
        one select instead of a subtraction, two products and a sum (PERF_NOTES.md 22). A
        per-step value that the weight 0 removes stays as ``ZeroTimes`` (``0 * h``), so an
        infinite or NaN ``h`` gives NaN as the product does; a parameter the weight 0 removes
        is dropped (a non-finite parameter makes every state NaN anyway). Equal to the
        product form for finite values, up to the sign of a zero."""
        return _spike_select(expr, s, u, self.invariant)

    def const(self, sym, expr) -> str:
        return f"const compute_t {sym} = {self.p(expr)};"

    def block(self, assignments, cse=True) -> List[str]:
        """``const`` lines for [(symbol, expr)], hoisting invariants and sharing subterms."""
        syms = [s for s, _ in assignments]
        exprs = [self.hoister(e) for _, e in assignments]
        lines = []
        if cse and exprs:
            gen = sp.numbered_symbols("ng_c", start=self._cse_count)
            temps, exprs = sp.cse(exprs, symbols=gen, order="canonical")
            self._cse_count += len(temps)
            lines += [self.const(t, e) for t, e in temps]
        return lines + [self.const(s, e) for s, e in zip(syms, exprs)]

    def spike(self, sym, u) -> str:
        one, zero = self.p(sp.Integer(1)), self.p(sp.Integer(0))
        return f"const compute_t {sym} = ({u} >= {zero}) ? {one} : {zero};"

    def constants(self, model, cfg):
        """Parameter loads and hoisted invariants (printed last, after all use), split into
        those the same for every neuron and those that differ per neuron.

        Returns ``(uniform_lines, neuron_lines, neuron_names)``.
        """
        uniform, per_neuron, names = [], [], []
        varying = set()
        for k in model.param_names:
            kind = cfg.kind_of(k)
            src = {"scalar": f"p_{k}", "neuron": f"p_{k}[ng_i]", "shared": f"p_{k}[0]"}[kind]
            line = f"const compute_t {k} = {src};"
            if kind == "neuron":
                varying.add(P(k))
                per_neuron.append(line)
                names.append(k)
            else:
                uniform.append(line)
        for sym, expr in self.hoister.order:
            if expr.free_symbols & varying:
                varying.add(sym)
                per_neuron.append(self.const(sym, expr))
                names.append(str(sym))
            else:
                uniform.append(self.const(sym, expr))
        return uniform, per_neuron, names


def _cost(expr, invariant) -> int:
    """Operations per neuron-step of ``expr`` once its invariants are hoisted."""
    return sp.count_ops(Hoister(invariant)(expr))


def _linear_parts(expr, invariant):
    """``{x: coefficient, 1: constant}`` when ``expr`` is linear in its non-invariant
    symbols with invariant coefficients, else None (structural: no expansion)."""
    if expr.free_symbols <= invariant:
        return {1: expr}
    if expr.is_Symbol:
        return {expr: sp.Integer(1)}
    if isinstance(expr, sp.Add):
        out = {}
        for a in expr.args:
            part = _linear_parts(a, invariant)
            if part is None:
                return None
            for k, c in part.items():
                out[k] = out.get(k, 0) + c
        return out
    if isinstance(expr, sp.Mul):
        var = [a for a in expr.args if not a.free_symbols <= invariant]
        if len(var) != 1:
            return None
        part = _linear_parts(var[0], invariant)
        if part is None:
            return None
        factor = sp.Mul(*[a for a in expr.args if a.free_symbols <= invariant])
        return {k: factor * c for k, c in part.items()}
    return None


def _weighted_away(expr, s, value, invariant):
    """``ZeroTimes`` terms for what the product form multiplies by a zero weight at ``s =
    value``: the per-step factors of each product that vanishes (``2 s v`` at s = 0 gives
    ``0 * v``, NaN for an infinite ``v``, even where ``v`` stays in the branch), and each
    per-step value the branch loses otherwise (``h - s h`` at s = 1: ``inf - inf``)."""
    out, covered = set(), set()
    for node in sp.preorder_traversal(expr):
        if isinstance(node, sp.Mul) and node.has(s) and node.xreplace({s: value}) == 0:
            factors = [a for a in node.args if not a.has(s) and not a.free_symbols <= invariant]
            if factors:
                out.add(ZeroTimes(sp.Mul(*factors)))
                covered |= set().union(*(a.free_symbols for a in factors))
    lost = expr.free_symbols - expr.xreplace({s: value}).free_symbols - {s} - invariant
    out |= {ZeroTimes(x) for x in lost - covered}
    return sorted(out, key=sp.default_sort_key)


@functools.lru_cache(maxsize=4096)
def _spike_select(expr, s, u, invariant):
    if not expr.has(s) or sp.diff(expr, s, 2) != 0:
        return expr
    branches = []
    for value in (1, 0):
        e = expr.xreplace({s: sp.Integer(value)})
        branches.append(e + sp.Add(*_weighted_away(expr, s, sp.Integer(value), invariant)))
    # beside these counts the select needs one blend and the product form one operation
    # turning s into 0/1 (the compare is the same), which cancel; count_ops counts a
    # multiply-add as two, so ask for a saving of two: w + b * spike (one multiply-add)
    # stays a product
    if sum(_cost(b, invariant) for b in branches) > _cost(expr, invariant) - 2:
        return expr
    return sp.Piecewise((branches[0], sp.Ge(u, 0)), (branches[1], True))


@functools.lru_cache(maxsize=4096)
def _collect_linear(expr, invariant):
    if expr.is_Atom or not isinstance(expr, sp.Expr):
        return expr
    args = [_collect_linear(a, invariant) for a in expr.args]
    if any(a is not b for a, b in zip(args, expr.args)):
        expr = expr.func(*args)
    if not isinstance(expr, (sp.Add, sp.Mul)) or expr.free_symbols <= invariant:
        return expr
    parts = _linear_parts(expr, invariant)
    if parts is None:
        return expr
    new = sp.Add(*[c if k == 1 else c * k for k, c in parts.items()])
    return new if _cost(new, invariant) < _cost(expr, invariant) else expr


def _signature(args: List[Arg]) -> List[str]:
    out = []
    for a in args:
        if a.role in ("in", "out"):
            ctype = "io_t" if a.dtype == "io" else "compute_t"
            const = "const " if a.role == "in" else ""
            out.append(f"{const}{ctype}* __restrict__ {a.name}")
        elif a.role == "scalar":
            out.append(f"const compute_t {a.name}")
        elif a.role == "int32":
            out.append(f"const int {a.name}")
        else:
            out.append(f"const ng_int64 {a.name}")
    return out


def _forward_step(model, step: Step, bw: Backward, cfg, lines: _Lines) -> List[str]:
    out = [f"const compute_t {model.input_name} = ng_ld(x_seq[ng_ti]);"]
    for stage, assignments in step.forward_stages():
        if stage == "reset":
            out.append(lines.spike("spike", "ng_u"))
        out += lines.block(assignments)
    if cfg.save:
        # V[t], stored before the state updates below overwrite a reset-only state's value
        out += [f"saved_{s}[ng_ti] = ng_io({step.V[s]});" for s in bw.saved]
    for s in model.state_names:
        new = step.new_state(s)
        if new != P(s):
            out.append(f"{s} = {new};")
    out.append("spike_seq[ng_ti] = ng_io(spike);")
    if cfg.store_v_seq:
        out.append(f"v_seq[ng_ti] = ng_io({model.v_name});")
    return out


def _separate_surrogate(expr, compute: str) -> bool:
    """Whether the C++ backward computes the surrogate derivative in its own pass: when
    it calls a math-library function (``expf`` through libmvec, or libm's scalar ``exp`` in
    double kernels). The call spills every vector register of a long loop body (a scalar
    call keeps the whole loop scalar); in a short loop of its own it costs far less.
    Functions the float kernels inline (``sigmoid``, ``sigmoid'``), and rational, piecewise
    and max/min forms stay in the main loop. Measured (PERF_NOTES.md 16, Izhikevich
    backward, T = 64, N = 2^16, in-process replays): Erf 5.3 -> 4.2 ms, PiecewiseExp 4.2 ->
    3.7 with the pass; Sigmoid float 2.90 inline against 3.00 with it."""
    if expr is None:
        return False
    inlined = (sp.Abs, sp.Piecewise) + ((sigmoid, sigmoid_grad) if compute == "float" else ())
    return any(isinstance(e, sp.Function) and not isinstance(e, inlined)
               for e in sp.preorder_traversal(expr))


def _surrogate_pass(step: Step, bw: Backward, lines: _Lines) -> List[str]:
    """C++ backward: the surrogate derivative of one chunk of neurons, computed in a loop of
    its own from the saved values (``ng_sgbuf``) before the step's main loop (see
    :func:`_separate_surrogate`)."""
    fire_states = [s for s in bw.saved if step.V[s] in step.fire.free_symbols]
    out = _constant_loads(step, bw, step.fire.free_symbols)
    out += [f"const compute_t {step.V[s]} = ng_ld(saved_{s}[ng_ti]);" for s in fire_states]
    out += lines.block([(U, step.fire)])
    out += lines.block([(SG, bw.surrogate)])
    out.append(f"ng_sgbuf[ng_j - ng_c] = {SG};")
    return out


def _constant_loads(step: Step, bw: Backward, symbols=None) -> List[str]:
    """Loads of the constant states (no equation: the initial value at every step) among
    ``symbols`` (all by default)."""
    return [f"const compute_t {s} = ng_ld(init_{s}[ng_i]);" for s in bw.constant
            if symbols is None or P(s) in symbols]


def _backward_parts(model, step: Step, bw: Backward, cfg, lines: _Lines, sg_pass=False):
    """Lines before, inside and after the backward time loop.

    Returns ``(before, body, body_first, after, carried)``. Both targets run ``body`` for
    t = T-1 .. 1 and ``body_first`` for t = 0, so the time loop has no choice between
    the saved and the initial states: GCC turned that choice into masked loads and blends
    (about a quarter of the C++ backward's time), and on CUDA it put a branch in the
    loop that kept ptxas from issuing the next steps' loads early (PERF_NOTES.md 12)."""
    states = model.state_names
    before = [f"compute_t ng_g_{s} = ng_ld(grad_final_{s}[ng_i]);" for s in states]
    before += [f"compute_t ng_sv_{s} = ng_ld(saved_{s}[(ng_int64)(ng_T - 1) * ng_N + ng_i]);"
               for s in bw.saved]
    before += [f"compute_t ng_acc_{k} = {lines.p(sp.Integer(0))};" for k in bw.learnable]
    body = _backward_body(model, step, bw, cfg, lines, "inner", sg_pass)
    body_first = _backward_body(model, step, bw, cfg, lines, "first", sg_pass)
    after = [f"grad_init_{s}[ng_i] = ng_io(ng_g_{s});" for s in states]
    after += [f"grad_p_{k}[ng_i] = ng_acc_{k};" for k in bw.learnable]
    carried = ([f"ng_g_{s}" for s in states] + [f"ng_sv_{s}" for s in bw.saved]
               + [f"ng_acc_{k}" for k in bw.learnable])
    return before, body, body_first, after, carried


def _backward_body(model, step: Step, bw: Backward, cfg, lines: _Lines, phase: str,
                   sg_pass=False):
    """One backward step. ``phase``: "inner" (t > 0) or "first" (t == 0: previous states
    are the initial ones, nothing older is loaded). ``sg_pass``: the surrogate derivative
    comes from :func:`_surrogate_pass`'s buffer."""
    states = model.state_names
    sv = {step.V[q]: sp.Symbol(f"ng_sv_{q}") for q in bw.saved}
    body = _constant_loads(step, bw)
    body += [f"const compute_t {step.V[s]} = ng_sv_{s};" for s in bw.saved]
    prev = {s: step.reset.get(s, step.V[s]).xreplace(sv) for s in bw.needs_prev}
    if phase == "inner":
        # step t reads V[t] (carried in ng_sv_*) and loads V[t-1] for step t-1
        body += [f"ng_sv_{s} = ng_ld(saved_{s}[ng_ti - ng_N]);" for s in bw.saved]
    if phase == "first":
        body += [f"const compute_t {s} = ng_ld(init_{s}[ng_i]);" for s in prev]
    else:
        if any(e.has(spike) or e.has(spike_d) for e in prev.values()):
            body += lines.block([(sp.Symbol("ng_pu"), step.fire.xreplace(sv))])
            pspike = sp.Symbol("ng_pspike")
            prev = {s: lines.spike_select(e.xreplace({spike: pspike, spike_d: pspike}), pspike,
                                          sp.Symbol("ng_pu"))
                    for s, e in prev.items()}
            if any(e.has(pspike) for e in prev.values()):
                body.append(lines.spike("ng_pspike", "ng_pu"))
        body += lines.block([(sp.Symbol(s), e) for s, e in prev.items()])
    if bw.needs_x:
        body.append(f"const compute_t {model.input_name} = ng_ld(x_seq[ng_ti]);")
    body += lines.block([(step.B[s], step.charge[s]) for s in bw.needs_h])
    if bw.needs_u:
        body += lines.block([(U, step.fire)])
        body.append(lines.spike("spike", "ng_u"))
    if bw.surrogate is not None:
        if sg_pass:
            body.append(f"const compute_t {SG} = ng_sgbuf[ng_j - ng_c];")
        else:
            body += lines.block([(SG, bw.surrogate)])
    if cfg.grad_v_seq:
        body.append(f"ng_g_{model.v_name} += ng_ld(grad_v_seq[ng_ti]);")
    body.append(f"const compute_t {GSPIKE} = ng_ld(grad_spike_seq[ng_ti]);")
    names = list(bw.outputs)
    body += lines.block([(sp.Symbol(n), lines.collect_linear(bw.outputs[n])) for n in names])
    body.append("grad_x_seq[ng_ti] = ng_io(ng_gx);")
    body += [f"ng_acc_{k} += ng_gp_{k};" for k in bw.learnable]
    body += [f"ng_g_{s} = ng_gP_{s};" for s in states]
    return body


def build_ir(model: NeuronModel, target: str, kind: str, dtype: str, cfg: KernelConfig) -> KernelIR:
    """Derive and print everything a template needs for one kernel."""
    if target not in TARGETS:
        raise ValueError(f"target must be one of {TARGETS}, not {target!r}")
    if dtype not in DTYPES:
        raise ValueError(f"dtype must be one of {list(DTYPES)}, not {dtype!r}")
    if target == "cpp" and dtype not in CPP_DTYPES:
        raise ValueError(f"the C++ CPU kernels support {', '.join(CPP_DTYPES)}, not {dtype}")
    io_t, compute_t, load, store = (CPP_DTYPES if target == "cpp" else DTYPES)[dtype]
    step, bw = derivation(model, cfg.surrogate, cfg.detach_reset, cfg.learnable)
    lines = _Lines(model, compute_t, cfg)
    config_hash = hashlib.sha256(cfg.key().encode()).hexdigest()[:12]
    name = f"ng_{model.name}_{kind}_{dtype}_{config_hash}"
    ctx = dict(model=model.name, spec_hash=model.spec_hash, config_hash=config_hash,
               target=target, io_t=io_t, compute_t=compute_t, load_io=load, store_io=store,
               name=name, signature=_signature(kernel_args(model, kind, cfg)),
               states=list(model.state_names))
    if kind == "forward":
        ctx["step"] = _forward_step(model, step, bw, cfg, lines)
    elif kind == "backward":
        sg_pass = target == "cpp" and _separate_surrogate(bw.surrogate, compute_t)
        (ctx["before_loop"], ctx["step"], ctx["step_first"], ctx["after_loop"],
         carried) = _backward_parts(model, step, bw, cfg, lines, sg_pass)
        ctx["sg_pass"] = _surrogate_pass(step, bw, lines) if sg_pass else []
    else:
        raise ValueError(f"kernel kind must be one of {KINDS}, not {kind!r}")
    ctx["uniform_constants"], ctx["constants"], constant_names = lines.constants(model, cfg)
    ctx["constant_names"] = constant_names
    if kind == "forward":
        ctx["carried"] = list(model.state_names) + constant_names
    else:
        ctx["carried"] = constant_names + carried
    ctx["block"] = cpu_max_block(len(ctx["carried"]), compute_t)
    ext = "cu" if target == "cuda" else "cpp"
    template = f"{target}_{kind}.{ext}.j2"
    ctx["template"] = template
    return KernelIR(name=name, target=target, kind=kind, dtype=dtype, template=template,
                    context=ctx)


def render_ir(ir: KernelIR) -> str:
    return _env.get_template(ir.template).render(**ir.context)


def render(model: NeuronModel, target: str, kind: str = "forward", dtype: str = "float32",
           **options) -> str:
    """The source text of one kernel. ``options`` are :class:`KernelConfig` fields."""
    cfg = make_config(model, **options)
    return render_ir(build_ir(model, target, kind, dtype, cfg))
